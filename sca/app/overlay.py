"""Pictures of results: masks tinted over the image, prompts drawn, captions as labels (PIL only).

``render_overlay(rgb, regions)`` -> PIL image, used by ``sca caption --overlay``, ``sca everything
--overlay`` and the demo; ``draw_prompts`` marks boxes and clicked points (green foreground, red
background) on an image, as the demo shows pending prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "draw_prompts", "region_color", "render_overlay"]

# Distinct, readable colours (Tableau 10), cycled over regions.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
POSITIVE, NEGATIVE = (0, 200, 0), (230, 0, 0)


def region_color(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


def _font(image_size: tuple[int, int]):
    size = max(11, min(28, min(image_size) // 30))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _edges(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool -> the mask's boundary pixels (inside pixels with an outside 4-neighbour)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_prompts(image: Image.Image, boxes: Sequence[Sequence[float]] = (),
                 points: Sequence[Sequence[float]] = (), labels: Sequence[int] = (),
                 colors: Sequence[tuple[int, int, int]] | None = None) -> Image.Image:
    """Draw boxes (x0 y0 x1 y1) and points (x y, label 1 green / 0 red) on a copy of ``image``."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, min(out.size) // 200)
    for k, box in enumerate(boxes):
        color = colors[k] if colors is not None else region_color(k)
        draw.rectangle([float(v) for v in box], outline=color, width=width)
    r = max(3, min(out.size) // 80)
    for (x, y), label in zip(points, labels, strict=True):
        fill = POSITIVE if int(label) == 1 else NEGATIVE
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255), width=max(1, r // 3))
    return out


def render_overlay(rgb: np.ndarray, regions: Sequence, *, alpha: float = 0.45, prompts: bool = True,
                   labels: bool = True, max_label_chars: int = 60) -> Image.Image:
    """[H, W, 3] uint8 image + RegionCaption-like objects (``mask`` [H, W] bool, ``caption``, optional
    ``box``/``points``/``point_labels``) -> the image with every mask tinted and outlined in its own
    colour, the prompts drawn, and a numbered caption label at the top-left of each mask."""
    base = np.asarray(rgb, dtype=np.float32).copy()
    for k, region in enumerate(regions):
        if region.mask is None:
            continue
        color = np.asarray(region_color(k), dtype=np.float32)
        m = np.asarray(region.mask, dtype=bool)
        base[m] = base[m] * (1 - alpha) + color * alpha
        base[_edges(m)] = color
    out = Image.fromarray(np.clip(base + 0.5, 0, 255).astype(np.uint8))
    if prompts:
        for k, region in enumerate(regions):
            boxes = [region.box] if getattr(region, "box", None) is not None else []
            pts = getattr(region, "points", None) or []
            labs = getattr(region, "point_labels", None) or [1] * len(pts)
            out = draw_prompts(out, boxes, pts, labs, colors=[region_color(k)])
    if labels:
        draw = ImageDraw.Draw(out)
        font = _font(out.size)
        placed: list[tuple[float, float, float, float]] = []
        for k, region in enumerate(regions):
            text = f"{k + 1}: {region.caption}"
            text = text if len(text) <= max_label_chars else text[: max_label_chars - 1] + "…"
            anchor = region.mask_box or getattr(region, "box", None) or [0, 0, 0, 0]
            x, y = float(anchor[0]), float(anchor[1])
            left, top, right, bottom = draw.textbbox((x, y), text, font=font)
            # Keep the label inside the picture.
            dx = min(0.0, out.size[0] - right) - min(0.0, left)
            dy = min(0.0, out.size[1] - bottom) - min(0.0, top)
            box = (left + dx - 2, top + dy - 2, right + dx + 2, bottom + dy + 2)
            step = box[3] - box[1]
            for _ in range(len(placed)):  # labels of masks with the same corner: stack them
                if not any(_overlap(box, other) for other in placed) or box[3] + step > out.size[1]:
                    break
                box, dy = (box[0], box[1] + step, box[2], box[3] + step), dy + step
            placed.append(box)
            draw.rectangle(box, fill=region_color(k))
            draw.text((x + dx, y + dy), text, fill=(255, 255, 255), font=font)
    return out
