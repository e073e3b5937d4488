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


def _fake_execute(calls):
    """Stands in for papermill: records the run and writes what the real notebook would."""

    def execute(notebook, output, params_file, overrides):
        calls.append(notebook)
        out = output.parent
        out.mkdir(parents=True, exist_ok=True)
        if notebook.endswith("06_evaluate.ipynb"):
            (out / "metrics.json").write_text(json.dumps({"test": {"model": {"CIDEr-D": 1.0}}}))
        else:
            (out / "metrics.json").write_text("{}")

    return execute


def test_a_finished_variant_is_skipped_only_while_its_inputs_are_unchanged(tmp_path, capsys):
    from sca.pipeline.sweep import collect, run_sweep

    params = _params(tmp_path)
    spec = yaml.safe_load(params.read_text())
    spec["data"] = {"weak_categories": "shape"}
    params.write_text(yaml.safe_dump(spec))
    calls = []
    rows = run_sweep(str(params), "depth", execute=_fake_execute(calls))
    assert len(rows) == 2 and len(calls) == 2 * 3  # per variant (its own model): pretrain, finetune, evaluate
    calls.clear()
    run_sweep(str(params), "depth", execute=_fake_execute(calls))
    assert calls == []  # nothing changed: nothing re-runs
    folder = tmp_path / "abl" / "depth"
    assert [row["current"] for row in collect(folder, params)] == [True, True]
    assert "current" not in collect(folder)[0]  # without the params: no currency check
    # the data stage changes (e.g. another weak vocabulary): every variant and the pretraining re-run
    spec["data"] = {"weak_categories": "colour-shape"}
    params.write_text(yaml.safe_dump(spec))
    assert [row["current"] for row in collect(folder, params)] == [False, False]  # what a re-run would replace
    run_sweep(str(params), "depth", execute=_fake_execute(calls))
    assert len(calls) == 6 and "re-running" in capsys.readouterr().out
    inputs = json.loads((tmp_path / "abl" / "depth" / "num_mixer_layers=1" / "inputs.json").read_text())
    assert inputs["upstream"]["params"]["data"] == {"weak_categories": "colour-shape"}
    # a dvc.lock beside the params file: its recorded output hashes are inputs too
    calls.clear()
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"segmenter": {"outs": [
        {"path": "runs/segmenter/model", "md5": "abc.dir"}]}}}))
    run_sweep(str(params), "depth", execute=_fake_execute(calls))
    assert len(calls) == 6
    calls.clear()
    run_sweep(str(params), "depth", execute=_fake_execute(calls), skip_done=False)
    assert len(calls) == 6  # skip_done=False runs everything
    # a value since dropped from the sweep is still judged against today's inputs
    spec["ablations"]["sweeps"]["depth"]["vary"]["model.num_mixer_layers"] = [2]
    params.write_text(yaml.safe_dump(spec))
    assert [row["current"] for row in collect(folder, params)] == [True, True]


def _evaluation(cider: float) -> dict:
    return {"synthetic-test": {"model": {"CIDEr-D": cider}, "baselines": {"most-frequent": {"CIDEr-D": 20.0}},
                               "region_use": {"loss_gap": 0.5, "distinct_candidates": 0.2}}}


def test_reference_row_is_the_pipeline_run_with_the_sweeps_keys(tmp_path):
    from sca.pipeline.sweep import collect, reference_row

    params = {"model": {"num_mixer_layers": 4}, "evaluate": {"out": str(tmp_path / "evaluate")},
              "ablations": {"sweeps": {"mixer_depth": {"vary": {"model.num_mixer_layers": [1, 8]}}}}}
    assert reference_row(params, "mixer_depth") is None  # no pipeline run yet
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "metrics.json").write_text(json.dumps(_evaluation(91.5)))
    variant = tmp_path / "sweep" / "num_mixer_layers=1"
    (variant / "evaluate").mkdir(parents=True)
    (variant / "variant.json").write_text(json.dumps({"model.num_mixer_layers": 1}))
    (variant / "evaluate" / "metrics.json").write_text(json.dumps(_evaluation(80.0)))

    row = reference_row(params, "mixer_depth")
    assert row["model.num_mixer_layers"] == 4 and row["synthetic-test/CIDEr-D"] == 91.5
    assert row["synthetic-test/baseline:most-frequent/CIDEr-D"] == 20.0
    assert row["synthetic-test/region_use/loss_gap"] == 0.5
    (collected,) = collect(tmp_path / "sweep")
    assert collected["model.num_mixer_layers"] == 1 and collected["synthetic-test/CIDEr-D"] == 80.0
    assert set(row) == set(collected)  # same columns: one table
    assert reference_row(params, "mixer_depth", [{**collected, "current": True}]) is not None  # other value
    same = {**collected, "model.num_mixer_layers": 4}
    assert reference_row(params, "mixer_depth", [{**same, "current": True}]) is None  # a current run has it
    assert reference_row(params, "mixer_depth", [{**same, "current": False}]) is not None  # a stale one does not


def test_variant_folders_hold_no_braces_and_papermill_gets_the_real_path(tmp_path, monkeypatch):
    import papermill

    from sca.pipeline.sweep import _papermill, variant_name

    name = variant_name({"model.image_encoder": {"name": "tiny-sam", "weights": "runs/segmenter/model"}})
    assert name == "image_encoder=(name=tiny-sam,weights=runs_segmenter_model)"
    assert not set(name) & set("{}[]\"':/ ")
    seen = {}
    # papermill formats the output path with the parameters (str.format): what it would write to
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda notebook, output, parameters, **kw: seen.update(path=output.format(**parameters)))
    out = tmp_path / "odd{name}" / "notebook.ipynb"  # e.g. a folder a user named with braces
    _papermill("nb.ipynb", out, "params.yaml", {})
    assert seen["path"] == str(out)


def test_a_varied_dict_replaces_the_base_one_instead_of_merging_into_it():
    from sca.pipeline.params import deep_update
    from sca.pipeline.sweep import plan_sweep

    trained = {"name": "tiny-sam", "weights": "runs/segmenter/model"}
    untrained = {"name": "tiny-sam", "hidden_size": 64, "init": "sam"}
    params = {"model": {"image_encoder": trained, "num_mixer_layers": 4}, "pretrain": {}, "finetune": {},
              "evaluate": {}, "ablations": {"sweeps": {"enc": {"vary": {"model.image_encoder": [trained, untrained]}}}}}
    plans = plan_sweep(params, "enc")
    merged = [deep_update(params["model"], plan["overrides"]["finetune"]["model"]) for plan in plans]
    assert merged[0]["image_encoder"] == trained
    assert merged[1]["image_encoder"] == {**untrained, "weights": None}  # the trained weights are not kept
    assert merged[1]["num_mixer_layers"] == 4


def test_central_claim_pools_seeds_and_gives_the_gains_interval(tmp_path):
    """A fake sweep of pretraining x caption share x 2 seeds whose 'with' arm names every region
    right and whose 'without' arm names half of them: the gain is positive at both shares and its
    interval excludes 0; a share run by one arm only is left out."""
    from sca.pipeline.sweep import central_claim, collect, run_sweep

    refs = [[f"a {c} {s}", f"{c} {s}"] for c in ("red", "blue", "green", "pink") for s in ("circle", "star")] * 3

    def execute(notebook, output, params_file, overrides):
        out = output.parent
        out.mkdir(parents=True, exist_ok=True)
        if not notebook.endswith("06_evaluate.ipynb"):
            (out / "metrics.json").write_text("{}")
            return
        enabled = "enabled=True" in out.parent.name  # the variant's folder: sweep.variant_name
        sets = out / "sets" / "synthetic-test"
        sets.mkdir(parents=True, exist_ok=True)
        with open(sets / "predictions.jsonl", "w") as f:
            for k, r in enumerate(refs):
                cand = r[0] if (enabled or k % 2) else "a cyan square"
                f.write(json.dumps({"protocol": "synthetic-captions", "split": "test", "image_id": f"i{k}",
                                    "region_id": f"i{k}-0", "region_index": 0, "box": [0, 0, 4, 4], "task": "caption",
                                    "candidate": cand, "references": r, "iou_scores": [0.5]}) + "\n")
        (out / "metrics.json").write_text(json.dumps({"synthetic-test": {"model": {"CIDEr-D": 1.0}}}))

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "ablations": {"out": str(tmp_path / "abl"), "sweeps": {"pretraining_x_caption_data": {"vary": {
            "pretrain.enabled": [True, False], "finetune.caption_fraction": [0.25, 1.0],
            "finetune.train.seed": [2, 3]}}}},
        "model": {}, "pretrain": {"out": "runs/pretrain", "enabled": True}, "finetune": {"out": "runs/finetune"},
        "evaluate": {"out": "runs/evaluate"}}))
    run_sweep(str(params), "pretraining_x_caption_data", execute=execute)
    rows = collect(tmp_path / "abl" / "pretraining_x_caption_data")
    assert len(rows) == 8
    claim = central_claim(rows, resamples=500)
    assert [c["caption_fraction"] for c in claim] == [0.25, 1.0]
    for c in claim:
        assert c["seeds_with"] == c["seeds_without"] == 2
        assert c["gain"] > 0 and c["excludes_zero"] and c["low"] <= c["gain"] <= c["high"]
    one_arm = [r for r in rows if not (r["finetune.caption_fraction"] == 1.0 and r["pretrain.enabled"])]
    assert [c["caption_fraction"] for c in central_claim(one_arm, resamples=500)] == [0.25]
