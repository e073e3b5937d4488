"""Anything-mode thresholds calibrated on validation scenes with ground-truth masks.

SAM's thresholds (predicted IoU > 0.88, stability >= 0.95) belong to SAM's score scale. A segmenter
trained elsewhere predicts on its own: the embedded default's tiny SAM predicts IoUs of at most
about 0.8 on the scenes it was trained on (and those scores do rank its masks: correlation ~0.8
with the true IoU), with stability scores of at most about 0.83, so SAM's thresholds keep nothing.

``calibrate_anything`` runs the mask stage once per scene with the filters open, matches every
candidate with the ground truth, and picks the (pred_iou_thresh, stability_score_thresh) pair whose
kept masks, after the NMS, best find the objects: F1 of precision (kept masks with mask IoU >
``match_iou`` with some object) and recall (objects matched by some kept mask), summed over the
scenes, averaged over the pair's neighbours on the grid (a lone best pair beside a cliff does not
carry over to new scenes); ties go to the higher thresholds. With ``store`` the pair goes into the model's
``config.anything``, which ``save_pretrained`` writes to config.json, so the checkpoint carries its
anything-mode defaults:

    from sca.app.calibrate import calibrate_anything, scenes_from_records
    cal = calibrate_anything(cap, scenes_from_records("data/.../val.jsonl.gz", "data/..."))
    cal.thresholds, cal.f1, cal.at_sam_defaults          # the chosen pair, its F1, SAM's pair's
    cap.model.save_pretrained("runs/finetune/model")     # config.json now has "anything"

or, for a saved checkpoint, ``calibrate_checkpoint(folder, records, images)`` (what the pipeline's
fine-tuning stage does with its ``anything`` section).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sca.app.anything import AnythingConfig, masks_to_boxes, scan_candidates, stability_score, working_size
from sca.app.anything_report import AnythingReport
from sca.models.masks import bilinear_resize

__all__ = ["Calibration", "calibrate_anything", "calibrate_checkpoint", "scenes_from_records"]

PRED_IOU_GRID = tuple(round(v, 2) for v in np.arange(0.0, 0.96, 0.05))
STABILITY_GRID = tuple(round(v, 2) for v in np.arange(0.0, 0.96, 0.05))


@dataclass
class Calibration:
    """thresholds: {"pred_iou_thresh", "stability_score_thresh"} chosen; precision, recall, f1 of
    the masks they keep on the calibration scenes; at_sam_defaults: the same three figures with SAM's
    thresholds (0.88, 0.95); scenes, objects: what was calibrated on."""

    thresholds: dict[str, float]
    precision: float
    recall: float
    f1: float
    at_sam_defaults: dict[str, float]
    scenes: int
    objects: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Scene:
    pred: torch.Tensor  # [n] predicted IoU
    stab: torch.Tensor  # [n] stability
    boxes: torch.Tensor  # [n, 4]
    hits: torch.Tensor  # [n, G] bool: mask IoU > match_iou with object g
    objects: int


def scenes_from_records(records: str | os.PathLike | Iterable, images_root: str | os.PathLike,
                        limit: int | None = None) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """(image [H, W, 3] uint8, ground-truth masks [H, W] bool) for each record (an ImageRecord list or a
    records file) that has region masks, e.g. a segmenter's validation split."""
    from sca.data.images import load_image
    from sca.data.io import iter_records
    from sca.data.masks import rle_decode

    recs = iter_records(records) if isinstance(records, (str, os.PathLike)) else records
    count = 0
    for rec in recs:
        masks = [rle_decode(r.mask).astype(bool) for r in rec.regions if r.mask is not None]
        if not masks:
            continue
        path = Path(rec.file_name) if Path(rec.file_name).is_absolute() else Path(images_root) / rec.file_name
        yield load_image(path).array, masks
        count += 1
        if limit is not None and count >= limit:
            return


@torch.inference_mode()
def _scan_scene(captioner, image, gt_masks, config: AnythingConfig, match_iou: float) -> _Scene:
    enc = captioner.encode(image)
    wh, ww = working_size(enc.geometry)
    width, height = enc.size
    for m in gt_masks:
        if tuple(np.shape(m)) != (height, width):
            raise ValueError(f"a ground-truth mask is {np.shape(m)[::-1]} (W x H) but its image is {width}x{height}")
    gt = torch.stack([bilinear_resize(np.asarray(m, dtype=bool), wh, ww) >= 0.5 for m in gt_masks]).flatten(1).float()
    sx, sy = width / ww, height / wh
    parts: dict[str, list[torch.Tensor]] = {"pred": [], "stab": [], "boxes": [], "hits": []}
    for chunk in scan_candidates(captioner, enc, config, AnythingReport()):
        binary = chunk.logits > 0
        keep = binary.flatten(1).sum(1) * (sx * sy) >= max(1, config.min_mask_area)
        if not keep.any():
            continue
        binary = binary[keep]
        flat = binary.flatten(1).float()
        inter = flat @ gt.T
        union = flat.sum(1, keepdim=True) + gt.sum(1)[None] - inter
        parts["pred"].append(chunk.iou[keep])
        parts["stab"].append(stability_score(chunk.logits[keep], 0.0, config.stability_score_offset))
        parts["boxes"].append(masks_to_boxes(binary) * torch.tensor([sx, sy, sx, sy]))
        parts["hits"].append(inter / union.clamp(min=1) > match_iou)
    if not parts["pred"]:
        return _Scene(torch.zeros(0), torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, len(gt_masks), dtype=torch.bool),
                      len(gt_masks))
    return _Scene(*(torch.cat(parts[k]) for k in ("pred", "stab", "boxes", "hits")), len(gt_masks))


def _score(scenes: list[_Scene], pred_t: float, stab_t: float, nms_iou: float) -> tuple[float, float, float]:
    """(precision, recall, f1) of the masks kept by these thresholds, summed over the scenes."""
    from torchvision.ops import nms

    kept = good = found = objects = 0
    for s in scenes:
        objects += s.objects
        sel = torch.nonzero((s.pred > pred_t) & (s.stab >= stab_t)).flatten()
        if len(sel) == 0:
            continue
        sel = sel[nms(s.boxes[sel], s.pred[sel], nms_iou)]
        hits = s.hits[sel]
        kept += len(sel)
        good += int(hits.any(1).sum())
        found += int(hits.any(0).sum())
    precision = good / kept if kept else 0.0
    recall = found / objects if objects else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def calibrate_anything(captioner, scenes: Iterable[tuple[Any, list[np.ndarray]]], *, match_iou: float = 0.5,
                       pred_grid: Iterable[float] = PRED_IOU_GRID, stability_grid: Iterable[float] = STABILITY_GRID,
                       config: AnythingConfig | None = None, store: bool = True, smooth: int = 2) -> Calibration:
    """Pick anything mode's predicted-IoU and stability thresholds on ``scenes`` ((image, ground-truth
    masks) pairs, e.g. ``scenes_from_records`` of a validation split); see the module docstring.
    ``config``: the other settings (grid, NMS, offset, min area; default: the model's, else SAM's).
    store: write the thresholds into ``captioner.model.config.anything`` (saved with the checkpoint).
    smooth: pairs are ranked by the mean F1 of the (2 smooth + 1)^2 grid pairs around them (0: the pair alone)."""
    if not 0.0 < match_iou < 1.0:
        raise ValueError(f"match_iou must be in (0, 1), got {match_iou!r}")
    if not isinstance(smooth, int) or isinstance(smooth, bool) or smooth < 0:
        raise ValueError(f"smooth must be an int >= 0 (grid steps), got {smooth!r}")
    base = (config or AnythingConfig()).resolve(captioner.model.config.anything)
    open_filters = AnythingConfig(**{**base.to_dict(), "pred_iou_thresh": -1.0, "stability_score_thresh": 0.0})
    scanned = [_scan_scene(captioner, image, masks, open_filters, match_iou) for image, masks in scenes]
    if not scanned:
        raise ValueError("calibrate_anything got no scenes: give (image, ground-truth masks) pairs, e.g. "
                         "scenes_from_records(<validation records>, <images root>)")
    preds, stabs = sorted(pred_grid), sorted(stability_grid)
    scores = np.array([[_score(scanned, p, s, base.nms_iou) for s in stabs] for p in preds])  # [P, S, 3]
    # Choose on F1 averaged over each pair's neighbours (``smooth`` grid steps around it, edges
    # repeated): the best single pair of a few scenes often sits beside a cliff (the predicted IoUs of
    # new scenes shift a little), the best neighbourhood does not. Ties: the higher thresholds.
    f1_grid = scores[..., 2]
    padded = np.pad(f1_grid, smooth, mode="edge")
    window = 2 * smooth + 1
    smoothed = np.lib.stride_tricks.sliding_window_view(padded, (window, window)).mean(axis=(-1, -2))
    order = [(round(float(smoothed[i, j]), 6), preds[i] + stabs[j], i, j)
             for i in range(len(preds)) for j in range(len(stabs))]
    _, _, i, j = max(order)
    p, s = preds[i], stabs[j]
    precision, recall, f1 = (float(v) for v in scores[i, j])
    sam = _score(scanned, 0.88, 0.95, base.nms_iou)
    thresholds = {"pred_iou_thresh": float(p), "stability_score_thresh": float(s)}
    if store:
        captioner.model.config.anything = {**(captioner.model.config.anything or {}), **thresholds}
    return Calibration(thresholds, precision, recall, f1, dict(zip(("precision", "recall", "f1"), sam, strict=True)),
                       len(scanned), sum(x.objects for x in scanned))


def calibrate_checkpoint(checkpoint: str | os.PathLike, records: str | os.PathLike, images: str | os.PathLike, *,
                         max_scenes: int | None = 16, match_iou: float = 0.5, device: str | None = None) -> Calibration:
    """Calibrate the anything-mode thresholds of the checkpoint folder ``checkpoint`` on the scenes of
    ``records`` (images under ``images``; at most ``max_scenes``) and write them into its
    config.json (``sca.models.hub.set_anything_defaults``; its weights are not touched)."""
    from sca.app.api import Captioner
    from sca.models.hub import set_anything_defaults

    if max_scenes is not None and (not isinstance(max_scenes, int) or isinstance(max_scenes, bool) or max_scenes < 1):
        raise ValueError(f"max_scenes must be None or an int >= 1, got {max_scenes!r}")
    cap = Captioner.from_pretrained(checkpoint, device=device)
    cal = calibrate_anything(cap, scenes_from_records(records, images, limit=max_scenes), match_iou=match_iou,
                             store=False)
    set_anything_defaults(checkpoint, {**(cap.model.config.anything or {}), **cal.thresholds})
    return cal
