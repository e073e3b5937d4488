"""Training checkpoints that resume exactly: written atomically, read without running code.

A checkpoint is a folder ``checkpoints/step-00001234/`` holding
- ``trainable.safetensors``: the parameters that train (nothing frozen: that is rebuilt from config);
- ``optimizer.pt``, ``scheduler.pt``: their state dicts (tensors and plain values only; read with
  ``torch.load(weights_only=True)``);
- ``zero/rank-<r>.pt`` instead of ``optimizer.pt`` under DeepSpeed ZeRO: each process's optimizer
  share (``sca.training.zero``), read the same way;
- ``rng.pt``: RNG states of torch (CPU and CUDA), numpy and Python's ``random``, per process;
- ``state.json``: step, data position (epoch, batches done in it), config, metrics so far.

Writes go to a temporary folder that is renamed into place, then ``checkpoints/latest`` (a text file
with the folder name) is replaced atomically: a run killed at any moment leaves either the previous
checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = ["TrainState", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

LATEST = "latest"


@dataclass
class TrainState:
    """Where training is: ``step`` optimizer steps done; the data position is ``epoch`` and
    ``batches_in_epoch`` (micro-batches of that epoch already consumed)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    samples_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: str | os.PathLike, *, trainable: dict[str, torch.Tensor], optimizer, scheduler,
                    state: TrainState, config: dict[str, Any], keep: int = 2, process_index: int = 0,
                    rng_states: list[dict[str, Any]] | None = None, attach: dict[str, Path] | None = None) -> Path:
    """Write a checkpoint for ``state.step`` under ``root`` atomically; keep the newest ``keep``.

    rng_states: one RNG state per process (gathered by the trainer); default: this process's.
    optimizer: None when its state is attached instead (DeepSpeed ZeRO: ``attach={"zero": folder}``,
    one file per process, ``sca.training.zero``); attached folders are moved into the checkpoint."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state.step:08d}"
    target = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        for name, folder in (attach or {}).items():
            os.replace(folder, tmp / name)
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states if rng_states is not None else [_rng_state()], tmp / "rng.pt")
        payload = {"step": state.step, "epoch": state.epoch, "batches_in_epoch": state.batches_in_epoch,
                   "samples_seen": state.samples_seen, "extra": state.extra, "config": config}
        (tmp / "state.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _write_text_atomic(root / LATEST, name + "\n")
    _prune(root, keep)
    return target


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.startswith("."))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in [*root.glob(".step-*.tmp-*"), *root.glob(".zero-step-*")]:  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The checkpoint ``latest`` names, if it is complete; else the newest complete one; else None."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        if (folder / "state.json").is_file():
            return folder
    complete = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def load_checkpoint(folder: str | os.PathLike, *, optimizer=None, scheduler=None, restore_rng: bool = True,
                    process_index: int = 0) -> tuple[dict[str, torch.Tensor], TrainState, dict[str, Any]]:
    """Read a checkpoint: returns (trainable weights, TrainState, config); loads optimizer/scheduler
    state in place and restores this process's RNG state when asked."""
    folder = Path(folder)
    payload = json.loads((folder / "state.json").read_text())
    trainable = load_file(str(folder / "trainable.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu", weights_only=True))
    if restore_rng:
        states = torch.load(folder / "rng.pt", map_location="cpu", weights_only=True)
        if process_index >= len(states):
            raise ValueError(
                f"checkpoint {str(folder)!r} holds RNG states of {len(states)} process(es); this is process "
                f"{process_index}: resume with the same number of processes"
            )
        _set_rng_state(states[process_index])
    state = TrainState(step=payload["step"], epoch=payload["epoch"], batches_in_epoch=payload["batches_in_epoch"],
                       samples_seen=payload.get("samples_seen", 0), extra=payload.get("extra", {}))
    return trainable, state, payload.get("config", {})
