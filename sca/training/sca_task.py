"""The captioning task for the Trainer: RegionBatch -> SCAModel inputs -> caption loss.

Regions arrive padded per image (``region_mask``); the model takes them flat with ``image_index``.
With an ``EmbeddingCache`` the frozen image encoder runs once per image over the whole run; with a
``SegmentCache`` the frozen encoder and mask decoder run once per region view.
"""

from __future__ import annotations

from typing import Any

import torch

from sca.models.segmenters.base import Prompts
from sca.models.text import CaptionBatch
from sca.training.trainer import LossParts

__all__ = ["CaptionLoss", "box_targets", "region_inputs"]


def region_inputs(batch, device: torch.device | str | None = None) -> dict[str, Any]:
    """RegionBatch -> keyword arguments of ``SCAModel.forward``/``generate`` for its real regions.

    Returns prompts [N, 1, 4] (flat boxes), image_index [N], task_ids [N] and, when the batch has
    captions, captions [N, L] (the padded regions' rows removed)."""
    mask = batch.region_mask
    image_index = mask.nonzero(as_tuple=True)[0]
    out: dict[str, Any] = {
        "prompts": Prompts(boxes=batch.boxes[mask][:, None]),
        "image_index": image_index,
        "task_ids": batch.task_ids[mask],
    }
    if batch.captions is not None:
        keep = mask.reshape(-1)
        c = batch.captions
        width = int(c.attention_mask[keep].sum(1).max()) if keep.any() else c.input_ids.shape[1]
        out["captions"] = CaptionBatch(c.input_ids[keep][:, :width], c.attention_mask[keep][:, :width],
                                       c.labels[keep][:, :width])
    if device is not None:
        out = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in out.items()}
    return out


def box_targets(batch) -> torch.Tensor:
    """[N, 4] float32: each real region's box centre and size as fractions of its image (cx, cy, w,
    h), in the image as the batch shows it (flipped when flipped; before any crop or padding), the
    auxiliary box loss's targets (``SCAConfig.box_loss_weight``)."""
    mask = batch.region_mask
    image_index = mask.nonzero(as_tuple=True)[0]
    boxes = batch.boxes[mask].double()
    offsets, scales = batch.offsets.double()[image_index], batch.scales.double()[image_index]
    size = batch.original_sizes.double()[image_index].flip(1)  # (width, height)
    lo = (boxes[:, :2] + offsets) / scales / size  # S frame -> original pixels -> fractions
    hi = (boxes[:, 2:] + offsets) / scales / size
    return torch.cat([(lo + hi) / 2, hi - lo], dim=1).float()


class CaptionLoss:
    """``(model, batch) -> LossParts`` for SCAModel; optional embedding or segment cache.

    cache: an ``EmbeddingCache`` (only valid when images are not augmented).
    cache_keys: ``batch -> list[str]`` naming each image of the batch for the cache.
    segment_cache: a ``SegmentCache`` (frozen segmenter, no scale jitter).

    With ``model.config.box_loss_weight`` w > 0 the loss adds w x the box head's mean error to the
    mean per-token caption loss (logged as ``box_loss``).
    """

    def __init__(self, cache=None, cache_keys=None, segment_cache=None):
        if (cache is None) != (cache_keys is None):
            raise ValueError("give both cache and cache_keys, or neither")
        if cache is not None and segment_cache is not None:
            raise ValueError("give an embedding cache or a segment cache, not both")
        self.cache = cache
        self.cache_keys = cache_keys
        self.segment_cache = segment_cache

    def __call__(self, model, batch) -> LossParts:
        core = getattr(model, "module", model)  # DDP wraps the model
        device = core.device
        if len(batch) == 0 or batch.num_regions == 0:
            # Every image of this micro-batch was bad (reported in batch.report): a zero loss that
            # still touches every trainable parameter keeps DDP's gradient sync in step.
            zero = sum(p.sum() * 0.0 for p in core.parameters() if p.requires_grad)
            return LossParts(zero, 0, {"regions": 0.0})
        inputs = region_inputs(batch, device)
        weight = core.config.box_loss_weight
        if weight > 0:
            inputs["box_targets"] = box_targets(batch).to(device)
        if self.segment_cache is not None:
            out = model(segments=self.segment_cache.segments(model, batch, inputs), **inputs)
        elif self.cache is not None:
            features = self.cache.features(self.cache_keys(batch), batch.pixel_values)
            out = model(features=features, **inputs)
        else:
            out = model(pixel_values=batch.pixel_values.to(device), **inputs)
        stats = {"regions": float(batch.num_regions)}
        loss_sum = out.loss_sum
        if weight > 0:
            # loss_sum is summed over caption tokens (the Trainer divides by their count): the box
            # term enters per token, so its weight does not depend on caption lengths.
            loss_sum = loss_sum + weight * out.box_loss * out.num_tokens
            stats["box_loss"] = float(out.box_loss.detach())
        return LossParts(loss_sum, out.num_tokens, stats)
