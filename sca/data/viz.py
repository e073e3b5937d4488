"""Drawing records and samples with matplotlib: image + boxes + masks + captions.

Uses matplotlib's object API (``matplotlib.figure.Figure``), not pyplot, so it works headless and in
DataLoader workers; notebooks display the returned figure. Colours cycle through ``tab10``.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import numpy as np

from sca.data.masks import rle_decode
from sca.data.records import ImageRecord

__all__ = ["draw_record", "draw_records", "draw_sample"]


def _colours(n: int) -> list[tuple[float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10)[:3] for i in range(n)]


def _draw(ax, image: np.ndarray, boxes: np.ndarray, captions: Sequence[str], masks: Sequence[np.ndarray | None],
          *, fontsize: float, wrap: int, mask_alpha: float) -> None:
    from matplotlib.patches import Rectangle

    ax.imshow(image, interpolation="nearest")
    h, w = image.shape[:2]
    colours = _colours(len(boxes))
    overlay = np.zeros((h, w, 4), dtype=np.float32)
    for m, c in zip(masks, colours, strict=True):
        if m is not None and m.shape == (h, w):
            overlay[m] = (*c, mask_alpha)
    if overlay[..., 3].any():
        ax.imshow(overlay, interpolation="nearest")
    for (x0, y0, x1, y1), text, c in zip(boxes, captions, colours, strict=True):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c, linewidth=1.5))
        if text:
            label = "\n".join(textwrap.wrap(text, wrap)) if wrap else text
            ax.text(x0 + 1, y0 + 1, label, fontsize=fontsize, color="white", va="top", ha="left",
                    bbox={"facecolor": c, "alpha": 0.75, "pad": 1, "linewidth": 0}, clip_on=True)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()


def draw_record(record: ImageRecord, image: np.ndarray | None = None, *, image_root: str | os.PathLike | None = None,
                ax=None, masks: bool = True, captions: bool = True, max_regions: int | None = None,
                fontsize: float = 7, wrap: int = 28, mask_alpha: float = 0.45, title: bool = True):
    """Draw one record's image with its region boxes, masks and first phrases; returns the Axes.

    image: [H, W, 3] uint8 (else loaded from ``image_root / record.file_name``). ax: a matplotlib
    Axes (else a new Figure is made: ``ax.figure``).
    """
    if image is None:
        from sca.data.images import load_image

        if image_root is None:
            raise ValueError("draw_record needs the image array or an image_root to load it from")
        image = load_image(os.path.join(image_root, record.file_name)).array
    if ax is None:
        from matplotlib.figure import Figure

        h, w = image.shape[:2]
        fig = Figure(figsize=(6, 6 * h / w), dpi=100, layout="tight")
        ax = fig.add_subplot()
    regions = record.regions[:max_regions] if max_regions else record.regions
    boxes = np.array([r.box for r in regions], dtype=float).reshape(-1, 4)
    sy, sx = image.shape[0] / record.height, image.shape[1] / record.width
    boxes = boxes * [sx, sy, sx, sy]
    decoded = []
    for r in regions:
        m = None
        if masks and r.mask is not None:
            m = rle_decode(r.mask)
            if m.shape != image.shape[:2]:
                m = None  # drawn at the record's resolution only
        decoded.append(m)
    texts = [r.phrases[0] if captions and r.phrases else "" for r in regions]
    _draw(ax, image, boxes, texts, decoded, fontsize=fontsize, wrap=wrap, mask_alpha=mask_alpha)
    if title:
        ax.set_title(f"{record.source} {record.image_id} ({len(record.regions)} regions)", fontsize=fontsize + 1)
    return ax


def draw_records(records: Sequence[ImageRecord], image_root: str | os.PathLike, *, cols: int = 3,
                 panel: float = 4.0, **kwargs):
    """A grid of ``draw_record`` panels; returns the Figure."""
    from matplotlib.figure import Figure

    if not records:
        raise ValueError("draw_records got no records")
    rows = (len(records) + cols - 1) // cols
    fig = Figure(figsize=(panel * min(cols, len(records)), panel * rows), dpi=100, layout="tight")
    axes = fig.subplots(rows, min(cols, len(records)), squeeze=False)
    for ax in axes.flat[len(records):]:
        ax.set_axis_off()
    for rec, ax in zip(records, axes.flat, strict=False):
        draw_record(rec, image_root=image_root, ax=ax, **kwargs)
    return fig


def draw_sample(sample, *, ax=None, fontsize: float = 7, wrap: int = 28, mask_alpha: float = 0.45,
                pixel_mean=None, pixel_std=None):
    """Draw a ``Sample`` as the model sees it (S frame, denormalised; padding shows as mean grey)."""
    from sca.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize

    image = denormalize(sample.pixel_values, pixel_mean or IMAGENET_MEAN, pixel_std or IMAGENET_STD)
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(5, 5), dpi=100, layout="tight").add_subplot()
    masks = [None] * len(sample.targets)
    if sample.masks is not None:
        masks = [m.numpy() if bool(has) else None for m, has in zip(sample.masks, sample.has_mask, strict=True)]
    _draw(ax, image, sample.boxes.numpy(), sample.targets, masks, fontsize=fontsize, wrap=wrap, mask_alpha=mask_alpha)
    g = sample.geometry
    ax.set_title(f"{sample.image_id} scale {g.scale[0]:.2f} flip {g.flipped}", fontsize=fontsize + 1)
    return ax
