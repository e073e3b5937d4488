"""Region prompts in ORIGINAL pixels, validated: ``check_region_prompts`` -> ``RegionPrompts``.

Conventions: boxes x0 y0 x1 y1 (pixel edges) with 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H; points
x y in [0, W] x [0, H]; labels 1 (foreground) or 0 (background); masks [H, W] bool or [0, 1] arrays
(probabilities) at the image's size.

Kinds given together describe the same R regions (SAM's convention: a box, points and a mask
together prompt one region). A region may lack a kind the others have: ``None`` in its place in a
list of boxes, points or masks (or ``[]`` for points), e.g. ``boxes=[[4, 6, 40, 30], None],
points=[None, [[20, 20], [70, 50]]]`` gives a box region and a two-point region in one call. Every
region's result is that of the region alone (``sca.models.segmenters.prompts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from sca.models.segmenters.prompts import PAD_LABEL

__all__ = ["PAD_LABEL", "RegionPrompts", "check_boxes", "check_masks", "check_points", "check_region_prompts"]

_TOLERANCE = 1e-3  # pixels: float rounding at the image border is not an error


@dataclass
class RegionPrompts:
    """Validated prompts of R regions in ORIGINAL pixels (None where no region has that kind).

    boxes: [R, 4] float64 x0 y0 x1 y1; a NaN row for a region without a box.
    points: [R, P, 2] float64 x y; point_labels: [R, P] int64 with 1 foreground, 0 background,
        -10 padding (regions with fewer points, or none).
    masks: R masks [H, W] (bool, or float32 in [0, 1]), None for a region without a mask; an
        [R, H, W] array is taken as R masks."""

    boxes: np.ndarray | None
    points: np.ndarray | None
    point_labels: np.ndarray | None
    masks: list[np.ndarray | None] | None

    def __post_init__(self) -> None:
        if isinstance(self.masks, np.ndarray):
            self.masks = list(self.masks)

    @property
    def num_regions(self) -> int:
        for v in (self.boxes, self.points, self.masks):
            if v is not None:
                return len(v)
        return 0

    def has_box(self, i: int) -> bool:
        return self.boxes is not None and not np.isnan(self.boxes[i]).any()

    def region(self, i: int) -> dict[str, Any]:
        """Region ``i`` as plain lists (padding points dropped), for results and JSON."""
        out: dict[str, Any] = {"box": None, "points": None, "point_labels": None}
        if self.has_box(i):
            out["box"] = [float(v) for v in self.boxes[i]]
        if self.points is not None:
            keep = self.point_labels[i] != PAD_LABEL
            if keep.any():
                out["points"] = self.points[i][keep].tolist()
                out["point_labels"] = self.point_labels[i][keep].astype(int).tolist()
        return out


def _as_float_array(value: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers, got {value!r} ({err})") from None
    if not np.isfinite(a).all():
        raise ValueError(f"{name} hold NaN or inf: {a.tolist()}")
    return a


def _absent(entry: Any) -> bool:
    return entry is None


def check_boxes(boxes: Any, width: int, height: int) -> np.ndarray:
    """[R, 4] or [4] x0 y0 x1 y1 in original pixels, or a list of R boxes or None -> [R, 4] float64
    (NaN rows for None), or ValueError naming the box."""
    if isinstance(boxes, (list, tuple)) and any(_absent(b) for b in boxes):
        present = [i for i, b in enumerate(boxes) if not _absent(b)]
        out = np.full((len(boxes), 4), np.nan)
        if present:
            out[present] = _check_box_rows(_as_float_array([boxes[i] for i in present], "boxes"), width, height,
                                           present)
        return out
    b = _as_float_array(boxes, "boxes")
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]
    return _check_box_rows(b, width, height, None)


def _check_box_rows(b: np.ndarray, width: int, height: int, index: list[int] | None) -> np.ndarray:
    if b.ndim != 2 or b.shape[1] != 4:
        if b.size == 0:
            raise ValueError("boxes is an empty list: give at least one box [x0, y0, x1, y1], or boxes=None")
        raise ValueError(f"boxes must be [R, 4] (x0 y0 x1 y1 per region), got shape {tuple(b.shape)}")
    if b.shape[0] == 0:
        raise ValueError("boxes is an empty list: give at least one box [x0, y0, x1, y1], or boxes=None")
    for j, (x0, y0, x1, y1) in enumerate(b.tolist()):
        i = j if index is None else index[j]
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box {i} {[x0, y0, x1, y1]} is inverted or empty: need x0 < x1 and y0 < y1 "
                             f"(boxes are x0 y0 x1 y1, not x y w h)")
        if x0 < -_TOLERANCE or y0 < -_TOLERANCE or x1 > width + _TOLERANCE or y1 > height + _TOLERANCE:
            raise ValueError(f"box {i} {[x0, y0, x1, y1]} lies outside the {width}x{height} image: "
                             f"need 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
    return np.clip(b, 0, [width, height, width, height])


def _point_rows(points: Any) -> list[np.ndarray]:
    """points in any accepted layout -> R arrays [P_i, 2] (P_i = 0 for a region without points)."""
    if isinstance(points, (np.ndarray, Tensor)):
        a = _as_float_array(points, "points")
        if a.ndim == 2 and a.shape[-1] == 2:
            a = a[:, None]
        if a.ndim != 3 or a.shape[-1] != 2:
            raise ValueError(f"points must be [R, P, 2] or [R, 2] (x y), got shape {tuple(a.shape)}")
        return list(a)
    if not isinstance(points, (list, tuple)) or len(points) == 0:
        raise ValueError("points is an empty list: give at least one region's points, or points=None")
    rows = []
    for i, region in enumerate(points):
        if _absent(region) or (isinstance(region, (list, tuple)) and len(region) == 0):
            rows.append(np.zeros((0, 2)))
            continue
        r = _as_float_array(region, f"points of region {i}")
        r = r[None] if r.ndim == 1 and r.shape[0] == 2 else r
        if r.ndim != 2 or r.shape[-1] != 2:
            raise ValueError(f"points of region {i} must be a list of (x, y), got {np.asarray(region).tolist()}")
        rows.append(r)
    return rows


def check_points(points: Any, point_labels: Any, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of R regions -> ([R, P, 2] float64, [R, P] int64 labels, -10 padding).

    points: [R, P, 2]; [R, 2] (one point per region); or a list of R lists of (x, y) of any lengths
    (None or [] for a region without points).
    point_labels: the same layout without the last axis (default: all 1 = foreground)."""
    rows = _point_rows(points)
    if point_labels is None:
        label_rows = [np.ones(len(r), dtype=np.int64) for r in rows]
    else:
        raw = point_labels.detach().cpu().numpy() if isinstance(point_labels, Tensor) else point_labels
        if isinstance(raw, np.ndarray) and raw.ndim == 1 and all(len(r) == 1 for r in rows):
            raw = raw[:, None]  # [R] labels for [R, 2] points
        if len(raw) != len(rows):
            raise ValueError(f"point_labels has {len(raw)} regions but points has {len(rows)}")
        label_rows = [np.zeros(0) if _absent(x) else np.asarray(x, dtype=np.float64).reshape(-1) for x in raw]
    p_max = max(1, max(len(r) for r in rows))
    pts = np.zeros((len(rows), p_max, 2), dtype=np.float64)
    labels = np.full((len(rows), p_max), PAD_LABEL, dtype=np.int64)
    for i, (r, lab) in enumerate(zip(rows, label_rows, strict=True)):
        if len(lab) != len(r):
            raise ValueError(f"region {i} has {len(r)} points but {len(lab)} labels")
        bad = [v for v in lab.tolist() if v not in (0, 1)]
        if bad:
            raise ValueError(f"point labels must be 1 (foreground) or 0 (background); region {i} has {bad}")
        for x, y in r.tolist():
            if not (-_TOLERANCE <= x <= width + _TOLERANCE and -_TOLERANCE <= y <= height + _TOLERANCE):
                raise ValueError(f"point ({x}, {y}) of region {i} lies outside the {width}x{height} image: "
                                 f"need 0 <= x <= {width} and 0 <= y <= {height}")
        if len(r):
            pts[i, : len(r)] = np.clip(r, 0, [width, height])
            labels[i, : len(r)] = lab.astype(np.int64)
    return pts, labels


def _check_mask(m: Any, i: int, width: int, height: int) -> np.ndarray:
    m = m.detach().cpu().numpy() if isinstance(m, Tensor) else np.asarray(m)
    if m.ndim != 2:
        raise ValueError(f"mask of region {i} must be [H, W], got shape {tuple(m.shape)}")
    if tuple(m.shape) != (height, width):
        raise ValueError(f"masks are {m.shape[1]}x{m.shape[0]} (W x H) but the image is {width}x{height}")
    if m.dtype == np.bool_:
        return m
    if not np.issubdtype(m.dtype, np.number):
        raise ValueError(f"masks must be bool or numbers in [0, 1], got dtype {m.dtype}")
    lo, hi = float(m.min()), float(m.max())
    if not (np.isfinite([lo, hi]).all() and lo >= 0 and hi <= 1):
        raise ValueError(f"masks must be bool or values in [0, 1] (binary or probabilities); got "
                         f"values in [{lo:.4g}, {hi:.4g}]")
    return m.astype(np.float32, copy=False)


def check_masks(masks: Any, width: int, height: int) -> list[np.ndarray | None]:
    """[R, H, W] or [H, W] bool / [0, 1] masks at the image's size, or a list of R masks or None ->
    R masks (bool kept bool, numbers as float32), None for a region without a mask."""
    if isinstance(masks, (list, tuple)):
        if len(masks) == 0:
            raise ValueError("masks is an empty list: give at least one [H, W] mask, or masks=None")
        return [None if _absent(m) else _check_mask(m, i, width, height) for i, m in enumerate(masks)]
    m = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] == 0:
        raise ValueError(f"masks must be [R, H, W] (or one [H, W] mask), got shape {tuple(m.shape)}")
    return [_check_mask(x, i, width, height) for i, x in enumerate(m)]


def check_region_prompts(width: int, height: int, boxes=None, points=None, point_labels=None,
                         masks=None) -> RegionPrompts:
    """Validate every given prompt kind (module docstring); all kinds given describe the same R
    regions, and every region has at least one prompt."""
    if boxes is None and points is None and masks is None:
        if point_labels is not None:
            raise ValueError("point_labels given without points")
        raise ValueError("no prompts: give boxes, points (with optional point_labels) or masks")
    if point_labels is not None and points is None:
        raise ValueError("point_labels given without points")
    b = None if boxes is None else check_boxes(boxes, width, height)
    p, lab = (None, None) if points is None else check_points(points, point_labels, width, height)
    m = None if masks is None else check_masks(masks, width, height)
    counts = {k: len(v) for k, v in (("boxes", b), ("points", p), ("masks", m)) if v is not None}
    if len(set(counts.values())) > 1:
        raise ValueError(f"prompt kinds given together describe the same regions, so their counts must "
                         f"agree; got {counts}")
    out = RegionPrompts(b, p, lab, m)
    for i in range(out.num_regions):
        has_box, has_mask = out.has_box(i), m is not None and m[i] is not None
        real = np.zeros(0) if lab is None else lab[i][lab[i] != PAD_LABEL]
        if not (has_box or has_mask or len(real)):
            raise ValueError(f"region {i} has no prompt: give it a box, a point or a mask (None marks only "
                             f"the kinds a region lacks)")
        if len(real) and not has_box and not has_mask and not (real == 1).any():
            raise ValueError(f"region {i} has only background points (label 0): add a foreground point "
                             f"(label 1) or a box")
    return out
