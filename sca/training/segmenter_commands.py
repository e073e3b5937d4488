"""``sca segmenter-train``: the segmenter stage from a YAML file (sections segmenter, data, train, loss).

    sca segmenter-train --config segmenter.yaml --output runs/segmenter
    sca segmenter-train --config segmenter.yaml --output runs/segmenter --set train.max_steps=100

``segmenter`` is an image-encoder spec (default: the embedded tiny SAM), ``train`` TrainConfig fields
over the embedded schedule, ``data`` DataConfig fields (``val_records`` required), ``loss`` options of
``SegmenterLoss``. The run folder gets ``model/`` (a SamModel folder, loadable as
``{"name": "tiny-sam", "weights": "<run>/model"}``), ``metrics.json``, ``checkpoints/`` and ``live/``.
A killed run started again with the same command resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SECTIONS = ("segmenter", "data", "train", "loss")


def register(sub) -> None:
    p = sub.add_parser("segmenter-train", help="train a promptable tiny SAM on region masks (embedded default)")
    p.add_argument("--config", required=True, help=f"YAML with sections {', '.join(SECTIONS)} (data required)")
    p.add_argument("--output", required=True, help="run folder: model/, metrics.json, checkpoints/, live/")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (YAML syntax), e.g. --set train.max_steps=100")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.add_argument("--eval-images", type=int, help="score only the first N val images")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest for a tiny SAM on a small shared CPU; 0 = leave as is)")
    p.set_defaults(func=run)


def load_config(path: str, overrides: list[str]) -> dict[str, Any]:
    """The YAML file with ``--set`` overrides, segmenter and train filled from the embedded default."""
    import yaml

    from sca.training.segmenter_stage import EMBEDDED_SEGMENTER, EMBEDDED_SEGMENTER_TRAIN

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist")
    config = yaml.safe_load(file.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"config {path!r} must be a mapping of sections {SECTIONS}, got {type(config).__name__}")
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ValueError(f"config {path!r} has unknown section(s) {unknown}; expected {', '.join(SECTIONS)}")
    config = {s: dict(config.get(s) or {}) for s in SECTIONS}
    if "name" not in config["segmenter"]:
        config["segmenter"] = {**EMBEDDED_SEGMENTER, **config["segmenter"]}
    config["train"] = {**EMBEDDED_SEGMENTER_TRAIN, **config["train"]}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, leaf = key.partition(".")
        if not sep or not dot or section not in SECTIONS or not leaf:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION in {SECTIONS}, "
                             "e.g. train.max_steps=100")
        config[section][leaf] = yaml.safe_load(value)
    if not config["data"]:
        raise ValueError(f"config {path!r} has no data section (train_records, images, val_records)")
    return config


def run(args) -> int:
    from sca.training.segmenter_stage import run_segmenter_stage

    config = load_config(args.config, args.set)
    result = run_segmenter_stage(segmenter=config["segmenter"], data=config["data"], train=config["train"],
                                 loss=config["loss"], output_dir=args.output, resume=not args.no_resume,
                                 eval_images=args.eval_images, num_threads=args.threads or None)
    keys = ("mask_iou_box", "mask_iou_point", "baseline_box_as_mask", "num_regions", "steps", "seconds")
    print(json.dumps({"output": str(result.output_dir), **{k: result.metrics.get(k) for k in keys}}))
    return 0
