"""Robust image loading: every readable image becomes an 8-bit RGB array, every failure names its file.

``load_image(path)`` returns a ``LoadedImage`` with ``array`` ``[H, W, 3]`` uint8 and notes of what
was done on the way (kind, detail), which the dataset turns into report entries:

- EXIF orientation (tags 2-8) is applied, as detectron2 and torchvision's ``decode_image`` do, so the
  array is the photo as a viewer shows it ("image_exif"). A broken EXIF block is ignored (noted).
- Modes: grayscale ``L``/``1``, palette ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` are converted by
  Pillow. Images with transparency (``RGBA``, ``LA``, ``PA``, ``P``/``RGB`` with a tRNS colour) are
  composited over white (transparent pixels of web images are mostly meant as page background).
  16-bit grayscale (``I;16*``) is scaled by 255/65535; 32-bit ``I`` and float ``F`` images are scaled
  by their range (``[0, 1]`` floats by 255). Every conversion is noted ("image_mode").
- JPEG draft mode: with ``min_size=(w, h)`` a JPEG is decoded at the smallest power-of-two reduction
  that stays at least that large (libjpeg DCT scaling, much faster for big photos and small ``S``);
  ``LoadedImage.size`` still gives the full (EXIF-oriented) size, so annotations map by the ratio.

Errors raise ``ImageError`` with ``kind`` "image_missing" or "image_corrupt" (truncated, not an image,
unsupported mode, decompression bomb) and the path in the message.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "LoadedImage", "image_size", "load_image", "to_rgb_array"]

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError, UnidentifiedImageError)


class ImageError(Exception):
    """An image that cannot be used. ``kind`` is "image_missing" or "image_corrupt"."""

    def __init__(self, path: str | os.PathLike, kind: str, reason: str):
        self.path, self.kind, self.reason = str(path), kind, reason
        super().__init__(f"{kind}: {path}: {reason}")


@dataclass
class LoadedImage:
    """array: [H, W, 3] uint8 RGB. size: (width, height) of the full-resolution, EXIF-oriented image.
    pixel_scale: (x, y) array pixels per full-resolution pixel: 1 unless a JPEG draft reduced the
    decode by k, then exactly 1/k (the array's last row/column may cover a partial block, so this is
    not array size / size). notes: [(kind, detail)]."""

    array: np.ndarray
    size: tuple[int, int]
    notes: list[tuple[str, str]] = field(default_factory=list)
    pixel_scale: tuple[float, float] = (1.0, 1.0)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a malformed EXIF block: the pixels are still fine
        return 1


def _scale_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    a = a.astype(np.float64)
    if mode.startswith("I;16"):
        a = a * (255.0 / 65535.0)
    elif mode == "F" and a.size and np.nanmin(a) >= 0 and np.nanmax(a) <= 1:
        a = a * 255.0
    else:  # 32-bit int or float: by range
        lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (0.0, 1.0)
        if mode == "I" and lo >= 0 and hi <= 65535:
            lo, hi = 0.0, (255.0 if hi <= 255 else 65535.0)
        a = (a - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.nan_to_num(a) + 0.5, 0, 255).astype(np.uint8)


def to_rgb_array(img: Image.Image, notes: list[tuple[str, str]] | None = None) -> np.ndarray:
    """A loaded PIL image of any mode -> [H, W, 3] uint8 RGB; conversions appended to ``notes``."""
    notes = notes if notes is not None else []
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(img), mode)
        if gray.ndim == 3:  # multi-band high-bit-depth image: keep the first three bands
            gray = gray[..., :3] if gray.shape[-1] >= 3 else gray[..., :1].repeat(3, -1)
            notes.append(("image_mode", f"{mode} {gray.shape[-1]}-band scaled to 8-bit RGB"))
            return np.ascontiguousarray(gray)
        notes.append(("image_mode", f"{mode} scaled to 8-bit RGB"))
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        try:
            rgba = img.convert("RGBA")
        except ValueError:
            rgba = img.convert("LA").convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append(("image_mode", f"{mode} with transparency composited over white"))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    notes.append(("image_mode", f"{mode} converted to RGB"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_image(path: str | os.PathLike, *, exif: bool = True,
               min_size: tuple[int, int] | None = None) -> LoadedImage:
    """Decode ``path`` to 8-bit RGB (see the module docstring). Raises ``ImageError``."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "image_missing", "no such file" if not path.exists() else "not a file")
    notes: list[tuple[str, str]] = []
    try:
        with Image.open(path) as img:
            orientation = _orientation(img) if exif else 1
            swap = orientation in (5, 6, 7, 8)  # transposing orientations
            full = img.size[::-1] if swap else img.size
            pixel_scale = (1.0, 1.0)
            if min_size is not None and img.format == "JPEG":
                want = tuple(min_size)[::-1] if swap else tuple(min_size)
                raw = img.size
                drafted = img.draft(img.mode, (max(1, int(want[0])), max(1, int(want[1]))))
                if drafted is not None:  # (mode, box): the full image maps to box in the reduced one
                    box = drafted[1]
                    pixel_scale = (box[2] / raw[0], box[3] / raw[1])
                    pixel_scale = pixel_scale[::-1] if swap else pixel_scale
            img.load()
            if getattr(img, "n_frames", 1) > 1:
                notes.append(("image_mode", f"{img.n_frames} frames; the first is used"))
            if orientation in range(2, 9):
                img = ImageOps.exif_transpose(img)
                notes.append(("image_exif", f"EXIF orientation {orientation} applied"))
            array = to_rgb_array(img, notes)
    except _DECODE_ERRORS as err:
        raise ImageError(path, "image_corrupt", f"{type(err).__name__}: {err}") from None
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ImageError(path, "image_corrupt", f"decoded to an unusable array of shape {array.shape}")
    return LoadedImage(array, (int(full[0]), int(full[1])), notes, pixel_scale)


def image_size(path: str | os.PathLike, *, exif: bool = True) -> tuple[int, int]:
    """(width, height) as ``load_image`` would return it, from the header only. Raises ``ImageError``."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "image_missing", "no such file" if not path.exists() else "not a file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            return (h, w) if exif and _orientation(img) in (5, 6, 7, 8) else (w, h)
    except _DECODE_ERRORS as err:
        raise ImageError(path, "image_corrupt", f"{type(err).__name__}: {err}") from None
