"""A torch Dataset over region records and an image root, that reports bad samples instead of dying.

``RegionDataset[i]`` gives a ``Sample`` (one image in the S frame with its regions) or, when the
image cannot be used at all, a ``BadSample`` naming it; both carry a ``DataReport`` of what was
fixed or dropped, and the collator merges those into the batch (paper.md §3 for the recipe):

- train: large-scale jitter + flip (``TransformConfig``), ``regions_per_image`` random regions
  among those the crop keeps (fewer if the image has fewer), one random phrase per region;
- eval: SAM resize only, all regions in order, the first phrase as target, all phrases kept as
  references (raw, untruncated). Zero-area boxes are kept and prompted at evaluation (VG-full scores
  every region of the file; the reference code drops empty boxes in training only) and reported as
  ``box_empty`` / ``kept``; in training they are dropped.

Randomness comes from ``np.random.default_rng([seed, epoch, index])``: the same sample for the same
(seed, epoch, index) whatever the number of workers. Call ``set_epoch`` before each epoch in the
process that loads the sample (the Trainer's loader sends the epoch with every index, so its
persistent workers follow it).
Records live in a ``RecordStore`` (one compact buffer), so workers never re-read the JSON file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from sca.data.images import ImageError, LoadedImage, load_image
from sca.data.io import RecordStore
from sca.data.masks import rle_decode
from sca.data.records import ImageRecord
from sca.data.report import DataReport
from sca.data.transforms import (
    Geometry,
    TransformConfig,
    apply_geometry,
    jitter_geometry,
    resize_geometry,
    swap_left_right,
)

__all__ = ["TRAIN_TARGETS", "BadSample", "CleanRegion", "RegionDataset", "Sample", "clean_regions"]

TRAIN_TARGETS = ("random", "first")


@dataclass
class CleanRegion:
    """A region that passed the checks: box [4] float64 original pixels, valid phrases (>= 1)."""

    box: np.ndarray
    phrases: list[str]
    task_id: int
    region_id: Any
    mask: dict[str, Any] | None


@dataclass
class Sample:
    """One image and its R regions in the S frame.

    pixel_values: [3, S, S] float32 normalised, padded with 0 bottom/right.
    boxes: [R, 4] float32 x0 y0 x1 y1 in the S frame. task_ids: [R] int64 (recognition 0, caption 1).
    masks: [R, S, S] bool or None (when masks are not loaded); has_mask: [R] bool or None.
    targets: R training captions. references: R lists of raw phrases. region_ids: R source ids.
    original_size: (height, width) of the record. geometry: the original -> S-frame mapping.
    """

    image_id: Any
    pixel_values: Tensor
    boxes: Tensor
    task_ids: Tensor
    targets: list[str]
    references: list[list[str]]
    region_ids: list[Any]
    original_size: tuple[int, int]
    geometry: Geometry
    masks: Tensor | None = None
    has_mask: Tensor | None = None
    report: DataReport | None = None


@dataclass
class BadSample:
    """An image left out; ``report`` says why (kind ``image_missing``, ``image_corrupt``, ...)."""

    image_id: Any
    index: int
    report: DataReport


def clean_regions(record: ImageRecord, report: DataReport, *, outside_tolerance: float = 1.0,
                  keep_empty: bool = False) -> list[CleanRegion]:
    """Check every region of ``record``; fix what can be fixed, drop the rest, report both.

    Inverted boxes are swapped, boxes outside the image clamped (reported beyond ``outside_tolerance``
    pixels), non-finite boxes dropped, zero-area boxes dropped (or, with ``keep_empty``, kept and
    reported); phrases that are not strings or are blank are dropped, and a region without any phrase
    left is dropped.
    """
    out = []
    w, h = record.width, record.height
    for reg in record.regions:
        rid = reg.region_id

        def add(kind, action, detail, rid=rid):
            report.add(kind, action, record.image_id, rid, detail)

        box = np.asarray(reg.box, dtype=np.float64)
        if not np.isfinite(box).all():
            add("box_nonfinite", "dropped-region", f"box {reg.box}")
            continue
        if box[2] < box[0] or box[3] < box[1]:
            add("box_inverted", "fixed", f"box {reg.box} -> corners swapped")
            box = np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
        clamped = np.array([np.clip(box[0], 0, w), np.clip(box[1], 0, h), np.clip(box[2], 0, w), np.clip(box[3], 0, h)])
        if np.abs(clamped - box).max() > outside_tolerance:
            add("box_outside", "fixed", f"box {reg.box} clamped to the {w}x{h} image")
        box = clamped
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            add("box_empty", "kept" if keep_empty else "dropped-region",
                f"box {reg.box} has zero area in the {w}x{h} image")
            if not keep_empty:
                continue
        phrases, notes, kept = reg.phrases, [], []
        if isinstance(phrases, str):
            notes.append(("caption_invalid", "phrases is a string, not a list; used as one phrase"))
            phrases = [phrases]
        for p in phrases if isinstance(phrases, list | tuple) else [phrases]:
            if not isinstance(p, str):
                notes.append(("caption_invalid", f"phrase {p!r} is {type(p).__name__}, not str; left out"))
            elif not p.strip():
                notes.append(("caption_empty", f"blank phrase {p!r} left out"))
            else:
                kept.append(p)
        if not kept:  # one entry for the dropped region, named by its first problem
            add(notes[0][0] if notes else "caption_empty", "dropped-region",
                f"no usable phrase among {str(reg.phrases)[:80]}")
            continue
        for kind, detail in notes:
            add(kind, "fixed", detail)
        out.append(CleanRegion(box, kept, reg.task_id, rid, reg.mask))
    return out


class RegionDataset(Dataset):
    """Region records + image root -> ``Sample`` / ``BadSample`` (see the module docstring).

    records: a JSON Lines path (read once into a ``RecordStore``; bad lines are counted in
        ``load_report``), a list of ``ImageRecord`` (packed into a ``RecordStore``), or any compact
        ``Sequence[ImageRecord]`` (``RecordStore``, the readers' ``CompactRecords``), used as is. image_root: folder that records' ``file_name`` is relative to.
    regions_per_image: N regions drawn per image at train (paper.md §3: 16).
    load_masks: decode region masks into the S frame (regions without one get ``has_mask`` False).
    max_caption_chars: training targets are cut to this many characters (references stay whole).
    draft: let JPEGs decode at a reduced size when the S frame needs less (faster, slightly softer).
    strict: re-raise unforeseen errors instead of reporting them as ``sample_error`` (for debugging).
    train_target: which phrase of a region is its training target: "random" (one drawn per sample,
        paper.md §3) or "first" (a record's first phrase; the synthetic sets put the fullest
        description first). Evaluation always targets the first and keeps them all as references.
    """

    def __init__(self, records: Sequence[ImageRecord] | str | os.PathLike, image_root: str | os.PathLike,
                 *, train: bool, transform: TransformConfig | None = None, regions_per_image: int = 16,
                 load_masks: bool = False, seed: int = 0, max_caption_chars: int = 512, draft: bool = True,
                 strict: bool = False, train_target: str = "random"):
        if train_target not in TRAIN_TARGETS:
            raise ValueError(f"train_target {train_target!r} is not one of {TRAIN_TARGETS}")
        self.train_target = train_target
        self.load_report = DataReport()
        if isinstance(records, str | os.PathLike):
            records = RecordStore.load(records, report=self.load_report)
        elif isinstance(records, list | tuple):  # Python objects: packed once (fork-friendly, small)
            records = RecordStore.from_records(records)
        # any other Sequence[ImageRecord] (a RecordStore, the readers' CompactRecords) is used as is
        if regions_per_image < 1:
            raise ValueError(f"regions_per_image must be >= 1, got {regions_per_image}")
        self.records = records
        self.image_root = Path(image_root)
        self.train = train
        self.transform = transform or TransformConfig()
        self.regions_per_image = regions_per_image
        self.load_masks = load_masks
        self.seed = seed
        self.epoch = 0
        self.max_caption_chars = max_caption_chars
        self.draft = draft
        self.strict = strict

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def image_path(self, record: ImageRecord) -> Path:
        p = Path(record.file_name)
        return p if p.is_absolute() else self.image_root / p

    # -- geometry ---------------------------------------------------------------------------------
    def _geometry(self, rec: ImageRecord, boxes: np.ndarray, rng: np.random.Generator) -> tuple[Geometry, np.ndarray]:
        cfg, size = self.transform, self.transform.image_size
        if self.train and (cfg.jitter or cfg.hflip > 0):
            for _ in range(10):  # a crop with no region left is re-drawn
                if cfg.jitter:
                    geom = jitter_geometry(rec.width, rec.height, size, rng, cfg.scale_range, cfg.hflip)
                else:
                    geom = replace(resize_geometry(rec.width, rec.height, size), flipped=bool(rng.random() < cfg.hflip))
                keep = self._keep(geom, boxes)
                if keep.any():
                    return geom, keep
        geom = resize_geometry(rec.width, rec.height, size)
        return geom, self._keep(geom, boxes)

    def _keep(self, geom: Geometry, boxes: np.ndarray) -> np.ndarray:
        b = geom.boxes_to_input(boxes)
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, geom.content[0])
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, geom.content[1])
        m = self.transform.min_box_size
        return ((b[:, 2] - b[:, 0]) > m) & ((b[:, 3] - b[:, 1]) > m)

    # -- one sample -------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Sample | BadSample:
        report = DataReport()
        try:
            return self._sample(index, report)
        except Exception as err:  # anything unforeseen: reported with its id, the run goes on
            if self.strict:
                raise
            image_id = getattr(self._safe_record(index), "image_id", None)
            report.add("sample_error", "dropped-image", image_id, None, f"record {index}: {type(err).__name__}: {err}")
            return BadSample(image_id, index, report)

    def _safe_record(self, index: int) -> ImageRecord | None:
        try:
            return self.records[index]
        except Exception:
            return None

    def _sample(self, index: int, report: DataReport) -> Sample | BadSample:
        try:
            rec = self.records[index]
        except ValueError as err:
            report.add("record_invalid", "dropped-image", None, None, f"record {index}: {err}")
            return BadSample(None, index, report)
        if rec.width <= 0 or rec.height <= 0:
            report.add("record_invalid", "dropped-image", rec.image_id, None, f"size {rec.width}x{rec.height}")
            return BadSample(rec.image_id, index, report)
        regions = clean_regions(rec, report, keep_empty=not self.train)
        if not regions:
            report.add("no_regions", "dropped-image", rec.image_id, None, f"{len(rec.regions)} region(s), none usable")
            return BadSample(rec.image_id, index, report)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        boxes = np.stack([r.box for r in regions])
        geom, keep = self._geometry(rec, boxes, rng)
        if not self.train:  # every region is prompted and scored, however small
            for r in (r for r, k in zip(regions, keep, strict=True) if not k and (r.box[2:] > r.box[:2]).all()):
                report.add("box_empty", "kept", rec.image_id, r.region_id,
                           f"box {r.box.tolist()} is under {self.transform.min_box_size} px at size "
                           f"{self.transform.image_size}")
            keep = np.ones_like(keep)
        chosen = np.flatnonzero(keep)
        if self.train and len(chosen) > self.regions_per_image:
            chosen = rng.choice(chosen, size=self.regions_per_image, replace=False)
        if len(chosen) == 0:
            report.add("no_regions", "dropped-image", rec.image_id, None, "every box vanishes in the S frame")
            return BadSample(rec.image_id, index, report)
        loaded = self._load(rec, geom, report)
        if loaded is None:
            return BadSample(rec.image_id, index, report)
        # image pixels per record pixel: a JPEG draft reduction times any size mismatch
        image_scale = (loaded.pixel_scale[0] * loaded.size[0] / rec.width,
                       loaded.pixel_scale[1] * loaded.size[1] / rec.height)
        picked = [regions[i] for i in chosen]
        masks, has_mask = self._masks(rec, picked, report) if self.load_masks else (None, None)
        out = apply_geometry(loaded.array, geom, boxes[chosen], masks, pixel_mean=self.transform.pixel_mean,
                             pixel_std=self.transform.pixel_std, min_box_size=-1.0, image_scale=image_scale)
        targets, references = self._texts(rec, picked, geom, rng, report)
        return Sample(
            image_id=rec.image_id,
            pixel_values=out.pixel_values,
            boxes=out.boxes,
            task_ids=torch.tensor([r.task_id for r in picked], dtype=torch.long),
            targets=targets,
            references=references,
            region_ids=[r.region_id for r in picked],
            original_size=(rec.height, rec.width),
            geometry=geom,
            masks=out.masks,
            has_mask=None if has_mask is None else torch.tensor(has_mask, dtype=torch.bool),
            report=report,
        )

    def _load(self, rec: ImageRecord, geom: Geometry, report: DataReport) -> LoadedImage | None:
        path = self.image_path(rec)
        need = (math.ceil(rec.width * geom.scale[0]), math.ceil(rec.height * geom.scale[1])) if self.draft else None
        try:
            loaded = load_image(path, min_size=need)
            if loaded.size != (rec.width, rec.height) and loaded.size[::-1] == (rec.width, rec.height) and any(
                    kind == "image_exif" for kind, _ in loaded.notes):
                loaded = load_image(path, exif=False, min_size=need)
                loaded.notes.append(("image_exif", "annotations match the stored pixels: EXIF orientation ignored"))
        except ImageError as err:
            report.add(err.kind, "dropped-image", rec.image_id, None, str(err))
            return None
        for kind, detail in loaded.notes:
            report.add(kind, "fixed", rec.image_id, None, f"{path.name}: {detail}")
        (w, h), (rw, rh) = loaded.size, (rec.width, rec.height)
        if (w, h) != (rw, rh):
            if abs(w / h - rw / rh) > 0.01 * (rw / rh):
                report.add("image_size_mismatch", "dropped-image", rec.image_id, None,
                           f"{path.name} is {w}x{h}, the record says {rw}x{rh} (another aspect ratio)")
                return None
            report.add("image_size_mismatch", "fixed", rec.image_id, None,
                       f"{path.name} is {w}x{h}, the record says {rw}x{rh}; annotations rescaled")
        return loaded

    def _masks(self, rec: ImageRecord, picked: list[CleanRegion], report: DataReport):
        masks, has = [], []
        for r in picked:
            m = None
            if r.mask is not None:
                try:
                    m = rle_decode(r.mask)
                    if m.shape != (rec.height, rec.width):
                        raise ValueError(f"mask size {m.shape[::-1]} is not the image's {rec.width}x{rec.height}")
                except (ValueError, TypeError, KeyError) as err:
                    report.add("mask_invalid", "fixed", rec.image_id, r.region_id, f"{err}; region kept without mask")
                    m = None
            has.append(m is not None)
            masks.append(m if m is not None else np.zeros((rec.height, rec.width), dtype=bool))
        return masks, has

    def _texts(self, rec: ImageRecord, picked: list[CleanRegion], geom: Geometry, rng, report: DataReport):
        swap = geom.flipped and self.transform.flip_text == "swap-left-right"
        targets, references = [], []
        for r in picked:
            refs = [swap_left_right(p) for p in r.phrases] if swap else list(r.phrases)
            pick_random = self.train and self.train_target == "random"
            target = refs[int(rng.integers(len(refs)))] if pick_random else refs[0]
            if len(target) > self.max_caption_chars:
                report.add("caption_long", "fixed", rec.image_id, r.region_id,
                           f"{len(target)} characters cut to {self.max_caption_chars}")
                target = target[: self.max_caption_chars]
            targets.append(target)
            references.append(refs)
        return targets, references

    # -- whole-set check --------------------------------------------------------------------------
    def check(self, images: bool = False) -> DataReport:
        """Run the record checks over every image (and, with ``images``, decode every image)."""
        report = DataReport().merge(self.load_report)
        for i in range(len(self)):
            rec = self.records[i]
            if not clean_regions(rec, report, keep_empty=not self.train):
                report.add("no_regions", "dropped-image", rec.image_id, None, f"{len(rec.regions)} region(s), none usable")
            if images:
                self._load(rec, resize_geometry(max(rec.width, 1), max(rec.height, 1), self.transform.image_size), report)
        return report
