"""Image and prompt transforms into the model's ``S x S`` input frame (paper.md §1 step 1 and §3).

Everything is described by one ``Geometry``: a horizontal flip of the original image (optional), a
per-axis scale, and a crop offset. A pixel-edge coordinate maps as::

    x_in = (W - x if flipped else x) * scale_x - offset_x
    y_in = y * scale_y - offset_y

- SAM preprocessing (``resize_geometry``): longest side to S (SAM's ``ResizeLongestSide``: new size
  ``int(side * S / max(h, w) + 0.5)``, prompts scaled per axis by new/old size), offset 0, no flip.
- Large-scale jitter (``jitter_geometry``, Ghiasi et al. 2021 as detectron2's ``ResizeScale`` +
  ``FixedSizeCrop``): the longest side goes to ``s * S`` with ``s ~ U(0.1, 2.0)``, then a random
  ``S x S`` crop where the image is larger; plus a horizontal flip with probability ``hflip``.

``apply_geometry`` renders the image (one PIL bilinear resize of just the cropped source region, so
an s = 2 jitter never builds the 2x image), scales 1/255, normalises with the ImageNet mean/std and
pads bottom/right with 0 (after normalising = the mean colour). Boxes are clamped to the image
content and boxes left empty are dropped; masks follow the image (bilinear, threshold 0.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLIP_TEXT = ("keep", "swap-left-right")

__all__ = [
    "FLIP_TEXT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Geometry",
    "TransformConfig",
    "Transformed",
    "apply_geometry",
    "denormalize",
    "jitter_geometry",
    "resize_geometry",
    "swap_left_right",
]


@dataclass
class TransformConfig:
    """image_size: S. jitter/hflip apply at train only (the dataset's ``train`` flag).
    flip_text: "keep" leaves captions unchanged under a flip (paper.md §3); "swap-left-right" swaps
    the words left/right (for data whose captions state positions, like the synthetic set).
    min_box_size: boxes whose width or height in the S frame is <= this are dropped (0: empty only).
    """

    image_size: int = 1024
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    jitter: bool = True
    scale_range: tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.5
    flip_text: str = "keep"
    min_box_size: float = 0.0

    def __post_init__(self) -> None:
        if int(self.image_size) < 16:
            raise ValueError(f"TransformConfig.image_size must be >= 16, got {self.image_size!r}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"TransformConfig.scale_range must be 0 < lo <= hi, got {self.scale_range!r}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"TransformConfig.hflip is a probability in [0, 1], got {self.hflip!r}")
        if self.flip_text not in FLIP_TEXT:
            raise ValueError(f"TransformConfig.flip_text {self.flip_text!r} is not one of {FLIP_TEXT}")


@dataclass(frozen=True)
class Geometry:
    """Original image (width x height) -> S x S frame. content: (width, height) of the image inside
    the frame (the rest is padding). scale: (sx, sy). offset: (ox, oy) crop origin in scaled pixels."""

    size: int
    width: int
    height: int
    scale: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)
    flipped: bool = False
    content: tuple[int, int] = (0, 0)

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """[R, 4] original-pixel boxes -> [R, 4] S-frame boxes (not clamped)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        if self.flipped:
            b[:, [0, 2]] = self.width - b[:, [2, 0]]
        b[:, [0, 2]] = b[:, [0, 2]] * self.scale[0] - self.offset[0]
        b[:, [1, 3]] = b[:, [1, 3]] * self.scale[1] - self.offset[1]
        return b

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """[R, 4] S-frame boxes -> [R, 4] original-pixel boxes (the inverse of ``boxes_to_input``)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] + self.offset[0]) / self.scale[0]
        b[:, [1, 3]] = (b[:, [1, 3]] + self.offset[1]) / self.scale[1]
        if self.flipped:
            b[:, [0, 2]] = self.width - b[:, [2, 0]]
        return b

    def source_box(self, ax: float = 1.0, ay: float = 1.0) -> tuple[float, float, float, float]:
        """The region of the source image that the content shows, in source pixels, for a source
        that has (ax, ay) pixels per original pixel (1 for the original itself)."""
        x0 = self.offset[0] / self.scale[0]
        x1 = (self.offset[0] + self.content[0]) / self.scale[0]
        if self.flipped:
            x0, x1 = self.width - x1, self.width - x0
        y0 = self.offset[1] / self.scale[1]
        y1 = (self.offset[1] + self.content[1]) / self.scale[1]
        # Rounding can put an edge a hair outside the image (e.g. -1e-13 after a flip): PIL refuses that.
        x0, x1 = max(0.0, x0), min(float(self.width), x1)
        y0, y1 = max(0.0, y0), min(float(self.height), y1)
        return (x0 * ax, y0 * ay, x1 * ax, y1 * ay)


def _scaled_size(width: int, height: int, longest: float) -> tuple[int, int]:
    s = longest / max(width, height)
    return max(1, int(width * s + 0.5)), max(1, int(height * s + 0.5))


def resize_geometry(width: int, height: int, size: int) -> Geometry:
    """SAM preprocessing: longest side to ``size``, no crop, no flip."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    sw, sh = _scaled_size(width, height, size)
    return Geometry(size, width, height, (sw / width, sh / height), (0.0, 0.0), False, (sw, sh))


def jitter_geometry(width: int, height: int, size: int, rng: np.random.Generator,
                    scale_range: tuple[float, float] = (0.1, 2.0), hflip: float = 0.5) -> Geometry:
    """Large-scale jitter: longest side to ``s * size``, s ~ U(scale_range), random ``size`` crop,
    horizontal flip with probability ``hflip`` (paper.md §3)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    s = float(rng.uniform(*scale_range))
    flipped = bool(rng.random() < hflip)
    sw, sh = _scaled_size(width, height, s * size)
    ox = int(rng.integers(0, sw - size + 1)) if sw > size else 0
    oy = int(rng.integers(0, sh - size + 1)) if sh > size else 0
    content = (min(size, sw - ox), min(size, sh - oy))
    return Geometry(size, width, height, (sw / width, sh / height), (float(ox), float(oy)), flipped, content)


@dataclass
class Transformed:
    """pixel_values: [3, S, S] float32. boxes: [R', 4] float32 S-frame boxes of the kept regions.
    keep: [R] bool over the input boxes. masks: [R', S, S] bool or None."""

    pixel_values: Tensor
    boxes: Tensor
    keep: np.ndarray
    masks: Tensor | None


def _render(img: Image.Image, geom: Geometry, resample: Image.Resampling,
            scale: tuple[float, float] | None = None) -> Image.Image:
    ax, ay = scale if scale is not None else (img.size[0] / geom.width, img.size[1] / geom.height)
    out = img.resize(geom.content, resample=resample, box=geom.source_box(ax, ay))
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if geom.flipped else out


def apply_geometry(image: np.ndarray, geom: Geometry, boxes: np.ndarray | None = None,
                   masks: list[np.ndarray] | None = None, *, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
                   min_box_size: float = 0.0, image_scale: tuple[float, float] | None = None) -> Transformed:
    """Render ``image`` ([H, W, 3] uint8, any resolution of the original) into the S frame.

    boxes: [R, 4] original-pixel boxes. masks: R arrays [height, width] bool at the original size
    (``geom.height x geom.width``), or None. Dropped boxes drop their masks too.
    image_scale: (x, y) image pixels per original pixel; default image size / original size (give
    ``LoadedImage.pixel_scale`` after a JPEG draft decode, whose size is rounded up).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"apply_geometry needs a [H, W, 3] uint8 image, got {image.dtype} {image.shape}")
    size = geom.size
    crop = np.array(_render(Image.fromarray(image), geom, Image.Resampling.BILINEAR, image_scale))
    # numpy, in place and single-threaded: per-sample work in loader processes stays cheap, and torch's
    # intra-op threads never contend on small tensors when loading runs in the main process.
    pixels = np.zeros((3, size, size), dtype=np.float32)  # padding: 0 after normalising
    content = pixels[:, : crop.shape[0], : crop.shape[1]]
    content[...] = crop.transpose(2, 0, 1)  # uint8 -> float32
    mean = np.asarray(pixel_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(pixel_std, dtype=np.float32)[:, None, None]
    content *= 1.0 / (255.0 * std)
    content -= mean / std  # = (x / 255 - mean) / std

    b = geom.boxes_to_input(np.zeros((0, 4)) if boxes is None else boxes)
    cw, ch = geom.content
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, cw)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, ch)
    keep = ((b[:, 2] - b[:, 0]) > min_box_size) & ((b[:, 3] - b[:, 1]) > min_box_size)

    out_masks = None
    if masks is not None:
        if len(masks) != len(b):
            raise ValueError(f"apply_geometry got {len(masks)} masks for {len(b)} boxes")
        frames = np.zeros((int(keep.sum()), size, size), dtype=bool)
        for j, i in enumerate(np.flatnonzero(keep)):
            m = np.asarray(masks[i], dtype=bool)
            if m.shape != (geom.height, geom.width):
                raise ValueError(f"mask {i} has shape {m.shape}, expected {(geom.height, geom.width)}")
            r = np.asarray(_render(Image.fromarray(m.astype(np.uint8) * 255), geom, Image.Resampling.BILINEAR))
            frames[j, : r.shape[0], : r.shape[1]] = r >= 128
        out_masks = torch.from_numpy(frames)
    return Transformed(torch.from_numpy(pixels), torch.from_numpy(b[keep].astype(np.float32)), keep, out_masks)


def denormalize(pixel_values: Tensor, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD) -> np.ndarray:
    """[3, S, S] normalised -> [S, S, 3] uint8 (padding shows as the mean colour)."""
    mean = torch.tensor(pixel_mean)[:, None, None]
    std = torch.tensor(pixel_std)[:, None, None]
    x = (pixel_values.detach().cpu().float() * std + mean).clamp(0, 1) * 255 + 0.5
    return x.to(torch.uint8).permute(1, 2, 0).numpy()


_LEFT_RIGHT = re.compile(r"\b(left|right)(?=(?:most|wards?)?\b)", re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """Swap the words left/right (also leftmost, left-hand, ...), keeping case: a flipped image's
    caption for data whose captions name sides."""

    def swap(m: re.Match) -> str:
        word = m.group(1)
        new = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return new.upper()
        return new.capitalize() if word[0].isupper() else new

    return _LEFT_RIGHT.sub(swap, text)
