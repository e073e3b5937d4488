"""``sca evaluate``: generation from a checkpoint, re-scoring a predictions file, protocol errors."""

from __future__ import annotations

import json

from sca.cli import main


def test_evaluate_from_checkpoint(tiny_model, synthetic_root, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(tmp_path / "ckpt"), "--records", str(synthetic_root / "test.jsonl.gz"),
                 "--images", str(synthetic_root), "--train-records", str(synthetic_root / "train.jsonl.gz"),
                 "--out", str(out), "--num-beams", "1", "--max-new-tokens", "3", "--workers", "0", "--limit", "2",
                 "--metrics", "BLEU", "CIDEr-D", "--figure-images", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "synthetic-captions / test" in printed and "most-frequent" in printed and "regions/s" in printed
    result = json.loads((out / "metrics.json").read_text())
    assert result["num_images"] == 2 and result["settings"]["generation"]["num_beams"] == 1
    assert result["settings"]["prediction"]["regions_per_second"] > 0
    assert {p.name for p in out.iterdir()} == {"predictions.jsonl", "metrics.json", "figure.png"}


def test_rescoring_and_protocol_errors(predictions_run, synthetic_root, tmp_path, capsys):
    base = ["evaluate", "--records", str(synthetic_root / "test.jsonl.gz"), "--predictions", str(predictions_run[0]),
            "--metrics", "BLEU", "--out", str(tmp_path)]
    assert main(base) == 0
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["protocol"] == "synthetic-captions" and "most-frequent-reference" in result["baselines"]
    capsys.readouterr()
    assert main([*base, "--protocol", "refcocog"]) == 2
    err = capsys.readouterr().err
    assert "sca evaluate: error:" in err and "'refcocog'" in err and "synthetic-captions" in err
