"""Batching: ``Sample``s -> one ``RegionBatch`` for the SCA model, plus a DataLoader factory.

Batch layout (B images, R = most regions of any image in the batch, S = image size, L = caption
tokens incl. the appended EOS; regions are padded per image and ``region_mask`` marks the real ones):

    pixel_values    [B, 3, S, S] float32  normalised (ImageNet mean/std), 0-padded bottom/right
    boxes           [B, R, 4]    float32  x0 y0 x1 y1 in the S frame; padding = the whole frame
    region_mask     [B, R]       bool     True for real regions
    task_ids        [B, R]       int64    recognition 0, caption 1 (padding 1)
    masks           [B, R, S, S] bool     region masks in the S frame, or None (masks not loaded)
    has_mask        [B, R]       bool     which regions have a mask, or None
    captions        CaptionBatch [B*R, L] from ``sca.models.text.encode_captions`` over the targets,
                                          flattened image-major (row b*R + r); padded rows have all
                                          labels -100
    targets         B lists of R_b str    the training captions (one random phrase at train,
                                          the first at eval)
    references      B lists of R_b lists  all raw phrases of each region (evaluation references)
    image_ids       B ids; region_ids B lists of R_b ids (tracing back to the source)
    original_sizes  [B, 2] int64          (height, width) of the original images
    scales          [B, 2] float32        (sx, sy): S-frame = original * scale - offset
    offsets         [B, 2] float32        (ox, oy) crop origin (0 at eval)
    flipped         [B]    bool           horizontally flipped first (x -> width - x)
    geometries      B ``Geometry``        the same mapping as objects (``boxes_to_original``)
    report          DataReport            problems met while loading these images (merge and log it)

Images that could not be used (``BadSample``) are left out of the batch and appear in ``report``;
a batch in which every image was bad has B = 0 (``len(batch) == 0``): log its report and skip it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info

from sca.data.dataset import BadSample, Sample
from sca.data.report import DataReport
from sca.data.transforms import Geometry
from sca.models.text import IGNORE_INDEX, CaptionBatch, encode_captions

__all__ = ["RegionBatch", "RegionCollator", "make_loader"]


@dataclass
class RegionBatch:
    """A batch of images with their regions; layout in the module docstring."""

    pixel_values: Tensor
    boxes: Tensor
    region_mask: Tensor
    task_ids: Tensor
    captions: CaptionBatch | None
    targets: list[list[str]]
    references: list[list[list[str]]]
    image_ids: list[Any]
    region_ids: list[list[Any]]
    original_sizes: Tensor
    scales: Tensor
    offsets: Tensor
    flipped: Tensor
    geometries: list[Geometry]
    masks: Tensor | None = None
    has_mask: Tensor | None = None
    report: DataReport = field(default_factory=DataReport)

    def __len__(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def num_regions(self) -> int:
        return int(self.region_mask.sum())

    def to(self, device) -> RegionBatch:
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device) if isinstance(v, Tensor | CaptionBatch) else v
        return RegionBatch(**moved)

    def prompts(self):
        """Box prompts for the segmenter: ``Prompts(boxes=[B, R, 4])``."""
        from sca.models.segmenters.base import Prompts

        return Prompts(boxes=self.boxes)

    def boxes_to_original(self, boxes: Tensor | None = None) -> list[np.ndarray]:
        """S-frame boxes ([B, R, 4], default the batch's) -> per image [R_b, 4] original-pixel boxes."""
        boxes = self.boxes if boxes is None else boxes
        return [g.boxes_to_original(boxes[b, : len(self.region_ids[b])].detach().cpu().numpy())
                for b, g in enumerate(self.geometries)]


class RegionCollator:
    """``collate_fn`` for ``RegionDataset``: pads regions, tokenises targets with ``encode_captions``.

    tokenizer: the LM's tokenizer. max_tokens: caption truncation (paper.md §2: 18).
    """

    def __init__(self, tokenizer, max_tokens: int = 18):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def __call__(self, items: list[Sample | BadSample]) -> RegionBatch:
        report = DataReport()
        samples = []
        for item in items:
            if not isinstance(item, Sample | BadSample):
                raise TypeError(f"RegionCollator takes Sample / BadSample items, got {type(item).__name__}")
            report.merge(item.report)
            if isinstance(item, Sample):
                samples.append(item)
        if not samples:
            return _empty_batch(report)
        b, r = len(samples), max(len(s.targets) for s in samples)
        size = samples[0].pixel_values.shape[-1]
        boxes = torch.tensor([0.0, 0.0, size, size]).repeat(b, r, 1)
        region_mask = torch.zeros(b, r, dtype=torch.bool)
        task_ids = torch.ones(b, r, dtype=torch.long)
        with_masks = samples[0].masks is not None
        pixels = _zeros(b, 3, size, size, dtype=torch.float32)
        masks = _zeros(b, r, size, size, dtype=torch.bool) if with_masks else None
        has_mask = torch.zeros(b, r, dtype=torch.bool) if with_masks else None
        flat_targets = [""] * (b * r)
        pixels_np, masks_np = pixels.numpy(), (masks.numpy() if with_masks else None)
        for i, s in enumerate(samples):
            n = len(s.targets)
            pixels_np[i] = s.pixel_values.numpy()
            boxes[i, :n] = s.boxes
            region_mask[i, :n] = True
            task_ids[i, :n] = s.task_ids
            if with_masks:
                masks_np[i, :n] = s.masks.numpy()
                has_mask[i, :n] = s.has_mask
            flat_targets[i * r: i * r + n] = s.targets
        captions = encode_captions(self.tokenizer, flat_targets, max_tokens=self.max_tokens)
        captions.labels[~region_mask.reshape(-1)] = IGNORE_INDEX
        geoms = [s.geometry for s in samples]
        return RegionBatch(
            pixel_values=pixels,
            boxes=boxes,
            region_mask=region_mask,
            task_ids=task_ids,
            captions=captions,
            targets=[s.targets for s in samples],
            references=[s.references for s in samples],
            image_ids=[s.image_id for s in samples],
            region_ids=[s.region_ids for s in samples],
            original_sizes=torch.tensor([s.original_size for s in samples], dtype=torch.long),
            scales=torch.tensor([g.scale for g in geoms], dtype=torch.float32),
            offsets=torch.tensor([g.offset for g in geoms], dtype=torch.float32),
            flipped=torch.tensor([g.flipped for g in geoms], dtype=torch.bool),
            geometries=geoms,
            masks=masks,
            has_mask=has_mask,
            report=report,
        )


def _zeros(*shape: int, dtype: torch.dtype) -> Tensor:
    """``torch.zeros``, but inside a DataLoader worker allocated in shared memory, so the batch is not
    copied again on its way to the main process (what torch's ``default_collate`` does too)."""
    if get_worker_info() is None:  # numpy-backed: filled through .numpy() views, no torch threading
        return torch.from_numpy(np.zeros(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))
    probe = torch.empty(0, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(max(1, math.prod(shape)) * probe.element_size())
    return probe.set_(storage, 0, shape).zero_()


def _empty_batch(report: DataReport) -> RegionBatch:
    z = torch.zeros
    return RegionBatch(z(0, 3, 0, 0), z(0, 0, 4), z(0, 0, dtype=torch.bool), z(0, 0, dtype=torch.long), None,
                       [], [], [], [], z(0, 2, dtype=torch.long), z(0, 2), z(0, 2), z(0, dtype=torch.bool), [],
                       report=report)


def make_loader(dataset: Dataset, collator: RegionCollator, *, batch_size: int, shuffle: bool, num_workers: int = 2,
                seed: int = 0, drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    """A DataLoader that keeps ``num_workers`` processes decoding (2 = both cores of the project's
    machines); the shuffle order is seeded. Workers are re-created each epoch so ``set_epoch`` reaches
    them."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collator, generator=generator, drop_last=drop_last, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=2 if num_workers > 0 else None)
