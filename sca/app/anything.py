"""Anything mode: SAM's automatic masks for the whole image, then a caption for every kept mask.

The mask stage follows the recipe of SAM's automatic mask generator (Kirillov et al. 2023, facts
from its paper and code, re-written here): a regular grid of single foreground points prompts SAM
(every point gives M = 3 candidate masks); candidates are kept when their predicted IoU is
``> pred_iou_thresh`` (0.88) and their stability score is ``>= stability_score_thresh`` (0.95), the
stability score being the IoU between the mask thresholded at ``+offset`` and at ``-offset`` (1.0)
on its logits at the original resolution; duplicates are removed by box non-maximum suppression at
IoU 0.7 with the predicted IoU as score. SAM's defaults: 32 x 32 points in batches of 64. Not
done here: SAM's multi-crop mode and its small-region/hole post-processing.

Captions: every kept mask is captioned with its tight box as the prompt (SCA is trained on box
prompts, paper.md §4), reusing the image encoding; the result carries the automatic mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from sca.models.processor import RegionPrompts

__all__ = ["AnythingConfig", "MaskProposals", "caption_everything", "generate_masks", "masks_to_boxes",
           "point_grid", "stability_score"]


@dataclass
class AnythingConfig:
    """Defaults are SAM's automatic mask generator's (points_per_side 32, pred_iou_thresh 0.88,
    stability_score_thresh 0.95, stability offset 1.0, box NMS 0.7).
    min_mask_area: masks with fewer pixels are dropped (empty masks always are).
    max_regions: caption at most this many masks (the best by predicted IoU); None: all.
    mask_chunk_size: candidate masks upsampled to full resolution at a time (bounds memory)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    nms_iou: float = 0.7
    min_mask_area: int = 0
    max_regions: int | None = None
    mask_chunk_size: int = 16

    def __post_init__(self) -> None:
        for name in ("points_per_side", "points_per_batch", "mask_chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "nms_iou"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [-1, 1] (IoU scale), got {value!r}")
        if not isinstance(self.stability_score_offset, (int, float)) or self.stability_score_offset < 0:
            raise ValueError(f"stability_score_offset must be >= 0, got {self.stability_score_offset!r}")
        if not isinstance(self.min_mask_area, int) or self.min_mask_area < 0:
            raise ValueError(f"min_mask_area must be an int >= 0, got {self.min_mask_area!r}")
        if self.max_regions is not None and (not isinstance(self.max_regions, int) or self.max_regions < 1):
            raise ValueError(f"max_regions must be None or an int >= 1, got {self.max_regions!r}")


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
    """Masks kept by anything mode, best predicted IoU first. masks: [K, H, W] bool; boxes [K, 4]
    pixel-edge; iou_scores, stability_scores [K]; points [K, 2] the grid point that prompted each;
    mask_index [K] which of SAM's M masks it was."""

    masks: np.ndarray
    boxes: np.ndarray
    iou_scores: np.ndarray
    stability_scores: np.ndarray
    points: np.ndarray
    mask_index: np.ndarray
    num_candidates: int = 0  # masks SAM proposed before any filter

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@torch.inference_mode()
def generate_masks(captioner, enc, config: AnythingConfig, progress: bool = False) -> MaskProposals:
    """The mask stage for an ``EncodedImage`` (see the module docstring)."""
    model, proc, geom = captioner.model, captioner.processor, enc.geometry
    width, height = enc.size
    grid = point_grid(config.points_per_side, width, height)
    starts = range(0, len(grid), config.points_per_batch)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="anything: masks", unit="batch", total=len(starts))
    packed, boxes, ious, stabs, points, index = [], [], [], [], [], []
    total = 0
    for start in starts:
        pts = grid[start: start + config.points_per_batch]  # [b, 2]
        rp = RegionPrompts(None, pts[:, None], np.ones((len(pts), 1), dtype=np.int64), None)
        prompts = proc.to_model(rp, geom).flatten().to(captioner.device, captioner.dtype)  # [b, 1, ...]
        seg = model.segment_regions(enc.features, prompts, torch.zeros(len(pts), dtype=torch.long,
                                                                        device=captioner.device))
        low, iou = seg.masks[:, 0].float(), seg.iou_scores[:, 0].float()  # [b, M, 4h, 4w], [b, M]
        m = low.shape[1]
        total += low.shape[0] * m
        low, iou = low.flatten(0, 1), iou.flatten()  # [b*M, 4h, 4w], [b*M]
        keep = torch.nonzero(iou > config.pred_iou_thresh).flatten()
        for c in range(0, len(keep), config.mask_chunk_size):
            sel = keep[c: c + config.mask_chunk_size]
            full = proc.postprocess_masks(low[sel][:, None], geom)[:, 0]  # [k, H, W] logits
            stab = stability_score(full, 0.0, config.stability_score_offset)
            binary = full > 0
            area = binary.flatten(1).sum(1)
            ok = (stab >= config.stability_score_thresh) & (area >= max(1, config.min_mask_area))
            if not ok.any():
                continue
            binary = binary[ok]
            boxes.append(masks_to_boxes(binary))
            packed.extend(np.packbits(b.cpu().numpy().ravel()) for b in binary)
            ious.append(iou[sel][ok].cpu())
            stabs.append(stab[ok].cpu())
            flat = sel[ok].cpu()
            points.append(torch.from_numpy(pts)[flat // m])
            index.append(flat % m)
    if not packed:
        empty = np.zeros((0,))
        return MaskProposals(np.zeros((0, height, width), bool), np.zeros((0, 4)), empty, empty,
                             np.zeros((0, 2)), np.zeros((0,), np.int64), total)
    all_boxes, all_ious = torch.cat(boxes), torch.cat(ious)
    kept = batched_nms(all_boxes, all_ious, torch.zeros(len(all_ious), dtype=torch.long), config.nms_iou)
    if config.max_regions is not None:
        kept = kept[: config.max_regions]
    kept_np = kept.numpy()
    masks = np.stack([np.unpackbits(packed[i], count=height * width).reshape(height, width).astype(bool)
                      for i in kept_np])
    return MaskProposals(masks, all_boxes[kept].numpy(), all_ious[kept].numpy(), torch.cat(stabs)[kept].numpy(),
                         torch.cat(points)[kept].numpy(), torch.cat(index)[kept].numpy(), total)


def caption_everything(captioner, image: Any, config: AnythingConfig, *, task: str | int = "caption",
                       num_beams: int = 3, max_new_tokens: int = 20, progress: bool = False):
    """Image -> [RegionCaption] for every mask anything mode keeps, best predicted IoU first."""
    enc = captioner.encode(image)
    proposals = generate_masks(captioner, enc, config, progress=progress)
    if len(proposals) == 0:
        return []
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
    return results
