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

Images larger than ``MAX_IMAGE_PIXELS`` (or a side beyond ``MAX_IMAGE_SIDE``) are refused with
``ImageTooLargeError`` naming the size and the limit; for a file this is decided from its header,
before anything is decoded.

Prompts are in original pixels, validated by ``sca.models.region_prompts`` (re-exported here):
boxes x0 y0 x1 y1 (pixel edges) must satisfy 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H; points x y
must lie in [0, W] x [0, H]; labels are 1 (foreground) or 0 (background); masks are [H, W] bool or
[0, 1] arrays (probabilities) at the image's size. Regions may differ in their prompt kinds.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from sca.data.images import ImageError, image_size, load_image, to_rgb_array
from sca.data.transforms import Geometry, apply_geometry, resize_geometry
from sca.models.masks import CompactMask, bilinear_resize, upsample_to_compact
from sca.models.region_prompts import (
    PAD_LABEL,
    RegionPrompts,
    check_boxes,
    check_masks,
    check_points,
    check_region_prompts,
)
from sca.models.segmenters.base import Prompts

__all__ = ["MASK_PROMPT_LOGIT", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE", "PAD_LABEL", "ImageTooLargeError",
           "RegionProcessor", "RegionPrompts", "check_boxes", "check_image_size", "check_masks", "check_points",
           "check_region_prompts", "to_rgb"]

MASK_PROMPT_LOGIT = 10.0  # a binary mask prompt becomes logits of +-10 (probability p: (2p - 1) * 10)
# The largest image accepted (checked from a file's header before decoding). 150 megapixels: a
# 108 MP phone photo passes; decoded it holds 3 bytes a pixel (450 MB at the limit), and the work
# beyond it is bounded (sca.models.masks). Below PIL's own decompression-bomb error (2 x
# PIL.Image.MAX_IMAGE_PIXELS = 179 MP), whose warning above 89 MP is expected here and silenced.
MAX_IMAGE_PIXELS = 150_000_000
MAX_IMAGE_SIDE = 65_535  # pixels, either side (JPEG's own limit)


class ImageTooLargeError(ValueError):
    """An image beyond ``MAX_IMAGE_PIXELS`` or ``MAX_IMAGE_SIDE``; the message names its size."""


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


def check_image_size(width: int, height: int, what: str = "image") -> None:
    """Raise ``ImageTooLargeError`` naming the size and the limit if the image is too large."""
    if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
            f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels and {MAX_IMAGE_SIDE} pixels a side "
            f"(sca.models.processor.MAX_IMAGE_PIXELS / MAX_IMAGE_SIDE): downscale it first")


def _header_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file's header (EXIF orientation applied), without decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return image_size(path)
    except ImageError as err:
        # PIL refuses to open images beyond 2 x Image.MAX_IMAGE_PIXELS; its message names the size.
        found = re.search(r"Image size \((\d+) pixels\) exceeds limit", err.reason)
        if found:
            raise ImageTooLargeError(
                f"{str(path)!r} has {int(found[1]) / 1e6:.1f} megapixels; the limit is "
                f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels (sca.models.processor.MAX_IMAGE_PIXELS): downscale it "
                f"first") from None
        raise


def _shape_of(image: Any) -> tuple[int, int] | None:
    """(width, height) of an in-memory image, or None if its layout is not known yet."""
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, Tensor):
        return (image.shape[-1], image.shape[-2]) if image.dim() in (2, 3) else None
    if isinstance(image, np.ndarray):
        return (image.shape[1], image.shape[0]) if image.ndim in (2, 3) else None
    return None


def to_rgb(image: Any) -> np.ndarray:
    """Any accepted image (module docstring) -> [H, W, 3] uint8 RGB. Raises ValueError (bad array or
    type; ``ImageTooLargeError`` beyond ``MAX_IMAGE_PIXELS``) or ``sca.data.images.ImageError``
    (missing or undecodable file), naming the problem."""
    if isinstance(image, (str, os.PathLike)):
        width, height = _header_size(image)
        check_image_size(width, height, f"image {str(image)!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # within our own limit
            rgb = load_image(image).array
    else:
        size = _shape_of(image)
        if size is not None:
            check_image_size(*size)
        if isinstance(image, Image.Image):
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
        """Original-pixel prompts of R regions -> ``Prompts`` [1, R, ...] in the S frame (a region
        without a box keeps a NaN box row, one without a mask an all-NaN mask)."""
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
            masks = torch.stack([self._mask_prompt(m, geom) for m in prompts.masks])[None]
        return Prompts(boxes=boxes, points=points, point_labels=labels, masks=masks)

    def _mask_prompt(self, mask: np.ndarray | None, geom: Geometry) -> Tensor:
        """[H, W] bool or probabilities -> [1, 4h, 4w] logits in SAM's low-res frame (padding =
        background); None -> all NaN (no mask). The mask is read a strip at a time
        (``sca.models.masks.bilinear_resize``), so a huge mask is never converted whole."""
        if mask is None:
            return torch.full((1, self.mask_size, self.mask_size), float("nan"))
        cw, ch = geom.content
        frame = torch.zeros(1, 1, self.image_size, self.image_size)
        frame[0, 0, :ch, :cw] = bilinear_resize(mask, ch, cw)
        low = F.interpolate(frame, size=(self.mask_size, self.mask_size), mode="area")[0]
        return (low.clamp(0, 1) * 2 - 1) * MASK_PROMPT_LOGIT

    def content_logits(self, low_res: Tensor, geom: Geometry) -> Tensor:
        """[N, 4h, 4w] low-res logits -> [N, ch, cw] float32 logits at S resolution, padding cropped
        (the first steps of SAM's postprocessing; N x S x S floats at most)."""
        x = F.interpolate(low_res.float()[:, None], size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False)[:, 0]
        cw, ch = geom.content
        return x[:, :ch, :cw]

    def postprocess_masks(self, low_res: Tensor, geom: Geometry) -> Tensor:
        """[N, M, 4h, 4w] low-res logits -> [N, M, H, W] float32 logits on the original image (SAM's
        postprocessing: bilinear to S, crop the padding, bilinear to the original size). N x M x H x W
        floats: for large images use ``postprocess_compact``."""
        if low_res.shape[0] == 0:
            return torch.zeros(0, low_res.shape[1], geom.height, geom.width)
        x = F.interpolate(low_res.float(), size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False)
        cw, ch = geom.content
        x = x[..., :ch, :cw]
        return F.interpolate(x, size=(geom.height, geom.width), mode="bilinear", align_corners=False)

    def postprocess_compact(self, low_res: Tensor, geom: Geometry) -> list[CompactMask]:
        """[N, 4h, 4w] low-res logits -> N binary masks on the original image, ``postprocess_masks(...)
        > 0`` exactly, each built in windows over its own box and stored as column runs: memory per
        mask is S x S floats while it is made, then a few bytes per column it spans."""
        out = []
        for i in range(low_res.shape[0]):
            content = self.content_logits(low_res[i: i + 1], geom)[0]
            out.append(upsample_to_compact(content, geom.height, geom.width))
        return out
