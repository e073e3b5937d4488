"""What anything mode did with its candidates: ``AnythingReport``, carried by every result.

    result = cap.everything("photo.jpg")
    result.report.removed      # {"pred_iou": 3072, "stability": 0, "min_area": 0, "nms": 0, "max_regions": 0}
    result.report.summary()    # one paragraph: counts per filter, the best scores seen, the thresholds
                               # and where they came from, and what to change when nothing was kept
    result.report.to_dict()    # JSON-ready

Filters in the order they run: ``pred_iou`` (predicted IoU <= pred_iou_thresh), ``stability``
(stability score < stability_score_thresh), ``min_area`` (empty, or fewer pixels than min_mask_area),
``nms`` (box IoU > nms_iou with a better mask), ``max_regions`` (beyond the best max_regions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["FILTERS", "AnythingReport", "AnythingResult", "AnythingWarning"]

FILTERS = ("pred_iou", "stability", "min_area", "nms", "max_regions")


class AnythingWarning(UserWarning):
    """Anything mode kept no region; the message is the report's summary."""


@dataclass
class AnythingReport:
    """candidates: masks SAM proposed (grid points x M). removed: per filter (``FILTERS``), how many
    candidates it removed. kept: masks left. best: the highest predicted IoU of all candidates and
    the highest stability score of those scored (they passed the predicted-IoU filter). config:
    the settings used; sources: where each threshold came from ("given", "checkpoint", "SAM's default")."""

    candidates: int = 0
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    kept: int = 0
    best: dict[str, float | None] = field(default_factory=lambda: {"pred_iou": None, "stability": None})
    config: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def remove(self, name: str, count: int) -> None:
        self.removed[name] += int(count)

    def observe(self, name: str, scores: Tensor) -> None:
        if scores.numel():
            top = float(scores.max())
            self.best[name] = top if self.best[name] is None else max(self.best[name], top)

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "removed": dict(self.removed), "kept": self.kept,
                "best": dict(self.best), "config": dict(self.config), "sources": dict(self.sources)}

    def _threshold(self, key: str) -> str:
        source = self.sources.get(key)
        return f"{self.config.get(key)}" + (f" ({source})" if source else "")

    def summary(self) -> str:
        """Counts per filter, the thresholds with their sources, and a hint when nothing was kept."""
        c = self.config
        labels = {
            "pred_iou": f"predicted IoU <= {self._threshold('pred_iou_thresh')}",
            "stability": f"stability < {self._threshold('stability_score_thresh')}",
            "min_area": f"empty or under {self._threshold('min_mask_area')} px",
            "nms": f"NMS at box IoU {self._threshold('nms_iou')}",
            "max_regions": f"max_regions {c.get('max_regions')}",
        }
        parts = [f"{labels[k]}: {self.removed[k]}" for k in FILTERS if k != "max_regions" or self.removed[k]]
        best = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in self.best.items() if v is not None)
        text = (f"anything mode kept {self.kept} of {self.candidates} candidate masks "
                f"({c.get('points_per_side')}x{c.get('points_per_side')} points); removed by "
                + "; ".join(parts) + "." + (f" Highest seen: {best}." if best else ""))
        if self.kept == 0 and self.candidates:
            text += " " + self._hint()
        return text

    def _hint(self) -> str:
        culprit = max(FILTERS, key=lambda k: self.removed[k])
        from_sam = [k for k in ("pred_iou_thresh", "stability_score_thresh") if self.sources.get(k) == "SAM's default"]
        advice = {
            "pred_iou": "lower pred_iou_thresh" + (f" (the highest predicted IoU was {self.best['pred_iou']:.3f})"
                                                  if self.best["pred_iou"] is not None else ""),
            "stability": "lower stability_score_thresh" + (
                f" (the highest stability was {self.best['stability']:.3f})" if self.best["stability"] is not None else ""),
            "min_area": "lower min_mask_area",
            "nms": "raise nms_iou",
            "max_regions": "raise max_regions",
        }[culprit]
        text = f"Most were removed by the {culprit} filter: {advice}."
        if from_sam:
            text += (" This checkpoint carries no anything-mode thresholds of its own, so SAM's were used, which "
                     "suit SAM's score scale only: calibrate them on validation data with "
                     "sca.app.calibrate.calibrate_anything (stored in the checkpoint's config.json 'anything').")
        return text


class AnythingResult(list):
    """The regions anything mode captioned (a list of ``RegionCaption``), with ``report``."""

    def __init__(self, regions=(), report: AnythingReport | None = None):
        super().__init__(regions)
        self.report = report if report is not None else AnythingReport()
