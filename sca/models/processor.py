"""User inputs in original pixels <-> the model's S x S frame, with every check in one place.

``RegionProcessor`` turns an image (a path, a PIL image, a numpy array or a torch tensor) into SAM's
input (paper.md §1 step 1: longest side to S, ImageNet normalisation, bottom/right padding) and
region prompts given in ORIGINAL pixels into ``Prompts`` in the S frame; it maps SAM's low-resolution
mask logits back onto the original image (SAM's ``postprocess_masks``: upsample to S, crop the
padding, resize to the original size).

Accepted images (``to_rgb``), all becoming [H, W, 3] uint8 RGB:

- a path: ``sca.data.images.load_image`` (EXIF orientation applied, every PIL mode converted);
- a PIL image of any mode, taken as it is (no EXIF rotation: prompts refer to its pixels as they
  are); CMYK, palette, 16-bit, float modes are converted; transparency is composited over white;
- a numpy array, channels LAST: [H, W] or [H, W, 1] gray, [H, W, 3] RGB, [H, W, 4] RGBA (alpha
  composited over white, as for files). [H, W, 2] is refused (gray+alpha or two bands: ambiguous);
- a torch tensor, channels FIRST (torchvision's convention): [H, W], [1|3|4, H, W].

Value conventions by dtype: uint8 as is; bool as 0/255; uint16 scaled from [0, 65535]; other
integers must lie in [0, 255]; floats in [0, 1] are scaled by 255 (so a float image whose maximum
is <= 1 is read as [0, 1]); floats in [0, 255] are taken as 8-bit values; anything else (negative,
> 255, NaN/inf: e.g. an already normalised image) is refused with its range in the message.

Prompts are in original pixels: boxes x0 y0 x1 y1 (pixel edges) must satisfy 0 <= x0 < x1 <= W and
0 <= y0 < y1 <= H; points x y must lie in [0, W] x [0, H]; labels are 1 (foreground) or 0
(background); masks are [H, W] bool or [0, 1] arrays (probabilities) at the image's size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from sca.data.images import load_image, to_rgb_array
from sca.data.transforms import Geometry, apply_geometry, resize_geometry
from sca.models.segmenters.base import Prompts

__all__ = ["MASK_PROMPT_LOGIT", "PAD_LABEL", "RegionProcessor", "RegionPrompts", "to_rgb"]

PAD_LABEL = -10  # SAM's label of padding points (ignored by the prompt encoder)
MASK_PROMPT_LOGIT = 10.0  # a binary mask prompt becomes logits of +-10 (probability p: (2p - 1) * 10)
_TOLERANCE = 1e-3  # pixels: float rounding at the image border is not an error


# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------
def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8 by the dtype conventions of the module docstring."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return (a.astype(np.float64) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"integer image values must lie in [0, 255] (uint16 is scaled from [0, 65535]); "
                             f"got {a.dtype} values in [{lo}, {hi}]")
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"float image holds NaN or inf values ({a.dtype})")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 1:
            return (a.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
        if lo >= 0 and hi <= 255:
            return (a.astype(np.float64) + 0.5).clip(0, 255).astype(np.uint8)
        raise ValueError(f"float image values must lie in [0, 1] or [0, 255]; got [{lo:.4g}, {hi:.4g}] "
                         f"(an already normalised image? pass raw pixels)")
    raise ValueError(f"unsupported image dtype {a.dtype}; use uint8, uint16, bool, int or float")


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return (rgb + 0.5).astype(np.uint8)


def _array_to_rgb(a: np.ndarray, what: str) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = _to_uint8(a)
        return np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        hint = ""
        if a.ndim == 3 and a.shape[2] == 2:
            hint = " (2 channels are ambiguous: gray + alpha, or two bands? convert to gray or RGB first)"
        elif a.ndim == 3 and a.shape[0] in (1, 3, 4):
            hint = " (channel-first? numpy arrays are channels-last [H, W, C]; torch tensors are [C, H, W])"
        raise ValueError(f"{what} of shape {tuple(a.shape)} is not an image: expected [H, W] or [H, W, 1] "
                         f"gray, [H, W, 3] RGB or [H, W, 4] RGBA{hint}")
    a = _to_uint8(a)
    return _composite_over_white(a) if a.shape[2] == 4 else np.ascontiguousarray(a)


def to_rgb(image: Any) -> np.ndarray:
    """Any accepted image (module docstring) -> [H, W, 3] uint8 RGB. Raises ValueError (bad array or
    type) or ``sca.data.images.ImageError`` (missing or undecodable file), naming the problem."""
    if isinstance(image, (str, os.PathLike)):
        rgb = load_image(image).array
    elif isinstance(image, Image.Image):
        try:
            rgb = to_rgb_array(image)
        except (ValueError, OSError) as err:
            raise ValueError(f"PIL image of mode {image.mode!r} cannot be converted to RGB ({err})") from None
    elif isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.dim() == 3:
            if t.shape[0] not in (1, 3, 4):
                raise ValueError(f"image tensor of shape {tuple(t.shape)}: tensors must be channel-first "
                                 f"[C, H, W] with C = 1, 3 or 4, or [H, W]")
            t = t.permute(1, 2, 0)
        rgb = _array_to_rgb(t.numpy(), "image tensor")
    elif isinstance(image, np.ndarray):
        rgb = _array_to_rgb(image, "image array")
    else:
        raise ValueError(f"unsupported image type {type(image).__name__}: give a path, a PIL image, a "
                         f"numpy array [H, W(, C)] or a torch tensor [C, H, W]")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"image is empty (shape {tuple(rgb.shape)})")
    return rgb


# ---------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------
@dataclass
class RegionPrompts:
    """Validated prompts of R regions in ORIGINAL pixels (None where not given).

    boxes: [R, 4] float64 x0 y0 x1 y1. points: [R, P, 2] float64 x y. point_labels: [R, P] int64 with
    1 foreground, 0 background, -10 padding (regions with fewer points). masks: [R, H, W] float32 in
    [0, 1]."""

    boxes: np.ndarray | None
    points: np.ndarray | None
    point_labels: np.ndarray | None
    masks: np.ndarray | None

    @property
    def num_regions(self) -> int:
        for v in (self.boxes, self.points, self.masks):
            if v is not None:
                return int(v.shape[0])
        return 0

    def region(self, i: int) -> dict[str, Any]:
        """Region ``i`` as plain lists (padding points dropped), for results and JSON."""
        out: dict[str, Any] = {"box": None, "points": None, "point_labels": None}
        if self.boxes is not None:
            out["box"] = [float(v) for v in self.boxes[i]]
        if self.points is not None:
            keep = self.point_labels[i] != PAD_LABEL
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


def check_boxes(boxes: Any, width: int, height: int) -> np.ndarray:
    """[R, 4] or [4] x0 y0 x1 y1 in original pixels -> [R, 4] float64, or ValueError naming the box."""
    b = _as_float_array(boxes, "boxes")
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        if b.size == 0:
            raise ValueError("boxes is an empty list: give at least one box [x0, y0, x1, y1], or boxes=None")
        raise ValueError(f"boxes must be [R, 4] (x0 y0 x1 y1 per region), got shape {tuple(b.shape)}")
    if b.shape[0] == 0:
        raise ValueError("boxes is an empty list: give at least one box [x0, y0, x1, y1], or boxes=None")
    for i, (x0, y0, x1, y1) in enumerate(b.tolist()):
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box {i} {[x0, y0, x1, y1]} is inverted or empty: need x0 < x1 and y0 < y1 "
                             f"(boxes are x0 y0 x1 y1, not x y w h)")
        if x0 < -_TOLERANCE or y0 < -_TOLERANCE or x1 > width + _TOLERANCE or y1 > height + _TOLERANCE:
            raise ValueError(f"box {i} {[x0, y0, x1, y1]} lies outside the {width}x{height} image: "
                             f"need 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
    return np.clip(b, 0, [width, height, width, height])


def check_points(points: Any, point_labels: Any, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of R regions -> ([R, P, 2] float64, [R, P] int64 labels, -10 padding).

    points: [R, P, 2]; [R, 2] (one point per region); or a list of R lists of (x, y) of any lengths.
    point_labels: the same layout without the last axis (default: all 1 = foreground)."""
    if isinstance(points, (np.ndarray, Tensor)):
        a = _as_float_array(points, "points")
        if a.ndim == 2 and a.shape[-1] == 2:
            a = a[:, None]
        rows = list(a) if a.ndim == 3 else None
        if rows is None:
            raise ValueError(f"points must be [R, P, 2] or [R, 2] (x y), got shape {tuple(a.shape)}")
    else:
        if not isinstance(points, (list, tuple)) or len(points) == 0:
            raise ValueError("points is an empty list: give at least one region's points, or points=None")
        rows = []
        for i, region in enumerate(points):
            r = _as_float_array(region, f"points of region {i}")
            r = r[None] if r.ndim == 1 and r.shape[0] == 2 else r
            if r.ndim != 2 or r.shape[-1] != 2:
                raise ValueError(f"points of region {i} must be a list of (x, y), got {np.asarray(region).tolist()}")
            rows.append(r)
    if len(rows) == 0:
        raise ValueError("points is an empty list: give at least one region's points, or points=None")
    if point_labels is None:
        label_rows = [np.ones(len(r), dtype=np.int64) for r in rows]
    else:
        raw = point_labels.detach().cpu().numpy() if isinstance(point_labels, Tensor) else point_labels
        if isinstance(raw, np.ndarray) and raw.ndim == 1 and all(len(r) == 1 for r in rows):
            raw = raw[:, None]  # [R] labels for [R, 2] points
        if len(raw) != len(rows):
            raise ValueError(f"point_labels has {len(raw)} regions but points has {len(rows)}")
        label_rows = [np.asarray(x, dtype=np.float64).reshape(-1) for x in raw]
    p_max = max(len(r) for r in rows)
    pts = np.zeros((len(rows), p_max, 2), dtype=np.float64)
    labels = np.full((len(rows), p_max), PAD_LABEL, dtype=np.int64)
    for i, (r, lab) in enumerate(zip(rows, label_rows, strict=True)):
        if len(r) == 0:
            raise ValueError(f"region {i} has no points")
        if len(lab) != len(r):
            raise ValueError(f"region {i} has {len(r)} points but {len(lab)} labels")
        bad = [v for v in lab.tolist() if v not in (0, 1)]
        if bad:
            raise ValueError(f"point labels must be 1 (foreground) or 0 (background); region {i} has {bad}")
        for x, y in r.tolist():
            if not (-_TOLERANCE <= x <= width + _TOLERANCE and -_TOLERANCE <= y <= height + _TOLERANCE):
                raise ValueError(f"point ({x}, {y}) of region {i} lies outside the {width}x{height} image: "
                                 f"need 0 <= x <= {width} and 0 <= y <= {height}")
        pts[i, : len(r)] = np.clip(r, 0, [width, height])
        labels[i, : len(r)] = lab.astype(np.int64)
    return pts, labels


def check_masks(masks: Any, width: int, height: int) -> np.ndarray:
    """[R, H, W] or [H, W] bool / [0, 1] masks at the image's size -> [R, H, W] float32."""
    m = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] == 0:
        raise ValueError(f"masks must be [R, H, W] (or one [H, W] mask), got shape {tuple(m.shape)}")
    if tuple(m.shape[1:]) != (height, width):
        raise ValueError(f"masks are {m.shape[2]}x{m.shape[1]} (W x H) but the image is {width}x{height}")
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.number):
            raise ValueError(f"masks must be bool or numbers in [0, 1], got dtype {m.dtype}")
        lo, hi = float(m.min()), float(m.max())
        if not (np.isfinite([lo, hi]).all() and lo >= 0 and hi <= 1):
            raise ValueError(f"masks must be bool or values in [0, 1] (binary or probabilities); got "
                             f"values in [{lo:.4g}, {hi:.4g}]")
    return m.astype(np.float32)


def check_region_prompts(width: int, height: int, boxes=None, points=None, point_labels=None,
                         masks=None) -> RegionPrompts:
    """Validate every given prompt kind; all kinds given describe the same R regions (SAM's convention:
    a box, points and a mask together prompt one region)."""
    if boxes is None and points is None and masks is None:
        if point_labels is not None:
            raise ValueError("point_labels given without points")
        raise ValueError("no prompts: give boxes, points (with optional point_labels) or masks")
    if point_labels is not None and points is None:
        raise ValueError("point_labels given without points")
    b = None if boxes is None else check_boxes(boxes, width, height)
    p, lab = (None, None) if points is None else check_points(points, point_labels, width, height)
    m = None if masks is None else check_masks(masks, width, height)
    counts = {k: v.shape[0] for k, v in (("boxes", b), ("points", p), ("masks", m)) if v is not None}
    if len(set(counts.values())) > 1:
        raise ValueError(f"prompt kinds given together describe the same regions, so their counts must "
                         f"agree; got {counts}")
    if p is not None and b is None and m is None:
        for i in range(p.shape[0]):
            if not (lab[i] == 1).any():
                raise ValueError(f"region {i} has only background points (label 0): add a foreground point "
                                 f"(label 1) or a box")
    return RegionPrompts(b, p, lab, m)


# ---------------------------------------------------------------------------------------------------
# The processor
# ---------------------------------------------------------------------------------------------------
class RegionProcessor:
    """Original image + prompts <-> the segmenter's S x S frame.

    Args:
        image_size: S (1024 for SAM). mask_size: side of SAM's low-res masks (4h = S / 4 for SAM).
        pixel_mean, pixel_std: the segmenter's normalisation on the 0-1 scale.
    """

    def __init__(self, image_size: int, mask_size: int, pixel_mean, pixel_std):
        self.image_size, self.mask_size = int(image_size), int(mask_size)
        self.pixel_mean, self.pixel_std = tuple(pixel_mean), tuple(pixel_std)

    @classmethod
    def for_segmenter(cls, segmenter) -> RegionProcessor:
        return cls(segmenter.image_size, 4 * segmenter.embedding_size, segmenter.pixel_mean, segmenter.pixel_std)

    def preprocess(self, rgb: np.ndarray) -> tuple[Tensor, Geometry]:
        """[H, W, 3] uint8 -> (pixel_values [1, 3, S, S] float32, Geometry original -> S frame)."""
        geom = resize_geometry(rgb.shape[1], rgb.shape[0], self.image_size)
        out = apply_geometry(rgb, geom, pixel_mean=self.pixel_mean, pixel_std=self.pixel_std)
        return out.pixel_values[None], geom

    def to_model(self, prompts: RegionPrompts, geom: Geometry) -> Prompts:
        """Original-pixel prompts of R regions -> ``Prompts`` [1, R, ...] in the S frame."""
        if geom.flipped:
            raise ValueError("RegionProcessor maps prompts through a resize geometry only (no flip)")
        sx, sy = geom.scale
        ox, oy = geom.offset
        boxes = points = labels = masks = None
        if prompts.boxes is not None:
            boxes = torch.from_numpy(geom.boxes_to_input(prompts.boxes)).float()[None]
        if prompts.points is not None:
            p = prompts.points * np.array([sx, sy]) - np.array([ox, oy])
            points = torch.from_numpy(p).float()[None]
            labels = torch.from_numpy(prompts.point_labels)[None]
        if prompts.masks is not None:
            masks = self._mask_prompt(prompts.masks, geom)[None]
        return Prompts(boxes=boxes, points=points, point_labels=labels, masks=masks)

    def _mask_prompt(self, masks: np.ndarray, geom: Geometry) -> Tensor:
        """[R, H, W] probabilities -> [R, 1, 4h, 4w] logits in SAM's low-res frame (padding = background)."""
        cw, ch = geom.content
        m = torch.from_numpy(masks)[:, None]
        frame = torch.zeros(m.shape[0], 1, self.image_size, self.image_size)
        frame[..., :ch, :cw] = F.interpolate(m, size=(ch, cw), mode="bilinear", align_corners=False)
        low = F.interpolate(frame, size=(self.mask_size, self.mask_size), mode="area")
        return (low.clamp(0, 1) * 2 - 1) * MASK_PROMPT_LOGIT

    def postprocess_masks(self, low_res: Tensor, geom: Geometry) -> Tensor:
        """[N, M, 4h, 4w] low-res logits -> [N, M, H, W] float32 logits on the original image (SAM's
        postprocessing: bilinear to S, crop the padding, bilinear to the original size)."""
        if low_res.shape[0] == 0:
            return torch.zeros(0, low_res.shape[1], geom.height, geom.width)
        x = F.interpolate(low_res.float(), size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False)
        cw, ch = geom.content
        x = x[..., :ch, :cw]
        return F.interpolate(x, size=(geom.height, geom.width), mode="bilinear", align_corners=False)
