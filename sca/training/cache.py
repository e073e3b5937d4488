"""A disk cache of frozen image embeddings (for runs without image augmentation).

A frozen segmenter gives the same embedding for the same preprocessed image, so a run that does not
augment images can compute it once per image and reuse it across epochs, stages and sweeps. Entries
live under ``root/<fingerprint>/`` where the fingerprint hashes everything the embedding depends
on: the segmenter's registry spec and its weights (the tensors themselves), the preprocessing
settings, and the dataset's identity. Change any of them and the cache is a different folder;
nothing stale is ever read. Each entry is one safetensors file written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["EmbeddingCache", "segmenter_fingerprint"]


def segmenter_fingerprint(segmenter: torch.nn.Module, spec: dict[str, Any]) -> str:
    """sha256 over the segmenter's spec and the bytes of all its tensors (weights and buffers)."""
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for name, tensor in sorted(segmenter.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class EmbeddingCache:
    """Image features by key, computed at most once per (segmenter, preprocessing, dataset, image).

    Args:
        root: cache folder (shared by runs and stages).
        segmenter: the frozen segmenter whose ``encode`` fills the cache.
        spec: its registry spec (name and options), part of the fingerprint.
        context: anything else the features depend on (image size, normalisation, dataset id...).
    """

    def __init__(self, root: str | os.PathLike, segmenter: torch.nn.Module, spec: dict[str, Any],
                 context: dict[str, Any]):
        if segmenter.trainable_module_names():
            raise ValueError(
                "the embedding cache needs a frozen segmenter; this one trains "
                f"{segmenter.trainable_module_names()}"
            )
        self.segmenter = segmenter
        key = hashlib.sha256((segmenter_fingerprint(segmenter, spec) + json.dumps(context, sort_keys=True,
                                                                                    default=str)).encode())
        self.dir = Path(root) / key.hexdigest()[:24]
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "info.json"
        if not info.exists():
            _write_atomic(info, json.dumps({"spec": spec, "context": context}, indent=2, default=str).encode())
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.dir / digest[:2] / f"{digest}.safetensors"

    def features(self, keys: list[str], pixel_values: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Features of the images ``keys`` (batch order); computes the missing ones from
        ``pixel_values`` [B, 3, S, S] in one encoder call and stores them."""
        paths = [self._path(k) for k in keys]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        computed: dict[int, dict[str, torch.Tensor]] = {}
        if missing:
            if pixel_values is None:
                raise ValueError(f"{len(missing)} image(s) are not cached and no pixels were given, e.g. {keys[missing[0]]!r}")
            with torch.no_grad():
                feats = self.segmenter.encode(pixel_values[missing].to(self.segmenter.device, self.segmenter.dtype))
            for j, i in enumerate(missing):
                one = {k: v[j].detach().cpu().contiguous() for k, v in feats.items()}
                paths[i].parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=paths[i].parent)
                os.close(fd)
                save_file(one, tmp)
                os.replace(tmp, paths[i])
                computed[i] = one
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        rows = [computed[i] if i in computed else load_file(str(p)) for i, p in enumerate(paths)]
        device = self.segmenter.device
        return {k: torch.stack([r[k] for r in rows]).to(device) for k in rows[0]}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
