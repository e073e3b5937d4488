"""Tiny, format-exact copies of the real datasets, with real (small) JPEG images.

No dataset site is reachable from the project's machines, so readers, downloads and the pipeline's
smoke configuration run on these. Each writer puts files under ``root`` exactly where and how the
real dataset has them (names, keys, key order, coordinate conventions, Python 2 pickles for refer),
with the quirks readers must handle: boxes reaching outside the image, zero-area boxes, crowd
annotations, unnormalised phrases (capitals, trailing space, unicode, quotes and braces), duplicate
regions, an image without regions, annotations listed out of image order.

``write_all(root)`` writes every family and returns ``{dataset name: its root}``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["O365_LAYOUTS", "py2_pickle_dumps", "write_all", "write_coco", "write_o365", "write_o365_archives",
           "write_refer", "write_refer_zips", "write_v3det", "write_vg", "write_vg_glamm", "write_vg_grit"]

# ---- images -----------------------------------------------------------------------------------------


def write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    """A small real JPEG: a colour gradient with one rectangle, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 160, size=3)
    img = np.stack([(base[0] + x * 3) % 256, (base[1] + y * 3) % 256, np.full_like(x, base[2])], -1)
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    img[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, size=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path, quality=90)


def _dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


# ---- Visual Genome v1.2 + DenseCap split -----------------------------------------------------------
# image id -> (folder, width, height); regions: (region_id, x, y, w, h, phrase)
VG_IMAGES = {1: ("VG_100K_2", 64, 48), 2: ("VG_100K", 64, 48), 3: ("VG_100K", 48, 64),
             4: ("VG_100K_2", 64, 64), 5: ("VG_100K", 64, 48), 6: ("VG_100K", 32, 32)}
VG_REGIONS = {
    1: [(101, 2, 3, 20, 10, "man wearing a white shirt"), (102, 10, 10, 30, 30, "The sky is BLUE "),
        (103, 40, 20, 30, 10, 'sign reading "{stop}"')],  # 103 reaches x=70 > width 64
    2: [(201, 0, 0, 64, 48, "a café with a red door"), (202, 5, 5, 0, 10, "thin pole")],  # 202: zero area
    3: [(301, 1, 1, 10, 10, "green leaves on tree"), (302, 1, 1, 10, 10, "green leaves on tree")],
    4: [(401, 8, 8, 16, 16, "a window of a building")],
    5: [],
    6: [(601, 0, 0, 16, 16, "a cat's ear"), (602, 16, 16, 16, 16, "back slash \\ in text")],
}
VG_SPLITS = {"train": [1, 2, 3], "val": [4], "test": [5, 6]}


def write_vg(root: str | Path, *, images: bool = True, layout: str = "official") -> Path:
    """region_descriptions.json, image_data.json, densecap_splits.json, VG_100K*/<id>.jpg.

    layout: "official" (the json files beside the image folders) or "reference" (the reference code's:
    the json files in annotations/)."""
    if layout not in ("official", "reference"):
        raise ValueError(f"VG fixture layout {layout!r} is not 'official' or 'reference'")
    root = Path(root)
    ann = root / "annotations" if layout == "reference" else root
    meta = [{"width": w, "url": f"https://cs.stanford.edu/people/rak248/{folder}/{iid}.jpg", "height": h,
             "image_id": iid, "coco_id": None, "flickr_id": None} for iid, (folder, w, h) in VG_IMAGES.items()]
    regions = [{"regions": [{"region_id": rid, "width": w, "height": h, "image_id": iid, "phrase": text,
                             "y": y, "x": x} for rid, x, y, w, h, text in VG_REGIONS[iid]], "id": iid}
               for iid in VG_IMAGES]
    _dump(ann / "image_data.json", meta)
    _dump(ann / "region_descriptions.json", regions)
    _dump(ann / "densecap_splits.json", VG_SPLITS)
    if images:
        for iid, (folder, w, h) in VG_IMAGES.items():
            write_jpeg(root / folder / f"{iid}.jpg", w, h, seed=iid)
    return root


def _caption_coco(image_ids: list[int], ann_ids_equal_image: bool = False) -> dict[str, Any]:
    images, anns = [], []
    for iid in image_ids:
        _, w, h = VG_IMAGES[iid]
        images.append({"file_name": f"{iid}.jpg", "height": h, "width": w, "id": iid})
        for rid, x, y, bw, bh, text in VG_REGIONS[iid][: 1 if ann_ids_equal_image else None]:
            anns.append({"area": bw * bh, "bbox": [x, y, bw, bh], "image_id": iid, "iscrowd": 0,
                         "category_id": 1, "id": iid if ann_ids_equal_image else rid, "caption": text})
    return {"images": images, "annotations": anns}


def write_vg_grit(root: str | Path) -> Path:
    """GRiT's train.json / test.json (COCO-style, one 'object' category, a caption per annotation)."""
    root = Path(root)
    cats = [{"supercategory": "object", "id": 1, "name": "object"}]
    for split, ids in (("train", [1, 2, 3]), ("test", [4, 6])):
        _dump(root / f"{split}.json", {**_caption_coco(ids), "categories": cats})
    return root


def write_vg_glamm(root: str | Path) -> Path:
    """GLaMM's test_caption.json: one annotation per image, annotation id = image id."""
    root = Path(root)
    _dump(root / "test_caption.json", _caption_coco([4, 6], ann_ids_equal_image=True))
    return root


# ---- COCO-format detection data ----------------------------------------------------------------------
def _poly(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _det_ann(aid: int, iid: int, cat: int, bbox: list[float], crowd: int = 0, **extra: Any) -> dict[str, Any]:
    seg: Any = _poly(*bbox) if not crowd else {"counts": [5, 10, 20, 10, 5], "size": [10, 5]}
    return {"segmentation": seg, "area": float(bbox[2] * bbox[3]), "iscrowd": crowd, "image_id": iid,
            "bbox": bbox, "category_id": cat, "id": aid, **extra}


COCO_CATEGORIES = [{"supercategory": "person", "id": 1, "name": "person"},
                   {"supercategory": "vehicle", "id": 2, "name": "bicycle"},
                   {"supercategory": "outdoor", "id": 10, "name": "traffic light"},
                   {"supercategory": "animal", "id": 18, "name": "dog"}]


def write_coco(root: str | Path) -> Path:
    """annotations/instances_{train,val}2017.json and {train,val}2017/<12-digit id>.jpg."""
    root = Path(root)
    splits = {
        "train": ([(9, 64, 48), (25, 48, 64), (30, 64, 48)],  # image 30 has no annotation
                  [_det_ann(4, 25, 18, [0.0, 0.0, 48.0, 64.0]), _det_ann(1, 9, 1, [1.5, 2.25, 20.0, 30.5]),
                   _det_ann(2, 9, 10, [30.0, 5.0, 10.0, 20.0]), _det_ann(3, 9, 1, [0.0, 0.0, 5.0, 10.0], crowd=1),
                   _det_ann(5, 25, 2, [10.0, 10.0, 0.0, 5.0])]),  # 5: zero area
        "val": ([(139, 64, 48)], [_det_ann(7, 139, 18, [5.0, 5.0, 10.0, 10.0])]),
    }
    for split, (imgs, anns) in splits.items():
        images = [{"license": 1, "file_name": f"{iid:012d}.jpg", "coco_url": f"http://images.cocodataset.org/"
                   f"{split}2017/{iid:012d}.jpg", "height": h, "width": w, "date_captured": "2013-11-14 16:28:13",
                   "flickr_url": "", "id": iid} for iid, w, h in imgs]
        _dump(root / "annotations" / f"instances_{split}2017.json",
              {"info": {"description": "COCO 2017 Dataset (sca fixture)", "version": "1.0", "year": 2017},
               "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 1, "name": "CC BY 2.0"}],
               "images": images, "annotations": anns, "categories": COCO_CATEGORIES})
        for iid, w, h in imgs:
            write_jpeg(root / f"{split}2017" / f"{iid:012d}.jpg", w, h, seed=iid)
    return root


O365_LAYOUTS = ("mmdetection", "official", "reference")


def _o365_image_folder(layout: str, split: str, ver: str, patch: int) -> str:
    if layout == "mmdetection" or (layout == "official" and split == "train"):
        return f"{split}/patch{patch}"
    return f"{split}/images/{ver}/patch{patch}"  # the val tree as served; the reference code's base dir


def _o365_annotation_path(layout: str, split: str) -> str:
    if layout == "official":
        return f"{split}/zhiyuan_objv2_{split}.json"
    if layout == "reference":
        return "objects365v2_train_fixann.json" if split == "train" else "objects365v2_val.json"
    return f"annotations/zhiyuan_objv2_{split}.json"


def write_o365(root: str | Path, *, layout: str = "mmdetection") -> Path:
    """Objects365 v2 in one of ``O365_LAYOUTS``:

    mmdetection  annotations/zhiyuan_objv2_{train,val}.json, {train,val}/patchN/objects365_v*_<8 digits>.jpg
    official     the dataset's own tree unpacked in place: train/zhiyuan_objv2_train.json, train/patchN/,
                 val/zhiyuan_objv2_val.json, val/images/v1|v2/patchN/
    reference    the reference code's: objects365v2_train_fixann.json, objects365v2_val.json,
                 {train,val}/images/v1|v2/patchN/
    The annotation files name images "images/v1/patchN/<name>" (v2 from patch 16), as the real ones do.
    Every patch folder of a complete copy is there (51 train, 44 val); most are empty.
    """
    if layout not in O365_LAYOUTS:
        raise ValueError(f"Objects365 fixture layout {layout!r} is not one of {O365_LAYOUTS}")
    root = Path(root)
    cats = [{"name": "Person", "id": 1}, {"name": "Sneakers", "id": 2}, {"name": "Other Shoes", "id": 4}]
    entries = {"train": [(1, "v1", 0, 64, 48), (2, "v1", 1, 48, 48), (3, "v2", 16, 48, 64)],
               "val": [(16, "v1", 0, 64, 48), (17, "v2", 16, 48, 48)]}
    anns = {"train": [_det_ann(11, 1, 1, [4.0, 4.0, 20.0, 40.0], isfake=0),
                      _det_ann(12, 1, 4, [30.0, 30.0, 10.0, 10.0], isfake=0),
                      _det_ann(13, 2, 2, [1.0, 1.0, 50.0, 10.0], isfake=0),  # 13 reaches x=51 > 48
                      _det_ann(14, 3, 1, [2.0, 2.0, 20.0, 30.0], isfake=0)],
            "val": [_det_ann(21, 16, 2, [2.0, 2.0, 8.0, 8.0], isfake=0),
                    _det_ann(22, 17, 4, [10.0, 10.0, 20.0, 20.0], isfake=0)]}
    for split, count in (("train", 51), ("val", 44)):
        for patch in range(count):
            (root / _o365_image_folder(layout, split, "v1" if patch < 16 else "v2", patch)).mkdir(parents=True,
                                                                                                  exist_ok=True)
    for split, items in entries.items():
        images = []
        for iid, ver, patch, w, h in items:
            name = f"objects365_{ver}_{iid:08d}.jpg"
            images.append({"height": h, "id": iid, "license": 5, "width": w,
                           "file_name": f"images/{ver}/patch{patch}/{name}",
                           "url": f"http://o365.example/{name}"})
            write_jpeg(root / _o365_image_folder(layout, split, ver, patch) / name, w, h, seed=100 + iid)
        for a in anns[split]:
            a.pop("segmentation", None)  # Objects365 has boxes only
        _dump(root / _o365_annotation_path(layout, split),
              {"images": images, "annotations": anns[split], "categories": cats, "licenses": []})
    return root


def write_o365_archives(folder: str | Path, *, nested: bool = False) -> Path:
    """The Objects365 v2 files as the server keeps them: train/zhiyuan_objv2_train.tar.gz,
    train/patchN.tar.gz, val/zhiyuan_objv2_val.json, val/images/v1|v2/patchN.tar.gz. Each patch
    tarball holds patchN/<name>.jpg, or with ``nested`` images/vK/patchN/<name>.jpg."""
    import tarfile
    import tempfile

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = write_o365(Path(tmp) / "o365", layout="official")
        for split in ("train", "val"):
            for patch_dir in sorted(p for p in unpacked.glob(f"{split}/**/patch*") if p.is_dir()):  # all 95
                ver = "v2" if int(patch_dir.name[5:]) >= 16 else "v1"
                where = folder / (f"val/images/{ver}" if split == "val" else "train")
                where.mkdir(parents=True, exist_ok=True)
                with tarfile.open(where / f"{patch_dir.name}.tar.gz", "w:gz") as tf:
                    inner = f"images/{ver}/{patch_dir.name}" if nested else patch_dir.name
                    tf.add(patch_dir, arcname=inner)
        (folder / "val").mkdir(parents=True, exist_ok=True)
        (folder / "val/zhiyuan_objv2_val.json").write_bytes((unpacked / "val/zhiyuan_objv2_val.json").read_bytes())
        with tarfile.open(folder / "train/zhiyuan_objv2_train.tar.gz", "w:gz") as tf:
            tf.add(unpacked / "train/zhiyuan_objv2_train.json", arcname="zhiyuan_objv2_train.json")
    return folder


def write_v3det(root: str | Path) -> Path:
    """annotations/v3det_2023_v1_{train,val}.json; images images/<synset>/<name>.jpg."""
    root = Path(root)
    cats = [{"name": "apple", "name_zh": "苹果", "cat_info": ["a fruit"], "cat_info_gpt": ["a round fruit"],
             "novel": False, "id": 1},
            {"name": "Granny Smith", "name_zh": "青苹果", "cat_info": ["an apple"], "cat_info_gpt": [""],
             "novel": True, "id": 2}]
    layout = {"train": [(1, "n07739125", "21_371_29405651261_633d076053_c.jpg", 64, 48, [(1, 1, [3, 3, 20, 20]),
                                                                                         (2, 2, [25, 5, 30, 30])])],
              "val": [(2, "n07742313", "5_100_1234_abcd_c.jpg", 48, 48, [(3, 2, [0, 0, 48, 48])])]}
    for split, entries in layout.items():
        images, anns = [], []
        for iid, synset, name, w, h, boxes in entries:
            rel = f"images/{synset}/{name}"
            images.append({"file_name": rel, "height": h, "width": w, "id": iid})
            anns += [{"image_id": iid, "category_id": c, "bbox": b, "iscrowd": 0, "area": b[2] * b[3], "id": aid}
                     for aid, c, b in boxes]
            write_jpeg(root / rel, w, h, seed=200 + iid)
        _dump(root / "annotations" / f"v3det_2023_v1_{split}.json",
              {"images": images, "categories": cats, "annotations": anns})
    return root


# ---- refer (RefCOCO / RefCOCO+ / RefCOCOg) -------------------------------------------------------------
def py2_pickle_dumps(obj: Any) -> bytes:
    """Protocol-2 pickle of plain values as Python 2 wrote them: str as SHORT_BINSTRING/BINSTRING
    (UTF-8 bytes), so readers meet the same opcodes as in the real refs(*).p files."""
    out = bytearray(b"\x80\x02")

    def emit(v: Any) -> None:
        if v is None:
            out.extend(b"N")
        elif isinstance(v, bool):
            out.extend(b"\x88" if v else b"\x89")
        elif isinstance(v, int):
            if 0 <= v < 256:
                out.extend(b"K" + bytes([v]))
            elif -(2**31) <= v < 2**31:
                out.extend(b"J" + struct.pack("<i", v))
            else:
                raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
                out.extend(b"\x8a" + bytes([len(raw)]) + raw)
        elif isinstance(v, float):
            out.extend(b"G" + struct.pack(">d", v))
        elif isinstance(v, str):
            data = v.encode("utf-8")
            out.extend((b"U" + bytes([len(data)])) if len(data) < 256 else (b"T" + struct.pack("<i", len(data))))
            out.extend(data)
        elif isinstance(v, list):
            out.extend(b"](")
            for item in v:
                emit(item)
            out.extend(b"e")
        elif isinstance(v, tuple):
            out.extend(b"(")
            for item in v:
                emit(item)
            out.extend(b"t")
        elif isinstance(v, dict):
            out.extend(b"}(")
            for k, item in v.items():
                emit(k)
                emit(item)
            out.extend(b"u")
        else:
            raise TypeError(f"py2_pickle_dumps: unsupported type {type(v).__name__}")

    emit(obj)
    out.extend(b".")
    return bytes(out)


REFER_IMAGES = [(9, 64, 48), (25, 48, 64), (30, 64, 48)]
# (ann_id, image_id, category_id, bbox xywh)
REFER_ANNS = [(1, 9, 1, [1.5, 2.25, 20.0, 30.5]), (2, 9, 18, [30.0, 5.0, 10.0, 20.0]),
              (4, 25, 18, [0.0, 0.0, 48.0, 64.0]), (6, 30, 1, [10.0, 10.0, 20.0, 20.0])]
# splitBy -> ref split of each annotation, in REFER_ANNS order
REFER_SPLITS = {"unc": ["train", "testA", "val", "testB"], "google": ["train", "train", "val", "val"],
                "umd": ["train", "test", "val", "val"],
                "refcoco-google": ["train", "test", "val", "test"]}  # RefCOCO's google split has a test split


def _refs(split_by: str, dataset: str) -> list[dict[str, Any]]:
    refs, sent_id = [], 0
    splits = REFER_SPLITS.get(f"{dataset}-{split_by}", REFER_SPLITS[split_by])
    for ref_id, ((aid, iid, cat, _), split) in enumerate(zip(REFER_ANNS, splits, strict=True)):
        raws = [f"The {dataset} thing #{ref_id}!", f"left one ({aid})"][: 1 + ref_id % 2]
        sents = []
        for raw in raws:
            tokens = raw.lower().replace("!", "").replace("(", "").replace(")", "").replace("#", "").split()
            sents.append({"tokens": tokens, "raw": raw, "sent_id": sent_id, "sent": " ".join(tokens)})
            sent_id += 1
        refs.append({"sent_ids": [s["sent_id"] for s in sents], "file_name": f"COCO_train2014_{iid:012d}_{aid}.jpg",
                     "ann_id": aid, "ref_id": ref_id, "image_id": iid, "split": split, "sentences": sents,
                     "category_id": cat})
    return refs


def write_refer(root: str | Path, *, layout: str = "flat") -> Path:
    """refcoco{,+,g}/instances.json + refs(unc|google|umd).p (Python 2 pickles) and the COCO train2014
    images: in train2014/ (layout "flat"), or in images/mscoco/images/train2014/ as the refer
    toolkit's data/ folder keeps them (layout "refer-toolkit")."""
    if layout not in ("flat", "refer-toolkit"):
        raise ValueError(f"refer fixture layout {layout!r} is not 'flat' or 'refer-toolkit'")
    root = Path(root)
    image_dir = root / ("images/mscoco/images/train2014" if layout == "refer-toolkit" else "train2014")
    images = [{"license": 1, "file_name": f"COCO_train2014_{iid:012d}.jpg", "coco_url": "", "height": h,
               "width": w, "date_captured": "2013-11-14 16:28:13", "flickr_url": "", "id": iid}
              for iid, w, h in REFER_IMAGES]
    anns = [_det_ann(aid, iid, cat, bbox) for aid, iid, cat, bbox in REFER_ANNS]
    for dataset, split_bys in (("refcoco", ("unc", "google")), ("refcoco+", ("unc",)), ("refcocog", ("umd", "google"))):
        _dump(root / dataset / "instances.json", {"images": images, "annotations": anns, "categories": COCO_CATEGORIES})
        for split_by in split_bys:
            (root / dataset / f"refs({split_by}).p").write_bytes(py2_pickle_dumps(_refs(split_by, dataset)))
    for iid, w, h in REFER_IMAGES:
        write_jpeg(image_dir / f"COCO_train2014_{iid:012d}.jpg", w, h, seed=300 + iid)
    return root


def write_refer_zips(folder: str | Path) -> Path:
    """The refer datasets as the reference code keeps them: refcoco.zip, refcoco+.zip, refcocog.zip
    (each holding <dataset>/instances.json and refs(*).p) and train2014.zip (train2014/*.jpg)."""
    import tempfile
    import zipfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = write_refer(Path(tmp) / "refer")
        for name in ("refcoco", "refcoco+", "refcocog", "train2014"):
            with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
                for p in sorted((unpacked / name).iterdir()):
                    zf.write(p, f"{name}/{p.name}")
    return folder


def write_all(root: str | Path) -> dict[str, Path]:
    """Every family under ``root`` (vg/, coco/, o365/, v3det/, refer/): {dataset name: its root}."""
    root = Path(root)
    vg = write_vg_glamm(write_vg_grit(write_vg(root / "vg")))
    refer = write_refer(root / "refer")
    return {"vg": vg, "vg-grit": vg, "vg-glamm": vg, "coco": write_coco(root / "coco"),
            "o365": write_o365(root / "o365"), "v3det": write_v3det(root / "v3det"), "refcoco": refer,
            "refcoco-google": refer, "refcoco+": refer, "refcocog": refer, "refcocog-google": refer}
