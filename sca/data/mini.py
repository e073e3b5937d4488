"""The real-image mini set: ten photos that ship inside Python packages, annotated by hand.

Images: scikit-image's astronaut, chelsea, coffee, rocket, coins, horse and camera; scikit-learn's
china and flower (CC-BY 2.0, see sklearn/datasets/images/README.txt); matplotlib's grace_hopper.
They are copied from the installed packages (never committed or downloaded). The annotations in
``sca/assets/mini/`` use the Visual Genome v1.2 format:

- ``image_data.json``: ``[{"image_id", "width", "height", "url", "coco_id", "flickr_id"}]`` where
  ``url`` is ``pkg://<package>/<file>`` (the package file the image comes from);
- ``region_descriptions.json``: ``[{"id": image_id, "regions": [{"region_id", "image_id", "phrase",
  "x", "y", "width", "height"}]}]`` (one phrase per region, boxes in pixels: x, y, width, height);
- ``masks.json`` (not VG; VG has none): ``{region_id: {"polygons": [[x0, y0, x1, y1, ...]]}}`` for
  polygons written by hand, or ``{region_id: {"rle": COCO RLE}}`` for masks from a clean
  segmentation (``segment_coins``, ``horse_mask``; ``rebuild_segmentation_masks`` recomputes them).

``write_mini(out)`` copies the images to ``out/images/`` and writes ``out/mini.jsonl`` and a manifest;
``mini_records()`` gives the records without touching the disk.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sca.data.io import write_manifest, write_records
from sca.data.masks import mask_to_box, polygons_to_mask, rle_encode
from sca.data.records import ImageRecord, Region

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "mini"
SOURCE = "mini"

__all__ = ["ASSETS", "horse_mask", "mini_records", "package_image", "rebuild_segmentation_masks",
           "segment_coins", "vg_to_records", "write_mini"]


def package_image(url: str) -> Path:
    """``pkg://skimage/astronaut.png`` -> the file inside the installed package. Raises
    FileNotFoundError naming the package to install."""
    if not url.startswith("pkg://"):
        raise ValueError(f"mini image url {url!r} must look like pkg://<skimage|sklearn|matplotlib>/<file>")
    package, _, name = url[len("pkg://"):].partition("/")
    try:
        if package == "skimage":
            import skimage

            path = Path(skimage.__file__).parent / "data" / name
        elif package == "sklearn":
            import sklearn.datasets

            path = Path(sklearn.datasets.__file__).parent / "images" / name
        elif package == "matplotlib":
            from matplotlib import cbook

            path = Path(cbook.get_sample_data(name, asfileobj=False))
        else:
            raise ValueError(f"mini image url {url!r}: unknown package {package!r} (skimage, sklearn, matplotlib)")
    except ImportError as err:
        pip = {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(package, package)
        raise FileNotFoundError(f"{url} needs the package {pip!r} (pip install {pip}): {err}") from None
    if not path.is_file():
        raise FileNotFoundError(f"{url}: {path} does not exist in the installed {package}")
    return path


def _load_json(name: str) -> Any:
    return json.loads((ASSETS / name).read_text(encoding="utf-8"))


def _mask(spec: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    if "rle" in spec:
        return spec["rle"]
    return rle_encode(polygons_to_mask(spec["polygons"], height, width))


def vg_to_records(region_descriptions: list[dict], image_data: list[dict], masks: dict[str, dict] | None = None,
                  *, source: str = SOURCE, split: str = "mini") -> list[ImageRecord]:
    """Visual Genome-format annotations -> records (one region per VG region, no dedup; paper.md §4).
    ``file_name`` is the last path part of each image's url."""
    masks = masks or {}
    images = {d["image_id"]: d for d in image_data}
    records = []
    for entry in region_descriptions:
        info = images.get(entry["id"])
        if info is None:
            raise ValueError(f"region_descriptions has image {entry['id']!r}, absent from image_data")
        regions = []
        for r in entry["regions"]:
            box = (r["x"], r["y"], r["x"] + r["width"], r["y"] + r["height"])
            spec = masks.get(str(r["region_id"]))
            mask = _mask(spec, info["height"], info["width"]) if spec else None
            regions.append(Region(box=box, phrases=[r["phrase"]], mask=mask, task="caption", region_id=r["region_id"]))
        name = info["url"].rsplit("/", 1)[-1]
        records.append(ImageRecord(image_id=info["image_id"], file_name=name, width=info["width"],
                                   height=info["height"], regions=regions, source=source, split=split))
    return records


@cache
def _cached_records() -> tuple[str, ...]:
    from sca.data.io import dumps_record

    recs = vg_to_records(_load_json("region_descriptions.json"), _load_json("image_data.json"), _load_json("masks.json"))
    return tuple(dumps_record(r) for r in recs)


def mini_records() -> list[ImageRecord]:
    """The mini set's records (file names relative to the folder ``write_mini`` fills)."""
    from sca.data.io import loads_record

    return [loads_record(line) for line in _cached_records()]


def write_mini(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Copy the images into ``out_dir/images/`` and write ``out_dir/mini.jsonl`` + ``manifest.json``.
    Records' ``file_name`` become ``images/<name>``, so ``out_dir`` is the image root. Returns the manifest."""
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    urls = {d["image_id"]: d["url"] for d in _load_json("image_data.json")}
    records = mini_records()
    for rec in records:
        shutil.copyfile(package_image(urls[rec.image_id]), root / "images" / rec.file_name)
        rec.file_name = f"images/{rec.file_name}"
    stats = write_records(root / "mini.jsonl", records)
    return write_manifest(root, {"mini.jsonl": stats}, image_dir="images", params={"assets": "sca/assets/mini"})


# ---------------------------------------------------------------------------------------------------
# Masks from clean segmentations (how masks.json's "rle" entries were made)
# ---------------------------------------------------------------------------------------------------
def segment_coins() -> list[np.ndarray]:
    """The 24 coins of ``skimage.data.coins()`` as [303, 384] bool masks, in reading order (rows top to
    bottom, left to right). The scikit-image tutorial recipe: Sobel elevation map, markers at
    intensity < 30 (background) and > 150 (coins), watershed, holes filled."""
    from scipy import ndimage as ndi
    from skimage import data, filters, measure, segmentation

    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    fg = ndi.binary_fill_holes(segmentation.watershed(filters.sobel(coins), markers) == 2)
    labels = measure.label(fg)
    props = [p for p in measure.regionprops(labels) if p.area >= 500]
    props.sort(key=lambda p: (int(p.centroid[0] // 75), p.centroid[1]))  # rows are ~75 px apart
    return [labels == p.label for p in props]


def horse_mask() -> np.ndarray:
    """The horse silhouette of ``skimage.data.horse()`` ([328, 400] bool): opaque dark pixels."""
    from PIL import Image

    with Image.open(package_image("pkg://skimage/horse.png")) as img:
        rgba = np.asarray(img.convert("RGBA"))
    return (rgba[..., 3] > 128) & (rgba[..., :3].mean(-1) < 128)


def rebuild_segmentation_masks(masks: dict[str, dict], coin_region_ids: list[int], horse_region_id: int) -> dict:
    """Recompute the "rle" entries of ``masks`` (a masks.json dict) from the segmentations above."""
    out = dict(masks)
    coins = segment_coins()
    if len(coins) != len(coin_region_ids):
        raise ValueError(f"segment_coins found {len(coins)} coins, the annotations have {len(coin_region_ids)}")
    for rid, m in zip(coin_region_ids, coins, strict=True):
        out[str(rid)] = {"rle": rle_encode(m)}
    out[str(horse_region_id)] = {"rle": rle_encode(horse_mask())}
    return out


def coin_boxes() -> list[tuple[float, float, float, float]]:
    """Pixel-edge boxes of ``segment_coins()`` (used to write the coins' VG boxes)."""
    return [mask_to_box(m) for m in segment_coins()]
