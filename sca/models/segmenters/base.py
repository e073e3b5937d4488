"""The promptable-segmenter contract that every image-encoder registry entry fulfils.

A *segmenter* is SAM or anything shaped like it: an image encoder giving a ``C x h x w`` embedding
(256 x 64 x 64 for SAM at 1024 px), SAM's prompt encoder and SAM's mask decoder. SCA needs from it,
per region (paper.md §1, steps 2-4):

- the masks and IoU scores SAM predicts (returned unchanged, multimask output);
- the OUTPUT tokens of the mask decoder's two-way transformer for [iou, mask x4, prompt tokens];
- the UPDATED image tokens that transformer returns (not the raw encoder output);
- the image-wide positional encoding (SAM's random-Fourier PE).

``SamSegmenter`` implements the contract for transformers' ``SamModel`` and any image encoder put in
front of its prompt encoder and mask decoder. The mask decoder runs unchanged; its transformer's
inputs and outputs are read with a forward hook, so masks and IoU scores are exactly SAM's.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from sca.registry import IMAGE_ENCODERS, ContractError

from .prompts import Prompts, SegmenterOutput, merge_outputs, split_by_signature

__all__ = [
    "DECODER_EPS_CONFIG_KEY",
    "DECODER_LAYER_NORM_EPS_OPTION",
    "ORIGINAL_DECODER_LAYER_NORM_EPS",
    "Prompts",
    "SamSegmenter",
    "Segmenter",
    "SegmenterOutput",
    "check_segmenter",
    "recorded_decoder_eps",
    "set_original_decoder_eps",
    "take_rows",
]


def take_rows(t: Tensor, index: Tensor) -> Tensor:
    """``t[index]`` along dim 0 without a copy where none is needed: a tensor of one image (or one
    already expanded, stride 0) becomes an expanded view, and ``index`` = 0..n-1 gives ``t`` itself.
    Each region reads its image's features; a copy would cost C x h x w floats a region (4 MiB at
    SAM's 256 x 64 x 64) for the same values."""
    n = index.numel()
    if t.shape[0] == 1 or (t.shape[0] > 0 and t.stride(0) == 0):
        return t[:1].expand(n, *t.shape[1:])
    if n == t.shape[0] and torch.equal(index, torch.arange(n, device=index.device)):
        return t
    return t[index]


# ---------------------------------------------------------------------------------------------------
# The LayerNorm eps of SAM's two-way transformer
# ---------------------------------------------------------------------------------------------------
# segment-anything's TwoWayTransformer uses nn.LayerNorm's default eps (1e-5) in its blocks;
# transformers' SamMaskDecoderConfig defaults to 1e-6 (and the converted hub configs keep 1e-6). With
# 1e-6 the masks differ from SAM's by ~2e-5 relative. Loading an original file sets the decoder's
# LayerNorms to 1e-5 (``set_original_decoder_eps``) and leaves ``layer_norm_eps`` alone, so that what
# the config tells others (e.g. the caption mixer's block settings) does not depend on the file
# format. The eps is recorded under its own config key (saved in a SAM folder's config.json) and, in
# SCA checkpoints, as the image-encoder spec option (handled by SCAModel for every entry), so a saved
# and reloaded model computes exactly what it computed before.
ORIGINAL_DECODER_LAYER_NORM_EPS = 1e-5
DECODER_EPS_CONFIG_KEY = "two_way_transformer_layer_norm_eps"  # of SamMaskDecoderConfig
DECODER_LAYER_NORM_EPS_OPTION = "decoder_layer_norm_eps"  # of an image-encoder spec


def set_original_decoder_eps(model: nn.Module, eps: float = ORIGINAL_DECODER_LAYER_NORM_EPS) -> None:
    """Set every LayerNorm of a transformers SAM mask decoder's two-way transformer to ``eps``
    (default: segment-anything's) and record it in ``model.config.mask_decoder_config``."""
    if not (isinstance(eps, float) and 0.0 < eps < 1.0):
        raise ValueError(f"decoder LayerNorm eps must be a float in (0, 1), got {eps!r}")
    for module in model.mask_decoder.transformer.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps
    setattr(model.config.mask_decoder_config, DECODER_EPS_CONFIG_KEY, eps)


def recorded_decoder_eps(model: nn.Module) -> float | None:
    """The eps ``set_original_decoder_eps`` set on ``model`` (or its loaded config records), else None."""
    eps = getattr(model.config.mask_decoder_config, DECODER_EPS_CONFIG_KEY, None)
    return None if eps is None else float(eps)


# ---------------------------------------------------------------------------------------------------
# The abstract segmenter
# ---------------------------------------------------------------------------------------------------
class Segmenter(nn.Module):
    """Base class of all image-encoder registry entries.

    Attributes every subclass sets:
        image_size: input side length S after preprocessing (1024 for SAM).
        embedding_size: side h = w of the image embedding (64 for SAM).
        hidden_size: channel count C of the embedding and the decoder (256 for SAM).
        pixel_mean, pixel_std: per-channel normalisation on the 0-1 scale (ImageNet's for SAM).
        source: how the weights were obtained ({"weights": hub id | path | None, ...}); recorded in
            SCA checkpoints so the frozen segmenter is referenced, not copied.
    """

    image_size: int
    embedding_size: int
    hidden_size: int
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __init__(self) -> None:
        super().__init__()
        self.source: dict[str, Any] = {}

    def encode(self, pixel_values: Tensor) -> dict[str, Tensor]:
        """[B, 3, S, S] normalised pixels -> features {'image_embeddings': [B, C, h, w], ...extras}.

        All values are batch-first tensors, so features can be cached, indexed and concatenated."""
        raise NotImplementedError

    def decode(self, features: dict[str, Tensor], prompts: Prompts, multimask_output: bool = True) -> SegmenterOutput:
        raise NotImplementedError

    def image_positional_embeddings(self) -> Tensor:
        """[1, C, h, w] image-wide positional encoding of the mask decoder."""
        raise NotImplementedError

    def positional_encoding(self, coords: Tensor) -> Tensor:
        """[..., 2] (x, y) points as fractions of the image side -> [..., C], the encoding that
        ``image_positional_embeddings`` gives the token grid's centres."""
        raise NotImplementedError

    def mixer_block_config(self) -> dict[str, Any]:
        """Hyper-parameters of the mask decoder's two-way blocks, for the text feature mixer
        (paper.md §1.5: 'another two-way transformer of the same block type')."""
        raise NotImplementedError

    def trainable_module_names(self) -> list[str]:
        """Names of submodules that train with the captioner (e.g. a neck). SAM itself: none."""
        return []

    @property
    def decoder_layer_norm_eps(self) -> float | None:
        """The LayerNorm eps the mask decoder's two-way transformer was set to after building (e.g.
        segment-anything's 1e-5 for weights from an original file), None if as built."""
        return None

    def set_decoder_layer_norm_eps(self, eps: float) -> None:
        raise ValueError(
            f"{type(self).__name__} has no SAM two-way transformer whose LayerNorm eps could be set "
            f"(option {DECODER_LAYER_NORM_EPS_OPTION!r}={eps!r}); only SAM-based image encoders take it"
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def check_segmenter(part: Any, name: str) -> None:
    """Raise ContractError unless ``part`` honours the Segmenter contract."""
    if not isinstance(part, Segmenter):
        raise ContractError(f"image encoder {name!r} returned {type(part).__name__}, not a Segmenter")
    for attr in ("image_size", "embedding_size", "hidden_size"):
        value = getattr(part, attr, None)
        if not isinstance(value, int) or value <= 0:
            raise ContractError(f"image encoder {name!r}: {attr} must be a positive int, got {value!r}")
    if part.image_size % part.embedding_size:
        raise ContractError(
            f"image encoder {name!r}: image_size {part.image_size} is not a multiple of embedding_size "
            f"{part.embedding_size}"
        )
    for attr in ("pixel_mean", "pixel_std"):
        if len(tuple(getattr(part, attr))) != 3:
            raise ContractError(f"image encoder {name!r}: {attr} must have 3 values")
    cfg = part.mixer_block_config()
    missing = {"hidden_size", "num_attention_heads", "mlp_dim", "attention_downsample_rate"} - set(cfg)
    if missing:
        raise ContractError(f"image encoder {name!r}: mixer_block_config lacks {sorted(missing)}")


IMAGE_ENCODERS.set_check(check_segmenter)


# ---------------------------------------------------------------------------------------------------
# SAM through transformers
# ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _capture_two_way_transformer(transformer: nn.Module):
    """Record the inputs (point embeddings) and outputs (tokens, updated image tokens) of a mask
    decoder's two-way transformer during one call of the mask decoder."""
    record: dict[str, Tensor] = {}

    def hook(module, args, kwargs, output):
        record["queries"], record["keys"] = output[0], output[1]

    handle = transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        yield record
    finally:
        handle.remove()


class SamSegmenter(Segmenter):
    """A transformers ``SamModel``-shaped model (``vision_encoder``, ``prompt_encoder``, ``mask_decoder``,
    ``get_image_wide_positional_embeddings``) as a Segmenter.

    Args:
        sam: the SAM model (``SamModel``; subclasses handle ``SamHQModel``).
        image_encoder: optional module to use instead of ``sam.vision_encoder`` (MobileSAM's TinyViT,
            a timm ViT, a backbone with a neck): ``[B, 3, S, S] -> [B, C, h, w]``. It replaces
            ``sam.vision_encoder`` so parameter names stay ``sam.vision_encoder.*``.
        trainable: names of submodules (relative to this segmenter) that train with the captioner.
    """

    def __init__(self, sam: nn.Module, image_encoder: nn.Module | None = None, trainable: list[str] | None = None):
        super().__init__()
        if image_encoder is not None:
            sam.vision_encoder = image_encoder
        self.sam = sam
        cfg = sam.config
        self.image_size = int(cfg.prompt_encoder_config.image_size)
        self.embedding_size = int(cfg.prompt_encoder_config.image_embedding_size)
        self.hidden_size = int(cfg.mask_decoder_config.hidden_size)
        self._trainable = list(trainable or [])

    # -- contract ---------------------------------------------------------------------------------
    def encode(self, pixel_values: Tensor) -> dict[str, Tensor]:
        out = self.sam.vision_encoder(pixel_values)
        embeddings = out if isinstance(out, Tensor) else out[0]
        return {"image_embeddings": embeddings}

    def image_positional_embeddings(self) -> Tensor:
        return self.sam.get_image_wide_positional_embeddings()

    def positional_encoding(self, coords: Tensor) -> Tensor:
        pe = self.sam.shared_image_embedding
        return pe(coords.to(pe.positional_embedding.dtype))

    def mixer_block_config(self) -> dict[str, Any]:
        c = self.sam.config.mask_decoder_config
        return {
            "hidden_size": c.hidden_size,
            "num_attention_heads": c.num_attention_heads,
            "mlp_dim": c.mlp_dim,
            "attention_downsample_rate": c.attention_downsample_rate,
            "hidden_act": c.hidden_act,
            "layer_norm_eps": c.layer_norm_eps,
        }

    def trainable_module_names(self) -> list[str]:
        return list(self._trainable)

    @property
    def decoder_layer_norm_eps(self) -> float | None:
        return recorded_decoder_eps(self.sam)

    def set_decoder_layer_norm_eps(self, eps: float) -> None:
        set_original_decoder_eps(self.sam, eps)

    def decode(self, features: dict[str, Tensor], prompts: Prompts, multimask_output: bool = True) -> SegmenterOutput:
        """features {'image_embeddings': [B, C, h, w], ...} + prompts [B, R, ...] -> SegmenterOutput
        [B, R, ...]. Regions are grouped by their prompt signature (``prompts.split_by_signature``) and
        each group is decoded without placeholder prompts, so every region's masks, IoU scores and
        tokens are those of the region decoded alone."""
        embeddings = features["image_embeddings"]
        batch, regions = prompts.batch_size, prompts.num_regions
        if embeddings.shape[0] != batch:
            raise ValueError(
                f"features hold {embeddings.shape[0]} images but prompts are for {batch} images"
            )
        # Every region becomes its own batch item: [B*R, 1, ...]. This is the same computation as
        # SAM's point batch (its mask decoder repeats the image embedding per region) and lets a
        # mask prompt be given per region (SAM's dense prompt is per batch item).
        flat = prompts.flatten()
        image_of = torch.arange(batch, device=embeddings.device).repeat_interleave(regions)
        parts = []
        for rows, group in split_by_signature(flat):
            index = image_of[rows.to(image_of.device)]
            parts.append((rows, self._decode_group({k: take_rows(v, index) for k, v in features.items()}, group,
                                                   multimask_output)))
        return merge_outputs(parts, batch * regions).reshape(batch, regions)

    def _decode_group(self, features: dict[str, Tensor], group: Prompts, multimask_output: bool) -> SegmenterOutput:
        """N regions of one signature, each with its image's features [N, ...]: prompts [N, 1, ...]
        without placeholders -> SegmenterOutput [N, 1, ...]."""
        embeddings = features["image_embeddings"]
        extra = {k: v for k, v in features.items() if k != "image_embeddings"}
        sparse, dense = self.sam.prompt_encoder(
            input_points=group.points,
            input_labels=group.point_labels,
            input_boxes=group.boxes,  # [N, 1, 4]
            input_masks=None if group.masks is None else group.masks[:, 0],
        )
        image_pe = self.image_positional_embeddings().expand(embeddings.shape[0], -1, -1, -1)
        with _capture_two_way_transformer(self.sam.mask_decoder.transformer) as rec:
            masks, iou = self._run_mask_decoder(embeddings, image_pe, sparse, dense, multimask_output, extra)
        # tokens: [N, 1, T, C]; image tokens: [N, 1, h*w, C]
        return SegmenterOutput(masks=masks, iou_scores=iou, tokens=rec["queries"], image_tokens=rec["keys"])

    def _run_mask_decoder(self, embeddings, image_pe, sparse, dense, multimask_output, extra):
        return self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
