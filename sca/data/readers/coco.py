"""COCO-format readers: COCO 2017, Objects365 v2 and V3Det instances (weak supervision), and the
generic COCO-style JSON walk that GRiT's and GLaMM's VG files reuse.

Weak supervision (paper.md §3-4): one region per annotation, its phrase is the raw category name,
no template. The task id is a reader option: "caption" by default, as the reference code trains on
Objects365 with the caption task id; pass task="recognition" for the recognition task tokens.
Boxes are COCO ``[x, y, w, h]`` and come out ``x0 y0 x1 y1``. ``iscrowd=1`` annotations are skipped
and counted in the report; odd boxes are kept and reported (see ``CompactRecords.finalize``).
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

__all__ = ["find_file", "read_coco", "read_coco_json", "read_o365", "read_v3det"]


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
                   chunk: int = DEFAULT_CHUNK) -> CompactRecords:
    """Read one COCO-style JSON file (``images``, ``annotations``, ``categories``) in one streaming pass.

    phrase: "category" (phrase = raw category name) or "caption" (phrase = the annotation's
        ``caption`` field, as in GRiT's and GLaMM's VG files; no category then).
    file_name: maps an ``images`` entry to its path relative to the dataset root (default: as is).
    with_masks: convert each annotation's ``segmentation`` to COCO RLE.
    Images keep file order; regions keep file order within their image.
    """
    if phrase not in ("category", "caption"):
        raise ValueError(f"phrase={phrase!r} is not one of ('category', 'caption')")
    check_task(task)
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
                report.add("crowd_skipped", (value["image_id"], value.get("id")))
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
              bad_boxes: str = "keep", keep_empty: bool = False) -> CompactRecords:
    """COCO 2017 instances: ``annotations/instances_{split}2017.json``, images ``{split}2017/``."""
    root = Path(root)
    path = find_file(root, [f"annotations/instances_{split}2017.json"], f"COCO 2017 {split} annotations")
    return read_coco_json(path, source="coco", split=split, task=task, with_masks=with_masks,
                          file_name=lambda im: f"{split}2017/{im['file_name']}",
                          bad_boxes=bad_boxes, keep_empty=keep_empty)


def _o365_file_name(split: str) -> Callable[[dict], str]:
    # Objects365 v2 names images "images/v1/patch8/objects365_v1_00420917.jpg"; the patch tarballs
    # unpack to "patch8/objects365_v1_00420917.jpg" under the split folder (mmdetection's layout).
    def name(im: dict) -> str:
        parts = Path(im["file_name"]).parts
        return "/".join((split, *parts[-2:]))

    return name


def read_o365(root: str | Path, split: str = "train", *, task: str = "caption", bad_boxes: str = "keep",
              keep_empty: bool = False) -> CompactRecords:
    """Objects365 v2: ``annotations/zhiyuan_objv2_{split}.json`` (the reference code's renamed copies
    ``objects365v2_train_fixann.json`` / ``objects365v2_val.json`` are accepted too); images
    ``{split}/patchN/*.jpg``."""
    root = Path(root)
    names = [f"annotations/zhiyuan_objv2_{split}.json", f"annotations/objects365v2_{split}.json"]
    if split == "train":
        names.insert(1, "annotations/objects365v2_train_fixann.json")
    path = find_file(root, names, f"Objects365 v2 {split} annotations")
    return read_coco_json(path, source="o365", split=split, task=task, file_name=_o365_file_name(split),
                          bad_boxes=bad_boxes, keep_empty=keep_empty)


def read_v3det(root: str | Path, split: str = "train", *, task: str = "caption", bad_boxes: str = "keep",
               keep_empty: bool = False) -> CompactRecords:
    """V3Det: ``annotations/v3det_2023_v1_{split}.json``; its file names ("images/<synset>/<x>.jpg") are
    already relative to the dataset root."""
    root = Path(root)
    path = find_file(root, [f"annotations/v3det_2023_v1_{split}.json"], f"V3Det {split} annotations")
    return read_coco_json(path, source="v3det", split=split, task=task, bad_boxes=bad_boxes, keep_empty=keep_empty)
