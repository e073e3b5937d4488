"""The whole pipeline on the smoke configuration in a temporary copy of the repository: `dvc repro`
runs every stage notebook with papermill; a second `dvc repro` does nothing; metrics and plots show;
an ablation sweep runs through papermill and the ablations notebook collects it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sca.pipeline.paper_smoke import copy_repository
from sca.pipeline.params import deep_update

sys.path.insert(0, str(Path(__file__).parent))
from smoke import SMOKE

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is needed for dvc")
    dst = tmp_path_factory.mktemp("repo")
    copy_repository(dst)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    (dst / "params.yaml").write_text(yaml.safe_dump(deep_update(params, SMOKE), sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "OMP_NUM_THREADS": "1"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "smoke"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env)
    out = subprocess.run([str(BIN / "dvc"), "repro"], cwd=dst, capture_output=True, text=True, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return dst, env


def test_dvc_repro_runs_every_stage(repo):
    dst, _ = repo
    for nb in ("01_data", "02_segmenter", "03_language_model", "04_pretrain", "05_finetune", "06_evaluate", "07_tour",
               "09_results"):
        executed = json.loads((dst / "runs" / "notebooks" / f"{nb}.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (nb, errors)
    metrics = json.loads((dst / "runs" / "evaluate" / "metrics.json").read_text())
    test = metrics["synthetic-test"]
    assert test["protocol"] == "synthetic-captions" and test["num_regions"] > 0
    assert "CIDEr-D" in test["model"] and "most-frequent" in test["baselines"]
    assert (dst / "runs" / "evaluate" / "sets" / "synthetic-test" / "figure.png").is_file()
    seg = json.loads((dst / "runs" / "segmenter" / "metrics.json").read_text())
    assert 0.0 <= seg["mask_iou_box"] <= 1.0
    # the results stage regenerated results/ from this run (the copy's committed files are overwritten)
    results = json.loads((dst / "results" / "metrics.json").read_text())
    assert results["evaluate"]["synthetic-test"]["model"] == test["model"]
    assert results["segmenter"]["mask_iou_box"] == seg["mask_iou_box"]
    assert f"**{test['model']['CIDEr-D']:.1f}**" in (dst / "results" / "results.md").read_text()
    check = subprocess.run([str(BIN / "sca"), "results", "--check", str(dst / "results")], cwd=dst,
                           capture_output=True, text=True)
    assert check.returncode == 0 and "every committed figure" in check.stdout, check.stdout + check.stderr


def test_second_repro_does_nothing_and_results_show(repo):
    dst, env = repo
    out = subprocess.run([str(BIN / "dvc"), "repro"], cwd=dst, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "Data and pipelines are up to date." in out.stdout, out.stdout[-2000:]
    shown = subprocess.run([str(BIN / "dvc"), "metrics", "show", "--json"], cwd=dst, capture_output=True,
                           text=True, env=env, check=True)
    assert "runs/evaluate/metrics.json" in shown.stdout
    plots = subprocess.run([str(BIN / "dvc"), "plots", "show", "--json"], cwd=dst, capture_output=True, text=True,
                           env=env)
    assert plots.returncode == 0 and "loss" in plots.stdout


def test_a_sweep_runs_with_papermill_and_the_ablations_notebook_collects_it(repo, monkeypatch):
    dst, env = repo
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["ablations"]["sweeps"] = {"smoke": {"vary": {"pretrain.enabled": [True, False]}}}
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = [str(BIN / "papermill"), "--cwd", ".", "--no-progress-bar", "-k", "python3", "notebooks/08_ablations.ipynb",
           "runs/notebooks/08_ablations.ipynb", "-y", json.dumps({"overrides": {"run": ["smoke"]}})]
    out = subprocess.run(cmd, cwd=dst, capture_output=True, text=True, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    from sca.pipeline.sweep import collect

    rows = collect(dst / "runs" / "ablations" / "smoke")
    assert sorted(r["pretrain.enabled"] for r in rows) == [False, True]
    assert all("synthetic-test/CIDEr-D" in r for r in rows)
    assert all(0 < r["synthetic-test/region_use/distinct_candidates"] <= 1 for r in rows)
    monkeypatch.chdir(dst)  # the code fingerprint is of the checkout the notebooks ran in
    assert [r["current"] for r in collect(dst / "runs" / "ablations" / "smoke", dst / "params.yaml")] == [True, True]
