"""How sure is a gain? A paired, two-level bootstrap of the difference in mean per-region score.

A row of an ablation (e.g. "with weak pretraining" at one caption share) is run with several
fine-tuning seeds, and every run captions the same test regions. The gain of arm A over arm B is
mean_A - mean_B, each mean over the arm's runs and over the regions. Its uncertainty has two
sources: which seeds were drawn (training noise) and which regions were drawn (test-set noise). The
bootstrap resamples both, as a hierarchical bootstrap does: the seeds of each arm with replacement,
then the regions with replacement, the same regions for both arms (they are paired), and takes the
percentile interval of the resampled gains. With one seed per arm it is a plain paired bootstrap
over regions; with few seeds the interval is wide, as it should be.

Per-region CIDEr-D is coco-caption's per-image score (its corpus score is their mean), with the
document frequencies of the test references, which are the same for every run of a sweep.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["gain_interval", "per_region_scores"]


def per_region_scores(predictions: str | os.PathLike, metric: str = "CIDEr-D") -> dict[str, float]:
    """Region key -> its ``metric`` (x100) for a predictions file (``sca.evaluation.predict``)."""
    from sca.evaluation.metrics import score_captions
    from sca.evaluation.predict import read_predictions

    preds = read_predictions(predictions)
    result = score_captions(preds.candidates(), preds.references(), metrics=[metric], per_region=True)
    return {key: float(scores[metric]) for key, scores in result["per_region"].items()}


def gain_interval(arm_a: Sequence[Mapping[str, float]], arm_b: Sequence[Mapping[str, float]], *,
                  resamples: int = 4000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Gain of arm A over arm B (each a list of runs, a run = region key -> score) with its
    bootstrap interval. Only regions every run scored are used.

    Returns {gain, low, high, level, mean_a, mean_b, runs_a, runs_b, regions, resamples}."""
    if not arm_a or not arm_b:
        raise ValueError(f"gain_interval needs at least one run per arm, got {len(arm_a)} and {len(arm_b)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100 for a {level:.0%} interval, got {resamples!r}")
    keys = sorted(set.intersection(*(set(run) for run in (*arm_a, *arm_b))))
    if not keys:
        raise ValueError("the runs share no scored region: were they evaluated on the same test set?")
    a = np.array([[run[k] for k in keys] for run in arm_a], dtype=np.float64)  # [runs, regions]
    b = np.array([[run[k] for k in keys] for run in arm_b], dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(keys)
    gains = np.empty(resamples)
    for i in range(resamples):
        regions = rng.integers(0, n, n)
        ra = a[rng.integers(0, a.shape[0], a.shape[0])][:, regions]
        rb = b[rng.integers(0, b.shape[0], b.shape[0])][:, regions]
        gains[i] = ra.mean() - rb.mean()
    tail = (1 - level) / 2
    low, high = np.quantile(gains, [tail, 1 - tail])
    return {"gain": float(a.mean() - b.mean()), "low": float(low), "high": float(high), "level": level,
            "mean_a": float(a.mean()), "mean_b": float(b.mean()), "runs_a": int(a.shape[0]),
            "runs_b": int(b.shape[0]), "regions": n, "resamples": resamples}
