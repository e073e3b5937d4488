"""The paper configuration is one command away; check its stages without running them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_paper_model_builds_at_paper_size_on_meta():
    from sca.models.captioner import SCAModel
    from sca.models.config import SCAConfig

    params = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    model_cfg = dict(params["model"])
    # weights are hub tags: build the same architecture without them (no network here)
    model_cfg["image_encoder"] = {"name": model_cfg["image_encoder"]["name"]}
    model_cfg["language_model"] = {"name": model_cfg["language_model"]["name"]}
    with torch.device("meta"):
        model = SCAModel(SCAConfig.from_dict(model_cfg))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 19_432_832


def test_paper_data_names_readers_and_protocols():
    from sca.data.prepare import DataItem
    from sca.data.readers import DATASETS
    from sca.evaluation.protocols import protocol_names

    params = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    for item in params["data"]["datasets"]:
        DataItem.from_dict(item)  # every key is one the data stage accepts
        assert item["name"] in DATASETS
        assert set(item["splits"]) <= set(DATASETS[item["name"]].splits)
    assert {s["protocol"] for s in params["evaluate"]["sets"]} <= set(protocol_names())
    assert params["pretrain"]["train"]["images_per_step"] == 32 and params["pretrain"]["train"]["lr"] == 4e-4


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed for dvc")
def test_dvc_resolves_every_stage_with_the_paper_params(tmp_path):
    """dvc.yaml interpolated with configs/paper.yaml as params.yaml: every stage resolves, with the
    paper's paths, and the stage graph is the same as the embedded default's."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copy(ROOT / "configs" / "paper.yaml", tmp_path / "params.yaml")
    env = {"DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    stages = subprocess.run([dvc, "stage", "list"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert stages.returncode == 0, stages.stderr[-2000:]
    names = [line.split()[0] for line in stages.stdout.splitlines() if line.strip()]
    assert names == ["data", "segmenter", "language_model", "pretrain", "finetune", "evaluate", "tour", "results"]
    assert "data/records" in stages.stdout
    dag = subprocess.run([dvc, "dag", "--md"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert dag.returncode == 0 and "pretrain" in dag.stdout and "finetune" in dag.stdout
