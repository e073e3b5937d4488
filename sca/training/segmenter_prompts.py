"""Prompts drawn from ground-truth masks, for training and evaluating a promptable segmenter.

All coordinates are in the S frame in SAM's pixel-index convention: a point ``(x, y)`` names the
pixel in column x, row y (SAM's prompt encoder adds 0.5 to reach the pixel centre), and a box is
``x0 y0 x1 y1`` in pixel edges as the dataset gives it.

Training prompts follow SAM's first training iteration (Kirillov et al. 2023, appendix A, "Training
algorithm"): either the GT box with noise of std 10% of the box side in each coordinate, capped at
20 px (at SAM's 1024 px input, so 20/1024 of S here), or points sampled uniformly inside the GT mask.
Negative points (sampled outside the mask, near the object) are the kind SAM's later interactive
iterations add; here they join a point prompt with probability ``negative_prob``.

Random draws use torch's global generator, whose state the Trainer saves in every checkpoint, so a
resumed run draws the same prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["box_as_mask", "interior_points", "noisy_boxes", "sample_points"]


def noisy_boxes(boxes: Tensor, size: int, *, noise: float = 0.1, max_noise: float = 20 / 1024) -> Tensor:
    """[N, 4] boxes -> [N, 4] boxes with Gaussian noise (std ``noise`` x the box side per coordinate,
    clamped to ``max_noise`` x S), kept inside [0, S] and at least one pixel wide and tall."""
    if noise <= 0:
        return boxes.clone()
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).repeat(1, 2)  # [N, 4]
    jitter = (torch.randn(boxes.shape) * noise * side).clamp(-max_noise * size, max_noise * size)
    out = (boxes + jitter).clamp(0, size)
    lo = torch.minimum(out[:, :2], out[:, 2:])  # [N, 2] x0 y0
    hi = torch.maximum(torch.maximum(out[:, :2], out[:, 2:]), lo + 1)  # at least 1 px
    shift = (hi - size).clamp(min=0)  # a box grown past the frame slides back inside
    return torch.cat([lo - shift, hi - shift], dim=1)


def _pixel_xy(flat_index: Tensor, size: int) -> Tensor:
    """[...] flat pixel indices of an S x S grid -> [..., 2] float (x, y) pixel indices."""
    return torch.stack([flat_index % size, torch.div(flat_index, size, rounding_mode="floor")], dim=-1).float()


def sample_points(masks: Tensor, boxes: Tensor, num_positive: int, negative: bool) -> tuple[Tensor, Tensor]:
    """Point prompts for N regions with non-empty masks.

    masks: [N, S, S] bool GT masks. boxes: [N, 4] their boxes (the negative is drawn within the box
    grown by half its side, outside the mask; anywhere outside the mask when that is empty).
    Returns points [N, P, 2] float (x, y) and labels [N, P] long (1 positive, 0 negative), with
    P = num_positive + negative; positives are drawn uniformly inside the mask, with replacement.
    """
    n, size = masks.shape[0], masks.shape[-1]
    if num_positive < 1:
        raise ValueError(f"num_positive must be >= 1, got {num_positive}")
    flat = masks.reshape(n, -1).float()
    if n and (flat.sum(1) == 0).any():
        raise ValueError("sample_points got an empty mask; skip regions whose mask has no pixel")
    pos = torch.multinomial(flat, num_positive, replacement=True)  # [N, num_positive]
    points, labels = [_pixel_xy(pos, size)], [torch.ones(n, num_positive, dtype=torch.long)]
    if negative:
        coords = torch.arange(size, dtype=torch.float32) + 0.5
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        in_x = (coords[None] >= (boxes[:, 0] - w / 2)[:, None]) & (coords[None] <= (boxes[:, 2] + w / 2)[:, None])
        in_y = (coords[None] >= (boxes[:, 1] - h / 2)[:, None]) & (coords[None] <= (boxes[:, 3] + h / 2)[:, None])
        near = (in_y[:, :, None] & in_x[:, None, :]).reshape(n, -1)  # [N, S*S]
        outside = 1.0 - flat
        weights = outside * near
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, outside)
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))  # full mask
        neg = torch.multinomial(weights, 1)
        points.append(_pixel_xy(neg, size))
        labels.append(torch.zeros(n, 1, dtype=torch.long))
    return torch.cat(points, 1), torch.cat(labels, 1)


def interior_points(masks: Tensor) -> Tensor:
    """[N, S, S] bool masks -> [N, 2] float (x, y): the most interior pixel of each mask.

    The deepest pixels are found by repeated 3x3 erosion (the chessboard distance transform's
    maximum, everything outside the frame counting as background); among them, the one nearest to
    their centroid. An empty mask gives the frame centre.
    """
    n, size = masks.shape[0], masks.shape[-1]
    current = masks[:, None].float()
    deepest = current.clone()
    for _ in range(size // 2 + 1):
        if not current.any():
            break
        alive = current.flatten(1).any(1)
        deepest[alive] = current[alive]
        current = -F.max_pool2d(-F.pad(current, (1, 1, 1, 1), value=0.0), 3, stride=1)
    flat = deepest.reshape(n, -1)
    xy = _pixel_xy(torch.arange(size * size), size)  # [S*S, 2]
    count = flat.sum(1, keepdim=True).clamp(min=1)
    centroid = flat @ xy / count  # [N, 2]
    dist = ((xy[None] - centroid[:, None]) ** 2).sum(-1)  # [N, S*S]
    dist = torch.where(flat > 0, dist, torch.full_like(dist, float("inf")))
    best = _pixel_xy(dist.argmin(1), size)
    empty = flat.sum(1) == 0
    best[empty] = (size - 1) / 2
    return best


def box_as_mask(boxes: Tensor, size: int) -> Tensor:
    """[N, 4] boxes -> [N, S, S] bool: the pixels whose centre lies inside the box (the trivial
    'the box is the mask' baseline)."""
    c = torch.arange(size, dtype=boxes.dtype, device=boxes.device) + 0.5
    in_x = (c[None] >= boxes[:, 0:1]) & (c[None] <= boxes[:, 2:3])
    in_y = (c[None] >= boxes[:, 1:2]) & (c[None] <= boxes[:, 3:4])
    return in_y[:, :, None] & in_x[:, None, :]
