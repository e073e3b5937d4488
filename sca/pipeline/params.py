"""Reading a notebook's section of params.yaml (the one source of parameters).

Every pipeline notebook has one cell tagged ``parameters`` holding literals only::

    params_file = "params.yaml"   # relative to the repository root (the notebooks run there)
    overrides = {}                # a smoke or sweep run's changes, e.g. {"train": {"max_steps": 2}}

and reads its section with ``load_section(params_file, "<section>", overrides)``, so a reader in
JupyterLab gets exactly what ``dvc repro`` runs, and papermill or ``dvc exp run -S`` change it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["deep_update", "load_params", "load_section", "repo_root"]


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding params.yaml and dvc.yaml, searching upward from ``start`` (default cwd)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no folder with dvc.yaml and params.yaml above {str(here)!r}")


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``changes`` merged in (nested dicts merged, other values replaced)."""
    out = copy.deepcopy(base)
    for key, value in (changes or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_params(params_file: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    path = Path(params_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"params file {str(path)!r} not found (cwd {os.getcwd()!r}); run from the repository root"
        )
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping of sections, got {type(params).__name__}")
    return params


def load_section(params_file: str | os.PathLike, section: str, overrides: dict[str, Any] | None = None,
                 *, with_sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """Section ``section`` of ``params_file`` with ``overrides`` merged in. ``with_sections`` names
    other sections to attach under their own keys (e.g. a training notebook also reads ``model``);
    overrides may change those too (``{"model": {...}}``)."""
    params = load_params(params_file)
    if section not in params:
        raise KeyError(f"{str(params_file)!r} has no section {section!r}; sections: {sorted(params)}")
    out = copy.deepcopy(params[section])
    for other in with_sections:
        if other not in params:
            raise KeyError(f"{str(params_file)!r} has no section {other!r}")
        out[other] = copy.deepcopy(params[other])
    return deep_update(out, overrides or {})
