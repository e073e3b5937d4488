"""Pictures of results: masks tinted over the image, prompts drawn, captions as labels (PIL only).

``render_overlay(rgb, regions)`` -> PIL image, used by ``sca caption --overlay``, ``sca everything
--overlay`` and the demo; ``draw_prompts`` marks boxes and clicked points (green foreground, red
background) on an image, as the demo shows pending prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "Label", "draw_prompts", "layout_labels", "region_color", "render_overlay"]

# Distinct, readable colours (Tableau 10), cycled over regions.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
POSITIVE, NEGATIVE = (0, 200, 0), (230, 0, 0)


def region_color(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


PAD = 2  # pixels between a label's text and the edge of its background
MIN_FONT = 6  # pixels: pictures too small for a label of this size get none


def _font(image_size: tuple[int, int]):
    """A readable size (11-28 px by the picture's size), smaller where the picture is shorter than
    a label; None when even MIN_FONT does not fit."""
    size = min(max(11, min(28, min(image_size) // 30)), image_size[1] - 2 * PAD - 2)
    if size < MIN_FONT:
        return None
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font (11 px)
        return ImageFont.load_default() if image_size[1] >= 11 + 2 * PAD + 2 else None


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


@dataclass
class Label:
    """A caption label: ``text`` drawn at ``xy`` on the background rectangle ``box`` (x0 y0 x1 y1,
    inclusive pixels, inside the picture)."""

    text: str
    xy: tuple[float, float]
    box: tuple[float, float, float, float]


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """``text`` cut (with an ellipsis) to at most ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def layout_labels(size: tuple[int, int], regions: Sequence, *, max_label_chars: int = 60,
                  font=None) -> list[Label]:
    """Where ``render_overlay`` puts each region's numbered caption: at the top-left of its mask
    (or box), moved and, where wider than the picture, shortened so that every label lies inside the
    picture; labels of masks sharing a corner are stacked. [] when the picture is too small for text."""
    width, height = size
    font = font or _font(size)
    if font is None:
        return []
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels: list[Label] = []
    for k, region in enumerate(regions):
        text = f"{k + 1}: {region.caption}"
        text = text if len(text) <= max_label_chars else text[: max_label_chars - 1] + "…"
        text = _fit(draw, text, font, width - 2 * PAD - 1)
        anchor = getattr(region, "mask_box", None) or getattr(region, "box", None) or [0, 0, 0, 0]
        x, y = float(anchor[0]), float(anchor[1])
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        # Inside the picture: the right and bottom edges first, then the left and top ones win.
        dx = min(0.0, width - 1 - PAD - right)
        dx += max(0.0, PAD - (left + dx))
        dy = min(0.0, height - 1 - PAD - bottom)
        dy += max(0.0, PAD - (top + dy))
        box = (left + dx - PAD, top + dy - PAD, right + dx + PAD, bottom + dy + PAD)
        step = box[3] - box[1] + 1
        for _ in range(len(labels)):  # labels of masks with the same corner: stack them downwards
            if not any(_overlap(box, other.box) for other in labels) or box[3] + step > height - 1:
                break
            box, dy = (box[0], box[1] + step, box[2], box[3] + step), dy + step
        labels.append(Label(text, (x + dx, y + dy), box))
    return labels


def render_overlay(rgb: np.ndarray, regions: Sequence, *, alpha: float = 0.45, prompts: bool = True,
                   labels: bool = True, max_label_chars: int = 60) -> Image.Image:
    """[H, W, 3] uint8 image + RegionCaption-like objects (``mask`` [H, W] bool, ``caption``, optional
    ``box``/``points``/``point_labels``) -> the image with every mask tinted and outlined in its own
    colour, the prompts drawn, and a numbered caption label at the top-left of each mask, inside the
    picture (``layout_labels``)."""
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
        for k, label in enumerate(layout_labels(out.size, regions, max_label_chars=max_label_chars, font=font)):
            draw.rectangle(label.box, fill=region_color(k))
            draw.text(label.xy, label.text, fill=(255, 255, 255), font=font)
    return out
