"""An in-memory cache of a frozen segmenter's outputs per region (runs without scale jitter).

With SAM frozen, what the mixer reads of a region (SAM's output tokens and its updated image tokens,
and the IoU estimates) is a pure function of the preprocessed image and the region's prompt. A run
without scale jitter sees each image in at most two views (as is, and flipped), so over the epochs
of a stage SAM's image encoder and mask decoder need to run once per region view; every later step
reads the cached tensors and runs only the mixer and the LM. The results are the same bits as
without the cache (tests/training/test_segment_cache.py).

A region view is keyed by its image id, the view's geometry (scale, offset, flip) and the box
prompt's bytes. The cache is bounded (``max_mb``): once full it stores nothing more and the
segmenter runs for the regions it does not hold, so memory stays within the bound whatever the
dataset. Masks are not kept (the caption loss does not read them): ``SCAModel.forward`` given
``segments`` returns ``masks=None``. A captioner whose mixer reads SAM's mask (``SCAConfig.mask_token``)
gets the chosen mask in the region's frame (``mask_grid``, G*G values a region) kept instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sca.models.segmenters.prompts import SegmenterOutput

__all__ = ["SegmentCache"]


class SegmentCache:
    """Frozen-segmenter outputs per region view, computed at most once while the cache has room.

    Args:
        max_mb: bound on the bytes held (tokens, image tokens, IoU estimates, mask grids), in MiB.
    """

    def __init__(self, max_mb: float = 2048.0):
        if not max_mb > 0:
            raise ValueError(f"segment cache max_mb must be > 0, got {max_mb!r}")
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.full = False
        self._rows: dict[tuple, tuple[Tensor, ...]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def stats(self) -> dict[str, float]:
        return {"regions": float(len(self._rows)), "mb": self.bytes / 2**20, "hits": float(self.hits),
                "misses": float(self.misses), "full": float(self.full)}

    @staticmethod
    def keys(batch, inputs: dict[str, Any]) -> list[tuple]:
        """One key per flat region of ``region_inputs(batch)``: (image id, scale, offset, flipped,
        box bytes)."""
        index = inputs["image_index"].tolist()
        boxes = inputs["prompts"].boxes[:, 0].detach().cpu().contiguous()
        out = []
        for k, i in enumerate(index):
            view = (str(batch.image_ids[i]), batch.scales[i].tolist(), batch.offsets[i].tolist(),
                    bool(batch.flipped[i]))
            out.append((*[tuple(v) if isinstance(v, list) else v for v in view], boxes[k].numpy().tobytes()))
        return out

    def segments(self, model, batch, inputs: dict[str, Any]) -> SegmenterOutput:
        """SAM's outputs ([N, 1, ...], masks left out; ``mask_grid`` for a captioner with
        ``mask_token``) for the flat regions of ``inputs``; regions not held are computed in one
        encoder call over their images and one decoder call."""
        core = getattr(model, "module", model)
        if core.segmenter.trainable_module_names():
            raise ValueError("the segment cache needs a frozen segmenter; this one trains "
                             f"{core.segmenter.trainable_module_names()}")
        keys = self.keys(batch, inputs)
        with_grid = bool(getattr(core.config, "mask_token", False))
        rows: list[tuple[Tensor, ...] | None] = [self._rows.get(k) for k in keys]
        missing = [k for k, r in enumerate(rows) if r is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            device = core.device
            sel = torch.tensor(missing, dtype=torch.long)
            image_index = inputs["image_index"].cpu()[sel]
            images, local = torch.unique(image_index, return_inverse=True)
            with torch.no_grad():
                features = core.encode_images(batch.pixel_values[images].to(device))
                prompts = inputs["prompts"].map(lambda t: t[sel.to(t.device)])
                seg = core.segment_regions(features, prompts, local.to(device))
            if seg.token_mask is not None:
                raise ValueError("the segment cache holds regions of one prompt kind (boxes) only")
            grid = core.region_mask_grid(prompts, seg)[:, None] if with_grid else None
            for j, k in enumerate(missing):
                row = (seg.tokens[j].detach().clone(), seg.image_tokens[j].detach().clone(),
                       seg.iou_scores[j].detach().clone())
                if grid is not None:
                    row += (grid[j].clone(),)
                rows[k] = row
                self._store(keys[k], row)
        if with_grid and any(len(r) < 4 for r in rows):
            raise ValueError("the segment cache holds regions without their mask grid: one cache serves one "
                             "captioner configuration")
        tokens, image_tokens, ious = (torch.stack([r[i] for r in rows]) for i in range(3))
        grids = torch.stack([r[3] for r in rows]) if with_grid else None
        return SegmenterOutput(masks=None, iou_scores=ious, tokens=tokens, image_tokens=image_tokens,
                               mask_grid=grids)

    def _store(self, key: tuple, row: tuple[Tensor, ...]) -> None:
        if key in self._rows or self.full:
            return
        size = sum(t.numel() * t.element_size() for t in row)
        if self.bytes + size > self.max_bytes:
            self.full = True  # from here on the segmenter runs for regions not held
            return
        self._rows[key] = row
        self.bytes += size

