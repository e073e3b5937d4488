"""Reading and writing region records: JSON Lines (gzip optional), a compact in-memory store, a manifest.

File format: one ``ImageRecord`` a line, UTF-8 JSON with sorted keys, no spaces, fields that are
``None`` left out (the reader restores them from the schema defaults). ``*.gz`` paths are gzip
files written with ``mtime=0`` and no file name, so the same records always give the same bytes and
DVC sees no change when nothing changed.

A data directory holds ``<split>.jsonl[.gz]`` files, optionally images, and ``manifest.json``::

    {"format": "sca-records/1",
     "files": {"train.jsonl.gz": {"sha256": ..., "bytes": ..., "images": 200, "regions": 812,
                                  "masks": 812, "phrases": 2436, "sources": {...}, "splits": {...},
                                  "tasks": {"caption": 812}}, ...},
     "images": {"dir": "images", "files": 240, "bytes": ..., "sha256": <hash of sorted name+sha256 list>},
     "totals": {...}, "sources": [...], "params": {...}}

``RecordStore`` keeps a whole records file as its raw JSON lines in one ``bytes`` buffer plus an
offset array: a dataset of a million regions costs its file size in memory, DataLoader workers
share it after fork (no per-sample re-reading of the file), and one record is parsed on access.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sca.data.records import ImageRecord
from sca.data.report import DataReport

FORMAT = "sca-records/1"

__all__ = [
    "FORMAT",
    "RecordStore",
    "dumps_record",
    "iter_records",
    "loads_record",
    "read_manifest",
    "read_records",
    "record_stats",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
    "write_records",
]


# ---------------------------------------------------------------------------------------------------
# One record <-> one line
# ---------------------------------------------------------------------------------------------------
def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def dumps_record(record: ImageRecord, allow_nan: bool = False) -> str:
    """One record as one compact JSON line (no trailing newline); deterministic.

    NaN / infinite numbers are not JSON: they raise ValueError naming the image, unless ``allow_nan``
    (the in-memory store allows them so the dataset can report the region instead of failing).
    """
    d = _drop_none(record.to_dict())
    d["regions"] = [_drop_none(r) for r in d["regions"]]
    try:
        return json.dumps(d, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=allow_nan)
    except ValueError as err:
        raise ValueError(f"image {record.image_id!r}: {err} (boxes must be finite numbers)") from None


def loads_record(line: str | bytes) -> ImageRecord:
    """Parse one JSON line into an ``ImageRecord``; raises ValueError naming what is wrong."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"a record line must be a JSON object, got {type(d).__name__}")
    try:
        return ImageRecord.from_dict(d)
    except TypeError as err:  # unknown or missing fields
        raise ValueError(f"record does not match the ImageRecord schema: {err}") from None


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------
def _open_read(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def write_records(path: str | os.PathLike, records: Iterable[ImageRecord]) -> dict[str, Any]:
    """Write ``records`` as JSON Lines to ``path`` (gzip when it ends in ``.gz``), atomically.

    Returns the file's stats (as in the manifest): sha256, bytes, images, regions, ...
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = list(records)
    payload = "".join(dumps_record(r) + "\n" for r in records).encode("utf-8")
    if path.suffix == ".gz":
        buf = io.BytesIO()
        # filename="" and mtime=0: the gzip header carries no name or time, so bytes are reproducible.
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
            gz.write(payload)
        payload = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload), **record_stats(records)}


def iter_records(path: str | os.PathLike, report: DataReport | None = None) -> Iterator[ImageRecord]:
    """Yield the records of a JSON Lines file. A bad line raises ValueError naming file and line, or,
    when ``report`` is given, is counted there (``record_invalid``, dropped-image) and skipped."""
    path = Path(path)
    with _open_read(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield loads_record(line)
            except ValueError as err:
                if report is None:
                    raise ValueError(f"{path}:{lineno}: {err}") from None
                report.add("record_invalid", "dropped-image", detail=f"{path.name}:{lineno}: {err}")


def read_records(path: str | os.PathLike, report: DataReport | None = None) -> list[ImageRecord]:
    return list(iter_records(path, report))


def record_stats(records: Iterable[ImageRecord]) -> dict[str, Any]:
    """Counts over records: images, regions, masks, phrases, and per source / split / task."""
    images = regions = masks = phrases = 0
    sources: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    for rec in records:
        images += 1
        sources[rec.source] += 1
        splits[rec.split] += 1
        for reg in rec.regions:
            regions += 1
            masks += reg.mask is not None
            phrases += len(reg.phrases)
            tasks[reg.task] += 1
    return {"images": images, "regions": regions, "masks": masks, "phrases": phrases,
            "sources": dict(sorted(sources.items())), "splits": dict(sorted(splits.items())),
            "tasks": dict(sorted(tasks.items()))}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------------
def _image_dir_digest(root: Path, image_dir: str) -> dict[str, Any]:
    files = sorted(p for p in (root / image_dir).rglob("*") if p.is_file())
    h = hashlib.sha256()
    total = 0
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\t{sha256_file(p)}\n".encode())
        total += p.stat().st_size
    return {"dir": image_dir, "files": len(files), "bytes": total, "sha256": h.hexdigest()}


def write_manifest(root: str | os.PathLike, files: dict[str, dict[str, Any]], *, image_dir: str | None = None,
                   params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``root/manifest.json`` from per-file stats (as returned by ``write_records``, keyed by the
    file name relative to ``root``); ``image_dir`` (relative to root) gets a combined digest."""
    root = Path(root)
    totals: Counter[str] = Counter()
    sources: set[str] = set()
    for stats in files.values():
        for key in ("images", "regions", "masks", "phrases"):
            totals[key] += stats[key]
        sources.update(stats["sources"])
    manifest = {
        "format": FORMAT,
        "files": {name: files[name] for name in sorted(files)},
        "totals": dict(totals),
        "sources": sorted(sources),
        "params": params or {},
    }
    if image_dir is not None:
        manifest["images"] = _image_dir_digest(root, image_dir)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return manifest


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / "manifest.json"
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def verify_manifest(root: str | os.PathLike) -> list[str]:
    """Check every file's sha256 (and the image digest) against the manifest; returns the problems."""
    root = Path(root)
    manifest = read_manifest(root)
    problems = []
    for name, stats in manifest["files"].items():
        path = root / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != stats["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    if "images" in manifest:
        now = _image_dir_digest(root, manifest["images"]["dir"])
        if now != manifest["images"]:
            problems.append(f"{manifest['images']['dir']}/: {now['files']} files, digest differs from the manifest")
    return problems


# ---------------------------------------------------------------------------------------------------
# Compact in-memory store
# ---------------------------------------------------------------------------------------------------
class RecordStore(Sequence):
    """Records as raw JSON lines in one buffer; ``store[i]`` parses record ``i``.

    offsets: [N+1] int64 byte offsets into the buffer. num_regions: [N] int32.
    """

    def __init__(self, lines: Sequence[bytes], num_regions: Sequence[int]):
        self._buffer = b"".join(lines)
        self.offsets = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lines], out=self.offsets[1:])
        self.num_regions = np.asarray(num_regions, dtype=np.int32)

    @classmethod
    def from_records(cls, records: Iterable[ImageRecord]) -> RecordStore:
        lines, counts = [], []
        for rec in records:
            lines.append(dumps_record(rec, allow_nan=True).encode("utf-8"))
            counts.append(len(rec.regions))
        return cls(lines, counts)

    @classmethod
    def load(cls, path: str | os.PathLike, report: DataReport | None = None) -> RecordStore:
        """Read a JSON Lines file once; every line is validated (bad ones raise, or are counted in
        ``report`` and skipped) and kept in its compact form."""
        lines, counts = [], []
        for rec in iter_records(path, report):
            lines.append(dumps_record(rec, allow_nan=True).encode("utf-8"))
            counts.append(len(rec.regions))
        return cls(lines, counts)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record index {i} out of range for a store of {n}")
        i %= n
        return loads_record(self._buffer[self.offsets[i]:self.offsets[i + 1]])

    @property
    def nbytes(self) -> int:
        return len(self._buffer) + self.offsets.nbytes + self.num_regions.nbytes
