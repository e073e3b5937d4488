"""Caption every region of an evaluation set and write one predictions record per region.

``predict_to_file(model, loader, path, protocol=..., split=...)`` runs ``SCAModel.generate`` over a
DataLoader of ``RegionBatch`` (``sca.training.collate.make_loader``, eval ``RegionDataset``) and writes
JSON Lines atomically (temp file + rename). A record (one region)::

    {"protocol": "vg-full", "split": "test", "image_id": 2417890, "region_id": 5214, "region_index": 0,
     "box": [x0, y0, x1, y1],          # original-image pixels (the S-frame prompt mapped back)
     "task": "caption",                # the task token the caption was generated with
     "candidate": "a white dog",       # the generated caption
     "references": ["white dog on the grass", ...],   # all raw ground-truth phrases
     "iou_scores": [0.91, 0.87, 0.95], # SAM's predicted IoU of each of its masks
     "image_size": [width, height]}    # of the original image

``read_predictions(path, protocol=...)`` reads a file back and refuses one of another protocol;
``merge_predictions`` joins shards of one protocol and split (duplicate regions refused).
Paper evaluation settings (§5): ground-truth boxes as prompts, beam 3, at most 20 new tokens.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sca.data.records import TASKS
from sca.data.report import DataReport
from sca.evaluation.protocols import ProtocolMismatchError, check_same_protocol, check_sources, get_protocol

__all__ = ["GenerationSettings", "PredictionStats", "Predictions", "batch_predictions", "merge_predictions",
           "predict_to_file", "read_predictions", "region_key", "write_jsonl_atomic"]

FIELDS = ("protocol", "split", "image_id", "region_id", "region_index", "box", "task", "candidate", "references",
          "iou_scores")


@dataclass
class GenerationSettings:
    """num_beams / max_new_tokens: the paper evaluates with 3 / 20. region_chunk_size: regions per
    SAM decoder + mixer call, lm_batch_size: regions per LM ``generate`` call (memory bounds; results
    do not depend on them). task: None = each region's own task (from
    its record), or "caption" / "recognition" for every region."""

    num_beams: int = 3
    max_new_tokens: int = 20
    region_chunk_size: int = 32
    lm_batch_size: int = 64
    task: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_beams", "max_new_tokens", "region_chunk_size", "lm_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GenerationSettings.{name} must be an int >= 1, got {value!r}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"GenerationSettings.task {self.task!r} is not None or one of {TASKS}")


@dataclass
class PredictionStats:
    """What a run did and how fast: seconds is the wall time (data loading included), model_seconds
    the time inside ``generate`` only."""

    num_images: int = 0
    num_regions: int = 0
    bad_images: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    report: dict[str, int] = field(default_factory=dict)

    @property
    def regions_per_second(self) -> float:
        return self.num_regions / self.seconds if self.seconds else 0.0

    @property
    def model_regions_per_second(self) -> float:
        return self.num_regions / self.model_seconds if self.model_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "regions_per_second": self.regions_per_second,
                "model_regions_per_second": self.model_regions_per_second}


def _plain(v: Any) -> Any:
    """numpy scalars (ids from compact readers) -> Python values for JSON."""
    return v.item() if isinstance(v, np.generic) else v


def region_key(record: dict[str, Any]) -> str:
    """A region's identity in a predictions file: image id + region id (or its index in the image)."""
    rid = record.get("region_id")
    return f"{record['image_id']}#{rid if rid is not None else 'index' + str(record['region_index'])}"


# ---------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------
def batch_predictions(model, batch, *, protocol: str, split: str, settings: GenerationSettings) -> list[dict]:
    """Caption the real regions of one ``RegionBatch`` -> one record per region (image-major order)."""
    from sca.models.segmenters.base import Prompts

    if len(batch) == 0:
        return []
    batch = batch.to(model.device)
    real = batch.region_mask  # [B, R]
    image_index = torch.nonzero(real)[:, 0]  # [N]
    boxes = batch.boxes[real]  # [N, 4] S frame
    task_ids = batch.task_ids[real] if settings.task is None else TASKS.index(settings.task)
    out = model.generate(pixel_values=batch.pixel_values, prompts=Prompts(boxes=boxes[:, None]),
                         image_index=image_index, task_ids=task_ids, num_beams=settings.num_beams,
                         max_new_tokens=settings.max_new_tokens, region_chunk_size=settings.region_chunk_size,
                         lm_batch_size=settings.lm_batch_size)
    tasks = (batch.task_ids[real].tolist() if settings.task is None else [TASKS.index(settings.task)] * len(boxes))
    ious = out.iou_scores.float().cpu().tolist()
    original = batch.boxes_to_original()  # per image [R_b, 4]
    records, n = [], 0
    for b, image_id in enumerate(batch.image_ids):
        for r, region_id in enumerate(batch.region_ids[b]):
            records.append({
                "protocol": protocol, "split": split, "image_id": _plain(image_id), "region_id": _plain(region_id),
                "region_index": r, "box": [round(float(v), 3) for v in original[b][r]],
                "task": TASKS[tasks[n]], "candidate": out.captions[n], "references": list(batch.references[b][r]),
                "iou_scores": [round(v, 5) for v in ious[n]],
                "image_size": [int(batch.original_sizes[b, 1]), int(batch.original_sizes[b, 0])],
            })
            n += 1
    if n != len(out.captions):
        raise AssertionError(f"{n} regions listed but {len(out.captions)} captioned")
    return records


def _dataset_sources(dataset) -> set[str]:
    """Record sources of an evaluation dataset (a compact reader's column, else first and last record)."""
    records = getattr(dataset, "records", None)
    if records is None or len(records) == 0:
        return set()
    if isinstance(getattr(records, "source", None), str):
        return {records.source}
    return {records[0].source, records[len(records) - 1].source}


def predict_to_file(model, loader, path: str | os.PathLike, *, protocol: str, split: str,
                    settings: GenerationSettings | None = None, progress: bool = True) -> PredictionStats:
    """Caption every region the loader yields and write the predictions JSONL at ``path`` (atomic).

    Refuses a dataset whose records' source does not belong to ``protocol``. Returns the stats."""
    get_protocol(protocol)
    check_sources(protocol, _dataset_sources(getattr(loader, "dataset", None)))
    settings = settings or GenerationSettings()
    stats, report = PredictionStats(), DataReport()
    was_training = model.training
    model.eval()

    def records() -> Iterator[dict]:
        from tqdm.auto import tqdm

        total = len(loader.dataset) if hasattr(loader, "dataset") else None
        bar = tqdm(total=total, unit="img", desc=f"predict {protocol}/{split}", disable=not progress)
        start = time.perf_counter()
        for batch in loader:
            report.merge(batch.report)
            t0 = time.perf_counter()
            out = batch_predictions(model, batch, protocol=protocol, split=split, settings=settings)
            stats.model_seconds += time.perf_counter() - t0
            stats.num_images += len(batch)
            stats.num_regions += len(out)
            stats.seconds = time.perf_counter() - start
            bar.update(len(batch) + batch.report.count(action="dropped-image"))
            bar.set_postfix(regions=stats.num_regions, regions_per_s=f"{stats.regions_per_second:.2f}")
            yield from out
        bar.close()

    try:
        write_jsonl_atomic(path, records())
    finally:
        model.train(was_training)
    stats.report = report.summary()
    stats.bad_images = report.count(action="dropped-image")
    return stats


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records as JSON Lines to a temp file beside ``path``, then rename: readers never see a
    half-written file, and a failure leaves any previous file in place. Returns the record count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


# ---------------------------------------------------------------------------------------------------
# Reading and merging
# ---------------------------------------------------------------------------------------------------
@dataclass
class Predictions:
    """The records of a predictions file, all of one ``protocol`` and ``split``."""

    protocol: str
    split: str
    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.records)

    def candidates(self) -> dict[str, str]:
        return {region_key(r): r["candidate"] for r in self.records}

    def references(self) -> dict[str, list[str]]:
        return {region_key(r): r["references"] for r in self.records}


def read_predictions(path: str | os.PathLike, *, protocol: str | None = None) -> Predictions:
    """Read a predictions JSONL; every record must hold every field, one protocol and split, and no
    region twice. With ``protocol``, a file of another protocol raises ``ProtocolMismatchError``."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not JSON ({err})") from None
            missing = [f for f in FIELDS if f not in rec]
            if missing:
                raise ValueError(f"{path}:{lineno}: predictions record lacks {missing}; fields: {list(FIELDS)}")
            records.append(rec)
    if not records:
        raise ValueError(f"{path} holds no predictions")
    protocols = sorted({r["protocol"] for r in records})
    if len(protocols) > 1:
        raise ProtocolMismatchError(f"{path} mixes protocols {protocols}: refusing it")
    splits = sorted({r["split"] for r in records})
    if len(splits) > 1:
        raise ValueError(f"{path} mixes splits {splits}: refusing it")
    if protocol is not None:
        check_same_protocol(protocol, protocols[0], f"predictions file {path}")
    _check_unique(records, str(path))
    return Predictions(protocols[0], splits[0], records)


def _check_unique(records: list[dict], where: str) -> None:
    seen: set[str] = set()
    for r in records:
        k = region_key(r)
        if k in seen:
            raise ValueError(f"{where}: region {k} appears twice")
        seen.add(k)


def merge_predictions(paths: Iterable[str | os.PathLike], out_path: str | os.PathLike, *,
                      protocol: str) -> Predictions:
    """Join predictions files (e.g. shards) of ``protocol`` into ``out_path``. Files of another
    protocol or split, or a region present twice, are refused before anything is written."""
    parts = [read_predictions(p, protocol=protocol) for p in paths]
    if not parts:
        raise ValueError("merge_predictions got no files")
    splits = sorted({p.split for p in parts})
    if len(splits) > 1:
        raise ValueError(f"cannot merge predictions of different splits {splits}")
    merged = Predictions(protocol, splits[0], [r for p in parts for r in p.records])
    _check_unique(merged.records, "merged predictions")
    write_jsonl_atomic(out_path, merged.records)
    return merged
