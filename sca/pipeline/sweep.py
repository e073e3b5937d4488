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

__all__ = ["collect", "expand", "plan_sweep", "run_sweep", "variant_name"]

NOTEBOOKS = {"pretrain": "notebooks/04_pretrain.ipynb", "finetune": "notebooks/05_finetune.ipynb",
             "evaluate": "notebooks/06_evaluate.ipynb"}


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


def variant_name(variant: dict[str, Any]) -> str:
    parts = []
    for key, value in variant.items():
        short = key.split(".")[-1]
        text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
        parts.append(f"{short}={text}")
    name = ",".join(parts).replace("/", "_").replace(" ", "")
    return name if len(name) <= 80 else name[:60] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _nested(key_path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(key_path):
        out = {part: out}
    return out


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plan_sweep(params: dict[str, Any], sweep: str, extra: dict[str, dict[str, Any]] | None = None
               ) -> list[dict[str, Any]]:
    """The runs of ``sweep``: per variant, the overrides of each notebook (section -> overrides)."""
    ablations = params.get("ablations", {})
    if sweep not in ablations.get("sweeps", {}):
        raise KeyError(f"no sweep {sweep!r} in params.yaml; sweeps: {sorted(ablations.get('sweeps', {}))}")
    root = Path(ablations.get("out", "runs/ablations"))
    plans = []
    for variant in expand(ablations["sweeps"][sweep]["vary"]):
        changes: dict[str, dict[str, Any]] = {}
        for key, value in variant.items():
            section, *rest = key.split(".")
            changes = deep_update(changes, {section: _nested(rest, value)})
        changes = deep_update(changes, extra or {})
        folder = root / sweep / variant_name(variant)
        model = deep_update(params["model"], changes.get("model", {}))
        pre = deep_update(params["pretrain"], changes.get("pretrain", {}))
        pre_out = root / "_pretrain" / _hash({"pretrain": pre, "model": model})
        over = {
            "pretrain": deep_update(changes.get("pretrain", {}), {"out": str(pre_out), "model": changes.get("model", {})}),
            "finetune": deep_update(changes.get("finetune", {}), {"out": str(folder / "finetune"),
                                                                  "init_from": str(pre_out),
                                                                  "model": changes.get("model", {})}),
            "evaluate": deep_update(changes.get("evaluate", {}), {"out": str(folder / "evaluate"),
                                                                  "checkpoint": str(folder / "finetune" / "model")}),
        }
        plans.append({"sweep": sweep, "variant": variant, "name": variant_name(variant), "folder": str(folder),
                      "overrides": over})
    return plans


def _papermill(notebook: str, output: Path, params_file: str, overrides: dict[str, Any]) -> None:
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(notebook, str(output), parameters={"params_file": params_file, "overrides": overrides},
                        cwd=os.getcwd(), progress_bar=False, log_output=False)


def run_sweep(params_file: str, sweep: str, *, execute: Callable = _papermill,
              extra: dict[str, dict[str, Any]] | None = None, skip_done: bool = True) -> list[dict[str, Any]]:
    """Run every variant of ``sweep`` (see the module docstring); returns ``collect`` of its folder.

    extra: overrides added to every variant (e.g. a smoke run's ``{"finetune": {"train": {...}}}``).
    skip_done: a variant whose evaluate/metrics.json exists, or a shared pretraining with its model,
    is not run again (an interrupted sweep continues)."""
    params = load_params(params_file)
    done_pretrain: set[str] = set()
    for plan in plan_sweep(params, sweep, extra):
        folder = Path(plan["folder"])
        if skip_done and (folder / "evaluate" / "metrics.json").is_file():
            continue
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
    return collect(Path(params.get("ablations", {}).get("out", "runs/ablations")) / sweep)


def collect(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per finished variant under ``folder``: its varied values, then per evaluation set
    the model's and the baselines' scores (``<set>/<metric>``, ``<set>/baseline:<name>/<metric>``)
    and, when the evaluation measured it, the model's region use (``<set>/region_use/loss_gap`` and
    ``<set>/region_use/distinct_candidates``, see ``sca.evaluation.diagnostics``)."""
    rows = []
    for variant_dir in sorted(Path(folder).iterdir() if Path(folder).is_dir() else []):
        metrics = variant_dir / "evaluate" / "metrics.json"
        spec = variant_dir / "variant.json"
        if not metrics.is_file() or not spec.is_file():
            continue
        row: dict[str, Any] = {"variant": variant_dir.name, **json.loads(spec.read_text())}
        for name, result in json.loads(metrics.read_text()).items():
            for metric, value in result["model"].items():
                row[f"{name}/{metric}"] = value
            for base, scores in result.get("baselines", {}).items():
                for metric, value in scores.items():
                    row[f"{name}/baseline:{base}/{metric}"] = value
            for key in ("loss_gap", "distinct_candidates"):
                if key in result.get("region_use", {}):
                    row[f"{name}/region_use/{key}"] = result["region_use"][key]
        rows.append(row)
    return rows
