"""A small counter of data problems: what went wrong with which sample, and what was done about it.

A long run must neither die on one bad sample nor drop one silently. Every loader step that meets a
problem adds an ``Issue`` (kind, action, image id, region id, detail) to a ``DataReport``; reports
travel with the batches from the DataLoader workers to the trainer, which merges them and logs
``report.summary()`` (flat counters, ready for a metrics logger) and ``str(report)`` (a table with
the first few examples of each kind, naming their ids).

Actions: ``fixed`` (the sample was corrected and kept, e.g. a grayscale image converted, an inverted
box swapped), ``kept`` (odd but used as it is, e.g. a zero-area box scored at evaluation, as VG-full
scores every region), ``dropped-region`` (one region left out), ``dropped-image`` (the whole image
left out).
Counts are occurrences in loaded samples: an image drawn in three epochs counts three times.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

ACTIONS = ("fixed", "kept", "dropped-region", "dropped-image")

# Known kinds, with what they mean. Adding a kind needs no code change; these are documentation.
KINDS = {
    "image_missing": "image file not found",
    "image_corrupt": "image file truncated or not decodable",
    "image_mode": "image converted to 8-bit RGB (grayscale, RGBA, palette, 16-bit, CMYK, ...)",
    "image_exif": "image rotated/flipped by its EXIF orientation",
    "image_size_mismatch": "decoded size differs from the record's width/height",
    "record_invalid": "record does not follow the schema",
    "box_nonfinite": "box has NaN or infinite coordinates",
    "box_inverted": "box had x1 < x0 or y1 < y0; corners swapped",
    "box_outside": "box reached outside the image; clamped",
    "box_empty": "box has zero area (after clamping)",
    "mask_invalid": "mask undecodable or of the wrong size; the region is kept without mask",
    "caption_invalid": "phrase is not a string",
    "caption_empty": "phrase is empty or whitespace",
    "caption_long": "phrase longer than the character limit; the training target was cut",
    "no_regions": "no usable region left in the image",
    "sample_error": "an unforeseen error while making the sample (the message says which)",
}

__all__ = ["ACTIONS", "KINDS", "DataReport", "Issue"]


@dataclass(frozen=True)
class Issue:
    kind: str
    action: str
    image_id: int | str | None = None
    region_id: int | str | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = f"image {self.image_id!r}" + (f" region {self.region_id!r}" if self.region_id is not None else "")
        return f"{self.kind} ({self.action}) {where}: {self.detail}"


class DataReport:
    """Counts of ``(kind, action)`` plus the first ``keep`` issues of every kind.

    Cheap to pickle (it rides along with every batch) and to merge.
    """

    def __init__(self, keep: int = 5):
        self.keep = keep
        self.counts: Counter[tuple[str, str]] = Counter()
        self.examples: dict[str, list[Issue]] = {}

    # -- recording ------------------------------------------------------------------------------
    def add(self, kind: str, action: str, image_id: Any = None, region_id: Any = None, detail: str = "") -> None:
        if action not in ACTIONS:
            raise ValueError(f"DataReport action {action!r} is not one of {ACTIONS}")
        self.counts[(kind, action)] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.keep:
            examples.append(Issue(kind, action, image_id, region_id, str(detail)))

    def merge(self, other: DataReport | None) -> DataReport:
        """Add ``other``'s counts and examples into this report (in place); returns self."""
        if other is None:
            return self
        self.counts.update(other.counts)
        for kind, issues in other.examples.items():
            mine = self.examples.setdefault(kind, [])
            mine.extend(issues[: max(0, self.keep - len(mine))])
        return self

    # -- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:  # an empty report is still a report, but "if report:" means "any issue"
        return len(self) > 0

    def count(self, kind: str | None = None, action: str | None = None) -> int:
        return sum(n for (k, a), n in self.counts.items()
                   if (kind is None or k == kind) and (action is None or a == action))

    def issues(self, kind: str | None = None) -> list[Issue]:
        """The kept examples (first ``keep`` of each kind)."""
        kinds = [kind] if kind is not None else sorted(self.examples)
        return [issue for k in kinds for issue in self.examples.get(k, [])]

    def summary(self) -> dict[str, int]:
        """Flat counters for a metrics logger: ``data/dropped_images``, ``data/<kind>/<action>``, ..."""
        out = {
            "data/dropped_images": self.count(action="dropped-image"),
            "data/dropped_regions": self.count(action="dropped-region"),
            "data/fixed": self.count(action="fixed"),
        }
        for (kind, action), n in sorted(self.counts.items()):
            out[f"data/{kind}/{action}"] = n
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": {f"{k}/{a}": n for (k, a), n in sorted(self.counts.items())},
            "examples": {k: [asdict(i) for i in v] for k, v in sorted(self.examples.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], keep: int = 5) -> DataReport:
        report = cls(keep=keep)
        for key, n in d.get("counts", {}).items():
            kind, _, action = key.rpartition("/")
            if not kind or action not in ACTIONS:
                raise ValueError(f"DataReport count key {key!r} should be '<kind>/<action>' with action in {ACTIONS}")
            report.counts[(kind, action)] += int(n)
        for kind, issues in d.get("examples", {}).items():
            report.examples[kind] = [Issue(**i) for i in issues][:keep]
        return report

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False, default=str)

    def __str__(self) -> str:
        if not self:
            return "data report: no issues"
        lines = [f"data report: {len(self)} issue(s)"]
        for (kind, action), n in sorted(self.counts.items()):
            lines.append(f"  {kind:<20} {action:<15} {n:>8}  {KINDS.get(kind, '')}")
        for issue in self.issues():
            lines.append(f"    e.g. {issue}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"DataReport({dict(self.counts)})"
