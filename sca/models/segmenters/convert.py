"""Load original SAM-family checkpoints into the transformers-based segmenters.

Layouts read here (all are flat ``state_dict`` files, ``.pth``/``.pt`` or ``.safetensors``):

- segment-anything (``sam_vit_{b,l,h}_*.pth``): ``image_encoder.*`` (ViT), ``prompt_encoder.*``,
  ``mask_decoder.*``;
- SAM-HQ (``sam_hq_vit_{b,l,h}.pth``): the same plus the HQ decoder parts ``mask_decoder.hf_token``,
  ``hf_mlp``, ``compress_vit_feat``, ``embedding_encoder``, ``embedding_maskfeature``;
- MobileSAM (``mobile_sam.pt``): ``image_encoder.*`` is a TinyViT (with an unused classifier head),
  prompt encoder and mask decoder as SAM's.

The key names were worked out by listing the ``state_dict`` keys of ``segment_anything.modeling``
(facebookresearch/segment-anything), ``segment_anything_hq`` (SysCV/sam-hq), MobileSAM's
``tiny_vit_sam.py`` (ChaoningZhang/MobileSAM) and transformers' ``SamModel``/``SamHQModel``, and
checked against transformers' ``convert_sam_to_hf.py``/``convert_samhq_to_hf.py`` and timm's
``vision_transformer_sam.checkpoint_filter_fn``. Files are read with ``weights_only=True``: loading a
checkpoint never runs code from it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from .base import ORIGINAL_DECODER_LAYER_NORM_EPS, set_original_decoder_eps  # re-exported

__all__ = [
    "ORIGINAL_DECODER_LAYER_NORM_EPS",
    "CheckpointError",
    "set_original_decoder_eps",
    "convert_original_sam_state_dict",
    "load_original_sam_checkpoint",
    "load_state_dict_strict",
    "read_state_dict",
    "sam_config_from_state_dict",
]

# Buffers of segment_anything's Sam that are not weights (non-persistent there, but tolerated).
_IGNORED_ORIGINAL_KEYS = ("pixel_mean", "pixel_std")


class CheckpointError(ValueError):
    """A checkpoint file does not fit the model it is loaded into."""


# ---------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` dict from ``.safetensors`` or a torch pickle (weights only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # a pickle with code objects, or not a torch file at all
            raise CheckpointError(
                f"could not read {str(path)!r} as a weights-only torch checkpoint ({type(err).__name__}: "
                f"{err}); checkpoints that need code execution to load are refused"
            ) from err
    # Training checkpoints often nest the weights one level down.
    if isinstance(state, dict) and not any(isinstance(v, Tensor) for v in state.values()):
        for key in ("model", "state_dict", "module"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a flat state dict of tensors")
    return dict(state)


# ---------------------------------------------------------------------------------------------------
# Key mapping: original segment-anything names -> transformers SamModel / SamHQModel names
# ---------------------------------------------------------------------------------------------------
# Index -> name inside nn.Sequential blocks of the original code.
_MASK_DOWNSCALING = {"0": "conv1", "1": "layer_norm1", "3": "conv2", "4": "layer_norm2", "6": "conv3"}
_NECK = {"0": "conv1", "1": "layer_norm1", "2": "conv2", "3": "layer_norm2"}
_OUTPUT_UPSCALING = {"0": "upscale_conv1", "1": "upscale_layer_norm", "3": "upscale_conv2"}
_HQ_SEQUENTIALS = {  # SAM-HQ decoder: original Sequential -> transformers attribute prefix
    "compress_vit_feat": {"0": "compress_vit_conv1", "1": "compress_vit_norm", "3": "compress_vit_conv2"},
    "embedding_encoder": {"0": "encoder_conv1", "1": "encoder_norm", "3": "encoder_conv2"},
    "embedding_maskfeature": {"0": "mask_conv1", "1": "mask_norm", "3": "mask_conv2"},
}


def _mlp_key(name: str, depths: dict[str, int]) -> str:
    """Original ``MLP.layers.{i}`` -> transformers ``SamFeedForward`` ``proj_in`` / ``layers.{i-1}`` /
    ``proj_out``. ``depths`` maps an MLP prefix to its number of linear layers."""
    m = re.match(r"(.+)\.layers\.(\d+)\.(weight|bias)$", name)
    if m is None or m.group(1) not in depths:
        return name
    prefix, i, leaf = m.group(1), int(m.group(2)), m.group(3)
    depth = depths[prefix]
    layer = "proj_in" if i == 0 else "proj_out" if i == depth - 1 else f"layers.{i - 1}"
    return f"{prefix}.{layer}.{leaf}"


def _mlp_depths(state: dict[str, Tensor]) -> dict[str, int]:
    """Number of linear layers of each mask-decoder MLP (hypernetworks, IoU head, SAM-HQ's hf_mlp)."""
    depths: dict[str, int] = {}
    for key in state:
        m = re.match(r"(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head|hf_mlp))\.layers\.(\d+)\.", key)
        if m:
            depths[m.group(1)] = max(depths.get(m.group(1), 0), int(m.group(2)) + 1)
    return depths


def _convert_vit_key(rest: str) -> str:
    """segment-anything ``ImageEncoderViT`` -> transformers ``SamVisionEncoder`` (same for SAM-HQ)."""
    rest = rest.replace("patch_embed.proj.", "patch_embed.projection.")
    rest = re.sub(r"^blocks\.(\d+)\.norm([12])\.", r"layers.\1.layer_norm\2.", rest)
    rest = re.sub(r"^blocks\.", "layers.", rest)
    m = re.match(r"^neck\.(\d)\.(.*)$", rest)
    if m:
        rest = f"neck.{_NECK[m.group(1)]}.{m.group(2)}"
    return rest


def _convert_tiny_vit_key(rest: str) -> str | None:
    """MobileSAM ``TinyViT`` -> ``MobileSamImageEncoder`` (timm ``TinyVit`` trunk + SAM neck).

    MobileSAM puts each stage's downsampling at the END of stage i (``layers.{i}.downsample``); timm
    puts it at the START of stage i+1 (``stages.{i+1}.downsample``). Conv+BN pairs are ``c``/``bn``
    there and ``conv``/``bn`` in timm. The classifier (``norm_head``, ``head``) is unused: None."""
    if rest.startswith(("norm_head.", "head.")):
        return None
    m = re.match(r"^neck\.(\d)\.(.*)$", rest)
    if m:
        return f"neck.{_NECK[m.group(1)]}.{m.group(2)}"
    rest = re.sub(r"\.c\.(weight|bias)$", r".conv.\1", rest)
    rest = re.sub(r"^patch_embed\.seq\.0\.", "patch_embed.conv1.", rest)
    rest = re.sub(r"^patch_embed\.seq\.2\.", "patch_embed.conv2.", rest)
    m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", rest)
    if m:
        return f"trunk.stages.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
    rest = re.sub(r"^layers\.(\d+)\.", r"stages.\1.", rest)
    return f"trunk.{rest}"


def _convert_timm_samvit(image_encoder: dict[str, Tensor]) -> dict[str, Tensor]:
    """``image_encoder.*`` -> timm ``VisionTransformerSAM`` names, with timm's own SAM filter."""
    from timm.models.vision_transformer_sam import checkpoint_filter_fn

    return {f"model.{k}": v for k, v in checkpoint_filter_fn(image_encoder, None).items()}


IMAGE_ENCODER_LAYOUTS = ("sam_vit", "tiny_vit", "timm_samvit")


def convert_original_sam_state_dict(
    state: dict[str, Tensor], *, image_encoder: str | None = "sam_vit"
) -> dict[str, Tensor]:
    """Map an original SAM / SAM-HQ / MobileSAM state dict onto transformers ``SamModel`` names.

    image_encoder: how ``image_encoder.*`` keys are mapped onto ``vision_encoder.*``:
        ``"sam_vit"`` (transformers ``SamVisionEncoder``), ``"tiny_vit"`` (``MobileSamImageEncoder``),
        ``"timm_samvit"`` (``TimmSamImageEncoder``), or None to drop them (a different encoder).
    """
    if image_encoder is not None and image_encoder not in IMAGE_ENCODER_LAYOUTS:
        raise ValueError(f"image_encoder layout {image_encoder!r} unknown; use one of {IMAGE_ENCODER_LAYOUTS} or None")
    decoder_mlps = _mlp_depths(state)
    out: dict[str, Tensor] = {}
    vit_keys: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in _IGNORED_ORIGINAL_KEYS:
            continue
        if key.startswith("image_encoder."):
            rest = key[len("image_encoder."):]
            if image_encoder == "sam_vit":
                out[f"vision_encoder.{_convert_vit_key(rest)}"] = value
            elif image_encoder == "tiny_vit":
                new = _convert_tiny_vit_key(rest)
                if new is not None:
                    out[f"vision_encoder.{new}"] = value
            elif image_encoder == "timm_samvit":
                vit_keys[key] = value
            continue
        if key.startswith("prompt_encoder."):
            if key.endswith("pe_layer.positional_encoding_gaussian_matrix"):
                # One random-Fourier matrix, used by the prompt encoder and for the image-wide PE.
                out["prompt_encoder.shared_embedding.positional_embedding"] = value
                out["shared_image_embedding.positional_embedding"] = value
                continue
            new = key.replace("prompt_encoder.point_embeddings.", "prompt_encoder.point_embed.")
            m = re.match(r"^prompt_encoder\.mask_downscaling\.(\d)\.(.*)$", new)
            if m:
                new = f"prompt_encoder.mask_embed.{_MASK_DOWNSCALING[m.group(1)]}.{m.group(2)}"
            out[new] = value
            continue
        if key.startswith("mask_decoder."):
            new = _mlp_key(key, decoder_mlps)
            new = re.sub(r"\.transformer\.layers\.(\d+)\.norm(\d)\.", r".transformer.layers.\1.layer_norm\2.", new)
            new = new.replace(".transformer.norm_final_attn.", ".transformer.layer_norm_final_attn.")
            m = re.match(r"^mask_decoder\.output_upscaling\.(\d)\.(.*)$", new)
            if m:
                new = f"mask_decoder.{_OUTPUT_UPSCALING[m.group(1)]}.{m.group(2)}"
            m = re.match(r"^mask_decoder\.(compress_vit_feat|embedding_encoder|embedding_maskfeature)\.(\d)\.(.*)$", new)
            if m:
                new = f"mask_decoder.{_HQ_SEQUENTIALS[m.group(1)][m.group(2)]}.{m.group(3)}"
            new = new.replace("mask_decoder.hf_token.", "mask_decoder.hq_token.")
            new = new.replace("mask_decoder.hf_mlp.", "mask_decoder.hq_mask_mlp.")
            out[new] = value
            continue
        out[key] = value  # unknown top-level key: reported as unexpected by the strict loader
    if vit_keys:
        out.update({f"vision_encoder.{k}": v for k, v in _convert_timm_samvit(vit_keys).items()})
    return out


# ---------------------------------------------------------------------------------------------------
# Strict loading with readable errors
# ---------------------------------------------------------------------------------------------------
def _preview(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_state_dict_strict(
    model: nn.Module,
    state: dict[str, Tensor],
    *,
    source: str,
    only: tuple[str, ...] | None = None,
) -> None:
    """Load ``state`` into ``model``: every key must match in name and shape.

    only: key prefixes to load (e.g. the prompt encoder and mask decoder of a full SAM file when the
        image encoder is another model); keys outside them are ignored on both sides.
    """
    expected = model.state_dict()

    def keep(k: str) -> bool:
        return only is None or k.startswith(only)

    expected = {k: v for k, v in expected.items() if keep(k)}
    state = {k: v for k, v in state.items() if keep(k)}
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {'; '.join(mismatched[:8])}" + (" ..." if len(mismatched) > 8 else ""))
        raise CheckpointError(
            f"checkpoint {source} does not fit {type(model).__name__}"
            + (f" (keys under {list(only)})" if only else "")
            + ": " + " | ".join(parts)
        )
    result = model.load_state_dict(state, strict=False)
    leftover = [k for k in result.missing_keys if keep(k)]
    if leftover or result.unexpected_keys:  # cannot happen after the checks above; kept as a guard
        raise CheckpointError(f"checkpoint {source}: load left {leftover} missing, {result.unexpected_keys} unexpected")


def load_original_sam_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    image_encoder: str | None = "sam_vit",
    only: tuple[str, ...] | None = None,
    convert: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
) -> None:
    """Load an original SAM / SAM-HQ / MobileSAM checkpoint file into a transformers ``SamModel``-shaped
    ``model``, converting key names on the way; strict (see ``load_state_dict_strict``). The mask
    decoder then normalises as the original (``set_original_decoder_eps``).

    image_encoder: layout of the file's ``image_encoder.*`` keys (``convert_original_sam_state_dict``);
        None ignores them (and then only the prompt encoder and mask decoder are loaded).
    """
    state = read_state_dict(path)
    hf_layout = any(k.startswith(("vision_encoder.", "shared_image_embedding.", "prompt_encoder.shared_embedding."))
                    for k in state)
    if hf_layout or not any(k.startswith(("prompt_encoder.", "mask_decoder.", "image_encoder.")) for k in state):
        raise CheckpointError(
            f"{str(path)!r} is not an original SAM-layout checkpoint ("
            + ("it has transformers SamModel key names" if hf_layout else "no image_encoder./prompt_encoder./"
               f"mask_decoder. keys; first keys: {_preview(list(state)[:5], 5)}")
            + "). A Hugging Face SAM checkpoint is loaded from its folder (config.json + weights), not from "
            "the weights file alone."
        )
    converted = (convert or (lambda s: convert_original_sam_state_dict(s, image_encoder=image_encoder)))(state)
    if image_encoder is None and only is None:
        only = ("shared_image_embedding.", "prompt_encoder.", "mask_decoder.")
    load_state_dict_strict(model, converted, source=repr(str(path)), only=only)
    if any(k.startswith("mask_decoder.") for k in state):
        set_original_decoder_eps(model)


# ---------------------------------------------------------------------------------------------------
# Config from an original checkpoint
# ---------------------------------------------------------------------------------------------------
def sam_config_from_state_dict(state: dict[str, Tensor], *, decoder_heads: int = 8, vision_heads: int | None = None):
    """The transformers ``SamConfig`` (or ``SamHQConfig`` for a SAM-HQ file) whose model holds the
    weights of an original segment-anything ``state`` (ViT image encoder), read from tensor shapes.

    Head counts are not visible in the shapes of the decoder (``decoder_heads``, SAM: 8); the ViT's
    comes from its relative-position tables (``vision_heads`` overrides).
    """
    from transformers import (
        SamConfig,
        SamHQConfig,
        SamHQMaskDecoderConfig,
        SamHQPromptEncoderConfig,
        SamHQVisionConfig,
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    def get(key: str) -> Tensor:
        if key not in state:
            raise CheckpointError(f"cannot infer a SAM config: the checkpoint lacks {key!r}")
        return state[key]

    def count(pattern: str) -> int:
        return len({m.group(1) for k in state if (m := re.match(pattern, k))})

    patch_w = get("image_encoder.patch_embed.proj.weight")  # [C, 3, p, p]
    width, patch = patch_w.shape[0], patch_w.shape[-1]
    depth = count(r"image_encoder\.blocks\.(\d+)\.")
    pos = state.get("image_encoder.pos_embed")  # [1, g, g, C]
    grid = pos.shape[1] if pos is not None else None
    rel = [state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(depth)]  # [2s-1, head_dim]
    if grid is None or any(r is None for r in rel):
        raise CheckpointError("cannot infer a SAM config: expected abs pos_embed and rel-pos tables in every block")
    sizes = [(r.shape[0] + 1) // 2 for r in rel]
    global_idx = [i for i, s in enumerate(sizes) if s == grid]
    window = next((s for s in sizes if s != grid), 14)
    vision = dict(
        hidden_size=width, patch_size=patch, image_size=grid * patch, num_hidden_layers=depth,
        num_attention_heads=vision_heads or width // rel[0].shape[1], global_attn_indexes=global_idx,
        window_size=window, mlp_dim=get("image_encoder.blocks.0.mlp.lin1.weight").shape[0],
        output_channels=get("image_encoder.neck.0.weight").shape[0],
    )
    hidden = get("prompt_encoder.no_mask_embed.weight").shape[1]
    vision["num_pos_feats"] = get("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix").shape[1]
    prompt = dict(
        hidden_size=hidden, image_size=grid * patch, patch_size=patch,
        mask_input_channels=get("prompt_encoder.mask_downscaling.3.weight").shape[0],
    )
    q = get("mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight")  # [C/rate, C]
    iou_layers = count(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.")
    decoder = dict(
        hidden_size=hidden, num_attention_heads=decoder_heads,
        num_hidden_layers=count(r"mask_decoder\.transformer\.layers\.(\d+)\."),
        mlp_dim=get("mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0],
        attention_downsample_rate=hidden // q.shape[0],
        num_multimask_outputs=get("mask_decoder.mask_tokens.weight").shape[0] - 1,
        iou_head_depth=iou_layers,
        iou_head_hidden_dim=get("mask_decoder.iou_prediction_head.layers.0.weight").shape[0],
    )
    if "mask_decoder.hf_token.weight" in state:  # SAM-HQ
        decoder["vit_dim"] = get("mask_decoder.compress_vit_feat.0.weight").shape[0]
        return SamHQConfig(
            vision_config=SamHQVisionConfig(**vision),
            prompt_encoder_config=SamHQPromptEncoderConfig(**prompt),
            mask_decoder_config=SamHQMaskDecoderConfig(**decoder),
        )
    return SamConfig(
        vision_config=SamVisionConfig(**vision),
        prompt_encoder_config=SamPromptEncoderConfig(**prompt),
        mask_decoder_config=SamMaskDecoderConfig(**decoder),
    )
