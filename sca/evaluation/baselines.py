"""Trivial baselines, scored by the same code beside every model result, and ``evaluate_run``.

A caption metric means little alone: "CIDEr-D 40" may be good or may be what a constant caption gets.
Every evaluation therefore also scores (on exactly the same regions and references):

- ``most-frequent``: the most frequent training phrase, for every region;
- ``per-category``: the most frequent training phrase of the region's category (records with a
  ``category``: detection data, the synthetic sets; skipped, with the reason, where there is none);
- ``box-bin``: the most frequent training phrase among training regions whose box falls in the same
  bin of relative area (4) x aspect (3) x centre on a 3x3 grid (108 bins; empty bins fall back to
  ``most-frequent``): what box geometry alone says;
- ``most-frequent-reference``: only when no training records are given, the most frequent phrase
  among the evaluated references themselves (it peeks at the test set: a sanity floor, labelled so).

Phrases are counted after lower-casing and collapsing whitespace; ties go to the phrase seen first.

``evaluate_run`` writes ``metrics.json`` (uncached DVC metrics)::

    {"protocol": "vg-full", "split": "test", "num_regions": N, "num_images": M,
     "model": {"scores": {...x100}, "raw": {...}, "skipped": {...}, "tokenizer": "ptb", "comparable": true, ...},
     "baselines": {"most-frequent": {...same layout..., "caption": "white clouds in blue sky",
                                      "description": "..."}, ...},
     "baselines_skipped": {"per-category": "skipped: ..."},
     "settings": {"metrics": [...], "java": "...", "pycocoevalcap": "1.2", ...caller's settings},
     "predictions": "predictions.jsonl"}
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from sca.data.records import ImageRecord
from sca.evaluation.metrics import DEFAULT_METRICS, MeteorScorer, java_available, score_systems
from sca.evaluation.predict import Predictions, read_predictions, region_key

__all__ = ["BASELINES", "CaptionPriors", "baseline_candidates", "evaluate_run", "normalize_phrase"]

BASELINES = ("most-frequent", "per-category", "box-bin")
DESCRIPTIONS = {
    "most-frequent": "the most frequent training phrase for every region",
    "per-category": "the most frequent training phrase of the region's category",
    "box-bin": "the most frequent training phrase of the region's box bin (relative area x aspect x 3x3 centre)",
    "most-frequent-reference": "the most frequent phrase among the EVALUATED references (peeks at the test set; "
                               "no training records were given)",
}
_AREA_EDGES = (0.01, 0.05, 0.2)  # relative box area bins: <1%, 1-5%, 5-20%, >20%


def normalize_phrase(p: str) -> str:
    return " ".join(p.lower().split())


def box_bin(box: Sequence[float], width: float, height: float) -> tuple[int, int, int, int]:
    """(area bin 0-3, aspect bin 0 tall / 1 squarish / 2 wide, centre column 0-2, centre row 0-2)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    area = w * h / max(width * height, 1e-6)
    aspect = w / h
    a = sum(area >= e for e in _AREA_EDGES)
    r = 0 if aspect < 2 / 3 else (2 if aspect > 1.5 else 1)
    cx = min(2, max(0, int(3 * (x0 + x1) / 2 / max(width, 1e-6))))
    cy = min(2, max(0, int(3 * (y0 + y1) / 2 / max(height, 1e-6))))
    return a, r, cx, cy


class CaptionPriors:
    """Phrase counts of the training regions: overall, per category, per box bin."""

    def __init__(self) -> None:
        self.overall: Counter[str] = Counter()
        self.by_category: dict[str, Counter[str]] = {}
        self.by_bin: dict[tuple[int, int, int, int], Counter[str]] = {}
        self.num_regions = 0

    @classmethod
    def from_records(cls, records: Iterable[ImageRecord] | str | os.PathLike) -> CaptionPriors:
        """Count over records (any iterable of ImageRecord, or a JSON Lines path)."""
        if isinstance(records, str | os.PathLike):
            from sca.data.io import iter_records

            records = iter_records(records)
        priors = cls()
        for rec in records:
            for reg in rec.regions:
                phrases = [normalize_phrase(p) for p in reg.phrases if isinstance(p, str) and p.strip()]
                if not phrases:
                    continue
                priors.num_regions += 1
                priors.overall.update(phrases)
                if reg.category:
                    priors.by_category.setdefault(reg.category, Counter()).update(phrases)
                priors.by_bin.setdefault(box_bin(reg.box, rec.width, rec.height), Counter()).update(phrases)
        if not priors.overall:
            raise ValueError("the training records hold no region with a usable phrase: no baseline can be built")
        return priors

    def most_frequent(self) -> str:
        return self.overall.most_common(1)[0][0]


def _top(counter: Counter[str] | None, fallback: str) -> str:
    return counter.most_common(1)[0][0] if counter else fallback


def baseline_candidates(predictions: Predictions, priors: CaptionPriors | None, *,
                        eval_records: Iterable[ImageRecord] | None = None,
                        names: Iterable[str] = BASELINES) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """-> ({baseline name: {region key: candidate}}, {baseline name: why it was skipped})."""
    names = list(names)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {list(BASELINES)}")
    systems: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    recs = predictions.records
    if priors is None:
        refs = Counter(normalize_phrase(p) for r in recs for p in r["references"])
        top = refs.most_common(1)[0][0]
        systems["most-frequent-reference"] = {region_key(r): top for r in recs}
        for n in names:
            skipped[n] = "skipped: needs the training records (give train_records / --train-records)"
        return systems, skipped
    top = priors.most_frequent()
    if "most-frequent" in names:
        systems["most-frequent"] = {region_key(r): top for r in recs}
    if "per-category" in names:
        categories = _eval_categories(eval_records)
        if not priors.by_category:
            skipped["per-category"] = "skipped: the training regions have no category"
        elif not categories:
            skipped["per-category"] = "skipped: the evaluated regions have no category (or no eval records given)"
        else:
            systems["per-category"] = {
                region_key(r): _top(priors.by_category.get(categories.get(_join_key(r["image_id"], r["region_id"]))), top)
                for r in recs}
    if "box-bin" in names:
        if any("image_size" not in r for r in recs):
            skipped["box-bin"] = "skipped: the predictions lack image_size (written by an older sca)"
        else:
            systems["box-bin"] = {region_key(r): _top(priors.by_bin.get(box_bin(r["box"], *r["image_size"])), top)
                                  for r in recs}
    return systems, skipped


def _join_key(image_id: Any, region_id: Any) -> tuple[str, str]:
    return str(image_id), str(region_id)


def _eval_categories(eval_records: Iterable[ImageRecord] | None) -> dict[tuple[str, str], str]:
    if eval_records is None:
        return {}
    return {_join_key(rec.image_id, reg.region_id): reg.category
            for rec in eval_records for reg in rec.regions if reg.category}


def evaluate_run(predictions: str | os.PathLike | Predictions, out_dir: str | os.PathLike, *, protocol: str,
                 train_records: Iterable[ImageRecord] | str | os.PathLike | None = None,
                 eval_records: Iterable[ImageRecord] | str | os.PathLike | None = None,
                 metrics: Iterable[str] = DEFAULT_METRICS, baselines: Iterable[str] = BASELINES,
                 settings: dict[str, Any] | None = None, spice_dir: str | os.PathLike | None = None,
                 meteor: MeteorScorer | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score a predictions file and its baselines (one scoring call: one METEOR JVM) and write
    ``out_dir/metrics.json`` (layout in the module docstring). A file of another protocol raises
    ``ProtocolMismatchError``. meteor: a running ``MeteorScorer`` to share. extra: more top-level
    entries of the metrics file (e.g. ``region_use``). Returns the metrics dict."""
    path = None
    if not isinstance(predictions, Predictions):
        path = Path(predictions)
        predictions = read_predictions(path, protocol=protocol)
    else:
        from sca.evaluation.protocols import check_same_protocol

        check_same_protocol(protocol, predictions.protocol, "the predictions")
    if isinstance(eval_records, str | os.PathLike):
        from sca.data.io import iter_records

        eval_records = list(iter_records(eval_records))
    priors = CaptionPriors.from_records(train_records) if train_records is not None else None
    systems, skipped = baseline_candidates(predictions, priors, eval_records=eval_records, names=baselines)
    wanted = list(metrics)
    t0 = time.perf_counter()
    scored = score_systems({"model": predictions.candidates(), **systems}, predictions.references(), metrics=wanted,
                           spice_dir=spice_dir, meteor=meteor)
    elapsed, n_systems = time.perf_counter() - t0, len(scored)  # every system, JVM starts included
    for name, result in scored.items():
        if name != "model":
            result["description"] = DESCRIPTIONS[name]
            result["caption"] = _constant(systems[name])
    out = {
        "protocol": predictions.protocol,
        "split": predictions.split,
        "num_regions": len(predictions),
        "num_images": len({str(r["image_id"]) for r in predictions.records}),
        "model": scored.pop("model"),
        "baselines": scored,
        "baselines_skipped": skipped,
        "settings": {"metrics": wanted, "java": java_available()[1], "pycocoevalcap": _version("pycocoevalcap"),
                     "train_regions": priors.num_regions if priors else 0,
                     "scoring_seconds": elapsed, "scored_systems": n_systems, **(settings or {})},
        "predictions": path.name if path else None,
        **(extra or {}),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "metrics.json")
    return out


def _constant(candidates: dict[str, str]) -> str | None:
    """The caption of a constant baseline; None when it varies by region."""
    values = set(candidates.values())
    return values.pop() if len(values) == 1 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
