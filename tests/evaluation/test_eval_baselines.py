"""Trivial baselines and evaluate_run's metrics.json (model and baselines scored by the same code)."""

from __future__ import annotations

import json

import pytest

from sca.data.records import ImageRecord, Region
from sca.evaluation.baselines import (
    CaptionPriors,
    baseline_candidates,
    box_bin,
    evaluate_run,
    normalize_phrase,
)
from sca.evaluation.metrics import score_captions
from sca.evaluation.predict import Predictions
from sca.evaluation.protocols import ProtocolMismatchError

FAST = ("BLEU", "ROUGE-L", "CIDEr-D")  # no METEOR JVM where the test is not about METEOR


def _train_records() -> list[ImageRecord]:
    big, small_left = (10, 10, 90, 90), (0, 40, 8, 48)
    return [
        ImageRecord("t1", "t1.png", 100, 100, [
            Region(big, ["A dog", "brown dog"], category="dog"),
            Region(small_left, ["a  red ball"], category="ball"),
        ]),
        ImageRecord("t2", "t2.png", 100, 100, [
            Region(big, ["a dog ", "white clouds"], category="dog"),
            Region(small_left, ["a red ball", "toy"], category="ball"),
            Region(big, ["white clouds", "sky", "White  clouds"], category="sky"),
        ]),
    ]


def test_priors_count_normalised_phrases():
    priors = CaptionPriors.from_records(_train_records())
    assert normalize_phrase("  White  Clouds ") == "white clouds"
    assert priors.num_regions == 5
    assert priors.overall["white clouds"] == 3 and priors.overall["a dog"] == 2
    assert priors.most_frequent() == "white clouds"
    assert priors.by_category["ball"].most_common(1)[0] == ("a red ball", 2)
    assert box_bin((10, 10, 90, 90), 100, 100) == (3, 1, 1, 1)
    assert box_bin((0, 40, 8, 48), 100, 100) == (0, 1, 0, 1)
    assert box_bin((0, 0, 60, 10), 100, 100) == (2, 2, 0, 0)
    with pytest.raises(ValueError, match="no region with a usable phrase"):
        CaptionPriors.from_records([ImageRecord("e", "e.png", 10, 10, [Region((0, 0, 5, 5), ["  "])])])


def test_baseline_candidates_per_region():
    priors = CaptionPriors.from_records(_train_records())
    rows = [{"protocol": "synthetic-captions", "split": "test", "image_id": "e1", "region_id": i, "region_index": i,
             "box": box, "task": "caption", "candidate": "", "references": ["x"], "iou_scores": [], "image_size": [100, 100]}
            for i, box in enumerate([(0, 41, 7, 47), (12, 8, 88, 91), (40, 40, 50, 50)])]
    evals = [ImageRecord("e1", "e1.png", 100, 100, [Region(r["box"], ["x"], category=c, region_id=i)
                                                    for i, (r, c) in enumerate(zip(rows, ["ball", "dog", "cat"], strict=True))])]
    systems, skipped = baseline_candidates(Predictions("synthetic-captions", "test", rows), priors, eval_records=evals)
    assert skipped == {}
    assert list(systems["most-frequent"].values()) == ["white clouds"] * 3
    # unknown category "cat" falls back to the overall most frequent phrase
    assert list(systems["per-category"].values()) == ["a red ball", "a dog", "white clouds"]
    # box bins: small-left -> the ball's bin; big-centre -> "white clouds" (3) beats "a dog" (2); empty bin -> overall
    assert list(systems["box-bin"].values()) == ["a red ball", "white clouds", "white clouds"]
    systems, skipped = baseline_candidates(Predictions("synthetic-captions", "test", rows), None)
    assert list(systems) == ["most-frequent-reference"]
    assert set(skipped) == {"most-frequent", "per-category", "box-bin"} and "train" in skipped["most-frequent"]
    with pytest.raises(ValueError, match="unknown baseline.*'oracle'"):
        baseline_candidates(Predictions("synthetic-captions", "test", rows), priors, names=["oracle"])


@pytest.fixture(scope="module")
def metrics_json(predictions_run, synthetic_root, meteors, tmp_path_factory):
    path, _ = predictions_run
    out = tmp_path_factory.mktemp("eval")
    result = evaluate_run(path, out, protocol="synthetic-captions", train_records=synthetic_root / "train.jsonl.gz",
                          eval_records=synthetic_root / "test.jsonl.gz", settings={"run": "test"}, meteor=meteors[0])
    return out, result


def test_metrics_json_layout(metrics_json, predictions_run):
    out, result = metrics_json
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert (on_disk["protocol"], on_disk["split"]) == ("synthetic-captions", "test")
    n = sum(1 for _ in predictions_run[0].open())
    assert on_disk["num_regions"] == n and on_disk["num_images"] == 3
    assert set(on_disk["baselines"]) == {"most-frequent", "per-category", "box-bin"} and on_disk["baselines_skipped"] == {}
    names = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
    for system in [on_disk["model"], *on_disk["baselines"].values()]:
        assert set(system["scores"]) == names and system["num_regions"] == n
        assert system["skipped"]["SPICE"].startswith("skipped: ")  # no CoreNLP 3.6.0 jars offline
    assert isinstance(on_disk["baselines"]["most-frequent"]["caption"], str)
    assert on_disk["settings"]["run"] == "test" and on_disk["settings"]["train_regions"] > 0
    assert on_disk["settings"]["metrics"] == ["BLEU", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE"]
    assert on_disk["predictions"] == "predictions.jsonl"


def test_baseline_figures_are_what_score_captions_gives(metrics_json, predictions_run, synthetic_root):
    _, result = metrics_json
    from sca.evaluation.predict import read_predictions

    pred = read_predictions(predictions_run[0])
    mf = result["baselines"]["most-frequent"]
    alone = score_captions({k: mf["caption"] for k in pred.references()}, pred.references(), metrics=FAST)
    for name in ("BLEU-4", "ROUGE-L", "CIDEr-D"):
        assert alone["raw"][name] == mf["raw"][name]
    # On the synthetic captions the region's shape (category) is informative: per-category beats a constant.
    assert result["baselines"]["per-category"]["scores"]["CIDEr-D"] > mf["scores"]["CIDEr-D"] > 0


def test_evaluate_run_refuses_another_protocol(predictions_run, tmp_path):
    with pytest.raises(ProtocolMismatchError, match="'synthetic-captions', not 'vg-full'"):
        evaluate_run(predictions_run[0], tmp_path, protocol="vg-full", metrics=FAST)
    assert not (tmp_path / "metrics.json").exists()


def test_without_training_records_a_labelled_floor_is_scored(predictions_run, tmp_path):
    result = evaluate_run(predictions_run[0], tmp_path, protocol="synthetic-captions", metrics=FAST)
    assert list(result["baselines"]) == ["most-frequent-reference"]
    assert "peeks at the test set" in result["baselines"]["most-frequent-reference"]["description"]
    assert "training records" in result["baselines_skipped"]["most-frequent"]
