"""Masks at the original image's resolution in memory bounded whatever the image's size.

A 108-megapixel photo's mask logits take 432 MB in float32; anything mode's hundreds of candidates
cannot each have them. Here nothing of size H x W is ever made in float:

- ``bilinear_window``: any window (rows, columns) of a bilinear resize, computed as PyTorch's
  ``F.interpolate(mode="bilinear", align_corners=False)`` computes it (same source taps, weights and
  operation order), reading only the source rows and columns that window needs;
- ``CompactMask``: a binary [H, W] mask as runs down its columns (column x, rows y0:y1); memory is
  12 bytes a run (a blob has about one run per column it spans), with area, box, dense form and
  COCO RLE computed from the runs;
- ``upsample_to_compact``: mask logits in SAM's frame [ch, cw] -> ``CompactMask`` at H x W, built
  window by window (``TILE_PIXELS`` at a time) over the columns of the mask's box only.

Resizes of at most ``TILE_PIXELS`` (source and output) run through ``F.interpolate`` itself; larger
ones through the windows, which reproduce its large-size CPU kernel bit for bit (checked in
tests/models/test_masks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sca.data.masks import _counts_to_string

__all__ = ["TILE_PIXELS", "CompactMask", "bilinear_resize", "bilinear_taps", "bilinear_window",
           "upsample_to_compact"]

TILE_PIXELS = 1 << 21  # output pixels per window: 8 MB of float32 logits (+ 4 gathered taps of that size)


def bilinear_taps(in_size: int, out_size: int, start: int = 0, stop: int | None = None
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source taps of output indices ``start:stop`` of a 1-D bilinear resize ``in_size -> out_size``
    (align_corners=False, no antialias): (i0, i1 [n] long, w0, w1 [n] float32), as PyTorch's CPU
    kernel computes them: scale = in / out in float32, src = max(scale * (dst + 0.5) - 0.5, 0) with
    one rounding to float32 (the kernel's fused multiply-add: two roundings differ by an ulp),
    i0 = floor(src), i1 = i0 + 1 but at most in_size - 1, w1 = src - i0, w0 = 1 - w1."""
    stop = out_size if stop is None else stop
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    dst = torch.arange(start, stop, dtype=torch.float64)
    src = (scale.double() * (dst + 0.5) - 0.5).float().clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    w1 = (src - i0).clamp(0, 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, 1 - w1, w1


def _gather(src: Any, rows: Tensor, cols: Tensor) -> Tensor:
    """src [h, w] (Tensor or numpy, any dtype) -> float32 Tensor src[rows][:, cols]."""
    if isinstance(src, np.ndarray):
        block = src[rows.numpy()][:, cols.numpy()]
        return torch.from_numpy(np.ascontiguousarray(block)).float()
    return src[rows][:, cols].float()


def bilinear_window(src: Any, out_h: int, out_w: int, rows: tuple[int, int], cols: tuple[int, int],
                    taps: tuple[tuple, tuple] | None = None) -> Tensor:
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` of the bilinear resize of ``src``
    [h, w] (Tensor or numpy array, any dtype) to ``out_h x out_w``, as float32 [nr, nc]. Equal to
    ``F.interpolate(src[None, None].float(), (out_h, out_w), mode="bilinear")[0, 0, r0:r1, c0:c1]``
    without making the full resize. ``taps``: precomputed ``bilinear_taps`` of the whole output
    (rows, columns), to reuse over many windows."""
    h, w = src.shape[-2:]
    (r0, r1), (c0, c1) = rows, cols
    if taps is None:
        ty, tx = bilinear_taps(h, out_h, r0, r1), bilinear_taps(w, out_w, c0, c1)
    else:
        ty = tuple(t[r0:r1] for t in taps[0])
        tx = tuple(t[c0:c1] for t in taps[1])
    (y0, y1, hy0, hy1), (x0, x1, wx0, wx1) = ty, tx
    ylo, yhi, xlo, xhi = int(y0[0]), int(y1[-1]) + 1, int(x0[0]), int(x1[-1]) + 1
    block = _gather(src, torch.arange(ylo, yhi), torch.arange(xlo, xhi))  # the source rows/cols needed
    top, bottom = block[y0 - ylo], block[y1 - ylo]  # [nr, nsrc_cols]
    j0, j1 = x0 - xlo, x1 - xlo
    wx0, wx1 = wx0[None], wx1[None]
    # PyTorch's order: each row-tap interpolated along the width, then the two combined.
    # With its fused multiply-adds: t = v0 * w0 + (v1 * w1), the product in brackets rounded.
    t0 = _fma(top[:, j0], wx0, top[:, j1] * wx1)
    t1 = _fma(bottom[:, j0], wx0, bottom[:, j1] * wx1)
    return _fma(t0, hy0[:, None], t1 * hy1[:, None])


def _fma(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """float32 a * b + c with one rounding (the CPU kernel's fused multiply-add): the float32 product
    is exact in float64, and so is, all but always, its sum with c."""
    return (a.double() * b.double() + c.double()).float()


def _small(in_pixels: int, out_pixels: int) -> bool:
    """Small enough to resize whole: PyTorch's own kernel then gives the result by definition (its
    small-size paths round differently from the large-size one ``bilinear_window`` follows)."""
    return max(in_pixels, out_pixels) <= TILE_PIXELS


def _interpolate(src: Any, out_h: int, out_w: int) -> Tensor:
    t = torch.from_numpy(np.asarray(src)) if isinstance(src, np.ndarray) else src
    return F.interpolate(t.float()[None, None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0, 0]


def bilinear_resize(src: Any, out_h: int, out_w: int) -> Tensor:
    """The whole bilinear resize of ``src`` [h, w] to [out_h, out_w] float32, computed in row strips
    of at most ``TILE_PIXELS`` (so a huge source is read a strip at a time, never converted whole)."""
    if _small(src.shape[-2] * src.shape[-1], out_h * out_w):
        return _interpolate(src, out_h, out_w)
    taps = (bilinear_taps(src.shape[-2], out_h), bilinear_taps(src.shape[-1], out_w))
    step = max(1, TILE_PIXELS // max(out_w, 1))
    return torch.cat([bilinear_window(src, out_h, out_w, (r, min(out_h, r + step)), (0, out_w), taps)
                      for r in range(0, out_h, step)])


@dataclass(frozen=True, eq=False)
class CompactMask:
    """A binary mask of ``height x width`` as runs down its columns: pixel (y, x) is set iff some run
    k has ``cols[k] == x`` and ``y0[k] <= y < y1[k]``. cols, y0, y1: [K] int32, sorted by column
    then row, runs of a column disjoint and not touching."""

    height: int
    width: int
    cols: np.ndarray
    y0: np.ndarray
    y1: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> CompactMask:
        z = np.zeros(0, np.int32)
        return cls(int(height), int(width), z, z, z)

    @classmethod
    def from_window(cls, window: np.ndarray, height: int, width: int, top: int = 0, left: int = 0) -> CompactMask:
        """[nr, nc] bool window placed at (top, left) of a height x width mask."""
        w = np.asarray(window, dtype=bool)
        edges = np.diff(np.pad(w, ((1, 1), (0, 0))).view(np.int8), axis=0).T  # [nc, nr + 1]
        sc, sr = np.nonzero(edges == 1)  # run starts, by column then row
        _, er = np.nonzero(edges == -1)  # run ends, in the same order
        return cls(int(height), int(width), (sc + left).astype(np.int32), (sr + top).astype(np.int32),
                   (er + top).astype(np.int32))

    @classmethod
    def from_dense(cls, mask: np.ndarray) -> CompactMask:
        m = np.asarray(mask, dtype=bool)
        if m.ndim != 2:
            raise ValueError(f"CompactMask.from_dense needs a [H, W] mask, got shape {m.shape}")
        return cls.from_window(m, *m.shape)

    @classmethod
    def concat(cls, parts: list[CompactMask], height: int, width: int) -> CompactMask:
        """Join masks covering disjoint, increasing column ranges (the windows of one mask)."""
        parts = [p for p in parts if len(p.cols)]
        if not parts:
            return cls.empty(height, width)
        return cls(int(height), int(width), *(np.concatenate([getattr(p, k) for p in parts])
                                              for k in ("cols", "y0", "y1")))

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def area(self) -> int:
        return int((self.y1.astype(np.int64) - self.y0).sum())

    @property
    def nbytes(self) -> int:
        return int(self.cols.nbytes + self.y0.nbytes + self.y1.nbytes)

    def box(self) -> list[float] | None:
        """[x0, y0, x1, y1] pixel-edge box, None when empty."""
        if not len(self.cols):
            return None
        return [float(self.cols[0]), float(self.y0.min()), float(self.cols[-1] + 1), float(self.y1.max())]

    def to_dense(self) -> np.ndarray:
        """[H, W] bool (H x W bytes: made only when asked for)."""
        m = np.zeros((self.height, self.width), dtype=bool)
        for x, a, b in zip(self.cols.tolist(), self.y0.tolist(), self.y1.tolist(), strict=True):
            m[a:b, x] = True
        return m

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        m = self.to_dense()
        return m if dtype is None else m.astype(dtype)

    def rle(self) -> dict[str, Any]:
        """COCO compressed RLE ``{"size": [H, W], "counts": str}`` (as ``sca.data.masks.rle_encode``
        of the dense mask), from the runs: column-major order is the runs' order."""
        h, total = self.height, self.height * self.width
        if not len(self.cols):
            return {"size": [h, self.width], "counts": _counts_to_string([total] if total else [])}
        starts = self.cols.astype(np.int64) * h + self.y0
        ends = self.cols.astype(np.int64) * h + self.y1
        split = starts[1:] != ends[:-1]  # a run ending at a column's bottom joins one starting the next column's top
        starts, ends = starts[np.r_[True, split]], ends[np.r_[split, True]]
        gaps = starts - np.r_[0, ends[:-1]]
        counts = np.stack([gaps, ends - starts], axis=1).ravel().tolist()
        if ends[-1] < total:
            counts.append(int(total - ends[-1]))
        return {"size": [h, self.width], "counts": _counts_to_string(counts)}


def upsample_to_compact(content: Tensor, height: int, width: int) -> CompactMask:
    """Mask logits [ch, cw] (SAM's frame, padding cropped) -> ``CompactMask`` of
    ``bilinear resize to height x width > 0`` (SAM's ``postprocess_masks`` thresholded at 0). Only the
    windows that can hold a set pixel are computed: an output pixel is set only if one of its source
    taps is positive, so rows and columns whose taps all lie outside the positive box are skipped."""
    content = content.float()
    if _small(content.numel(), height * width):
        return CompactMask.from_dense((_interpolate(content, height, width) > 0).numpy())
    positive = content > 0
    rows_any, cols_any = positive.any(1), positive.any(0)
    if not bool(rows_any.any()):
        return CompactMask.empty(height, width)
    ch, cw = content.shape
    ty, tx = bilinear_taps(ch, height), bilinear_taps(cw, width)

    def span(taps, any_src) -> tuple[int, int]:
        idx = torch.nonzero(any_src).flatten()
        lo, hi = int(idx[0]), int(idx[-1])
        hit = torch.nonzero((taps[0] <= hi) & (taps[1] >= lo)).flatten()
        return int(hit[0]), int(hit[-1]) + 1

    (r0, r1), (c0, c1) = span(ty, rows_any), span(tx, cols_any)
    step = max(1, TILE_PIXELS // (r1 - r0))
    parts = []
    for c in range(c0, c1, step):
        window = bilinear_window(content, height, width, (r0, r1), (c, min(c1, c + step)), (ty, tx)) > 0
        parts.append(CompactMask.from_window(window.numpy(), height, width, r0, c))
    return CompactMask.concat(parts, height, width)
