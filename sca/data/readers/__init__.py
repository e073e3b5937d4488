"""Readers for the real datasets: one function per family, one table of names, one dispatcher.

``read_dataset(name, root, split, **options)`` returns a ``CompactRecords``: a sequence of
``ImageRecord`` (made on access, ``file_name`` relative to ``root``) with a ``.report``
(``ReadReport``: crowd boxes skipped, odd boxes, images without regions, each with ids).

Options every reader takes: ``task`` ("caption" default, or "recognition"), ``bad_boxes``
("keep" default: odd boxes are kept and reported; "drop": dropped and reported), ``keep_empty``
(keep images left without regions; default False, they are reported). Family options:
``image_dir`` (vg-grit, vg-glamm, refer), ``text`` (refer: "sent"/"raw"), ``with_masks`` (coco).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sca.data.readers.coco import read_coco, read_coco_json, read_o365, read_v3det
from sca.data.readers.compact import CompactRecords, StringTable
from sca.data.readers.refer import read_refer, safe_load_pickle
from sca.data.readers.report import ISSUES, ReadReport
from sca.data.readers.vg import read_vg, read_vg_glamm, read_vg_grit

__all__ = [
    "DATASETS", "ISSUES", "CompactRecords", "DatasetSpec", "ReadReport", "StringTable", "dataset_names",
    "get_dataset", "read_coco", "read_coco_json", "read_dataset", "read_o365", "read_refer", "read_v3det",
    "read_vg", "read_vg_glamm", "read_vg_grit", "safe_load_pickle",
]


@dataclass(frozen=True)
class DatasetSpec:
    """One readable dataset: its reader, its splits, where ``sca download`` puts it by default."""

    name: str
    reader: Callable[..., CompactRecords]
    splits: tuple[str, ...]
    summary: str
    default_root: str
    download: str  # name in sca.data.sources.SOURCES that fetches it
    options: dict[str, Any] = field(default_factory=dict)


_REFER = "refer-style pickle + COCO instances, one region per ref, all sentences as references"
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("vg", read_vg, ("train", "val", "test", "all"),
                "Visual Genome v1.2 region descriptions, DenseCap split (test = VG-full protocol)", "data/vg", "vg"),
    DatasetSpec("vg-grit", read_vg_grit, ("train", "test"),
                "GRiT's preprocessed VG (COCO-style train.json/test.json with captions)", "data/vg", "vg-grit"),
    DatasetSpec("vg-glamm", read_vg_glamm, ("test",),
                "GLaMM's one-region-per-image VG test file (VG-sub protocol)", "data/vg", "vg-glamm"),
    DatasetSpec("coco", read_coco, ("train", "val"),
                "COCO 2017 instances, caption = category name (weak supervision)", "data/coco", "coco"),
    DatasetSpec("o365", read_o365, ("train", "val"),
                "Objects365 v2, caption = category name (weak supervision)", "data/o365", "o365"),
    DatasetSpec("v3det", read_v3det, ("train", "val"),
                "V3Det 2023 v1, caption = category name (weak supervision)", "data/v3det", "v3det"),
    DatasetSpec("refcoco", read_refer, ("train", "val", "testA", "testB", "all"), f"RefCOCO (unc): {_REFER}",
                "data/refer", "refcoco", {"dataset": "refcoco", "split_by": "unc"}),
    DatasetSpec("refcoco-google", read_refer, ("train", "val", "test", "all"), f"RefCOCO (google): {_REFER}",
                "data/refer", "refcoco", {"dataset": "refcoco", "split_by": "google"}),
    DatasetSpec("refcoco+", read_refer, ("train", "val", "testA", "testB", "all"), f"RefCOCO+ (unc): {_REFER}",
                "data/refer", "refcoco+", {"dataset": "refcoco+", "split_by": "unc"}),
    DatasetSpec("refcocog", read_refer, ("train", "val", "test", "all"), f"RefCOCOg (umd): {_REFER}",
                "data/refer", "refcocog", {"dataset": "refcocog", "split_by": "umd"}),
    DatasetSpec("refcocog-google", read_refer, ("train", "val", "all"), f"RefCOCOg (google): {_REFER}",
                "data/refer", "refcocog", {"dataset": "refcocog", "split_by": "google"}),
]}


def dataset_names() -> list[str]:
    return list(DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {dataset_names()}")
    return DATASETS[name]


def read_dataset(name: str, root: str | Path | None = None, split: str = "train", **options: Any) -> CompactRecords:
    """Read ``split`` of dataset ``name`` from ``root`` (default: the table's ``default_root``).

    Unknown names, splits or options raise errors that list what is accepted.
    """
    spec = get_dataset(name)
    if split not in spec.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {spec.splits}")
    clash = set(options) & set(spec.options)
    if clash:
        raise TypeError(f"dataset {name!r} fixes options {sorted(clash)}; do not pass them")
    reader = partial(spec.reader, **spec.options)
    try:
        return reader(Path(root if root is not None else spec.default_root), split, **options)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise TypeError(f"dataset {name!r}: {err}") from None
        raise
