"""COCO-format readers: COCO 2017, Objects365 v2 and V3Det instances (weak supervision), and the
generic COCO-style JSON walk that GRiT's and GLaMM's VG files reuse.

Weak supervision (paper.md §3-4): one region per annotation, its phrase is the raw category name,
no template. The task id is a reader option: "caption" by default, as the reference code trains on
Objects365 with the caption task id; pass task="recognition" for the recognition task tokens.
Boxes are COCO ``[x, y, w, h]`` and come out ``x0 y0 x1 y1``. ``iscrowd=1`` annotations are kept as
regions by default, as the reference code keeps them (its COCO and Objects365 loaders read every
annotation of an image), and counted in the report (``crowd_kept``); ``crowd="skip"`` leaves them out
(``crowd_skipped``). Odd boxes are kept and reported (see ``CompactRecords.finalize``).

Where the files are: each reader looks in every layout ``sca download --from`` accepts
(``sca.data.sources.accepted_paths``): the official archives unpacked, mmdetection's tree, the reference
code's renamed files; Objects365's images are found patch by patch in any of its layouts.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sca.data.readers.compact import CompactRecords, StringTable, check_task
from sca.data.readers.jsonstream import DEFAULT_CHUNK, walk_object
from sca.data.readers.report import ReadReport
from sca.data.sources import accepted_paths

__all__ = ["CROWD", "O365_IMAGE_LAYOUTS", "find_file", "read_coco", "read_coco_json", "read_o365", "read_v3det"]

CROWD = ("keep", "skip")


def find_file(root: Path, candidates: list[str], what: str) -> Path:
    """The first candidate (relative to root) that exists, else an error listing all of them."""
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"{what}: none of these files exists: {tried}")


def _rle(segmentation: Any, height: int, width: int) -> dict[str, Any] | None:
    """COCO segmentation (polygons, uncompressed or compressed RLE) -> compressed RLE with str counts,
    with the project's own RLE code (``sca.data.masks``; no pycocotools)."""
    from sca.data.masks import polygons_to_mask, rle_decode, rle_encode

    if not segmentation:
        return None
    if isinstance(segmentation, list):  # polygons
        return rle_encode(polygons_to_mask(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowd style)
        return rle_encode(rle_decode(segmentation))
    counts = segmentation["counts"]
    return {"size": [int(v) for v in segmentation["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def read_coco_json(path: str | Path, *, source: str, split: str, task: str = "caption",
                   phrase: str = "category", file_name: Callable[[dict], str] | None = None,
                   with_masks: bool = False, bad_boxes: str = "keep", keep_empty: bool = False,
                   crowd: str = "keep", chunk: int = DEFAULT_CHUNK) -> CompactRecords:
    """Read one COCO-style JSON file (``images``, ``annotations``, ``categories``) in one streaming pass.

    phrase: "category" (phrase = raw category name) or "caption" (phrase = the annotation's
        ``caption`` field, as in GRiT's and GLaMM's VG files; no category then).
    file_name: maps an ``images`` entry to its path relative to the dataset root (default: as is).
    with_masks: convert each annotation's ``segmentation`` to COCO RLE.
    crowd: "keep" (iscrowd=1 annotations are regions; reported as crowd_kept) or "skip".
    Images keep file order; regions keep file order within their image.
    """
    if phrase not in ("category", "caption"):
        raise ValueError(f"phrase={phrase!r} is not one of ('category', 'caption')")
    check_task(task)
    if crowd not in CROWD:
        raise ValueError(f"crowd={crowd!r} is not one of {CROWD}")
    path = Path(path)
    report = ReadReport(source, split)
    report.notes.append(f"read {path}")
    images: dict[Any, tuple[str, int, int]] = {}
    categories: dict[Any, str] = {}
    ann_image: list[Any] = []
    ann_ids: list[Any] = []
    ann_cat: list[Any] = []
    captions: list[str] = []
    segs: list[Any] = []
    boxes = array("d")
    for key, value, is_item in walk_object(path, {"images", "annotations"}, chunk=chunk):
        if key == "images" and is_item:
            name = file_name(value) if file_name else value["file_name"]
            images[value["id"]] = (name, int(value["width"]), int(value["height"]))
        elif key == "annotations" and is_item:
            if value.get("iscrowd", 0):
                report.add("crowd_kept" if crowd == "keep" else "crowd_skipped", (value["image_id"], value.get("id")))
                if crowd == "skip":
                    continue
            x, y, w, h = value["bbox"]
            boxes.extend((x, y, x + w, y + h))
            ann_image.append(value["image_id"])
            ann_ids.append(value.get("id"))
            if phrase == "caption":
                text = value.get("caption")
                if not text:
                    report.add("region_without_phrase", (value["image_id"], value.get("id")))
                captions.append(text or "")
            else:
                ann_cat.append(value.get("category_id"))
            if with_masks:
                segs.append(value.get("segmentation"))
        elif key == "categories" and not is_item:
            categories = {c["id"]: c["name"] for c in value}
    n_ann = len(ann_image)
    keep = np.ones(n_ann, bool)
    img_order = list(images)
    img_pos = {iid: k for k, iid in enumerate(img_order)}
    ann_img_idx = np.array([img_pos.get(i, -1) for i in ann_image], dtype=np.int64)
    for j in np.nonzero(ann_img_idx < 0)[0]:
        report.add("annotation_for_unknown_image", (ann_image[j], ann_ids[j]))
    keep &= ann_img_idx >= 0
    cat_names: list[str] = []
    cat_index = np.full(n_ann, -1, np.int64)
    if phrase == "category":
        cat_pos = {cid: k for k, cid in enumerate(categories)}
        cat_names = list(categories.values())
        cat_index = np.array([cat_pos.get(c, -1) for c in ann_cat], dtype=np.int64)
        for j in np.nonzero(cat_index < 0)[0]:
            report.add("annotation_unknown_category", (ann_image[j], ann_ids[j]))
        keep &= cat_index >= 0
    rows = np.nonzero(keep)[0]
    order = rows[np.argsort(ann_img_idx[rows], kind="stable")]
    counts = np.bincount(ann_img_idx[order], minlength=len(img_order))
    ann_id_arr = np.asarray(ann_ids, dtype=object)
    if all(type(a) is int for a in ann_ids):
        ann_id_arr = ann_id_arr.astype(np.int64)
    img_ids = np.asarray(img_order, dtype=np.int64 if all(type(i) is int for i in img_order) else object)
    masks = None
    if with_masks:
        masks = [_rle(segs[j], images[ann_image[j]][2], images[ann_image[j]][1]) for j in order]
    phrases = StringTable.from_strings([captions[j] for j in order]) if phrase == "caption" else None
    records = CompactRecords(
        image_ids=img_ids, widths=[images[i][1] for i in img_order], heights=[images[i][2] for i in img_order],
        file_names=StringTable.from_strings([images[i][0] for i in img_order]),
        region_offsets=np.concatenate([[0], np.cumsum(counts)]),
        boxes=np.frombuffer(boxes, np.float64).reshape(-1, 4)[order], region_ids=ann_id_arr[order],
        phrases=phrases, phrase_start=np.arange(len(order)) if phrases is not None else None,
        phrase_count=np.ones(len(order), np.int64) if phrases is not None else None,
        category_index=cat_index[order], categories=cat_names, phrase_from_category=phrase == "category",
        masks=masks, source=source, split=split, task=task, report=report)
    return records.finalize(bad_boxes=bad_boxes, keep_empty=keep_empty)


def read_coco(root: str | Path, split: str = "train", *, task: str = "caption", with_masks: bool = False,
              bad_boxes: str = "keep", keep_empty: bool = False, crowd: str = "keep") -> CompactRecords:
    """COCO 2017 instances: ``annotations/instances_{split}2017.json`` (or beside the image folders),
    images ``{split}2017/``."""
    root = Path(root)
    path = find_file(root, accepted_paths("coco", f"annotations/instances_{split}2017.json"),
                     f"COCO 2017 {split} annotations")
    return read_coco_json(path, source="coco", split=split, task=task, with_masks=with_masks,
                          file_name=lambda im: f"{split}2017/{im['file_name']}",
                          bad_boxes=bad_boxes, keep_empty=keep_empty, crowd=crowd)


# Objects365 v2 names its images "images/v1/patch8/objects365_v1_00420917.jpg". Copies keep them as
# (relative to the dataset root; {version}/{patch} from that name):
O365_IMAGE_LAYOUTS = (
    ("official", "{split}/images/{version}/{patch}"),  # the val tree as served, the reference code's base dir
    ("mmdetection", "{split}/{patch}"),                 # each patch tarball unpacked in the split folder
    ("flat", "{split}"),                                # patches merged into one folder per split
    ("ultralytics", "images/{split}"),                  # ultralytics' Objects365.yaml script
)


def _o365_file_name(root: Path, split: str, report: ReadReport) -> Callable[[dict], str]:
    """Map each image to its path under the first layout of ``O365_IMAGE_LAYOUTS`` that holds its patch
    (probed once per patch folder, then per image only for the flat layouts). Patches found in no
    layout keep the official path; the report notes them with every layout tried."""
    chosen: dict[tuple[str, str], str | None] = {}
    missing: list[str] = []

    def name(im: dict) -> str:
        parts = Path(im["file_name"]).parts
        base = parts[-1]
        patch = parts[-2] if len(parts) >= 2 else ""
        version = parts[-3] if len(parts) >= 3 else ""
        key = (version, patch)
        if key not in chosen:
            chosen[key] = None
            for label, pattern in O365_IMAGE_LAYOUTS:
                folder = pattern.format(split=split, version=version, patch=patch)
                per_patch = "{patch}" in pattern  # a patch folder; else one folder for every patch
                found = (root / folder).is_dir() if per_patch else (root / folder / base).is_file()
                if found and (patch or not per_patch):
                    chosen[key] = folder
                if chosen[key] is not None:
                    if label != "official":
                        report.notes.append(f"Objects365 {split} {version}/{patch}: {label} layout ({folder}/)")
                    break
            if chosen[key] is None:
                missing.append("/".join(p for p in key if p))
                if len(missing) == 1:
                    tried = ", ".join(p.format(split=split, version=version, patch=patch) for _, p in O365_IMAGE_LAYOUTS)
                    report.notes.append(f"Objects365 {split}: no images found for {'/'.join(key)} (looked in {tried}); "
                                        f"paths use the official layout")
        folder = chosen[key] or O365_IMAGE_LAYOUTS[0][1].format(split=split, version=version, patch=patch)
        return f"{folder}/{base}"

    return name


def read_o365(root: str | Path, split: str = "train", *, task: str = "caption", bad_boxes: str = "keep",
              keep_empty: bool = False, crowd: str = "keep") -> CompactRecords:
    """Objects365 v2: ``zhiyuan_objv2_{split}.json`` in ``annotations/``, the root or the split folder
    (the reference code's renamed ``objects365v2_train_fixann.json`` / ``objects365v2_val.json`` too);
    images in any of ``O365_IMAGE_LAYOUTS``."""
    root = Path(root)
    own = f"annotations/zhiyuan_objv2_{split}.json"
    path = find_file(root, accepted_paths("o365", own), f"Objects365 v2 {split} annotations")
    report = ReadReport("o365", split)
    records = read_coco_json(path, source="o365", split=split, task=task, file_name=_o365_file_name(root, split, report),
                             bad_boxes=bad_boxes, keep_empty=keep_empty, crowd=crowd)
    records.report.notes.extend(report.notes)
    return records


def read_v3det(root: str | Path, split: str = "train", *, task: str = "caption", bad_boxes: str = "keep",
               keep_empty: bool = False, crowd: str = "keep") -> CompactRecords:
    """V3Det: ``annotations/v3det_2023_v1_{split}.json`` (or in the root); its file names
    ("images/<synset>/<x>.jpg") are already relative to the dataset root."""
    root = Path(root)
    path = find_file(root, accepted_paths("v3det", f"annotations/v3det_2023_v1_{split}.json"),
                     f"V3Det {split} annotations")
    return read_coco_json(path, source="v3det", split=split, task=task, bad_boxes=bad_boxes, keep_empty=keep_empty,
                          crowd=crowd)
