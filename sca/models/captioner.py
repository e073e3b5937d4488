"""The SCA captioner: frozen SAM -> text feature mixer -> projection -> frozen causal LM (paper.md §1-2).

Regions are handled flat: a batch holds B images and N regions, each region pointing at its image
through ``image_index`` [N]. The image is encoded once; every region is decoded by SAM on its own
(as SAM's point batch does), so regions of different images and numbers of regions per image mix
freely, and a region's result never depends on the others in its batch.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sca.models import hub
from sca.models.config import SCAConfig, dtype_name
from sca.models.lms import LanguageModel
from sca.models.mixer import TextFeatureMixer, init_new_module
from sca.models.segmenters.base import (
    DECODER_LAYER_NORM_EPS_OPTION,
    Prompts,
    Segmenter,
    SegmenterOutput,
    take_rows,
)
from sca.models.text import IGNORE_INDEX, CaptionBatch

__all__ = ["LM_BATCH_SIZE", "CaptionResult", "SCAModel", "SCAOutput", "box_frame_encoding", "check_generation_options",
           "flatten_regions"]


# Regions per LM ``generate`` call, apart from the vision chunk: ViT-B + GPT-2 greedy captioning is
# 1.18x faster at 64 than at the chunk's 32 (benchmarks/bench_lm_batch.py, 2 CPU cores). Its KV cache
# grows with it: 64 regions x 3 beams x 36 layers x 2 x 34 positions x 1280 floats of GPT2-large ~ 2.4 GB.
LM_BATCH_SIZE = 64


def _positive_int(value, name: str, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1 ({hint}), got {value!r}"
                         + (f" of type {type(value).__name__}" if not isinstance(value, numbers.Integral) else ""))


def check_generation_options(num_beams, max_new_tokens, region_chunk_size=1, generate_kwargs=None,
                             lm_batch_size=1) -> None:
    """Raise ValueError naming the bad value unless the generation options are usable: num_beams,
    max_new_tokens, region_chunk_size and lm_batch_size whole numbers >= 1; options that would give
    other than one caption per region (num_return_sequences != 1) or that ``generate`` sets itself
    are refused."""
    _positive_int(num_beams, "num_beams", "1 = greedy; the paper's evaluation uses 3")
    _positive_int(max_new_tokens, "max_new_tokens", "the paper's evaluation uses 20")
    _positive_int(region_chunk_size, "region_chunk_size", "regions through SAM's decoder and the mixer at a time")
    _positive_int(lm_batch_size, "lm_batch_size", "regions through the LM's generate at a time")
    kwargs = generate_kwargs or {}
    if kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError(f"num_return_sequences must be 1 (one caption per region), got "
                         f"{kwargs['num_return_sequences']!r}")
    reserved = sorted({"inputs_embeds", "attention_mask", "input_ids"} & set(kwargs))
    if reserved:
        raise ValueError(f"generate options {reserved} are set by SCAModel.generate itself (the visual prefix); "
                         f"leave them out")


@dataclass
class SCAOutput:
    """loss: scalar caption loss (when captions were given): loss_sum / num_tokens, the mean over
    every caption token of every region (paper.md §2).
    box_loss: the mean auxiliary box loss over the regions (when box targets were given).
    logits: [N, L, V] fp32 logits at the positions that predict the caption tokens (if asked).
    masks: [N, M, 4h, 4w] SAM's low-res mask logits; iou_scores: [N, M]."""

    loss: Tensor | None
    logits: Tensor | None
    masks: Tensor
    iou_scores: Tensor
    loss_sum: Tensor | None = None
    num_tokens: int = 0
    box_loss: Tensor | None = None


@dataclass
class CaptionResult:
    """token_ids: per region the generated ids (EOS and padding removed); captions: decoded text;
    masks: [N, M, 4h, 4w] low-res mask logits; iou_scores: [N, M]."""

    token_ids: list[list[int]]
    captions: list[str]
    masks: Tensor
    iou_scores: Tensor


def box_frame_encoding(segmenter, frames: Tensor, grid: tuple[int, int] | torch.Size) -> Tensor:
    """The segmenter's positional encoding of each token of an h x w grid at its place in a region's
    box frame: frames [N, 4] (x0 y0 x1 y1 as fractions of the input square) -> [N, C, h, w]. Token
    centres map to (x - x0) / (x1 - x0), (y - y0) / (y1 - y0), so the box spans [0, 1] as the whole
    image does in ``image_positional_embeddings`` (``SCAConfig.box_frame_pe``)."""
    h, w = int(grid[0]), int(grid[1])
    frames = frames.float()
    xs = (torch.arange(w, device=frames.device, dtype=torch.float32) + 0.5) / w
    ys = (torch.arange(h, device=frames.device, dtype=torch.float32) + 0.5) / h
    x0, y0, x1, y1 = frames.unbind(1)
    floor = 1.0 / segmenter.image_size  # a degenerate box is one pixel wide
    u = (xs[None] - x0[:, None]) / (x1 - x0).clamp(min=floor)[:, None]  # [N, w]
    v = (ys[None] - y0[:, None]) / (y1 - y0).clamp(min=floor)[:, None]  # [N, h]
    n = len(frames)
    coords = torch.stack([u[:, None, :].expand(n, h, w), v[:, :, None].expand(n, h, w)], dim=-1)
    return segmenter.positional_encoding(coords).permute(0, 3, 1, 2)


MASK_GRID = 16  # side of the grid SAM's mask is resampled to in the region's frame (SCAConfig.mask_token)


def mask_in_frame(masks: Tensor, iou_scores: Tensor, frames: Tensor, grid: int = MASK_GRID) -> Tensor:
    """SAM's chosen mask of each region in its frame: masks [N, M, H, W] low-resolution logits,
    iou_scores [N, M], frames [N, 4] (x0 y0 x1 y1 as fractions of the input square) -> [N, grid *
    grid], +1 where the chosen mask's (highest predicted IoU) logits averaged over the cell are
    positive, else -1. Averaging over each cell (torchvision's RoIAlign, two samples a side) before
    the threshold keeps a frame much larger than the grid from aliasing."""
    from torchvision.ops import roi_align

    n = masks.shape[0]
    chosen = masks[torch.arange(n, device=masks.device), iou_scores.argmax(-1)][:, None].float()  # [N, 1, H, W]
    scale = torch.tensor([chosen.shape[-1], chosen.shape[-2]] * 2, device=frames.device, dtype=torch.float32)
    rois = torch.cat([torch.arange(n, device=frames.device, dtype=torch.float32)[:, None],
                      frames.float() * scale], 1)
    cells = roi_align(chosen, rois.to(chosen.device), output_size=grid, sampling_ratio=2, aligned=True)
    return torch.where(cells.reshape(n, -1) > 0, 1.0, -1.0)


def flatten_regions(prompts: Prompts, image_index: Tensor | None) -> tuple[Prompts, Tensor]:
    """Prompts [B, R, ...] (or [N, 1, ...] with ``image_index`` [N]) -> flat prompts [N, 1, ...] and
    the image of every region [N]."""
    if image_index is None:
        b, r = prompts.batch_size, prompts.num_regions
        device = prompts._first().device
        return prompts.flatten(), torch.arange(b, device=device).repeat_interleave(r)
    if prompts.num_regions != 1:
        raise ValueError(
            f"with image_index, prompts must be flat [N, 1, ...]; got {prompts.num_regions} regions per item"
        )
    if image_index.dim() != 1 or image_index.shape[0] != prompts.batch_size:
        raise ValueError(
            f"image_index must be [N={prompts.batch_size}], got shape {tuple(image_index.shape)}"
        )
    return prompts, image_index


class SCAModel(nn.Module):
    """Segment and Caption Anything.

    Build from a config (parts come from the registries) or hand in built parts:
    ``SCAModel(SCAConfig(...))`` or ``SCAModel(config, segmenter=..., language_model=...)``.
    Every part ends up in ``config.dtype`` (float32 by default). The image-encoder spec may carry
    ``decoder_layer_norm_eps`` (any SAM-based entry): the LayerNorm eps of the mask decoder's two-way
    transformer, set after building (1e-5 = segment-anything's; checkpoints record it).

    Trainable by default (paper.md §1): the mixer, its caption queries, the task tokens and the
    projection (+ any segmenter module the segmenter declares trainable, e.g. a backbone's neck;
    + the LM when ``config.freeze_lm`` is False).
    """

    def __init__(
        self,
        config: SCAConfig,
        *,
        segmenter: Segmenter | None = None,
        language_model: LanguageModel | None = None,
    ):
        super().__init__()
        from sca.models import load_registries

        image_encoders, language_models = load_registries()
        self.config = config
        if segmenter is None:
            name, options = config.part_options("image_encoder")
            eps = options.pop(DECODER_LAYER_NORM_EPS_OPTION, None)
            segmenter = _build_part(image_encoders, name, options, config.dtype)
            if eps is not None:
                segmenter.set_decoder_layer_norm_eps(float(eps))
        if language_model is None:
            name, options = config.part_options("language_model")
            language_model = _build_part(language_models, name, options, config.dtype)
        self.segmenter = segmenter
        self.lm = language_model
        block = segmenter.mixer_block_config()
        self.mixer = TextFeatureMixer(
            hidden_size=block["hidden_size"],
            num_layers=config.num_mixer_layers,
            num_queries=config.num_caption_queries,
            num_attention_heads=block["num_attention_heads"],
            mlp_dim=block["mlp_dim"],
            attention_downsample_rate=block["attention_downsample_rate"],
            hidden_act=block.get("hidden_act", "relu"),
            layer_norm_eps=block.get("layer_norm_eps", 1e-6),
            use_sam_tokens=config.use_sam_tokens,
        )
        h = language_model.hidden_size
        # paper.md §1.6-1.7: one Linear(C, H) applied to every query; 2 tasks x 6 tokens in LM space.
        self.projection = nn.Linear(block["hidden_size"], h)
        self.task_tokens = nn.Embedding(config.num_tasks * config.num_task_tokens, h)
        init_new_module(self.projection)
        init_new_module(self.task_tokens)
        # config.mask_token: SAM's mask in the region's frame -> one more token for the mixer
        self.mask_embedding = None
        if config.mask_token:
            self.mask_embedding = nn.Linear(MASK_GRID * MASK_GRID, block["hidden_size"])
            init_new_module(self.mask_embedding)
        # Training only (config.box_loss_weight > 0): the region's box from its Q caption queries.
        self.box_head = None
        if config.box_loss_weight > 0:
            self.box_head = nn.Linear(config.num_caption_queries * block["hidden_size"], 4)
            init_new_module(self.box_head)
        _cast_(self, config.torch_dtype)
        self.freeze()
        self._lm_logits_to_keep = "logits_to_keep" in inspect.signature(self.lm.model.forward).parameters

    # -- parameters ---------------------------------------------------------------------------------
    def freeze(self) -> None:
        """Apply the config's freezing: SAM frozen (but its declared trainable modules), LM per config."""
        for p in self.segmenter.parameters():
            p.requires_grad_(False)
        for name in self.segmenter.trainable_module_names():
            for p in self.segmenter.get_submodule(name).parameters():
                p.requires_grad_(True)
        for p in self.lm.parameters():
            p.requires_grad_(not self.config.freeze_lm)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass instead of storing them: every mixer block and
        every LM layer (transformers' own checkpointing, non-reentrant, so a frozen LM still passes
        gradients to the visual prefix). Training only; results are unchanged (dropout's random
        state is replayed). The memory that lets the paper's 3B LM or a large batch fit a GPU."""
        self.mixer.gradient_checkpointing = True
        lm = self.lm.model
        if not getattr(lm, "supports_gradient_checkpointing", False):
            raise ValueError(f"language model {self.config.language_model['name']!r} ({type(lm).__name__}) does not "
                             f"support gradient checkpointing; set train.gradient_checkpointing: false")
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The parameters that train (and so must be saved): name -> tensor."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def device(self) -> torch.device:
        return self.projection.weight.device

    @property
    def _segmenter_trains(self) -> bool:
        return self.training and bool(self.segmenter.trainable_module_names())

    # -- the pipeline -------------------------------------------------------------------------------
    def encode_images(self, pixel_values: Tensor) -> dict[str, Tensor]:
        """[B, 3, S, S] normalised pixels -> segmenter features (once per image)."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be [B, 3, S, S], got shape {tuple(pixel_values.shape)}")
        s = self.segmenter.image_size
        if tuple(pixel_values.shape[-2:]) != (s, s):
            raise ValueError(
                f"pixel_values must be {s}x{s} for image encoder {self.config.image_encoder['name']!r}, "
                f"got {tuple(pixel_values.shape[-2:])}; preprocess with sca.data.transforms"
            )
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be a float tensor (normalised), got {pixel_values.dtype}")
        with torch.set_grad_enabled(self._segmenter_trains and torch.is_grad_enabled()):
            return self.segmenter.encode(pixel_values.to(self.segmenter.dtype))

    def segment_regions(self, features: dict[str, Tensor], prompts: Prompts, image_index: Tensor) -> SegmenterOutput:
        """SAM's decoder for flat regions [N, 1, ...]: every region with its own image's features."""
        region_features = {k: take_rows(v, image_index) for k, v in features.items()}
        with torch.set_grad_enabled(self._segmenter_trains and torch.is_grad_enabled()):
            return self.segmenter.decode(region_features, prompts.to(dtype=self.segmenter.dtype),
                                         multimask_output=self.config.multimask_output)

    def visual_prefix(self, seg: SegmenterOutput, task_ids: Tensor, prompts: Prompts | None = None) -> Tensor:
        """SAM outputs of N regions + task ids [N] -> LM prefix [N, tasks_tokens + queries, H]
        = [6 task tokens ; 8 projected caption queries] (paper.md §1.8). ``prompts``: the regions'
        flat prompts [N, 1, ...], which ``config.box_frame_pe`` needs (``region_frames``)."""
        return self._prefix(self._mix(seg, prompts), task_ids)

    def region_frames(self, prompts: Prompts, seg: SegmenterOutput) -> Tensor:
        """[N, 4] each flat region's box (x0 y0 x1 y1 as fractions of the segmenter's input square):
        its box prompt, or, for a region prompted without a box (points, a mask), the box of SAM's
        chosen mask (highest predicted IoU, logits > 0); the whole square if that mask is empty."""
        n = seg.tokens.shape[0]
        size = float(self.segmenter.image_size)
        frames = torch.tensor([0.0, 0.0, 1.0, 1.0], device=seg.tokens.device).repeat(n, 1)
        has_box = torch.zeros(n, dtype=torch.bool, device=frames.device)
        if prompts.boxes is not None:
            boxes = prompts.boxes[:, 0].to(frames)
            has_box = ~boxes.isnan().any(-1)
            frames[has_box] = boxes[has_box] / size
        if bool(has_box.all()):
            return frames
        if seg.masks is None:
            raise ValueError("SCAConfig.box_frame_pe: a region prompted without a box takes the box of SAM's "
                             "mask, but these segments carry no masks; give box prompts or uncached segments")
        rows = torch.nonzero(~has_box).flatten()
        masks = seg.masks[rows, 0]  # [r, M, H, W]
        best = seg.iou_scores[rows, 0].argmax(-1)
        chosen = masks[torch.arange(len(rows), device=masks.device), best] > 0  # [r, H, W]
        h, w = chosen.shape[-2:]
        cols, lines = chosen.any(1), chosen.any(2)  # [r, W], [r, H]
        found = cols.any(1)

        def extent(hit: Tensor, length: int) -> tuple[Tensor, Tensor]:
            idx = torch.arange(length, device=hit.device)
            lo = torch.where(hit, idx, length).min(1).values
            hi = torch.where(hit, idx, -1).max(1).values + 1
            return lo / length, hi / length

        x0, x1 = extent(cols, w)
        y0, y1 = extent(lines, h)
        box = torch.stack([x0, y0, x1, y1], 1).to(frames)
        frames[rows[found]] = box[found]
        return frames

    def key_positional_encoding(self, prompts: Prompts | None, seg: SegmenterOutput) -> Tensor:
        """The mixer's key PE: SAM's image PE [1, C, h, w]; with ``box_frame_pe`` plus, per region,
        the same encoding at each token's place in the region's box frame -> [N, C, h, w]."""
        pe = self.segmenter.image_positional_embeddings()
        if not self.config.box_frame_pe:
            return pe
        if prompts is None:
            raise ValueError("SCAConfig.box_frame_pe: the mixer needs the regions' prompts (their boxes); "
                             "pass prompts to visual_prefix")
        frames = self.region_frames(prompts, seg).to(pe.device, torch.float32)  # [N, 4]
        return pe + box_frame_encoding(self.segmenter, frames, pe.shape[-2:]).to(pe.dtype)

    def region_mask_grid(self, prompts: Prompts | None, seg: SegmenterOutput) -> Tensor:
        """[N, G*G] SAM's chosen mask of each flat region in its frame (``region_frames``), +1 inside
        and -1 outside (``mask_in_frame``); ``seg.mask_grid`` when a caller computed it already."""
        if seg.mask_grid is not None:
            return seg.mask_grid[:, 0]
        if seg.masks is None:
            raise ValueError("SCAConfig.mask_token: the mixer reads SAM's mask, but these segments carry neither "
                             "masks nor mask_grid; give uncached segments")
        if prompts is None:
            raise ValueError("SCAConfig.mask_token: the mask is resampled in the region's box; pass prompts "
                             "to visual_prefix")
        frames = self.region_frames(prompts, seg)
        return mask_in_frame(seg.masks[:, 0], seg.iou_scores[:, 0], frames)

    def _prefix(self, queries: Tensor, task_ids: Tensor) -> Tensor:
        lm_dtype = self.lm.model.get_input_embeddings().weight.dtype
        projected = self.projection(queries).to(lm_dtype)
        k = self.config.num_task_tokens
        if task_ids.min() < 0 or task_ids.max() >= self.config.num_tasks:
            raise ValueError(f"task ids must be in [0, {self.config.num_tasks}) (0 recognition, 1 caption); got {task_ids.tolist()}")
        rows = task_ids[:, None] * k + torch.arange(k, device=task_ids.device)  # [N, 6]
        return torch.cat([self.task_tokens(rows).to(lm_dtype), projected], dim=1)

    def _mix(self, seg: SegmenterOutput, prompts: Prompts | None = None) -> Tensor:
        """The mixer's caption queries [N, Q, C] for N regions. Regions with different numbers of SAM
        tokens (``seg.token_mask``: other prompt kinds) are mixed in groups of equal count, each with
        its own tokens only, so a region's queries never depend on its batch."""
        pe = self.key_positional_encoding(prompts, seg)
        dtype = self.projection.weight.dtype
        pe = pe.to(dtype)
        tokens, image_tokens = seg.tokens[:, 0].to(dtype), seg.image_tokens[:, 0].to(dtype)  # [N, T, C], [N, hw, C]
        extra = None
        if self.mask_embedding is not None:
            extra = self.mask_embedding(self.region_mask_grid(prompts, seg).to(dtype))[:, None]  # [N, 1, C]
        if seg.token_mask is None:
            return self.mixer(tokens, image_tokens, pe, extra)
        counts = seg.token_mask[:, 0].sum(1)  # [N]; each region's own tokens come first
        parts, order = [], []
        for c in torch.unique(counts).tolist():
            rows = torch.nonzero(counts == c).flatten()
            parts.append(self.mixer(tokens[rows, :c], image_tokens[rows], pe if pe.shape[0] == 1 else pe[rows],
                                    None if extra is None else extra[rows]))
            order.append(rows)
        order = torch.cat(order)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return torch.cat(parts).index_select(0, inverse)

    def _task_ids(self, task_ids: Tensor | int | None, n: int) -> Tensor:
        if task_ids is None:
            task_ids = 1  # caption (paper.md §1.7)
        if isinstance(task_ids, int):
            return torch.full((n,), task_ids, dtype=torch.long, device=self.device)
        task_ids = task_ids.reshape(-1).to(self.device)
        if task_ids.shape[0] != n:
            raise ValueError(f"got {task_ids.shape[0]} task ids for {n} regions")
        return task_ids

    def forward(
        self,
        *,
        prompts: Prompts,
        pixel_values: Tensor | None = None,
        features: dict[str, Tensor] | None = None,
        image_index: Tensor | None = None,
        task_ids: Tensor | int | None = None,
        captions: CaptionBatch | None = None,
        return_logits: bool = False,
        segments: SegmenterOutput | None = None,
        box_targets: Tensor | None = None,
    ) -> SCAOutput:
        """Masks and IoU scores for every region and, given captions, the caption loss (paper.md §2).

        prompts: [B, R, ...], or flat [N, 1, ...] with image_index [N].
        captions: CaptionBatch with N rows (sca.models.text.encode_captions), aligned with regions.
        segments: the frozen segmenter's outputs for these regions, [N, 1, ...], already computed
            (``sca.training.segment_cache``): SAM is skipped; masks may be None.
        box_targets: [N, 4] each region's box centre and size as fractions of its image (cx, cy, w,
            h; ``sca.training.sca_task.box_targets``), with captions: ``box_loss`` is the mean
            smooth-L1 error of the box head (needs ``config.box_loss_weight`` > 0).
        """
        prompts, image_index = flatten_regions(prompts.to(self.device), image_index)
        image_index = image_index.to(self.device)
        if segments is not None:
            if segments.tokens.shape[0] != image_index.shape[0]:
                raise ValueError(f"segments hold {segments.tokens.shape[0]} regions for {image_index.shape[0]} prompts")
            seg = SegmenterOutput(*(None if t is None else t.to(self.device) for t in
                                    (segments.masks, segments.iou_scores, segments.tokens, segments.image_tokens,
                                     segments.token_mask, segments.mask_grid)))
        else:
            if features is None:
                if pixel_values is None:
                    raise ValueError("give pixel_values, precomputed features or segments")
                features = self.encode_images(pixel_values)
            seg = self.segment_regions(features, prompts, image_index)
        n = image_index.shape[0]
        loss = logits = loss_sum = box_loss = None
        num_tokens = 0
        if box_targets is not None:
            if self.box_head is None:
                raise ValueError("box_targets need the box head: set SCAConfig.box_loss_weight > 0")
            if captions is None:
                raise ValueError("box_targets are a training loss: give captions too")
            if tuple(box_targets.shape) != (n, 4):
                raise ValueError(f"box_targets must be [{n}, 4] (cx, cy, w, h per region), got {tuple(box_targets.shape)}")
        if captions is not None:
            if captions.input_ids.shape[0] != n:
                raise ValueError(f"{captions.input_ids.shape[0]} captions for {n} regions")
            queries = self._mix(seg, prompts)
            prefix = self._prefix(queries, self._task_ids(task_ids, n))
            loss_sum, num_tokens, logits = self._caption_loss(prefix, captions.to(self.device), return_logits)
            loss = loss_sum / max(num_tokens, 1)
            if box_targets is not None:
                predicted = self.box_head(queries.flatten(1).to(self.box_head.weight.dtype)).float()
                # beta 0.1 of the image: quadratic for small errors, linear (robust) beyond
                box_loss = F.smooth_l1_loss(predicted, box_targets.to(predicted), beta=0.1)
        return SCAOutput(loss=loss, logits=logits, masks=None if seg.masks is None else seg.masks[:, 0],
                         iou_scores=seg.iou_scores[:, 0],
                         loss_sum=loss_sum, num_tokens=num_tokens, box_loss=box_loss)

    def _caption_loss(self, prefix: Tensor, captions: CaptionBatch, return_logits: bool,
                      label_smoothing: float | None = None):
        """(summed CE over caption tokens, token count, logits or None); ``label_smoothing`` None:
        the config's (training), 0.0: the plain likelihood (diagnostics)."""
        p, length = prefix.shape[1], captions.input_ids.shape[1]
        embeds = torch.cat([prefix, self.lm.embed(captions.input_ids)], dim=1)
        attention = torch.cat(
            [torch.ones(prefix.shape[:2], dtype=captions.attention_mask.dtype, device=prefix.device),
             captions.attention_mask], dim=1)
        kwargs = {"logits_to_keep": length + 1} if self._lm_logits_to_keep else {}
        out = self.lm.model(inputs_embeds=embeds, attention_mask=attention, use_cache=False, **kwargs)
        # Positions p-1 .. p+L-2 predict caption tokens 0 .. L-1 (the last query predicts word 1).
        logits = out.logits[:, -(length + 1):-1] if kwargs else out.logits[:, p - 1 : p + length - 1]
        logits = logits.float()  # paper.md §2: loss on fp32 logits
        labels = captions.labels.reshape(-1)
        loss_sum = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels, ignore_index=IGNORE_INDEX,
            label_smoothing=self.config.label_smoothing if label_smoothing is None else label_smoothing,
            reduction="sum",
        )
        return loss_sum, int((labels != IGNORE_INDEX).sum()), (logits if return_logits else None)

    # -- generation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        *,
        prompts: Prompts,
        pixel_values: Tensor | None = None,
        features: dict[str, Tensor] | None = None,
        image_index: Tensor | None = None,
        task_ids: Tensor | int | None = None,
        num_beams: int = 1,
        max_new_tokens: int = 20,
        region_chunk_size: int = 32,
        lm_batch_size: int = LM_BATCH_SIZE,
        **generate_kwargs,
    ) -> CaptionResult:
        """Caption every region: the image is encoded once; regions go through SAM's decoder and the
        mixer in chunks of ``region_chunk_size`` (the vision side's activation memory) and through the
        LM's ``generate`` in batches of ``lm_batch_size`` (a prefix is a few vectors, so the LM batch
        can be larger: each decoding step is then one larger GEMM instead of several small ones).
        Results do not depend on either size. Greedy by default; ``num_beams=3, max_new_tokens=20``
        is the paper's evaluation (§5)."""
        check_generation_options(num_beams, max_new_tokens, region_chunk_size, generate_kwargs, lm_batch_size)
        if features is None:
            if pixel_values is None:
                raise ValueError("give pixel_values or precomputed features")
            features = self.encode_images(pixel_values)
        prompts, image_index = flatten_regions(prompts.to(self.device), image_index)
        image_index = image_index.to(self.device)
        n = image_index.shape[0]
        task_ids = self._task_ids(task_ids, n)
        tok = self.lm.require_tokenizer()
        ids: list[list[int]] = []
        masks, ious = [], []
        options = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        options.update(generate_kwargs)
        for group in range(0, n, lm_batch_size):
            prefixes = []
            for start in range(group, min(n, group + lm_batch_size), region_chunk_size):
                sl = slice(start, min(n, group + lm_batch_size, start + region_chunk_size))
                chunk = prompts.map(lambda t, sl=sl: t[sl])
                seg = self.segment_regions(features, chunk, image_index[sl])
                prefixes.append(self.visual_prefix(seg, task_ids[sl], chunk))
                masks.append(seg.masks[:, 0])
                ious.append(seg.iou_scores[:, 0])
            prefix = torch.cat(prefixes) if len(prefixes) > 1 else prefixes[0]
            attention = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
            out = self.lm.model.generate(inputs_embeds=prefix, attention_mask=attention, **options)
            ids.extend(_strip(row, tok.eos_token_id, tok.pad_token_id) for row in out.tolist())
        captions = [tok.decode(row, skip_special_tokens=True).strip() for row in ids]
        return CaptionResult(ids, captions, torch.cat(masks), torch.cat(ious))

    # -- persistence (sca.models.hub) -------------------------------------------------------------
    def save_pretrained(self, directory, **kwargs) -> None:
        hub.save_pretrained(self, directory, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_hub_id, **kwargs) -> SCAModel:
        return hub.from_pretrained(path_or_hub_id, model_class=cls, **kwargs)


def _build_part(registry, name: str, options: dict, dtype: str):
    """Build a registry part in ``dtype``: handed to a factory that takes a ``dtype`` option (so
    weights load straight into it); a spec whose own ``dtype`` differs is refused."""
    own = options.get("dtype")
    if own is not None and dtype_name(own) != dtype:
        raise ValueError(
            f"{registry.name} {name!r} has dtype {own!r} but SCAConfig.dtype is {dtype!r}: every part is "
            "built in SCAConfig.dtype; set it there (or drop the part's dtype)"
        )
    if "dtype" in registry.get(name).options():
        options = {**options, "dtype": dtype}
    return registry.build(name, **options)


def _cast_(model: nn.Module, dtype: torch.dtype) -> None:
    """``model.to(dtype)``, except that rotary-embedding frequency buffers keep their dtype:
    transformers recomputes them in float32 and keeps them so in any dtype (its ``_init_weights``)."""
    keep = [(m, dict(m._buffers)) for m in model.modules() if "RotaryEmbedding" in type(m).__name__]
    model.to(dtype)
    for module, buffers in keep:
        module._buffers.update(buffers)


def _strip(row: list[int], eos: int, pad: int) -> list[int]:
    """Generated ids up to (not including) the first EOS."""
    out = []
    for t in row:
        if t == eos:
            break
        out.append(t)
    return out
