"""Checkpoint integrity: every weight file is recorded at save time and checked at load time.

``save_pretrained`` records the size and sha256 of every weight file of a checkpoint folder
(``model.safetensors`` and the files of its ``image_encoder/`` and ``language_model/`` folders) in
its ``config.json`` under ``weight_files``. At load time:

- a recorded file that is missing, has another size or another sha256 is refused, naming the file,
  both hashes, and that the file is corrupt or was changed after saving; a weight file in a
  recorded folder that the record does not list is refused too;
- every tensor read from a checkpoint must be finite: a NaN or an infinity is refused, naming the
  tensor and the file (checkpoints without a record, saved before it existed or by the reference
  code, get this check too);
- a file that cannot be read (truncated, not safetensors, a ``pytorch_model.bin`` whose pickle
  holds anything but tensors) is refused naming the file and what is wrong with it. A
  ``pytorch_model.bin`` is only ever read with ``weights_only=True``: no code from it runs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

RECORD_KEY = "weight_files"  # config.json key: {relative path: {"size": bytes, "sha256": hex}}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")

__all__ = [
    "RECORD_KEY",
    "CheckpointError",
    "check_finite",
    "check_weight_folder",
    "read_state_dict",
    "read_weight_file",
    "record_weight_files",
    "sha256_file",
    "verify_weight_files",
    "weight_files",
]


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, changed since it was saved, unreadable or unsafe to read."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_weight_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(WEIGHT_SUFFIXES)


def record_weight_files(root: Path) -> dict[str, dict[str, Any]]:
    """{path relative to ``root`` (``/``-separated): {"size", "sha256"}} of every weight file under
    ``root``, sorted by path."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if _is_weight_file(p))
    return {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}


def verify_weight_files(root: Path, record: Any, config_path: Path) -> None:
    """Check the weight files of checkpoint folder ``root`` against ``record`` (as written by
    ``record_weight_files``, read from ``config_path``); raise CheckpointError on the first problem."""
    root = Path(root)
    if not isinstance(record, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("size"), int) and re.fullmatch(r"[0-9a-f]{64}", str(e.get("sha256")))
        for e in record.values()
    ):
        raise CheckpointError(
            f"{str(config_path)!r}: {RECORD_KEY!r} must map each weight file's relative path to "
            f'{{"size": <bytes>, "sha256": <64 hex digits>}}; got {json.dumps(record)[:200]}')
    for rel, expected in record.items():
        path = root / rel
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint weight file {str(path)!r} is missing: {str(config_path)!r} records it "
                f"({expected['size']} bytes, sha256 {expected['sha256']}); copy or download the whole folder again")
        size, actual = path.stat().st_size, sha256_file(path)
        if size != expected["size"] or actual != expected["sha256"]:
            raise CheckpointError(
                f"checkpoint weight file {str(path)!r} is corrupt or was changed after saving: it has {size} bytes, "
                f"sha256 {actual}; {str(config_path)!r} recorded {expected['size']} bytes, sha256 "
                f"{expected['sha256']} when it was saved. Save the checkpoint again, or copy or download it again")
    folders = {(root / rel).parent for rel in record} | {root}
    extra = sorted(str(p) for folder in folders for p in folder.iterdir()
                   if _is_weight_file(p) and p.relative_to(root).as_posix() not in record)
    if extra:
        raise CheckpointError(
            f"checkpoint folder {str(root)!r} holds weight file(s) {extra} that {str(config_path)!r} does not "
            f"record (it records {sorted(record)}): they were added or renamed after saving; remove them")


def check_finite(name: str, tensor: torch.Tensor, path: Path | str) -> None:
    """Raise CheckpointError if floating ``tensor`` (called ``name`` in file ``path``) has a NaN or inf."""
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.device.type == "meta":
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = tensor[~finite]
        nans, infs = int(torch.isnan(bad).sum()), int(torch.isinf(bad).sum())
        raise CheckpointError(
            f"checkpoint weight file {str(path)!r}: tensor {name!r} {tuple(tensor.shape)} holds {nans} NaN and "
            f"{infs} infinite value(s) of {tensor.numel()}; the weights are broken (e.g. training diverged or "
            "the file was damaged) and would produce nonsense")


def _safetensors_items(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118  (safe_open is not a mapping)
                yield name, f.get_tensor(name)
    except SafetensorError as err:
        raise CheckpointError(
            f"checkpoint weight file {str(path)!r} is not a readable safetensors file ({err}): it is truncated "
            "or corrupt; save the checkpoint again or copy or download it again") from None


_NO_ADVICE = re.compile(r"weights.only|add_safe_globals|safe_globals|trust", re.I)


def _unpickler_reason(err: Exception) -> str:
    """What torch's weights-only unpickler refused, without torch's advice on how to run the code."""
    text = str(err)
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
    if found:
        return f"it asks to import the Python object {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    if found:
        reason = found.group(1).split(". Please")[0].strip().rstrip(".")
        if reason and not _NO_ADVICE.search(reason):
            return f"the unpickler stopped at: {reason}"
    return "it holds Python objects other than tensors"


def _torch_items(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "weights only" not in str(err).lower():
            raise CheckpointError(
                f"checkpoint weight file {str(path)!r} is not a readable PyTorch file ({type(err).__name__}: "
                f"{str(err).split('. ')[0].strip()}): it is truncated or corrupt; copy or download it again") from None
        raise CheckpointError(
            f"checkpoint weight file {str(path)!r} is refused: {_unpickler_reason(err)}, so reading it could run "
            "code from the file. sca reads only tensors from PyTorch files; use a safetensors copy of the "
            "checkpoint (model.safetensors) from its publisher") from None
    except (EOFError, OSError, ValueError) as err:
        detail = str(err).split(". ")[0].strip()
        raise CheckpointError(
            f"checkpoint weight file {str(path)!r} is not a readable PyTorch file ({type(err).__name__}: "
            f"{detail}): it is truncated or corrupt; copy or download it again") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint weight file {str(path)!r} holds a {type(state).__name__}, not a state "
                              "dict (a mapping of tensor names to tensors)")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"checkpoint weight file {str(path)!r}: entry {name!r} is a {type(value).__name__}, not a tensor; "
                "a state dict maps tensor names to tensors")
        yield name, value


def _items(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    path = Path(path)
    if path.suffix == ".safetensors":
        yield from _safetensors_items(path)
    elif path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        yield from _torch_items(path)
    else:
        raise CheckpointError(f"checkpoint weight file {str(path)!r}: unknown format; accepted: .safetensors, "
                              "or .bin / .pt / .pth / .ckpt (PyTorch state dicts, read without running code)")


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weight file (safetensors, or a PyTorch state dict read with
    ``weights_only=True``), each checked to be finite; CheckpointError names the file."""
    state = {}
    for name, tensor in _items(path):
        check_finite(name, tensor, path)
        state[name] = tensor
    return state


def weight_files(root: Path) -> list[Path]:
    """The weight files of a transformers checkpoint folder: safetensors (single or sharded) or
    pytorch_model.bin (single or sharded)."""
    root = Path(root)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = root / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise CheckpointError(f"{str(index)!r} is not a shard index (JSON with a 'weight_map' of tensor "
                                      f"names to file names): {type(err).__name__}: {err}") from None
            return [root / shard for shard in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (root / name).is_file():
            return [root / name]
    raise FileNotFoundError(f"{str(root)!r} holds no model.safetensors or pytorch_model.bin (sharded or not)")


def read_state_dict(root: Path) -> dict[str, torch.Tensor]:
    """The weights of a transformers checkpoint folder (see ``weight_files``), read and checked by
    ``read_weight_file``."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(root):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint weight file {str(path)!r} is missing (its folder's shard index "
                                    "names it)")
        state.update(read_weight_file(path))
    return state


def check_weight_folder(root: Path) -> None:
    """Read every weight file of a transformers folder (one tensor at a time for safetensors) and
    check it: readable, finite. Used on the part folders of a checkpoint before transformers loads
    them, so a bad file is named instead of failing (or loading) inside transformers."""
    for path in weight_files(root):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint weight file {str(path)!r} is missing (its folder's shard index "
                                    "names it)")
        for name, tensor in _items(path):
            check_finite(name, tensor, path)
