"""One region-record schema for every data source (synthetic, VG, COCO, Objects365, V3Det, RefCOCO).

An ``ImageRecord`` is one image and its regions; a ``Region`` is one prompted region with its
phrases. Readers of every source produce these; the data stage writes them as JSON Lines (one
image record a line) so the same code feeds training, evaluation and the notebooks.

Coordinates are pixels of the original image, boxes ``x0 y0 x1 y1`` (float). Masks are COCO RLE
dicts (``{"size": [h, w], "counts": str}``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TASKS = ("recognition", "caption")  # task ids 0 and 1 (paper.md §1.7)

__all__ = ["TASKS", "ImageRecord", "Region"]


@dataclass
class Region:
    """One region of an image.

    box: x0 y0 x1 y1 in original-image pixels.
    phrases: one or more reference texts; at train one is drawn at random, at eval all are references
        (raw, untruncated).
    category: the category name where the source has one (detection data, synthetic data).
    mask: COCO RLE of the region's mask, when known.
    task: "caption" (id 1) or "recognition" (id 0).
    region_id: id in the source, to trace a region back.
    attributes: optional source-specific facts about the region (the synthetic generator stores the
        shape, colour, size, texture and position it drew), for analysis; never a model input.
    """

    box: tuple[float, float, float, float]
    phrases: list[str]
    category: str | None = None
    mask: dict[str, Any] | None = None
    task: str = "caption"
    region_id: int | str | None = None
    attributes: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"Region task {self.task!r} is not one of {TASKS}")
        if len(self.box) != 4:
            raise ValueError(f"Region box must be x0 y0 x1 y1, got {self.box!r}")
        self.box = tuple(float(v) for v in self.box)

    @property
    def task_id(self) -> int:
        return TASKS.index(self.task)


@dataclass
class ImageRecord:
    """One image and its regions.

    image_id: id in the source.
    file_name: image path relative to the dataset's image root (or absolute).
    width, height: original image size in pixels.
    source: dataset name ("synthetic-captions", "vg", "coco", "o365", "v3det", "refcocog", ...).
    split: "train", "val", "test", ...
    """

    image_id: int | str
    file_name: str
    width: int
    height: int
    regions: list[Region] = field(default_factory=list)
    source: str = ""
    split: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageRecord:
        d = dict(d)
        d["regions"] = [Region(**r) for r in d.get("regions", [])]
        return cls(**d)
