"""Anything mode: SAM's automatic masks for the whole image, then a caption for every kept mask.

The mask stage follows the recipe of SAM's automatic mask generator (Kirillov et al. 2023, facts
from its paper and code, re-written here): a regular grid of single foreground points prompts SAM
(every point gives M = 3 candidate masks); candidates are kept when their predicted IoU is
``> pred_iou_thresh`` and their stability score is ``>= stability_score_thresh``, the stability
score being the IoU between the mask thresholded at ``+offset`` and at ``-offset`` on its logits;
duplicates are removed by box non-maximum suppression at IoU ``nms_iou`` with the predicted IoU as
score. Not done here: SAM's multi-crop mode and its small-region/hole post-processing.

Defaults (``AnythingConfig``, every threshold left None): the checkpoint's own (``SCAConfig.anything``,
calibrated on its segmenter's validation data by ``sca.app.calibrate``), else SAM's (32 x 32 points,
0.88, 0.95, offset 1.0, NMS 0.7). SAM's thresholds suit SAM's score scale; a tiny SAM trained
elsewhere predicts lower IoUs and would keep nothing.

Every result carries an ``AnythingReport`` (``result.report``): how many candidates each filter
removed, the highest predicted IoU and stability seen, and where each threshold came from. An empty
result also raises an ``AnythingWarning`` whose message is ``report.summary()`` (CLI and demo show it).

Memory is bounded whatever the image's size: candidates are filtered at the original size up to
``WORK_PIXELS`` (1 megapixel, about SAM's frame), beyond it at the image scaled down to that many
pixels; only their scores, boxes and prompts are kept; the masks that survive are decoded again and
upsampled to the original size window by window into ``CompactMask`` column runs
(``sca.models.masks``). For images above 1 megapixel, stability, area and NMS boxes are thus
computed at about SAM's resolution (SAM's generator: at the original size).

Captions: every kept mask is captioned with its tight box as the prompt (SCA is trained on box
prompts, paper.md §4), reusing the image encoding; the result carries the automatic mask.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sca.app.anything_report import AnythingReport, AnythingResult, AnythingWarning
from sca.app.arguments import resolve_task
from sca.app.heap import release_free_memory
from sca.models.config import ANYTHING_KEYS
from sca.models.masks import CompactMask
from sca.models.region_prompts import RegionPrompts

__all__ = ["SAM_DEFAULTS", "WORK_PIXELS", "AnythingConfig", "is_unset", "AnythingReport", "AnythingResult", "AnythingWarning",
           "MaskProposals", "caption_everything", "generate_masks", "masks_to_boxes", "point_grid",
           "stability_score"]

# SAM's automatic mask generator's defaults (segment-anything amg.py), for what a checkpoint does not set.
# Candidates are filtered at no more than this many pixels (1 megapixel, about SAM's 1024 x 1024
# frame): below it at the original size, exactly as SAM's generator; the memory of the mask stage is
# then mask_chunk_size x WORK_PIXELS floats whatever the image's size.
WORK_PIXELS = 1 << 20
SAM_DEFAULTS: dict[str, Any] = {"points_per_side": 32, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95,
                                "stability_score_offset": 1.0, "nms_iou": 0.7, "min_mask_area": 0}


class _UnsetFloat(float):
    """A float nobody set: SAM's default, until ``AnythingConfig.resolve`` puts the checkpoint's."""

    def __repr__(self) -> str:
        return f"unset({float(self)!r})"


class _UnsetInt(int):
    """An int nobody set (see ``_UnsetFloat``)."""

    def __repr__(self) -> str:
        return f"unset({int(self)!r})"


def _unset(key: str):
    value = SAM_DEFAULTS[key]
    return _UnsetInt(value) if isinstance(value, int) else _UnsetFloat(value)


def is_unset(value: Any) -> bool:
    """True for a setting left to the checkpoint / SAM: None or a default nobody gave."""
    return value is None or isinstance(value, (_UnsetFloat, _UnsetInt))


@dataclass
class AnythingConfig:
    """Settings of anything mode. Every field of ``ANYTHING_KEYS`` not given (or given as None)
    holds SAM's value (``SAM_DEFAULTS``) marked unset, which ``resolve`` replaces by the checkpoint's
    (``SCAConfig.anything``) when it has one; ``generate_masks`` always resolves.

    points_per_side: grid of n x n point prompts. points_per_batch: points decoded at a time.
    pred_iou_thresh: keep masks whose predicted IoU is > this. stability_score_thresh: keep masks
    whose stability score is >= this; stability_score_offset: its logit offset. nms_iou: box NMS IoU.
    min_mask_area: masks with fewer pixels (original image) are dropped (empty masks always are).
    max_regions: caption at most this many masks (the best by predicted IoU); None: all.
    mask_chunk_size: candidate masks scored at a time at the working size (bounds memory).
    sources: filled by ``resolve``: where each value came from ("given", "checkpoint", "SAM's default")."""

    points_per_side: int | None = _unset("points_per_side")
    points_per_batch: int = 64
    pred_iou_thresh: float | None = _unset("pred_iou_thresh")
    stability_score_thresh: float | None = _unset("stability_score_thresh")
    stability_score_offset: float | None = _unset("stability_score_offset")
    nms_iou: float | None = _unset("nms_iou")
    min_mask_area: int | None = _unset("min_mask_area")
    max_regions: int | None = None
    mask_chunk_size: int = 16
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def _validate(self) -> None:
        for name in ("points_per_side", "points_per_batch", "mask_chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "nms_iou"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [-1, 1] (IoU scale), got {value!r}")
        offset = self.stability_score_offset
        if not isinstance(offset, (int, float)) or isinstance(offset, bool) or offset < 0:
            raise ValueError(f"stability_score_offset must be >= 0, got {offset!r}")
        area = self.min_mask_area
        if not isinstance(area, int) or isinstance(area, bool) or area < 0:
            raise ValueError(f"min_mask_area must be an int >= 0, got {area!r}")
        if self.max_regions is not None and (not isinstance(self.max_regions, int) or self.max_regions < 1):
            raise ValueError(f"max_regions must be None or an int >= 1, got {self.max_regions!r}")

    def __post_init__(self) -> None:
        for key in ANYTHING_KEYS:
            if getattr(self, key) is None:
                setattr(self, key, _unset(key))
        self._validate()

    @property
    def resolved(self) -> bool:
        return not any(is_unset(getattr(self, k)) for k in ANYTHING_KEYS)

    def resolve(self, checkpoint: dict[str, Any] | None = None) -> AnythingConfig:
        """A copy with every unset value taken from ``checkpoint`` (a model's ``config.anything``),
        else SAM's (``SAM_DEFAULTS``), as plain numbers; ``sources`` names where each came from."""
        values, sources = {}, {}
        for key in ANYTHING_KEYS:
            value = getattr(self, key)
            if not is_unset(value):
                values[key], sources[key] = value, self.sources.get(key, "given")
            elif checkpoint and checkpoint.get(key) is not None:
                values[key], sources[key] = checkpoint[key], "checkpoint"
            else:
                values[key], sources[key] = SAM_DEFAULTS[key], "SAM's default"
        try:
            return replace(self, **values, sources=sources)
        except ValueError as err:
            raise ValueError(f"anything-mode settings of the checkpoint (config.json 'anything' "
                             f"{checkpoint}): {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (unset ones as SAM's numbers)."""
        def plain(v):
            return int(v) if isinstance(v, _UnsetInt) else float(v) if isinstance(v, _UnsetFloat) else v

        return {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name != "sources"}


def point_grid(points_per_side: int, width: int, height: int) -> np.ndarray:
    """[n*n, 2] x y points at the centres of an n x n grid of cells over the image (row-major)."""
    centres = (np.arange(points_per_side) + 0.5) / points_per_side
    xs, ys = np.meshgrid(centres * width, centres * height)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def stability_score(logits: Tensor, threshold: float = 0.0, offset: float = 1.0) -> Tensor:
    """[N, H, W] mask logits -> [N] IoU of (logits > threshold + offset) vs (logits > threshold - offset).
    The first mask lies inside the second, so the IoU is their area ratio; an empty union gives 0."""
    inter = (logits > threshold + offset).flatten(1).sum(1).float()
    union = (logits > threshold - offset).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def masks_to_boxes(masks: Tensor) -> Tensor:
    """[N, H, W] bool -> [N, 4] float pixel-edge boxes x0 y0 x1 y1 (a mask on columns 3..7 has x0 3,
    x1 8); empty masks give [0, 0, 0, 0]."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4)
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]
    xr = torch.arange(w, device=masks.device)
    yr = torch.arange(h, device=masks.device)
    x0 = torch.where(cols, xr, w).min(1).values
    x1 = torch.where(cols, xr, -1).max(1).values + 1
    y0 = torch.where(rows, yr, h).min(1).values
    y1 = torch.where(rows, yr, -1).max(1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(cols.any(1)[:, None], boxes, torch.zeros_like(boxes))


@dataclass
class MaskProposals:
    """Masks kept by anything mode, best predicted IoU first. masks: K ``CompactMask`` at the original
    size (``.to_dense()``: [H, W] bool); boxes [K, 4] pixel-edge boxes of those masks; iou_scores,
    stability_scores [K]; points [K, 2] the grid point that prompted each; mask_index [K] which of
    SAM's M masks it was; report: what each filter removed."""

    masks: list[CompactMask]
    boxes: np.ndarray
    iou_scores: np.ndarray
    stability_scores: np.ndarray
    points: np.ndarray
    mask_index: np.ndarray
    report: AnythingReport = field(default_factory=AnythingReport)

    @property
    def num_candidates(self) -> int:
        """Masks SAM proposed before any filter."""
        return self.report.candidates

    def __len__(self) -> int:
        return len(self.masks)


@dataclass
class _Scored:
    """Candidates of one chunk that passed the predicted-IoU filter, scored at the working size."""

    point: Tensor  # [k] grid point index
    mask_index: Tensor  # [k]
    iou: Tensor  # [k]
    logits: Tensor  # [k, wh, ww] at the working size


def working_size(geom) -> tuple[int, int]:
    """(height, width) anything mode filters at: the original size up to ``WORK_PIXELS``, beyond it
    the original scaled down to that many pixels (aspect kept): at most about SAM's own frame."""
    h, w = geom.height, geom.width
    if h * w <= WORK_PIXELS:
        return h, w
    f = math.sqrt(WORK_PIXELS / (h * w))
    return max(1, int(h * f)), max(1, int(w * f))


def _decode_points(captioner, enc, pts: np.ndarray) -> tuple[Tensor, Tensor]:
    """[b, 2] original-pixel points -> SAM's low-res logits [b, M, 4h, 4w] and predicted IoU [b, M]."""
    rp = RegionPrompts(None, pts[:, None], np.ones((len(pts), 1), dtype=np.int64), None)
    prompts = captioner.processor.to_model(rp, enc.geometry).flatten().to(captioner.device, captioner.dtype)
    index = torch.zeros(len(pts), dtype=torch.long, device=captioner.device)
    seg = captioner.model.segment_regions(enc.features, prompts, index)
    return seg.masks[:, 0].float().cpu(), seg.iou_scores[:, 0].float().cpu()


# Freed chunks of candidate logits at least this large are handed back to the system at once: the
# heap would keep such blocks (sca.app.heap; a chunk is 64 MiB at 1 megapixel). Smaller chunks are
# reused as they are, and a trim after each (about 2 ms) would cost more than scanning them (a chunk
# of a 128-px image is 1 MiB).
TRIM_MIN_BYTES = 8 << 20


def scan_candidates(captioner, enc, config: AnythingConfig, report: AnythingReport, progress: bool = False):
    """Yield ``_Scored`` chunks (at most ``mask_chunk_size`` candidates) of every grid point's masks
    whose predicted IoU is > ``config.pred_iou_thresh``; counts go to ``report``."""
    proc, geom = captioner.processor, enc.geometry
    grid = point_grid(config.points_per_side, *enc.size)
    wh, ww = working_size(geom)
    starts = range(0, len(grid), config.points_per_batch)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="anything: masks", unit="batch", total=len(starts))
    for start in starts:
        low, iou = _decode_points(captioner, enc, grid[start: start + config.points_per_batch])
        m = low.shape[1]
        report.candidates += iou.numel()
        report.observe("pred_iou", iou)
        low, iou = low.flatten(0, 1), iou.flatten()  # [b*M, 4h, 4w], [b*M]
        keep = torch.nonzero(iou > config.pred_iou_thresh).flatten()
        report.remove("pred_iou", iou.numel() - keep.numel())
        for c in range(0, len(keep), config.mask_chunk_size):
            sel = keep[c: c + config.mask_chunk_size]
            logits = proc.content_logits(low[sel], geom)  # [k, ch, cw]
            if (wh, ww) != tuple(logits.shape[-2:]):
                logits = F.interpolate(logits[:, None], size=(wh, ww), mode="bilinear", align_corners=False)[:, 0]
            nbytes = logits.numel() * logits.element_size()
            yield _Scored(start + sel // m, sel % m, iou[sel], logits)
            del logits
            if nbytes >= TRIM_MIN_BYTES:
                release_free_memory()  # the freed logits would otherwise stay in the heap (sca.app.heap)
        del low


@torch.inference_mode()
def generate_masks(captioner, enc, config: AnythingConfig, progress: bool = False) -> MaskProposals:
    """The mask stage for an ``EncodedImage`` (see the module docstring)."""
    from torchvision.ops import batched_nms

    cfg = config.resolve(getattr(captioner.model.config, "anything", None))
    geom = enc.geometry
    report = AnythingReport(config=cfg.to_dict(), sources=dict(cfg.sources))
    wh, ww = working_size(geom)
    sx, sy = geom.width / ww, geom.height / wh
    min_area = max(1, cfg.min_mask_area)
    kept: dict[str, list[Tensor]] = {k: [] for k in ("point", "index", "iou", "stab", "box")}
    for chunk in scan_candidates(captioner, enc, cfg, report, progress):
        stab = stability_score(chunk.logits, 0.0, cfg.stability_score_offset)
        report.observe("stability", stab)
        binary = chunk.logits > 0
        ok_stab = stab >= cfg.stability_score_thresh
        ok_area = binary.flatten(1).sum(1) * (sx * sy) >= min_area
        report.remove("stability", int((~ok_stab).sum()))
        report.remove("min_area", int((ok_stab & ~ok_area).sum()))
        ok = ok_stab & ok_area
        if ok.any():
            boxes = masks_to_boxes(binary[ok]) * torch.tensor([sx, sy, sx, sy])
            for key, value in (("point", chunk.point[ok]), ("index", chunk.mask_index[ok]), ("iou", chunk.iou[ok]),
                               ("stab", stab[ok]), ("box", boxes)):
                kept[key].append(value)
    if not kept["iou"]:
        return _proposals(enc, [], report)
    cand = {k: torch.cat(v) for k, v in kept.items()}
    order = batched_nms(cand["box"], cand["iou"], torch.zeros(len(cand["iou"]), dtype=torch.long), cfg.nms_iou)
    report.remove("nms", len(cand["iou"]) - len(order))
    if cfg.max_regions is not None and len(order) > cfg.max_regions:
        report.remove("max_regions", len(order) - cfg.max_regions)
        order = order[: cfg.max_regions]
    chosen = {k: v[order] for k, v in cand.items()}
    return _proposals(enc, _final_masks(captioner, enc, cfg, chosen, report), report)


def _final_masks(captioner, enc, cfg: AnythingConfig, chosen: dict[str, Tensor], report: AnythingReport) -> list:
    """Decode the kept candidates' points again and upsample their masks to the original size as
    ``CompactMask``; exact areas below the minimum are dropped (counted under min_area)."""
    grid = point_grid(cfg.points_per_side, *enc.size)
    out = []
    for start in range(0, len(chosen["iou"]), cfg.points_per_batch):
        rows = slice(start, start + cfg.points_per_batch)
        points = chosen["point"][rows]
        low, _ = _decode_points(captioner, enc, grid[points.numpy()])
        picked = low[torch.arange(len(points)), chosen["index"][rows]]  # [b, 4h, 4w]
        for j, mask in enumerate(captioner.processor.postprocess_compact(picked, enc.geometry)):
            if mask.area >= max(1, cfg.min_mask_area):
                out.append((start + j, mask))
            else:
                report.remove("min_area", 1)
        del low, picked
        release_free_memory()
    return [(mask, int(chosen["point"][k]), int(chosen["index"][k]), float(chosen["iou"][k]),
             float(chosen["stab"][k])) for k, mask in out]


def _proposals(enc, items: list, report: AnythingReport) -> MaskProposals:
    report.kept = len(items)
    if not items:
        return MaskProposals([], np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 2)),
                             np.zeros(0, np.int64), report)
    per_side = int(report.config["points_per_side"])
    grid_points = point_grid(per_side, *enc.size)
    masks = [m for m, *_ in items]
    return MaskProposals(masks, np.array([m.box() for m in masks], dtype=np.float64),
                         np.array([it[3] for it in items]), np.array([it[4] for it in items]),
                         grid_points[[it[1] for it in items]], np.array([it[2] for it in items], np.int64), report)


def caption_everything(captioner, image: Any, config: AnythingConfig | None = None, *, task: str | int = "caption",
                       num_beams: int = 3, max_new_tokens: int = 20, progress: bool = False) -> AnythingResult:
    """Image -> ``AnythingResult`` (a list of ``RegionCaption``, best predicted IoU first, with
    ``.report``) for every mask anything mode keeps. An empty result warns (``AnythingWarning``)
    with ``report.summary()``. Task and generation options are checked before any work."""
    from sca.models.captioner import check_generation_options

    resolve_task(task)
    check_generation_options(num_beams, max_new_tokens)
    enc = captioner.encode(image)
    proposals = generate_masks(captioner, enc, config or AnythingConfig(), progress=progress)
    if len(proposals) == 0:
        warnings.warn(proposals.report.summary(), AnythingWarning, stacklevel=2)
        return AnythingResult([], proposals.report)
    prompts = RegionPrompts(proposals.boxes.astype(np.float64), None, None, None)
    results = captioner.caption_prompts(enc, prompts, task=task, num_beams=num_beams,
                                        max_new_tokens=max_new_tokens, progress=progress, with_masks=False)
    for k, r in enumerate(results):
        # The region is the automatic mask; its box was the caption prompt (kept in ``box``).
        r.mask = proposals.masks[k]
        r.iou_score = float(proposals.iou_scores[k])
        r.iou_scores = [r.iou_score]
        r.mask_index = int(proposals.mask_index[k])
        r.points = [[float(v) for v in proposals.points[k]]]
        r.point_labels = [1]
        r.stability_score = float(proposals.stability_scores[k])
    return AnythingResult(results, proposals.report)
