"""``sca train``: train the captioner from a YAML file (sections model, data, train).

    sca train --config run.yaml --output runs/x
    accelerate launch --num_processes 2 -m sca.cli train --config run.yaml --output runs/x   # DDP

A killed run started again with the same command resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def register(sub) -> None:
    p = sub.add_parser("train", help="train the SCA captioner (resumes a killed run)")
    p.add_argument("--config", required=True, help="YAML with sections model, data, train (and eval)")
    p.add_argument("--output", required=True, help="run folder: model/, checkpoints/, live/")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (YAML syntax), e.g. --set train.max_steps=100")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.add_argument("--cache-dir", help="embedding cache folder (train.use_embedding_cache)")
    p.set_defaults(func=run)


def load_config(path: str, overrides: list[str]) -> dict[str, Any]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist")
    config = yaml.safe_load(file.read_text()) or {}
    for section in ("model", "data", "train"):
        config.setdefault(section, {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.max_steps=100")
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    unknown = sorted(set(config) - {"model", "data", "train", "eval"})
    if unknown:
        raise ValueError(f"config {path!r} has unknown section(s) {unknown}; expected model, data, train, eval")
    return config


def run(args) -> int:
    from sca.training.run import run_training

    config = load_config(args.config, args.set)
    result = run_training(model=config["model"], data=config["data"], train=config["train"],
                          eval=config.get("eval"), output_dir=args.output, cache_dir=args.cache_dir,
                          resume=not args.no_resume)
    summary = {"steps": result.steps, "final_loss": result.final_loss, "output": str(result.output_dir),
               "data_issues": result.data_report.summary() if result.data_report is not None else {}}
    print(json.dumps(summary))
    return 0
