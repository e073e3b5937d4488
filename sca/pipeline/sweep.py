"""Ablation sweeps as papermill-parameterised notebook runs, and their collection into tables.

A sweep in ``params.yaml`` names the keys it varies (``section.key.subkey``) and their values::

    ablations:
      out: runs/ablations
      sweeps:
        pretraining_x_caption_data:
          vary: {pretrain.enabled: [true, false], finetune.caption_fraction: [0.1, 0.3, 1.0]}

Every combination runs the pretrain, finetune and evaluate notebooks with papermill, passing the
variant's changes (and its own output folders) as the ``overrides`` parameter, into
``<out>/<sweep>/<variant>/``. Pretraining runs are shared between variants whose pretraining
parameters are equal. The same variants also run as DVC experiments, since the notebooks read
params.yaml: ``dvc exp run --queue -S pretrain.enabled=false -S finetune.caption_fraction=0.1``.

A finished variant is skipped when run again only if nothing it read has changed: its ``inputs.json``
holds a fingerprint of its parameters, of the data / segmenter / LM stages (their params sections
and, when ``dvc.lock`` exists, the content hashes DVC recorded for their outputs) and of the code and
notebooks the stages run (the folders DVC tracks for them). A shared pretraining's folder is named by
the same fingerprint of its own inputs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sca.pipeline.params import deep_update, load_params

__all__ = ["central_claim", "collect", "expand", "plan_sweep", "reference_row", "run_sweep", "upstream_inputs", "variant_name"]

NOTEBOOKS = {"pretrain": "notebooks/04_pretrain.ipynb", "finetune": "notebooks/05_finetune.ipynb",
             "evaluate": "notebooks/06_evaluate.ipynb"}
UPSTREAM_STAGES = ("data", "segmenter", "language_model")  # what every variant reads, no sweep re-runs
CODE = ("sca/training", "sca/models", "sca/evaluation", "sca/data", *NOTEBOOKS.values())  # as dvc.yaml tracks


def expand(vary: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """{key: [values]} -> every combination as {key: value}, in a stable order."""
    if not vary:
        raise ValueError("a sweep needs at least one key under 'vary'")
    for key, values in vary.items():
        if "." not in key:
            raise ValueError(f"sweep key {key!r} must be section.key (e.g. finetune.caption_fraction)")
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep key {key!r} needs a non-empty list of values, got {values!r}")
    keys = list(vary)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(vary[k] for k in keys))]


# Folder names hold no braces (papermill formats its output path with str.format), quotes or colons.
_NAME_CHARS = str.maketrans({"/": "_", " ": None, '"': None, "'": None, "{": "(", "}": ")", "[": "(", "]": ")",
                             ":": "="})


def variant_name(variant: dict[str, Any]) -> str:
    """A variant's folder name: ``key=value`` of its last key parts, e.g.
    ``caption_fraction=0.25,enabled=True`` or ``image_encoder=(name=tiny-sam,weights=runs_segmenter_model)``."""
    parts = []
    for key, value in variant.items():
        short = key.split(".")[-1]
        text = json.dumps(value, sort_keys=True, separators=(",", ":")) if isinstance(value, dict | list) else str(value)
        parts.append(f"{short}={text}")
    name = ",".join(parts).translate(_NAME_CHARS)
    return name if len(name) <= 80 else name[:60] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _nested(key_path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(key_path):
        out = {part: out}
    return out


def _get(params: dict[str, Any], key: str) -> Any:
    """The value at ``section.key.subkey`` of params (None where a part is missing)."""
    value: Any = params
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _replacing(params: dict[str, Any], key: str, value: Any) -> Any:
    """A varied value replaces what params.yaml has at ``key``: overrides are merged into the sections
    (here and in the notebooks), so a dict value also sets the base dict's other keys to None.
    E.g. varying model.image_encoder to an untrained spec drops the base spec's ``weights``."""
    base = _get(params, key)
    if isinstance(value, dict) and isinstance(base, dict):
        return {**{k: None for k in base if k not in value}, **value}
    return value


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _code_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for entry in CODE:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
        for file in files:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def upstream_inputs(params: dict[str, Any], root: str | os.PathLike = ".") -> dict[str, Any]:
    """What every variant reads and no sweep re-runs: the params sections of the data, segmenter and
    LM stages, the output hashes ``root/dvc.lock`` records for those stages (when it exists) and a
    hash of the code and notebooks the sweep's stages run (relative to the working directory, where
    the notebooks run from)."""
    root = Path(root)
    lock: dict[str, Any] = {}
    if (root / "dvc.lock").is_file():
        import yaml

        stages = (yaml.safe_load((root / "dvc.lock").read_text()) or {}).get("stages", {})
        for name in UPSTREAM_STAGES:
            outs = stages.get(name, {}).get("outs", [])
            lock[name] = sorted((o.get("path"), o.get("md5") or o.get("hash")) for o in outs if isinstance(o, dict))
    return {"params": {name: params.get(name) for name in UPSTREAM_STAGES}, "dvc_lock": lock,
            "code": _code_hash(Path.cwd())}


def plan_sweep(params: dict[str, Any], sweep: str, extra: dict[str, dict[str, Any]] | None = None,
               upstream: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The runs of ``sweep``: per variant, the overrides of each notebook (section -> overrides) and
    the ``fingerprint`` of everything the variant reads (``upstream``: see ``upstream_inputs``)."""
    ablations = params.get("ablations", {})
    if sweep not in ablations.get("sweeps", {}):
        raise KeyError(f"no sweep {sweep!r} in params.yaml; sweeps: {sorted(ablations.get('sweeps', {}))}")
    root = Path(ablations.get("out", "runs/ablations"))
    plans = []
    for variant in expand(ablations["sweeps"][sweep]["vary"]):
        changes: dict[str, dict[str, Any]] = {}
        for key, value in variant.items():
            section, *rest = key.split(".")
            changes = deep_update(changes, {section: _nested(rest, _replacing(params, key, value))})
        changes = deep_update(changes, extra or {})
        folder = root / sweep / variant_name(variant)
        model = deep_update(params["model"], changes.get("model", {}))
        pre = deep_update(params["pretrain"], changes.get("pretrain", {}))
        pre_out = root / "_pretrain" / _hash({"pretrain": pre, "model": model, "upstream": upstream})
        over = {
            "pretrain": deep_update(changes.get("pretrain", {}), {"out": str(pre_out), "model": changes.get("model", {})}),
            "finetune": deep_update(changes.get("finetune", {}), {"out": str(folder / "finetune"),
                                                                  "init_from": str(pre_out),
                                                                  "model": changes.get("model", {})}),
            "evaluate": deep_update(changes.get("evaluate", {}), {"out": str(folder / "evaluate"),
                                                                  "checkpoint": str(folder / "finetune" / "model")}),
        }
        reads = {name: deep_update(params.get(name, {}), over[name]) for name in NOTEBOOKS}
        plans.append({"sweep": sweep, "variant": variant, "name": variant_name(variant), "folder": str(folder),
                      "overrides": over, "fingerprint": _hash({"reads": reads, "model": model, "upstream": upstream})})
    return plans


def _papermill(notebook: str, output: Path, params_file: str, overrides: dict[str, Any]) -> None:
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    # papermill fills "{parameter}" fields of the output path (str.format): braces are escaped
    escaped = str(output).replace("{", "{{").replace("}", "}}")
    pm.execute_notebook(notebook, escaped, parameters={"params_file": params_file, "overrides": overrides},
                        cwd=os.getcwd(), progress_bar=False, log_output=False)


def run_sweep(params_file: str, sweep: str, *, execute: Callable = _papermill,
              extra: dict[str, dict[str, Any]] | None = None, skip_done: bool = True) -> list[dict[str, Any]]:
    """Run every variant of ``sweep`` (see the module docstring); returns ``collect`` of its folder.

    extra: overrides added to every variant (e.g. a smoke run's ``{"finetune": {"train": {...}}}``).
    skip_done: a finished variant whose inputs are unchanged (``inputs.json``), or a shared
    pretraining with its metrics, is not run again (an interrupted sweep continues); a finished
    variant whose inputs changed is run again, and says so."""
    params = load_params(params_file)
    done_pretrain: set[str] = set()
    upstream = upstream_inputs(params, Path(params_file).resolve().parent)
    for plan in plan_sweep(params, sweep, extra, upstream):
        folder = Path(plan["folder"])
        inputs = folder / "inputs.json"
        if (folder / "evaluate" / "metrics.json").is_file():
            recorded = json.loads(inputs.read_text()).get("fingerprint") if inputs.is_file() else None
            if skip_done and recorded == plan["fingerprint"]:
                continue
            if skip_done:
                print(f"sweep {sweep}: re-running {plan['name']}: its inputs changed since it ran", flush=True)
            (folder / "evaluate" / "metrics.json").unlink()
        # A disabled pretraining still "runs": it writes the marker that makes fine-tuning start fresh.
        pre_out = plan["overrides"]["pretrain"]["out"]
        if pre_out not in done_pretrain and not (skip_done and (Path(pre_out) / "metrics.json").is_file()):
            execute(NOTEBOOKS["pretrain"], Path(pre_out) / "notebook.ipynb", params_file, plan["overrides"]["pretrain"])
        done_pretrain.add(pre_out)
        execute(NOTEBOOKS["finetune"], folder / "finetune" / "notebook.ipynb", params_file,
                plan["overrides"]["finetune"])
        execute(NOTEBOOKS["evaluate"], folder / "evaluate" / "notebook.ipynb", params_file,
                plan["overrides"]["evaluate"])
        (folder / "variant.json").write_text(json.dumps(plan["variant"], indent=2) + "\n")
        inputs.write_text(json.dumps({"fingerprint": plan["fingerprint"], "upstream": upstream}, indent=2,
                                     default=str) + "\n")
    return collect(Path(params.get("ablations", {}).get("out", "runs/ablations")) / sweep)


def _metric_row(metrics_path: Path) -> dict[str, Any]:
    """The evaluation scores of one ``evaluate/metrics.json`` as flat ``<set>/...`` columns."""
    row: dict[str, Any] = {}
    for name, result in json.loads(metrics_path.read_text()).items():
        for metric, value in result["model"].items():
            row[f"{name}/{metric}"] = value
        for base, scores in result.get("baselines", {}).items():
            for metric, value in scores.items():
                row[f"{name}/baseline:{base}/{metric}"] = value
        for key in ("loss_gap", "distinct_candidates"):
            if key in result.get("region_use", {}):
                row[f"{name}/region_use/{key}"] = result["region_use"][key]
        for key, value in result.get("region_use", {}).get("attributes", {}).items():
            if key != "num_regions":
                row[f"{name}/attributes/{key}"] = value
    return row


def collect(folder: str | os.PathLike, params_file: str | os.PathLike | None = None,
            extra: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per finished variant under ``folder``: its varied values, then per evaluation set
    the model's and the baselines' scores (``<set>/<metric>``, ``<set>/baseline:<name>/<metric>``)
    and, when the evaluation measured it, the model's region use (``<set>/region_use/loss_gap`` and
    ``<set>/region_use/distinct_candidates``, see ``sca.evaluation.diagnostics``).

    With ``params_file`` (and the ``extra`` overrides the sweep ran with), each row also says whether
    it is ``current``: its recorded inputs equal what the sweep named like ``folder`` would read now
    (False for results of older code, data or parameters, which ``sca sweep`` would re-run)."""
    folder = Path(folder)
    params = upstream = None
    if params_file is not None:
        params = load_params(str(params_file))
        upstream = upstream_inputs(params, Path(params_file).resolve().parent)
    rows = []
    for variant_dir in sorted(folder.iterdir() if folder.is_dir() else []):
        metrics = variant_dir / "evaluate" / "metrics.json"
        spec = variant_dir / "variant.json"
        if not metrics.is_file() or not spec.is_file():
            continue
        variant = json.loads(spec.read_text())
        row = {"variant": variant_dir.name, "folder": str(variant_dir), **variant, **_metric_row(metrics)}
        if params is not None:
            row["current"] = _recorded_fingerprint(variant_dir) == _fingerprint_now(params, folder.name, variant,
                                                                                   extra, upstream)
        rows.append(row)
    return rows


def _recorded_fingerprint(variant_dir: Path) -> str | None:
    inputs = variant_dir / "inputs.json"
    return json.loads(inputs.read_text()).get("fingerprint") if inputs.is_file() else None


def _fingerprint_now(params: dict[str, Any], sweep: str, variant: dict[str, Any],
                     extra: dict[str, dict[str, Any]] | None, upstream: dict[str, Any]) -> str:
    """The fingerprint ``plan_sweep`` gives ``variant`` today (also for values no longer in the sweep)."""
    ablations = dict(params.get("ablations", {}))
    ablations["sweeps"] = {sweep: {"vary": {key: [value] for key, value in variant.items()}}}
    (plan,) = plan_sweep({**params, "ablations": ablations}, sweep, extra, upstream)
    return plan["fingerprint"]


def reference_row(params: dict[str, Any], sweep: str,
                  rows: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The ``dvc repro`` run of ``params`` as a row shaped like ``collect``'s for ``sweep``: the
    values params.yaml itself gives the sweep's keys, and the scores in ``<evaluate.out>/metrics.json``.
    None when that file does not exist, or when ``rows`` (``collect``'s, with ``current``) already
    hold a current run of those values. Valid as the sweep's baseline row only while ``dvc status``
    is clean: the row is what the pipeline last computed, not a re-run."""
    metrics = Path(params.get("evaluate", {}).get("out", "runs/evaluate")) / "metrics.json"
    if not metrics.is_file():
        return None
    values = {key: _get(params, key) for key in params["ablations"]["sweeps"][sweep]["vary"]}
    if any(row.get("current") and all(row.get(k) == v for k, v in values.items()) for row in rows or []):
        return None
    return {"variant": "dvc repro (params.yaml)", "folder": str(metrics.parent.parent), **values, **_metric_row(metrics)}


def central_claim(rows: list[dict[str, Any]], *, set_name: str = "synthetic-test", metric: str = "CIDEr-D",
                  resamples: int = 4000, level: float = 0.95) -> list[dict[str, Any]]:
    """The paper's central claim per caption share, from ``collect`` rows of the
    ``pretraining_x_caption_data*`` sweeps: the gain of weak pretraining in ``metric``, mean over the
    fine-tuning seeds of each arm, with the paired two-level bootstrap interval over seeds and test
    regions (``sca.evaluation.bootstrap``). One dict per share, scarcest first: caption_fraction,
    seeds_with, seeds_without, gain, low, high, excludes_zero and the two means."""
    from sca.evaluation.bootstrap import gain_interval, per_region_scores

    arms: dict[float, dict[bool, list[dict[str, float]]]] = {}
    for row in rows:
        if "pretrain.enabled" not in row or "finetune.caption_fraction" not in row:
            continue
        predictions = Path(row["folder"]) / "evaluate" / "sets" / set_name / "predictions.jsonl"
        if not predictions.is_file():
            continue
        share = float(row["finetune.caption_fraction"])
        arms.setdefault(share, {True: [], False: []})[bool(row["pretrain.enabled"])].append(
            per_region_scores(predictions, metric))
    out = []
    for share in sorted(arms):
        with_, without = arms[share][True], arms[share][False]
        if not with_ or not without:
            continue
        g = gain_interval(with_, without, resamples=resamples, level=level)
        out.append({"caption_fraction": share, "seeds_with": g["runs_a"], "seeds_without": g["runs_b"],
                    "with": g["mean_a"], "without": g["mean_b"], "gain": g["gain"], "low": g["low"],
                    "high": g["high"], "excludes_zero": g["low"] > 0 or g["high"] < 0, "level": level})
    return out
