"""RefCOCO, RefCOCO+ and RefCOCOg from refer-style pickles plus their COCO ``instances.json``.

paper.md §4: one region per ref (its annotation's box), all of the ref's sentences are references;
the split is the ref's own ``split`` field. Layout under ``root`` (the refer toolkit's):
  refcoco/instances.json, refcoco/refs(unc).p, refcoco/refs(google).p
  refcoco+/instances.json, refcoco+/refs(unc).p
  refcocog/instances.json, refcocog/refs(umd).p, refcocog/refs(google).p
  train2014/COCO_train2014_*.jpg   (COCO 2014 train images, shared by all three; the refer toolkit
                                    keeps them in images/mscoco/images/train2014/, also accepted)

The pickles were written by Python 2. They are read by ``safe_load_pickle``, which builds only plain
builtin values (dict, list, tuple, str, bytes, int, float, bool, None, set): any other global a
pickle names is refused, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

from sca.data.readers.coco import find_file
from sca.data.readers.compact import CompactRecords, RecordsBuilder
from sca.data.readers.report import ReadReport
from sca.data.sources import accepted_paths

__all__ = ["REFER_SPLIT_BY", "UnsafePickleError", "read_refer", "safe_load_pickle"]

# dataset -> accepted splitBy values (first = default); each names a refs(<splitBy>).p file.
REFER_SPLIT_BY = {"refcoco": ("unc", "google"), "refcoco+": ("unc",), "refcocog": ("umd", "google")}
_ALLOWED_GLOBALS = {("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"),
                    ("__builtin__", "frozenset")}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global other than the plain builtin containers allowed."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return set if name == "set" else frozenset
        raise UnsafePickleError(
            f"refused to load global '{module}.{name}': only plain builtin values "
            f"(dict, list, tuple, str, bytes, int, float, bool, None, set, frozenset) are allowed")


def safe_load_pickle(path: str | Path, *, encoding: str = "utf-8") -> Any:
    """Load a pickle of plain builtin values without running code from it.

    ``encoding`` decodes Python 2 ``str`` objects (the refer pickles are ASCII/UTF-8).
    Raises ``UnsafePickleError`` naming the file and the refused global.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None


def read_refer(root: str | Path, split: str = "val", *, dataset: str = "refcocog", split_by: str | None = None,
               text: str = "sent", image_dir: str = "auto", task: str = "caption",
               bad_boxes: str = "keep", keep_empty: bool = False) -> CompactRecords:
    """Read one refer dataset split: one region per ref, phrases = all its sentences.

    dataset: "refcoco", "refcoco+" or "refcocog"; split_by: which refs file (default: the first of
        ``REFER_SPLIT_BY[dataset]``, i.e. unc / unc / umd).
    split: a value of the refs' ``split`` field ("train", "val", "test", "testA", "testB") or "all".
    text: "sent" (the refer toolkit's cleaned sentence, used by its REG evaluation) or "raw".
    image_dir: the folder of COCO train2014 images, relative to root; "auto": the first of
        ``train2014`` and the refer toolkit's ``images/mscoco/images/train2014`` that exists.
    region_id is the ref_id; category is the COCO category name of the ref's annotation.
    """
    if dataset not in REFER_SPLIT_BY:
        raise ValueError(f"refer dataset {dataset!r} is not one of {tuple(REFER_SPLIT_BY)}")
    split_by = split_by or REFER_SPLIT_BY[dataset][0]
    if split_by not in REFER_SPLIT_BY[dataset]:
        raise ValueError(f"{dataset} split_by {split_by!r} is not one of {REFER_SPLIT_BY[dataset]}")
    if text not in ("sent", "raw"):
        raise ValueError(f"text={text!r} is not one of ('sent', 'raw')")
    root = Path(root)
    source = dataset if split_by == REFER_SPLIT_BY[dataset][0] else f"{dataset}-{split_by}"
    report = ReadReport(source, split)
    refs_path = find_file(root, [f"{dataset}/refs({split_by}).p"], f"{dataset} refs")
    inst_path = find_file(root, [f"{dataset}/instances.json"], f"{dataset} instances")
    refs = safe_load_pickle(refs_path)
    if not isinstance(refs, list):
        raise ValueError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
    splits = sorted({r["split"] for r in refs})
    if split != "all" and split not in splits:
        raise ValueError(f"{refs_path} has no split {split!r}; it has {splits} (or 'all')")
    with open(inst_path, encoding="utf-8") as fh:
        inst = json.load(fh)
    images = {im["id"]: im for im in inst["images"]}
    anns = {a["id"]: a for a in inst["annotations"]}
    cats = {c["id"]: c["name"] for c in inst["categories"]}
    report.notes.append(f"read {refs_path} and {inst_path}")
    by_image: dict[Any, list[tuple[dict, dict]]] = {}
    for ref in refs:
        if split != "all" and ref["split"] != split:
            continue
        ann = anns.get(ref["ann_id"])
        if ann is None or ann["image_id"] not in images:
            report.add("ref_unknown_annotation", (ref["ref_id"], ref["ann_id"]))
            continue
        if not ref.get("sentences"):
            report.add("ref_without_sentences", ref["ref_id"])
            continue
        by_image.setdefault(ann["image_id"], []).append((ref, ann))
    builder = RecordsBuilder(source=source, split=split, task=task, report=report)
    if image_dir == "auto":
        folders = accepted_paths(dataset, "train2014")
        image_dir = next((f for f in folders if (root / f).is_dir()), folders[0])
        report.notes.append(f"images: {root / image_dir}" + ("" if (root / image_dir).is_dir() else
                            f" (missing; also looked for {', '.join(str(root / f) for f in folders[1:])})"))
    prefix = image_dir.rstrip("/")
    for image_id, items in by_image.items():
        im = images[image_id]
        name = f"{prefix}/{im['file_name']}" if prefix else im["file_name"]
        builder.add_image(image_id, name, im["width"], im["height"])
        for ref, ann in items:
            x, y, w, h = ann["bbox"]
            builder.add_region((x, y, x + w, y + h), [s[text] for s in ref["sentences"]], ref["ref_id"],
                               category=cats.get(ann["category_id"]))
    return builder.build().finalize(bad_boxes=bad_boxes, keep_empty=keep_empty)
