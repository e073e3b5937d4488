"""One item of ``data.datasets`` (the paper configuration's data stage): fetch, convert, check images.

An item is a mapping with these keys (``DataItem``; any other key is refused, naming the accepted):

    name       a dataset of ``sca.data.readers.DATASETS`` (vg, vg-grit, vg-glamm, coco, o365, v3det,
               refcoco, refcoco-google, refcoco+, refcocog, refcocog-google)           required
    splits     the splits to convert, e.g. [train, test]; only the files they need are fetched  required
    root       the dataset's folder (default: the dataset's default_root, e.g. data/vg); records
               point into it, and ``<out>/<as>/images`` links to it
    from       a folder holding your copies (archives or unpacked, in any layout the source accepts;
               see ``sca download --list``): linked or copied into root instead of downloading
    download   true (default): fetch what root lacks (from ``from`` or the network); false: read root
               as it is (e.g. root is your unpacked copy)
    parts      [annotations, images] (default) or one of them; images: false-like runs skip the image check
    as         the folder name under ``<out>`` (default: name), e.g. two VG protocols side by side
    options    reader options (``sca.data.readers.read_dataset``): task, bad_boxes, keep_empty, crowd,
               image_dir, text, with_masks
    check_images  true (default when images are fetched): every record's image must exist under root;
               missing ones are counted in the summary, and an item none of whose images exists fails
               with the first missing path and the layouts the reader looked in
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["DataItem", "ImagesMissingError", "missing_images", "prepare_item"]


class ImagesMissingError(FileNotFoundError):
    """None of a converted split's images exists under its root."""


@dataclass
class DataItem:
    """One entry of ``data.datasets`` (see the module docstring for each key)."""

    name: str
    splits: list[str]
    root: str | None = None
    from_dir: str | None = None
    download: bool = True
    parts: list[str] = field(default_factory=lambda: ["annotations", "images"])
    as_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    check_images: bool | None = None

    _KEYS = {"from": "from_dir", "as": "as_name"}  # YAML keys that are Python keywords

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> DataItem:
        if not isinstance(item, dict):
            raise ValueError(f"data.datasets item {item!r} is not a mapping")
        yaml_name = {v: k for k, v in cls._KEYS.items()}
        accepted = [yaml_name.get(f.name, f.name) for f in fields(cls)]
        unknown = sorted(set(item) - set(accepted))
        if unknown:
            raise ValueError(f"data.datasets item {item.get('name')!r}: unknown key(s) {unknown}; accepted: {accepted}")
        for key in ("name", "splits"):
            if not item.get(key):
                raise ValueError(f"data.datasets item {item!r} needs {key!r}")
        splits = item["splits"]
        if isinstance(splits, str) or not all(isinstance(s, str) for s in splits):
            raise ValueError(f"data.datasets item {item['name']!r}: splits must be a list of names, got {splits!r}")
        kwargs = {cls._KEYS.get(k, k): v for k, v in item.items()}
        return cls(**kwargs)


def missing_images(records, root: Path, limit: int = 5) -> tuple[int, list[str]]:
    """How many records' images do not exist under ``root``, and the first ``limit`` of their paths."""
    names = getattr(records, "file_names", None)
    count, first = 0, []
    for i in range(len(records)):
        rel = names[i] if names is not None else records[i].file_name
        path = root / rel
        if not path.is_file():
            count += 1
            if len(first) < limit:
                first.append(str(path))
    return count, first


def prepare_item(item: DataItem | dict[str, Any], out: Path, log=print) -> dict[str, Any]:
    """Fetch ``item`` (unless ``download: false``), convert each split to ``<out>/<as>/<split>.jsonl.gz``,
    link ``<out>/<as>/images`` to the root, and check its images. Returns the summary of each split."""
    from sca.data.download import fetch
    from sca.data.io import write_records
    from sca.data.readers import get_dataset, read_dataset

    item = DataItem.from_dict(item) if isinstance(item, dict) else item
    spec = get_dataset(item.name)
    bad = [s for s in item.splits if s not in spec.splits]
    if bad:
        raise ValueError(f"data.datasets item {item.name!r}: no split(s) {bad}; {item.name} has {list(spec.splits)}")
    root = Path(item.root or spec.default_root)
    if item.download:
        fetch(spec.download, root, from_dir=item.from_dir or None, parts=tuple(item.parts), splits=tuple(item.splits),
              log=log)
    elif not root.is_dir():
        raise FileNotFoundError(f"data.datasets item {item.name!r}: download is false and root {root} does not exist")
    check = item.check_images if item.check_images is not None else "images" in item.parts
    name = item.as_name or item.name
    summary: dict[str, Any] = {}
    for split in item.splits:
        records = read_dataset(item.name, root, split, **item.options)
        stats = write_records(out / name / f"{split}.jsonl.gz", records)
        link = out / name / "images"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(root.resolve(), link)
        entry: dict[str, Any] = {"stats": stats, "issues": records.report.summary()}
        if check:
            count, first = missing_images(records, root)
            entry["images_missing"] = {"count": count, "of": len(records), "first": first}
            if count and count == len(records):
                notes = "; ".join(records.report.notes)
                raise ImagesMissingError(
                    f"{item.name}/{split}: none of its {len(records)} images is under {root} (first: {first[0]}). "
                    f"The reader's notes: {notes}. Give the dataset's root as `root:` or your copy as `from:`, "
                    f"or set `check_images: false` to convert annotations only")
            if count:
                log(f"{item.name}/{split}: WARNING: {count} of {len(records)} images are missing under {root} "
                    f"(first: {first[0]}); those samples will be reported and left out in training")
        summary[f"{name}/{split}"] = entry
    return summary
