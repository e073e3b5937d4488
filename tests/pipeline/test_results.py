"""results/: generated from the pipeline, checked against the committed figures, shown verbatim in the README;
the environment lock and the files made from it agree."""

import copy
import json
import re
from pathlib import Path

import pytest

from sca.pipeline.results import (
    README_END,
    README_START,
    check_results,
    gather,
    render,
    same_kernels,
    sync_readme,
    write_results,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def committed():
    return json.loads((ROOT / "results/metrics.json").read_text())


def test_the_readme_shows_the_generated_tables_verbatim():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(README_START) + len(README_START) + 1: readme.index(README_END)]
    assert block == (ROOT / "results/results.md").read_text()


def test_committed_tables_are_rendered_from_the_committed_figures(committed):
    assert (ROOT / "results/results.md").read_text() == render(committed)
    for figure in ("regions.png", "training.png"):
        assert (ROOT / "results/figures" / figure).read_bytes()[:4] == b"\x89PNG"


def test_a_run_that_matches_is_accepted_and_every_difference_is_named(committed):
    assert check_results(committed, copy.deepcopy(committed)) == []
    run = copy.deepcopy(committed)
    run["evaluate"]["synthetic-test"]["model"]["CIDEr-D"] += 1e-9
    run["environment"]["transformers"] = "99.0"
    problems = check_results(committed, run)
    assert len(problems) == 2
    assert problems[0].startswith("environment.transformers: committed") and "'99.0'" in problems[0]
    assert problems[1].startswith("evaluate.synthetic-test.model.CIDEr-D") and "must be exact" in problems[1]
    trained = copy.deepcopy(committed)
    trained["weights_sha256"]["segmenter"] = "0" * 64
    assert [p.split(":")[0] for p in check_results(committed, trained)] == ["weights_sha256.segmenter"]


def test_another_floating_point_setting_gets_the_stated_tolerances(committed):
    run = copy.deepcopy(committed)
    run["environment"]["cpu_capability"] = "AVX2" if committed["environment"]["cpu_capability"] != "AVX2" else "AVX512"
    assert not same_kernels(committed, run)
    run["weights_sha256"]["segmenter"] = "1" * 64  # other reductions, other weights: allowed
    run["evaluate"]["synthetic-test"]["model"]["CIDEr-D"] += 2.0
    run["segmenter"]["mask_iou_box"] += 0.005
    assert check_results(committed, run) == []
    run["evaluate"]["synthetic-test"]["model"]["CIDEr-D"] += 10.0
    run["evaluate"]["synthetic-test"]["num_regions"] += 1
    problems = check_results(committed, run)
    assert any(p.startswith("evaluate.synthetic-test.model.CIDEr-D") and "tolerance 6.0" in p for p in problems)
    assert any(p.startswith("evaluate.synthetic-test.num_regions") and "must be exact" in p for p in problems)


def test_another_cpu_model_with_the_same_instruction_set_is_another_setting(committed):
    # An AMD EPYC and an Intel Xeon both reporting AVX512 train to other weights (vendor-tuned kernels)
    run = copy.deepcopy(committed)
    run["environment"]["cpu"] = "Intel(R) Xeon(R) Processor" if committed["environment"]["cpu"] != \
        "Intel(R) Xeon(R) Processor" else "AMD EPYC"
    assert not same_kernels(committed, run)
    run["weights_sha256"]["finetune"] = "2" * 64
    run["evaluate"]["synthetic-test"]["model"]["CIDEr-D"] -= 0.6
    run["evaluate"]["synthetic-test"]["region_use"]["attributes"]["colour"] -= 0.045
    assert check_results(committed, run) == []
    run["evaluate"]["synthetic-test"]["region_use"]["attributes"]["shape"] += 0.2
    assert [p.split(":")[0] for p in check_results(committed, run)] == [
        "evaluate.synthetic-test.region_use.attributes.shape"]


def test_write_results_from_a_runs_folder(tmp_path, committed):
    runs = tmp_path / "runs"
    for name, payload in (("segmenter", {"mask_iou_box": 0.5, "num_regions": 3, "steps": 2, "seconds": 9.9}),
                          ("lm", {"skipped": True}), ("pretrain", {"skipped": True}),
                          ("finetune", {"steps": 2, "final_loss": 1.5}),
                          ("evaluate", {"s": {"protocol": "p", "num_regions": 3, "model": {"CIDEr-D": 50.0},
                                              "baselines": {"most-frequent": {"CIDEr-D": 10.0}}}})):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps(payload))
    (runs / "finetune/live/plots/metrics/train").mkdir(parents=True)
    (runs / "finetune/live/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t2.0\n2\t1.5\n")
    results = write_results(tmp_path, tmp_path / "out")
    assert "seconds" not in results["segmenter"] and "language_model" not in results
    assert results["pretrain"] == {"enabled": False}
    md = (tmp_path / "out/results.md").read_text()
    assert "| SCA | - | - | - | **50.0** |" in md and "fine-tuning: 2 steps, final loss 1.5000" in md
    assert (tmp_path / "out/figures/training.png").is_file()
    assert json.loads((tmp_path / "out/metrics.json").read_text())["environment"]["torch"]
    assert gather(tmp_path)["finetune"]["final_loss"] == 1.5


def test_sync_readme_fills_only_its_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_START}\nold\n{README_END}\ntail\n")
    assert sync_readme(readme, "new\n") and readme.read_text() == f"# x\n{README_START}\nnew\n{README_END}\ntail\n"
    assert not sync_readme(readme, "new\n")
    readme.write_text("no block")
    with pytest.raises(ValueError, match="no .* block to fill"):
        sync_readme(readme, "x")


# ---- the lock ------------------------------------------------------------------------------------------
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _pins(path):
    return {m.group(1).lower().replace("_", "-"): m.group(2)
            for line in path.read_text().splitlines() if (m := PIN.match(line))}


def test_the_lock_pins_every_dependency_with_hashes():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as the lock
    lock = (ROOT / "requirements/lock.txt").read_text()
    pins = _pins(ROOT / "requirements/lock.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    for dep in wanted:
        name = re.match(r"[A-Za-z0-9._-]+", dep).group(0).lower().replace("_", "-")
        if name != "sca":
            assert name in pins, f"{name} is not in requirements/lock.txt: run bash scripts/lock.sh"
    constraints = _pins(ROOT / "requirements/constraints.txt")
    assert pins["torch"] == constraints["torch"] and pins["torchvision"] == constraints["torchvision"]
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in b for b in blocks if PIN.match(b)), "every pin carries its hashes"


def test_environment_yml_is_the_lock():
    import importlib.util

    spec = importlib.util.spec_from_file_location("environment_yml", ROOT / "scripts/environment_yml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "environment.yml").read_text() == module.render(), "run bash scripts/lock.sh"
