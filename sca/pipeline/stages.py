"""The pipeline's stages as functions of their params section: the notebooks call these and show.

data -> segmenter -> language_model -> pretrain -> finetune -> evaluate (dvc.yaml runs them as
papermill notebooks). Every stage writes into its ``out`` folder and returns a small summary dict.
Stages that the paper configuration does not need (the tiny SAM's segmentation training, the
small caption LM's text pretraining) are switched off with ``enabled: false`` and then write only
a marker saying so.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from sca.pipeline.params import deep_update

__all__ = ["evaluate", "make_data", "results", "train_captioner", "train_language_model", "train_segmenter",
           "write_json"]


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (DVC reads metrics files while nothing else may see half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def _skipped(out: Path, why: str) -> dict[str, Any]:
    """A switched-off stage still leaves the outputs dvc.yaml declares for it: a marker in each of
    ``out/model``, ``out/checkpoints`` and ``out/live``, and its metrics."""
    summary = {"skipped": True, "reason": why}
    for folder in ("model", "checkpoints", "live"):
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / folder / "SKIPPED").write_text(why + "\n")
    write_json(out / "metrics.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------
def make_data(p: dict[str, Any]) -> dict[str, Any]:
    """``source: synthetic`` (the embedded default) generates the caption set, the weak set, the LM's
    text corpus and the real-image mini set; ``source: real`` fetches datasets (or links the copies
    in ``from``) and converts them to record files."""
    out = Path(p["out"])
    if p["source"] == "synthetic":
        return _synthetic_data(p, out)
    if p["source"] == "real":
        return _real_data(p, out)
    raise ValueError(f"data.source must be 'synthetic' or 'real', got {p['source']!r}")


def _synthetic_data(p: dict[str, Any], out: Path) -> dict[str, Any]:
    from sca.data.mini import write_mini
    from sca.data.synthetic import SyntheticConfig, generate_synthetic, synthetic_image

    size = tuple(p["scene_size"])
    workers = int(p.get("workers", 2))
    summary: dict[str, Any] = {}
    for flavour, splits, task in (("captions", p["captions"], "caption"), ("weak", p["weak"], p.get("weak_task"))):
        vocabulary = {"categories": p.get("weak_categories", "shape")} if flavour == "weak" else {}
        cfg = SyntheticConfig(flavour=flavour, seed=int(p["seed"]), splits=dict(splits), image_size=size,
                              task=task, **vocabulary)
        manifest = generate_synthetic(out / f"synthetic-{flavour}", cfg, workers=workers)
        summary[f"synthetic-{flavour}"] = manifest["totals"]
    # The LM's text: captions and category names of scenes that are not among the training images.
    from sca.models.caption_lm import corpus_from_records

    n = int(p["lm_corpus_scenes"])
    texts: list[str] = []
    for flavour in ("captions", "weak"):
        cfg = SyntheticConfig(flavour=flavour, seed=int(p["seed"]) + 1000, splits={"corpus": n}, image_size=size)
        texts.extend(corpus_from_records(synthetic_image(cfg, "corpus", i)[1]
                                         for i in range(n if flavour == "captions" else n // 4)))
    random.Random(int(p["seed"])).shuffle(texts)
    corpus = out / "lm-corpus" / "corpus.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text("\n".join(texts) + "\n")
    summary["lm-corpus"] = {"regions": len(texts)}
    if p.get("mini", True):
        summary["mini"] = write_mini(out / "mini")["totals"]
    write_json(out / "summary.json", summary)
    return summary


def _real_data(p: dict[str, Any], out: Path) -> dict[str, Any]:
    """Every item of ``datasets`` (keys: ``sca.data.prepare.DataItem``) fetched, converted and checked."""
    from sca.data.prepare import prepare_item

    summary: dict[str, Any] = {}
    for item in p["datasets"]:
        summary.update(prepare_item(item, out))
    write_json(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------------
# segmenter and language model (embedded default only)
# ---------------------------------------------------------------------------------------------------
def train_segmenter(p: dict[str, Any]) -> dict[str, Any]:
    out = Path(p["out"])
    if not p.get("enabled", True):
        return _skipped(out, "the image encoder comes with trained SAM weights")
    from sca.training.segmenter_stage import run_segmenter_stage

    result = run_segmenter_stage(segmenter=p["model"], data=p["data"], train=p["train"], loss=p.get("loss"),
                                 output_dir=out, **p.get("options", {}))
    return result if isinstance(result, dict) else getattr(result, "metrics", {})


def train_language_model(p: dict[str, Any]) -> dict[str, Any]:
    out = Path(p["out"])
    if not p.get("enabled", True):
        return _skipped(out, "the captioner uses a public pretrained LM")
    from sca.models.caption_lm import saved_lm_summary
    from sca.training.caption_lm import pretrain_caption_lm

    texts = [t for t in Path(p["corpus"]).read_text().splitlines() if t.strip()]
    result = pretrain_caption_lm(texts, out, train=p["train"], hidden_size=p["hidden_size"],
                                 num_layers=p["num_layers"], num_heads=p["num_heads"], progress=p.get("progress", True))
    summary = {"final_loss": result.final_loss, "steps": result.steps, "corpus_regions": len(texts),
               **saved_lm_summary(out / "model")}
    if p.get("context_check"):
        # Can a prefix steer it? The LM must read earlier context (sca.models.caption_lm.context_gain),
        # checked on held-out phrases: regions of the given records, never in the LM's corpus.
        from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

        from sca.data.io import read_records
        from sca.models.caption_lm import context_gain, corpus_from_records

        lm = GPT2LMHeadModel.from_pretrained(out / "model")
        summary["context"] = context_gain(lm, PreTrainedTokenizerFast.from_pretrained(out / "model"),
                                          corpus_from_records(read_records(p["context_check"])))
    write_json(out / "metrics.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------------
# the captioner: weak pretraining and caption fine-tuning
# ---------------------------------------------------------------------------------------------------
def subsample_records(records_path: str, fraction: float, seed: int, out_path: Path) -> str:
    """A seeded ``fraction`` of the images of a record file (the caption-data ablation)."""
    if fraction >= 1.0:
        return records_path
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"caption_fraction must be in (0, 1], got {fraction!r}")
    from sca.data.io import read_records, write_records

    records = read_records(records_path)
    keep = max(1, round(len(records) * fraction))
    chosen = sorted(random.Random(seed).sample(range(len(records)), keep))
    write_records(out_path, [records[i] for i in chosen])
    return str(out_path)


def train_captioner(p: dict[str, Any]) -> dict[str, Any]:
    """One training stage (pretrain or finetune): section keys ``model``, ``data``, ``train``,
    optional ``model_overrides`` (merged into ``model`` for this stage), ``eval``, ``init_from``,
    ``caption_fraction``, ``launch`` ({num_processes, config_file, ...}: more than one process or
    an accelerate config file (DeepSpeed ZeRO-2: configs/accelerate/deepspeed_zero2.yaml) runs
    ``accelerate launch``)."""
    out = Path(p["out"])
    if not p.get("enabled", True):
        return _skipped(out, "stage disabled (e.g. the no-pretraining ablation)")
    data = dict(p["data"])
    if p.get("caption_fraction", 1.0) < 1.0:
        data["train_records"] = subsample_records(data["train_records"], float(p["caption_fraction"]),
                                                  int(p["train"].get("seed", 42)), out / "train-subset.jsonl.gz")
    train = dict(p["train"])
    init_from = p.get("init_from")
    if init_from and Path(init_from).joinpath("metrics.json").is_file():
        marker = json.loads(Path(init_from, "metrics.json").read_text())
        if marker.get("skipped"):
            init_from = None  # the pretraining stage was switched off: start from scratch
    if init_from:
        train["init_from"] = str(Path(init_from) / "model")
    # model_overrides: this stage's changes to the shared model section (e.g. a frozen LM in pretraining).
    config = {"model": deep_update(p["model"], p.get("model_overrides") or {}), "data": data,
              "train": train}
    if p.get("eval"):
        config["eval"] = p["eval"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    launch = p.get("launch") or {}
    if int(launch.get("num_processes", 1)) > 1 or int(launch.get("num_machines", 1)) > 1 or launch.get("config_file"):
        _accelerate_launch(out / "config.yaml", out, launch)
        summary = json.loads((out / "live" / "metrics.json").read_text()) if (out / "live" / "metrics.json").is_file() else {}
    else:
        from sca.training.run import run_training

        result = run_training(model=config["model"], data=data, train=train, eval=p.get("eval"), output_dir=out,
                              progress=p.get("progress", True))
        summary = {"steps": result.steps, "final_loss": result.final_loss, "eval": result.metrics,
                   "data_issues": result.data_report.summary() if result.data_report is not None else {}}
    if p.get("anything"):
        summary["anything"] = calibrate_anything_defaults(out / "model", p["anything"])
    write_json(out / "metrics.json", summary)
    return summary


def calibrate_anything_defaults(model_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Anything mode's thresholds for the trained model, calibrated on scenes with ground-truth masks
    (``spec``: ``records``, ``images``, optional ``max_scenes``, ``match_iou``) and written into its
    config.json, so anything mode finds regions at its defaults (``sca.app.calibrate``)."""
    from sca.app.calibrate import calibrate_checkpoint

    unknown = sorted(set(spec) - {"records", "images", "max_scenes", "match_iou"})
    if unknown or not {"records", "images"} <= set(spec):
        raise ValueError(f"the 'anything' section takes records, images (required), max_scenes, match_iou; "
                         f"got {sorted(spec)}")
    cal = calibrate_checkpoint(model_dir, spec["records"], spec["images"], max_scenes=spec.get("max_scenes", 16),
                               match_iou=float(spec.get("match_iou", 0.5)))
    return cal.to_dict()


def _accelerate_launch(config: Path, out: Path, launch: dict[str, Any]) -> None:
    """Multi-GPU / multi-node through accelerate (DDP; FSDP or DeepSpeed via an accelerate config file)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.get("config_file"):
        cmd += ["--config_file", str(launch["config_file"])]
    for key in ("num_processes", "num_machines", "machine_rank", "main_process_ip", "main_process_port",
                "mixed_precision"):
        if key in launch:
            cmd += [f"--{key}", str(launch[key])]
    cmd += ["-m", "sca.cli", "train", "--config", str(config), "--output", str(out)]
    subprocess.run(cmd, check=True)


# ---------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------
def evaluate(p: dict[str, Any]) -> dict[str, Any]:
    """Caption every region of each evaluation set with the fine-tuned model; score it beside the
    trivial baselines. ``out/sets/<name>/`` holds each set's predictions, metrics and figure;
    ``out/metrics.json`` one entry per set, named by its protocol (never mixed)."""
    from sca.evaluation.predict import GenerationSettings
    from sca.evaluation.run import evaluate_model
    from sca.models.captioner import SCAModel

    out = Path(p["out"])
    model = SCAModel.from_pretrained(p["checkpoint"]).eval()
    generation = GenerationSettings(num_beams=int(p["num_beams"]), max_new_tokens=int(p["max_new_tokens"]),
                                    region_chunk_size=int(p.get("region_chunk_size", 32)),
                                    lm_batch_size=int(p.get("lm_batch_size", 64)))
    summary: dict[str, Any] = {}
    for item in p["sets"]:
        result = evaluate_model(model, item["records"], item["images"], out / "sets" / item["name"],
                                protocol=item.get("protocol"), train_records=item.get("train_records"),
                                generation=generation, num_workers=int(p.get("num_workers", 2)),
                                figure_images=int(p.get("figure_images", 4)), progress=p.get("progress", True))
        summary[item["name"]] = {
            "protocol": result["protocol"], "split": result["split"], "num_regions": result["num_regions"],
            "model": result["model"]["scores"],
            "baselines": {k: v["scores"] for k, v in result["baselines"].items()},
        }
        if "region_use" in result:
            summary[item["name"]]["region_use"] = result["region_use"]
    write_json(out / "metrics.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------
def results(p: dict[str, Any]) -> dict[str, Any]:
    """``results/``: the figures, tables and pictures of this run (``sca.pipeline.results``)."""
    from sca.pipeline.results import write_results

    return write_results(".", p["out"], evaluate_set=p.get("figure_set"))
