"""Binary masks as COCO run-length encoding (RLE), without a pycocotools dependency.

A mask is a ``[H, W]`` bool array. Its RLE is ``{"size": [H, W], "counts": ...}``: run lengths of the
column-major (Fortran-order) flattened mask, starting with a run of zeros. ``counts`` is either a
list of ints ("uncompressed RLE", as in COCO's iscrowd annotations) or the compact string form of
the COCO API, which this module writes. The string format is COCO's (maskApi.c ``rleToString``):
every count from the third on is stored as the difference to the count two before, and each value
is written as 5-bit little-endian groups offset by 48, bit 0x20 meaning "more groups follow" and bit
0x10 of the last group carrying the sign. pycocotools is used only as a test oracle.

Boxes from masks are pixel-edge boxes: a mask covering columns 3..7 has ``x0 = 3, x1 = 8``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["mask_to_box", "points_in_polygon", "polygons_to_mask", "rle_area", "rle_decode", "rle_encode"]


def _runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat[0]:
        runs.insert(0, 0)  # RLE always starts with a run of zeros
    return runs


def _counts_to_string(counts: Sequence[int]) -> str:
    out: list[str] = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas end at -1
            more = (x != -1) if (group & 0x10) else (x != 0)
            if more:
                group |= 0x20
            out.append(chr(group + 48))
    return "".join(out)


def _string_to_counts(s: str) -> list[int]:
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError(f"RLE string ends inside a count at character {p}: {s[:40]!r}...")
            group = ord(s[p]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"RLE string has an invalid character {s[p]!r} at {p}")
            x |= (group & 0x1F) << (5 * k)
            more = bool(group & 0x20)
            p += 1
            k += 1
            if not more and (group & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """``[H, W]`` bool (or 0/1) array -> ``{"size": [H, W], "counts": str}`` (COCO compressed RLE)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a [H, W] mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _counts_to_string(_runs(mask))}


def _counts(rle: dict[str, Any]) -> tuple[int, int, list[int]]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"RLE must be a dict with 'size' [h, w] and 'counts'; got {str(rle)[:80]}")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    counts = _string_to_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(f"RLE counts sum to {sum(counts)} with negatives={any(c < 0 for c in counts)}; "
                         f"size {h}x{w} needs non-negative counts summing to {h * w}")
    return h, w, counts


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (string or list counts) -> ``[H, W]`` bool array. Raises ValueError on malformed RLE."""
    h, w, counts = _counts(rle)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T.copy()  # column-major -> [H, W]


def rle_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels, without decoding."""
    _, _, counts = _counts(rle)
    return int(sum(counts[1::2]))


def mask_to_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Pixel-edge box ``x0 y0 x1 y1`` of a ``[H, W]`` mask, or None when the mask is empty."""
    mask = np.asarray(mask, dtype=bool)
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def points_in_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule (crossing number) for points ``(x, y)`` (any equal shapes) against a closed
    polygon ``[V, 2]``; returns a bool array of the points' shape."""
    inside = np.zeros(np.shape(x), dtype=bool)
    polygon = np.asarray(polygon, dtype=np.float64)
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """COCO-style polygons (each a flat ``[x0, y0, x1, y1, ...]`` list in pixel-edge coordinates) ->
    ``[H, W]`` bool: the pixels whose centre lies inside any polygon (even-odd rule per polygon).
    (pycocotools rasterises slightly differently, on an upsampled grid; edges may differ by a pixel.)
    """
    ys, xs = np.mgrid[0:int(height), 0:int(width)] + 0.5
    mask = np.zeros((int(height), int(width)), dtype=bool)
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"polygon needs >= 3 x,y pairs as a flat list; got {len(poly)} numbers")
        mask |= points_in_polygon(xs, ys, np.asarray(poly, dtype=np.float64).reshape(-1, 2))
    return mask
