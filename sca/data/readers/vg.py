"""Visual Genome readers: v1.2 with the DenseCap split, GRiT's preprocessed VG, GLaMM's VG-sub test.

paper.md §4-5: no text normalisation, no filtering, no box dedup; every region phrase is a reference.
Two test protocols must not be mixed: "vg" split "test" is VG-full (all regions of DenseCap's 5K
test images); "vg-glamm" is GLaMM's one-region-per-image VG-sub file.

Layout under ``root`` (VG's own names):
  region_descriptions.json  [{"regions": [{"region_id", "image_id", "phrase", "x", "y",
                              "width", "height"}, ...], "id": image_id}, ...]  (~700 MB, streamed)
  image_data.json           [{"image_id", "url", "width", "height", "coco_id", "flickr_id"}, ...]
  densecap_splits.json      {"train": [image ids], "val": [...], "test": [...]}
  VG_100K/, VG_100K_2/      images; which folder an image is in comes from its url
  train.json, test.json     GRiT's COCO-style files (captions over 15 words already removed by GRiT)
  test_caption.json         GLaMM's VG-sub test file (COCO-style, one annotation per image)
The json files may also sit in an ``annotations/`` folder beside the image folders, as the reference
code keeps them (``sca.data.sources.accepted_paths``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sca.data.readers.coco import find_file, read_coco_json
from sca.data.readers.compact import CompactRecords, RecordsBuilder
from sca.data.readers.jsonstream import DEFAULT_CHUNK, iter_array
from sca.data.readers.report import ReadReport
from sca.data.sources import accepted_paths

__all__ = ["read_vg", "read_vg_glamm", "read_vg_grit", "vg_file_names"]

_URL_FOLDER = re.compile(r"(VG_100K(?:_2)?)/([^/]+)$")
DENSECAP_SPLITS = ("train", "val", "test")


def vg_file_names(image_data: str | Path, report: ReadReport | None = None) -> dict[int, tuple[str, int, int]]:
    """image id -> ("VG_100K[_2]/<name>.jpg", width, height), from ``image_data.json``'s urls."""
    out: dict[int, tuple[str, int, int]] = {}
    for im in iter_array(image_data):
        image_id = im["image_id"] if "image_id" in im else im["id"]  # v1.0 used "id"
        m = _URL_FOLDER.search(im.get("url") or "")
        name = f"{m.group(1)}/{m.group(2)}" if m else f"VG_100K/{image_id}.jpg"
        if not m and report is not None and not any(n.startswith("image without a VG url") for n in report.notes):
            report.notes.append(f"image without a VG url (first: id {image_id}); assumed VG_100K/<id>.jpg")
        out[image_id] = (name, int(im["width"]), int(im["height"]))
    return out


def _split_ids(root: Path, split: str, splits_file: str | Path | None) -> list[int] | None:
    if split == "all":
        return None
    if split not in DENSECAP_SPLITS:
        raise ValueError(f"VG split {split!r} is not one of {(*DENSECAP_SPLITS, 'all')}")
    if splits_file:
        path = Path(splits_file)
        if not path.is_file():
            raise FileNotFoundError(f"DenseCap split file not found: {path}")
    else:
        path = find_file(root, accepted_paths("vg", "densecap_splits.json"),
                         "DenseCap split file (get it with `sca download vg`)")
    with open(path, encoding="utf-8") as fh:
        splits = json.load(fh)
    if split not in splits:
        raise ValueError(f"{path} has no split {split!r}; it has {sorted(splits)}")
    return [int(i) for i in splits[split]]


def read_vg(root: str | Path, split: str = "train", *, task: str = "caption", bad_boxes: str = "keep",
            keep_empty: bool = False, splits_file: str | Path | None = None,
            chunk: int = DEFAULT_CHUNK, fast: bool = True) -> CompactRecords:
    """Visual Genome v1.2 region descriptions, DenseCap split ("train" ~77K / "val" 5K / "test" 5K
    images; "all" = every image). One region per region description, its phrase as written.

    ``region_descriptions.json`` is streamed image by image (bounded memory) into compact columns;
    ``fast`` uses the orjson path of ``iter_array`` when orjson is installed. Records follow the order
    of ``region_descriptions.json``.
    """
    root = Path(root)
    report = ReadReport("vg", split)
    rd_path = find_file(root, accepted_paths("vg", "region_descriptions.json"), "VG region descriptions")
    meta = vg_file_names(find_file(root, accepted_paths("vg", "image_data.json"), "VG image metadata"), report)
    wanted_list = _split_ids(root, split, splits_file)
    if wanted_list is None:
        wanted = set(meta)
    else:
        wanted = set(wanted_list)
        report.add("split_image_unknown", sorted(wanted - set(meta)))
        wanted &= set(meta)
        report.notes.append(f"DenseCap split {split!r}: {len(wanted_list)} image ids")
    builder = RecordsBuilder(source="vg", split=split, task=task, report=report)
    seen: set[int] = set()
    for entry in iter_array(rd_path, chunk=chunk, fast=fast):
        image_id = entry["id"] if "id" in entry else entry["image_id"]
        if image_id not in wanted:
            if image_id not in meta:
                report.add("regions_for_unknown_image", image_id)
            continue
        seen.add(image_id)
        name, width, height = meta[image_id]
        builder.add_image(image_id, name, width, height)
        boxes: list[float] = []
        phrases: list[str] = []
        ids: list[Any] = []
        for r in entry["regions"]:
            x, y = r["x"], r["y"]
            boxes += (x, y, x + r["width"], y + r["height"])
            rid = r["region_id"] if "region_id" in r else r.get("id")
            text = r.get("phrase")
            if not text:
                report.add("region_without_phrase", (image_id, rid))
            phrases.append(text or "")
            ids.append(rid)
        builder.add_single_phrase_regions(boxes, phrases, ids)
    missing = sorted(wanted - seen)
    if missing and not keep_empty:
        report.add("image_without_regions", missing)
    return builder.build().finalize(bad_boxes=bad_boxes, keep_empty=keep_empty)


def _image_namer(root: Path, image_dir: str, report: ReadReport):
    """file_name mapper for the COCO-style VG files: "auto" uses VG's own folders when
    ``image_data.json`` is in root, else ``images/<file_name>`` (GRiT's and GLaMM's flat folder)."""
    if image_dir == "auto":
        found = [root / p for p in accepted_paths("vg", "image_data.json") if (root / p).is_file()]
        if found:
            meta = vg_file_names(found[0], report)
            report.notes.append("image paths from image_data.json (VG_100K/, VG_100K_2/)")
            return lambda im: meta[im["id"]][0] if im["id"] in meta else f"images/{im['file_name']}"
        image_dir = "images"
    report.notes.append(f"image paths: {image_dir}/<file_name>")
    prefix = image_dir.rstrip("/")
    return lambda im: f"{prefix}/{im['file_name']}" if prefix else im["file_name"]


def _read_caption_file(path: Path, source: str, split: str, root: Path, image_dir: str, **kw) -> CompactRecords:
    probe = ReadReport(source, split)
    namer = _image_namer(root, image_dir, probe)
    records = read_coco_json(path, source=source, split=split, phrase="caption", file_name=namer, **kw)
    records.report.notes.extend(probe.notes)
    return records


def read_vg_grit(root: str | Path, split: str = "train", *, task: str = "caption", image_dir: str = "auto",
                 bad_boxes: str = "keep", keep_empty: bool = False) -> CompactRecords:
    """GRiT's preprocessed VG (``train.json`` / ``test.json``, COCO-style with a ``caption`` per
    annotation; also found under ``annotations/``). image_dir: "auto" or a folder under root."""
    if split not in ("train", "test"):
        raise ValueError(f"GRiT VG split {split!r} is not one of ('train', 'test')")
    root = Path(root)
    path = find_file(root, accepted_paths("vg-grit", f"{split}.json"), f"GRiT VG {split} file")
    return _read_caption_file(path, "vg-grit", split, root, image_dir, task=task, bad_boxes=bad_boxes,
                              keep_empty=keep_empty)


def read_vg_glamm(root: str | Path, split: str = "test", *, task: str = "caption", image_dir: str = "auto",
                  bad_boxes: str = "keep", keep_empty: bool = False) -> CompactRecords:
    """GLaMM's VG-sub test file ``test_caption.json`` (one region per image; the VG-sub protocol)."""
    if split != "test":
        raise ValueError(f"GLaMM VG split {split!r} is not one of ('test',)")
    root = Path(root)
    path = find_file(root, accepted_paths("vg-glamm", "test_caption.json"), "GLaMM VG test file")
    return _read_caption_file(path, "vg-glamm", split, root, image_dir, task=task, bad_boxes=bad_boxes,
                              keep_empty=keep_empty)
