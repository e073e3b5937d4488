"""`sca sweep`: names bad sweeps, lists variants, runs a sweep through run_sweep."""

import json

import yaml

from sca.cli import main


def _params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"ablations": {"out": str(tmp_path / "abl"),
                                                  "sweeps": {"depth": {"vary": {"model.num_mixer_layers": [1, 2]}}}},
                                    "model": {"num_mixer_layers": 4}, "pretrain": {"out": "runs/pretrain"},
                                    "finetune": {"out": "runs/finetune"}, "evaluate": {"out": "runs/evaluate"}}))
    return path


def test_unknown_sweep_names_the_known_ones(tmp_path, capsys):
    assert main(["sweep", "deep", "--params", str(_params(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "'deep'" in err and "depth" in err


def test_missing_params_file(tmp_path, capsys):
    assert main(["sweep", "depth", "--params", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_list_prints_one_row_per_variant(tmp_path, capsys):
    assert main(["sweep", "depth", "--list", "--params", str(_params(tmp_path))]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["variant"] for r in rows] == [{"model.num_mixer_layers": 1}, {"model.num_mixer_layers": 2}]
    assert len({r["folder"] for r in rows}) == 2
