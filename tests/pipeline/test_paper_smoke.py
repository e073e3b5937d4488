"""The paper configuration end to end at its real shapes (SAM ViT-H at 1024 px + GPT2-large + the
12-layer mixer, random weights) on the fixture copies of VG, VG-sub, Objects365 and RefCOCOg, through
`dvc repro` (sca.pipeline.paper_smoke). Slow on a CPU: run with `-m slow`."""

import json
from pathlib import Path

import pytest
import yaml

from sca.pipeline.paper_smoke import paper_smoke_params, run_paper_smoke, write_sources
from sca.pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_params_change_only_weights_sources_and_sizes(tmp_path):
    paper = load_params(ROOT / "configs" / "paper.yaml")
    sources = write_sources(tmp_path)
    params = paper_smoke_params(paper, sources)
    assert params["model"]["image_encoder"] == {"name": "sam-vit-h", "weights": None}
    assert params["model"]["language_model"] == {"name": "gpt2-large", "weights": None}
    assert params["model"]["num_mixer_layers"] == paper["model"]["num_mixer_layers"] == 12
    assert [d["name"] for d in params["data"]["datasets"]] == [d["name"] for d in paper["data"]["datasets"]]
    assert all(d["from"] == str(sources[d["name"]]) for d in params["data"]["datasets"])
    assert params["evaluate"]["sets"] == paper["evaluate"]["sets"]
    assert params["pretrain"]["launch"] == {"num_processes": 1, "config_file": "configs/accelerate/deepspeed_zero2.yaml"}
    assert params["finetune"]["launch"] == {"num_processes": 1}
    assert params["pretrain"]["train"]["gradient_checkpointing"] is params["finetune"]["train"]["gradient_checkpointing"] is True
    assert params["pretrain"]["train"]["mixed_precision"] == params["finetune"]["train"]["mixed_precision"] == "bf16"
    assert params["finetune"]["train"]["use_embedding_cache"] and not params["finetune"]["data"]["jitter"]
    assert params["pretrain"]["data"]["jitter"]  # weak pretraining keeps the paper's augmentation
    assert "config_file" not in paper_smoke_params(paper, sources, deepspeed=False)["pretrain"]["launch"]
    with pytest.raises(ValueError, match="no fixture source for paper dataset 'vg'"):
        paper_smoke_params(paper, {k: v for k, v in sources.items() if k != "vg"})


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_paper_smoke(tmp_path_factory.mktemp("paper-smoke"), threads=2)


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)  # the fixture's dvc repro: ViT-H encodings take about a minute each on 2 cores
def test_every_stage_runs_at_paper_shapes(smoke):
    repo = smoke["repo"]
    for nb in ("01_data", "04_pretrain", "05_finetune", "06_evaluate", "07_tour", "09_results"):
        executed = json.loads((repo / "runs" / "notebooks" / f"{nb}.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (nb, errors)
    for stage in ("pretrain", "finetune"):
        config = json.loads((repo / "runs" / stage / "model" / "config.json").read_text())
        assert config["image_encoder"]["name"] == "sam-vit-h" and config["language_model"]["name"] == "gpt2-large"
    metrics = json.loads((repo / "runs" / "evaluate" / "metrics.json").read_text())
    assert {name: m["protocol"] for name, m in metrics.items()} == {
        "vg-full": "vg-full", "vg-sub": "vg-sub", "refcocog-val": "refcocog"}
    assert all(m["num_regions"] > 0 and "CIDEr-D" in m["model"] for m in metrics.values())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["pretrain"]["train"]["max_steps"] == 2
    if "config_file" in params["pretrain"]["launch"]:  # DeepSpeed ZeRO-2: optimizer shares in the checkpoints
        assert (repo / "runs" / "pretrain" / "checkpoints" / "step-00000001" / "zero" / "rank-0.pt").is_file()
    # The fine-tuning resumed from step 1 ends at the same weights.
    assert smoke["resume"]["resumed_from"] == "step-00000001" and smoke["resume"]["max_abs_diff"] == 0.0
    # ViT-H's image embedding, [256, 64, 64] float32, is 4 MiB an image in the cache (a few bytes of header).
    assert smoke["cache"]["images"] >= 1
    assert 4 * 2**20 <= smoke["cache"]["bytes_per_image"] < 4 * 2**20 + 4096
