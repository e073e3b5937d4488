"""The qualitative figure of an evaluation run: images, prompts, SAM's masks, predicted vs reference captions.

One row per image: on the left the original image with every prompt box (numbered, one colour per
region) and, when the model is given, the mask SAM rates best (highest predicted IoU) filled in the
same colour; on the right, per region, the generated caption and the first reference phrases. Masks
are recomputed by one segmentation forward of the model (no generation): predictions files keep no
masks. matplotlib's object API only (no pyplot), so it runs headless.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sca.evaluation.predict import Predictions

__all__ = ["draw_predictions", "mask_to_original", "save_predictions_figure"]


def mask_to_original(logits: torch.Tensor, geometry) -> np.ndarray:
    """Low-res mask logits [R, h4, w4] (S frame) -> [R, H, W] bool masks on the original image, as SAM's
    postprocessing does: upsample to S x S, crop the padding away, resize to the original size, > 0."""
    s = geometry.size
    up = F.interpolate(logits[:, None].float(), size=(s, s), mode="bilinear", align_corners=False)
    cw, ch = geometry.content
    up = up[..., :ch, :cw]
    out = F.interpolate(up, size=(geometry.height, geometry.width), mode="bilinear", align_corners=False)
    return (out[:, 0] > 0).cpu().numpy()


def _dataset_indices(dataset, image_ids: list[str]) -> dict[str, int]:
    wanted, found = set(image_ids), {}
    for i in range(len(dataset.records)):
        key = str(dataset.records[i].image_id)
        if key in wanted:
            found[key] = i
            if len(found) == len(wanted):
                break
    return found


@torch.no_grad()
def _best_masks(model, sample) -> np.ndarray | None:
    from sca.models.segmenters.base import Prompts

    g = sample.geometry
    if g.flipped or g.offset != (0.0, 0.0):
        return None  # only the eval geometry (resize + pad) maps back exactly
    was_training = model.training
    model.eval()
    try:
        out = model(prompts=Prompts(boxes=sample.boxes[None].to(model.device)),
                    pixel_values=sample.pixel_values[None].to(model.device))
    finally:
        model.train(was_training)
    best = out.iou_scores.argmax(dim=-1)  # [R]
    logits = out.masks[torch.arange(len(best)), best]  # [R, h4, w4]
    return mask_to_original(logits, g)


def draw_predictions(predictions: Predictions, dataset, *, model=None, num_images: int = 4, max_regions: int = 4,
                     max_references: int = 2, panel: float = 3.2, fontsize: float = 8, wrap: int = 54):
    """A Figure with one row per image (the first ``num_images`` of the predictions, in file order).

    dataset: the eval ``RegionDataset`` the predictions were made from (images and geometry).
    model: the SCAModel, to draw SAM's best mask of every region (optional)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from sca.data.images import load_image

    by_image: dict[str, list[dict]] = {}
    for r in predictions.records:
        key = str(r["image_id"])
        if key in by_image or len(by_image) < num_images:
            by_image.setdefault(key, []).append(r)
    if not by_image:
        raise ValueError("draw_predictions got no predictions")
    indices = _dataset_indices(dataset, list(by_image))
    missing = [k for k in by_image if k not in indices]
    if missing:
        raise ValueError(f"images {missing} of the predictions are not in the dataset ({len(dataset)} images)")
    fig = Figure(figsize=(panel * 3.2, panel * len(by_image)), dpi=110, layout="constrained")
    axes = fig.subplots(len(by_image), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 2.2]})
    cmap = colormaps["tab10"]
    for (key, regions), (ax_img, ax_txt) in zip(by_image.items(), axes, strict=True):
        idx = indices[key]
        rec = dataset.records[idx]
        image = load_image(dataset.image_path(rec)).array
        regions = sorted(regions, key=lambda r: r["region_index"])[:max_regions]
        masks = None
        if model is not None:
            masks = _best_masks(model, dataset[idx])
        ax_img.imshow(image, interpolation="nearest")
        overlay = np.zeros((*image.shape[:2], 4), dtype=np.float32)
        lines = []
        for k, r in enumerate(regions):
            colour = cmap(k % 10)[:3]
            if masks is not None and masks[r["region_index"]].shape == image.shape[:2]:
                overlay[masks[r["region_index"]]] = (*colour, 0.45)
            x0, y0, x1, y1 = r["box"]
            ax_img.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2))
            ax_img.text(x0, y0, str(k + 1), fontsize=fontsize, color="white", va="bottom", ha="left",
                        bbox={"facecolor": colour, "pad": 1, "linewidth": 0})
            best = max(r["iou_scores"]) if r["iou_scores"] else float("nan")
            lines.append((colour, f"[{k + 1}] pred: {r['candidate'] or '(empty)'}", f"    IoU {best:.2f}"))
            for ref in r["references"][:max_references]:
                lines.append((None, textwrap.shorten(f"     ref: {ref}", wrap + 20), ""))
        if overlay[..., 3].any():
            ax_img.imshow(overlay, interpolation="nearest")
        ax_img.set_title(f"{key}  ({len(regions)} regions shown)", fontsize=fontsize + 1)
        ax_img.set_axis_off()
        ax_txt.set_axis_off()
        y = 1.0
        step = 1.0 / max(len(lines) + 1, 8)
        for colour, text, extra in lines:
            text = textwrap.shorten(text, wrap + 20, placeholder=" ...")
            ax_txt.text(0.0, y, text + extra, fontsize=fontsize, va="top", ha="left", family="monospace",
                        color=colour if colour is not None else "0.25",
                        fontweight="bold" if colour is not None else "normal", transform=ax_txt.transAxes)
            y -= step
    fig.suptitle(f"{predictions.protocol} / {predictions.split}: predicted (bold) vs reference captions",
                 fontsize=fontsize + 2)
    return fig


def save_predictions_figure(path: str | os.PathLike, predictions: Predictions, dataset, **kwargs) -> Path:
    """``draw_predictions`` saved as PNG at ``path`` (written to a temp name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = draw_predictions(predictions, dataset, **kwargs)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
