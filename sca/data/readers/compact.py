"""Compact, column-wise storage of many image records; ``ImageRecord`` objects are made on access.

Visual Genome's train split alone has ~4M regions: as ``Region`` objects that is several GB of
Python objects, as columns (float64 boxes, int64 ids, phrases in one UTF-8 blob) a few hundred MB.
``CompactRecords`` is a read-only sequence of ``ImageRecord``: ``len``, indexing and iteration
build records one at a time. ``file_name`` is relative to the dataset root the reader was given.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from sca.data.readers.report import ReadReport
from sca.data.records import TASKS, ImageRecord, Region

__all__ = ["BAD_BOX_ACTIONS", "CompactRecords", "RecordsBuilder", "StringTable", "check_task"]

BAD_BOX_ACTIONS = ("keep", "drop")


def _py(x: Any) -> Any:
    """A numpy scalar as a plain Python value (object-array elements are already plain)."""
    return x.item() if isinstance(x, np.generic) else x


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    return task


class StringTable:
    """Many strings stored as one UTF-8 blob plus int64 end offsets; ``table[i]`` decodes one."""

    def __init__(self, blob: bytes | bytearray, ends: np.ndarray) -> None:
        self.blob = blob  # bytes or a bytearray handed over by a builder (not copied)
        self.ends = np.asarray(ends, dtype=np.int64)

    @classmethod
    def from_strings(cls, strings: Sequence[str]) -> StringTable:
        encoded = [s.encode("utf-8") for s in strings]
        ends = np.cumsum([len(b) for b in encoded], dtype=np.int64) if encoded else np.zeros(0, np.int64)
        return cls(b"".join(encoded), ends)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        start = int(self.ends[i - 1]) if i > 0 else 0
        return self.blob[start : int(self.ends[i])].decode("utf-8")

    @property
    def nbytes(self) -> int:
        return len(self.blob) + self.ends.nbytes


class CompactRecords(Sequence[ImageRecord]):
    """Image records as columns. N images, R regions.

    image_ids [N], widths [N], heights [N], file_names (N strings), region_offsets [N+1]: image i owns
    regions region_offsets[i]:region_offsets[i+1]. boxes [R,4] x0 y0 x1 y1 float64; region_ids [R];
    phrase_start/phrase_count [R] index ``phrases``; category_index [R] into ``categories`` (-1: none).
    ``phrase_from_category``: the phrase of a region is its category name (weak supervision).
    masks: optional per-region list (COCO RLE dicts) or None.
    """

    def __init__(self, *, image_ids, widths, heights, file_names: StringTable, region_offsets, boxes,
                 region_ids, phrases: StringTable | None, phrase_start=None, phrase_count=None,
                 category_index=None, categories: Sequence[str] = (), phrase_from_category: bool = False,
                 masks: list | None = None, source: str = "", split: str = "", task: str = "caption",
                 report: ReadReport | None = None) -> None:
        self.image_ids = np.asarray(image_ids)
        self.widths = np.asarray(widths, dtype=np.int64)
        self.heights = np.asarray(heights, dtype=np.int64)
        self.file_names = file_names
        self.region_offsets = np.asarray(region_offsets, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.region_ids = np.asarray(region_ids)
        r = len(self.boxes)
        self.phrases = phrases
        self.phrase_start = np.zeros(r, np.int64) if phrase_start is None else np.asarray(phrase_start, np.int64)
        self.phrase_count = np.zeros(r, np.int32) if phrase_count is None else np.asarray(phrase_count)
        self.category_index = np.full(r, -1, np.int32) if category_index is None else np.asarray(category_index)
        self.categories = list(categories)
        self.phrase_from_category = phrase_from_category
        self.masks = masks
        self.source, self.split, self.task = source, split, check_task(task)
        self.report = report if report is not None else ReadReport(source, split)
        if len(self.region_offsets) != len(self.image_ids) + 1 or self.region_offsets[-1] != r:
            raise ValueError(f"region_offsets must have {len(self.image_ids) + 1} entries ending at {r}")

    # ---- sequence of ImageRecord ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_regions(self) -> int:
        return len(self.boxes)

    def region_counts(self) -> np.ndarray:
        return np.diff(self.region_offsets)

    def _phrases(self, j: int) -> list[str]:
        if self.phrase_from_category:
            return [self.categories[self.category_index[j]]]
        start, n = int(self.phrase_start[j]), int(self.phrase_count[j])
        return [self.phrases[k] for k in range(start, start + n)]

    def region(self, j: int) -> Region:
        cat = int(self.category_index[j])
        return Region(box=tuple(self.boxes[j].tolist()), phrases=self._phrases(j),
                      category=self.categories[cat] if cat >= 0 else None,
                      mask=self.masks[j] if self.masks is not None else None,
                      task=self.task, region_id=_py(self.region_ids[j]))

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {n} records")
        i %= n
        lo, hi = int(self.region_offsets[i]), int(self.region_offsets[i + 1])
        return ImageRecord(image_id=_py(self.image_ids[i]), file_name=self.file_names[i],
                           width=int(self.widths[i]), height=int(self.heights[i]),
                           regions=[self.region(j) for j in range(lo, hi)],
                           source=self.source, split=self.split)

    def __iter__(self) -> Iterator[ImageRecord]:
        for i in range(len(self)):
            yield self[i]

    @property
    def nbytes(self) -> int:
        arrays = (self.image_ids, self.widths, self.heights, self.region_offsets, self.boxes,
                  self.region_ids, self.phrase_start, self.phrase_count, self.category_index)
        return sum(a.nbytes for a in arrays) + self.file_names.nbytes + (self.phrases.nbytes if self.phrases else 0)

    # ---- subsetting ---------------------------------------------------------------------------------
    def subset(self, keep_images: np.ndarray | None = None, keep_regions: np.ndarray | None = None) -> CompactRecords:
        """A new store with only the kept images and regions (boolean masks; regions of dropped images go too)."""
        counts = self.region_counts()
        keep_i = np.ones(len(self), bool) if keep_images is None else np.asarray(keep_images, bool)
        keep_r = np.ones(self.num_regions, bool) if keep_regions is None else np.asarray(keep_regions, bool)
        keep_r = keep_r & np.repeat(keep_i, counts)
        cum = np.concatenate([[0], np.cumsum(keep_r)])
        new_counts = (cum[self.region_offsets[1:]] - cum[self.region_offsets[:-1]])[keep_i]
        idx = np.nonzero(keep_i)[0]
        names = StringTable.from_strings([self.file_names[int(i)] for i in idx])
        return CompactRecords(
            image_ids=self.image_ids[keep_i], widths=self.widths[keep_i], heights=self.heights[keep_i],
            file_names=names, region_offsets=np.concatenate([[0], np.cumsum(new_counts)]),
            boxes=self.boxes[keep_r], region_ids=self.region_ids[keep_r], phrases=self.phrases,
            phrase_start=self.phrase_start[keep_r], phrase_count=self.phrase_count[keep_r],
            category_index=self.category_index[keep_r], categories=self.categories,
            phrase_from_category=self.phrase_from_category,
            masks=[m for m, k in zip(self.masks, keep_r, strict=True) if k] if self.masks is not None else None,
            source=self.source, split=self.split, task=self.task, report=self.report)

    def finalize(self, *, bad_boxes: str = "keep", keep_empty: bool = False) -> CompactRecords:
        """Check boxes against their image, report odd ones with ids, drop what was asked, count."""
        if bad_boxes not in BAD_BOX_ACTIONS:
            raise ValueError(f"bad_boxes={bad_boxes!r} is not one of {BAD_BOX_ACTIONS}")
        rep, b = self.report, self.boxes
        w_img = np.repeat(self.widths, self.region_counts())
        h_img = np.repeat(self.heights, self.region_counts())
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        inverted = (bw < 0) | (bh < 0)
        zero = ~inverted & ((bw == 0) | (bh == 0))
        outside = ~inverted & ((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w_img) | (b[:, 3] > h_img))
        image_of_region = np.repeat(self.image_ids, self.region_counts())
        for issue, mask in (("box_inverted", inverted), ("box_empty", zero), ("box_outside", outside)):
            rows = np.nonzero(mask)[0]
            rep.add(issue, [(_py(image_of_region[j]), _py(self.region_ids[j])) for j in rows])
        out = self
        if bad_boxes == "drop":
            bad = inverted | zero | outside
            rep.add("box_dropped", [(_py(image_of_region[j]), _py(self.region_ids[j])) for j in np.nonzero(bad)[0]])
            out = out.subset(keep_regions=~bad)
        if not keep_empty:
            empty = out.region_counts() == 0
            if empty.any():
                rep.add("image_without_regions", [_py(x) for x in out.image_ids[empty]])
                out = out.subset(keep_images=~empty)
        rep.images, rep.regions = len(out), out.num_regions
        return out


class RecordsBuilder:
    """Append images and their regions one by one into typed arrays, then ``build()``.

    Phrases are stored as written (no normalisation: paper.md §4).
    """

    def __init__(self, *, source: str, split: str, task: str = "caption", report: ReadReport | None = None):
        self.source, self.split, self.task = source, split, check_task(task)
        self.report = report if report is not None else ReadReport(source, split)
        self._image_ids: list[Any] = []
        self._names: list[str] = []
        self._wh = array("q")
        self._offsets = array("q", [0])
        self._boxes = array("d")
        self._region_ids: array | list[Any] = array("q")  # becomes a list at the first non-int id
        self._blob = bytearray()
        self._ends = array("q")
        self._pstart = array("q")
        self._pcount = array("i")
        self._cat = array("i")
        self.categories: list[str] = []
        self._cat_index: dict[str, int] = {}

    def add_image(self, image_id: Any, file_name: str, width: int, height: int) -> None:
        """Start a new image; the regions added next belong to it."""
        if len(self._image_ids):
            self._offsets.append(len(self._region_ids))
        self._image_ids.append(image_id)
        self._names.append(file_name)
        self._wh.extend((int(width), int(height)))

    def _add_ids(self, ids: Sequence[Any]) -> None:
        if isinstance(self._region_ids, array):
            n = len(self._region_ids)
            try:
                self._region_ids.extend(ids)
                return
            except (TypeError, OverflowError):  # a non-int id, or one beyond int64: Python objects from here on
                del self._region_ids[n:]
                self._region_ids = list(self._region_ids)
        self._region_ids.extend(ids)

    def add_region(self, box_xyxy: Sequence[float], phrases: Sequence[str], region_id: Any,
                   category: str | None = None) -> None:
        if not self._image_ids:
            raise RuntimeError("add_image() must come before add_region()")
        self._boxes.extend(box_xyxy)
        self._add_ids([region_id])
        self._pstart.append(len(self._ends))
        self._pcount.append(len(phrases))
        for p in phrases:
            self._blob += p.encode("utf-8")
            self._ends.append(len(self._blob))
        if category is None:
            self._cat.append(-1)
        else:
            if category not in self._cat_index:
                self._cat_index[category] = len(self.categories)
                self.categories.append(category)
            self._cat.append(self._cat_index[category])

    def add_single_phrase_regions(self, boxes_flat: Sequence[float], phrases: Sequence[str],
                                  region_ids: Sequence[Any]) -> None:
        """Batch form of ``add_region`` for regions with one phrase and no category (VG): n regions,
        ``boxes_flat`` holds 4n numbers x0 y0 x1 y1."""
        if not self._image_ids:
            raise RuntimeError("add_image() must come before add_single_phrase_regions()")
        n = len(phrases)
        self._boxes.extend(boxes_flat)
        self._add_ids(region_ids)
        base = len(self._ends)
        self._pstart.extend(range(base, base + n))
        self._pcount.extend([1] * n)
        self._cat.extend([-1] * n)
        end = len(self._blob)
        for p in phrases:
            data = p.encode("utf-8")
            self._blob += data
            end += len(data)
            self._ends.append(end)

    def build(self) -> CompactRecords:
        if self._image_ids:
            self._offsets.append(len(self._region_ids))
        wh = np.frombuffer(self._wh, dtype=np.int64).reshape(-1, 2)
        ids = self._image_ids
        id_array = np.asarray(ids, dtype=np.int64) if all(type(i) is int for i in ids) else np.asarray(ids, object)
        rids = self._region_ids
        rid_array = np.frombuffer(rids, np.int64) if isinstance(rids, array) else np.asarray(rids, object)
        return CompactRecords(
            image_ids=id_array, widths=wh[:, 0], heights=wh[:, 1],
            file_names=StringTable.from_strings(self._names), region_offsets=np.frombuffer(self._offsets, np.int64),
            boxes=np.frombuffer(self._boxes, np.float64), region_ids=rid_array,
            phrases=StringTable(self._blob, np.frombuffer(self._ends, np.int64)),
            phrase_start=np.frombuffer(self._pstart, np.int64), phrase_count=np.frombuffer(self._pcount, np.int32),
            category_index=np.frombuffer(self._cat, np.int32), categories=self.categories,
            source=self.source, split=self.split, task=self.task, report=self.report)
