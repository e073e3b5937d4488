"""What a reader met and did: skipped crowd boxes, odd boxes, images without regions, missing ids.

Readers never drop anything silently: each thing they skip, drop or find odd is recorded here under
an issue name with the ids it concerns, and ``summary()`` prints the counts with a few ids each.
Odd boxes are kept by default, as the rest of the project expects: ``sca.data.dataset`` fixes or
drops them at load time under the same kind names (box_inverted, box_outside, box_empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ISSUES", "ReadReport"]

# Issue names and what they mean. Ids are (image_id, region_or_annotation_id) unless noted.
ISSUES = {
    "crowd_kept": "COCO-style annotation with iscrowd=1, kept as a region (as the reference code keeps them)",
    "crowd_skipped": "COCO-style annotation with iscrowd=1, left out because the reader was asked crowd='skip'",
    "box_empty": "box with zero width or height",
    "box_inverted": "box with negative width or height",
    "box_outside": "box reaching outside the image (x0<0, y0<0, x1>width or y1>height)",
    "box_dropped": "odd box dropped because the reader was asked bad_boxes='drop'",
    "image_without_regions": "image with no region left, not returned (ids: image_id)",
    "split_image_unknown": "split lists an image id absent from the image metadata (ids: image_id)",
    "regions_for_unknown_image": "regions whose image id is absent from the image metadata (ids: image_id)",
    "annotation_for_unknown_image": "annotation whose image_id is not in 'images' (ids: image_id, ann id)",
    "annotation_unknown_category": "annotation whose category_id is not in 'categories'",
    "ref_unknown_annotation": "refer ref whose ann_id is not in instances.json (ids: ref_id, ann_id)",
    "ref_without_sentences": "refer ref with no sentence, skipped (ids: ref_id)",
    "region_without_phrase": "region with an empty or missing phrase, kept with phrase '' ",
}


@dataclass
class ReadReport:
    """Counts and ids of everything a reader skipped, dropped or found odd.

    source, split: what was read.
    images, regions: how many image records and regions were returned.
    issues: issue name (a key of ``ISSUES``) -> list of ids.
    notes: free-text facts about the read (files used, layout guesses).
    """

    source: str
    split: str
    images: int = 0
    regions: int = 0
    issues: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, issue: str, ids: Any) -> None:
        """Record ids under an issue name; ``ids`` is one id or a list of ids."""
        if issue not in ISSUES:
            raise KeyError(f"unknown report issue {issue!r}; known: {sorted(ISSUES)}")
        bucket = self.issues.setdefault(issue, [])
        if isinstance(ids, list):
            bucket.extend(ids)
        else:
            bucket.append(ids)

    def count(self, issue: str) -> int:
        return len(self.issues.get(issue, ()))

    def counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.issues.items() if ids}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split": self.split,
            "images": self.images,
            "regions": self.regions,
            "counts": self.counts(),
            "issues": {name: list(ids) for name, ids in self.issues.items() if ids},
            "notes": list(self.notes),
        }

    def summary(self, show: int = 3) -> str:
        """A few lines for people: totals, then one line per issue with its count and first ids."""
        lines = [f"{self.source}/{self.split}: {self.images} images, {self.regions} regions"]
        for name, ids in self.issues.items():
            if ids:
                head = ", ".join(repr(i) for i in ids[:show]) + (", ..." if len(ids) > show else "")
                lines.append(f"  {name}: {len(ids)} ({head}) - {ISSUES[name]}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
