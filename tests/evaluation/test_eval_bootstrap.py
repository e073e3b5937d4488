"""The paired two-level bootstrap of a gain (sca.evaluation.bootstrap)."""

import json

import numpy as np
import pytest

from sca.evaluation.bootstrap import gain_interval, per_region_scores


def _runs(rng, base, shift, seeds, noise):
    return [{f"r{k}": float(v + shift + rng.normal(0, noise)) for k, v in enumerate(base)} for _ in range(seeds)]


def test_a_clear_gain_excludes_zero_and_no_gain_does_not():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 200, 224)  # per-region CIDEr-D spreads widely
    clear = gain_interval(_runs(rng, base, 10.0, 3, 5.0), _runs(rng, base, 0.0, 3, 5.0))
    assert clear["low"] > 0 and clear["low"] < clear["gain"] < clear["high"]
    assert abs(clear["gain"] - 10.0) < 2.0 and clear["runs_a"] == 3 and clear["regions"] == 224
    none = gain_interval(_runs(rng, base, 0.0, 3, 20.0), _runs(rng, base, 0.0, 3, 20.0))
    assert none["low"] < 0 < none["high"]


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 200, 100)
    # Every region moves together within a run: a run-level offset is what seeds differ by.
    def runs(shift, offsets):
        return [{f"r{k}": float(v + shift + o) for k, v in enumerate(base)} for o in offsets]
    steady = gain_interval(runs(5.0, [0, 0.1, -0.1]), runs(0.0, [0, 0.1, -0.1]))
    shaky = gain_interval(runs(5.0, [-15, 0, 15]), runs(0.0, [-15, 0, 15]))
    assert shaky["high"] - shaky["low"] > 3 * (steady["high"] - steady["low"])
    assert steady["gain"] == pytest.approx(shaky["gain"]) == pytest.approx(5.0)


def test_only_shared_regions_count_and_bad_input_is_named():
    a = [{"x": 1.0, "y": 2.0}, {"x": 1.0, "y": 2.0, "z": 9.0}]
    assert gain_interval(a, [{"x": 0.0, "y": 1.0}], resamples=200)["regions"] == 2
    with pytest.raises(ValueError, match="at least one run"):
        gain_interval([], a)
    with pytest.raises(ValueError, match="share no scored region"):
        gain_interval([{"x": 1.0}], [{"y": 1.0}])
    with pytest.raises(ValueError, match="level"):
        gain_interval(a, a, level=95)


def test_per_region_cider_averages_to_the_corpus_score(tmp_path):
    from sca.evaluation.metrics import score_captions

    refs = [["a red circle on the left", "red circle"], ["a small blue square", "blue square at the top"],
            ["a large green star", "green star in the center"], ["a pink heart", "pink heart on the right"]]
    cands = ["a red circle", "a blue square at the top", "a green heart", "pink heart on the right"]
    path = tmp_path / "predictions.jsonl"
    with open(path, "w") as f:
        for k, (c, r) in enumerate(zip(cands, refs)):
            f.write(json.dumps({"protocol": "synthetic-captions", "split": "test", "image_id": f"i{k}",
                                "region_id": f"i{k}-0", "region_index": 0, "box": [0, 0, 4, 4], "task": "caption",
                                "candidate": c, "references": r, "iou_scores": [0.5], "image_size": [8, 8]}) + "\n")
    from sca.evaluation.predict import read_predictions

    scores = per_region_scores(path)
    preds = read_predictions(path)
    assert set(scores) == set(preds.candidates()) and len(scores) == 4
    corpus = score_captions(preds.candidates(), preds.references(), metrics=["CIDEr-D"])
    assert np.mean(list(scores.values())) == pytest.approx(corpus["scores"]["CIDEr-D"])
