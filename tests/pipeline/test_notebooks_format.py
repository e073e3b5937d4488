"""Notebooks are thin, parameterised and committed clean; params files match the configs they feed."""

import ast
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_numbered_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    for prefix in ("01_data", "02_segmenter", "03_language_model", "04_pretrain", "05_finetune", "06_evaluate",
                   "07_tour", "08_ablations", "09_results"):
        assert any(n.startswith(prefix) for n in names), prefix


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_parameterised(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3" and "language_info" in nb["metadata"]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "committed with outputs"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    for node in tree.body:  # literals only
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# "), "an H1 title first"
    assert max(len("".join(c["source"]).splitlines()) for c in code) <= 40, "thin: move long cells into sca/"


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/paper.yaml"])
def test_params_sections_build_valid_configs(params_file):
    from sca.models.config import SCAConfig
    from sca.training.config import TrainConfig
    from sca.training.run import DataConfig

    params = yaml.safe_load((ROOT / params_file).read_text())
    SCAConfig.from_dict(params["model"])
    for stage in ("pretrain", "finetune"):
        TrainConfig.from_dict(params[stage]["train"])
        DataConfig.from_dict(params[stage]["data"])
    for section in ("data", "segmenter", "language_model", "evaluate", "tour", "ablations"):
        assert section in params, section
    from sca.pipeline.sweep import plan_sweep

    for sweep in params["ablations"]["sweeps"]:
        assert plan_sweep(params, sweep)
