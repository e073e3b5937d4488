"""One training run of the captioner from plain config: what ``sca train`` and the notebooks call.

    run_training(model={...SCAConfig fields...}, data={...DataConfig fields...},
                 train={...TrainConfig fields...}, output_dir="runs/finetune")

Writes ``output_dir/model`` (an SCA checkpoint), ``output_dir/checkpoints`` (resumable state) and
``output_dir/live`` (dvclive metrics and plots).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sca.training.config import TrainConfig
from sca.training.trainer import Trainer, TrainResult

__all__ = ["DataConfig", "build_datasets", "periodic_eval", "run_training"]


@dataclass
class DataConfig:
    """train_records / val_records: JSON Lines of ImageRecord (sca.data.io); images: their image root.
    jitter, hflip, scale_range: training augmentation (paper.md §3: LSJ 0.1-2.0 + flip).
    flip_text: "keep" (paper) or "swap-left-right" (data whose captions state positions).
    load_masks: decode region masks (the segmenter stage needs them).
    train_target: a region's training caption: "random" (paper.md §3) or "first" (its first phrase)."""

    train_records: str
    images: str
    val_records: str | None = None
    val_images: str | None = None
    jitter: bool = True
    hflip: float = 0.5
    scale_range: tuple[float, float] = (0.1, 2.0)
    flip_text: str = "keep"
    load_masks: bool = False
    train_target: str = "random"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"DataConfig got unknown field(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "scale_range" in d:
            d["scale_range"] = tuple(d["scale_range"])
        return cls(**d)

    @property
    def augments(self) -> bool:
        return bool(self.jitter or self.hflip > 0)


def build_datasets(data: DataConfig, *, image_size: int, pixel_mean, pixel_std, regions_per_image: int,
                   seed: int):
    """(train RegionDataset, val RegionDataset or None) for a segmenter's input size and statistics."""
    from sca.data.dataset import RegionDataset
    from sca.data.transforms import TransformConfig

    common = dict(image_size=image_size, pixel_mean=tuple(pixel_mean), pixel_std=tuple(pixel_std),
                  flip_text=data.flip_text)
    train_tf = TransformConfig(jitter=data.jitter, hflip=data.hflip, scale_range=tuple(data.scale_range), **common)
    train = RegionDataset(data.train_records, data.images, train=True, transform=train_tf,
                          regions_per_image=regions_per_image, load_masks=data.load_masks, seed=seed,
                          train_target=data.train_target)
    val = None
    if data.val_records:
        val_tf = TransformConfig(jitter=False, hflip=0.0, **common)
        val = RegionDataset(data.val_records, data.val_images or data.images, train=False, transform=val_tf,
                            load_masks=data.load_masks, seed=seed)
    return train, val


def periodic_eval(data: DataConfig, output_dir: str | os.PathLike, *, max_images: int = 32,
                  metrics: tuple[str, ...] = ("CIDEr-D",), num_beams: int = 1, max_new_tokens: int = 20) -> Callable:
    """An ``eval_fn`` for the Trainer: caption the first ``max_images`` validation images, score them
    (and the trivial baselines) into ``output_dir/eval/step-N``, return the model's figures."""
    if not data.val_records:
        raise ValueError("periodic evaluation needs data.val_records")
    from sca.data.io import read_records
    from sca.evaluation.predict import GenerationSettings
    from sca.evaluation.run import evaluate_model

    records = read_records(data.val_records)[:max_images]
    generation = GenerationSettings(num_beams=num_beams, max_new_tokens=max_new_tokens)

    def eval_fn(model, step: int) -> dict[str, float]:
        result = evaluate_model(model, records, data.val_images or data.images, Path(output_dir) / "eval" / f"step-{step}",
                                train_records=data.train_records, generation=generation, metrics=metrics,
                                figure_images=0, progress=False, num_workers=0)
        figures = {k: v for k, v in result["model"]["scores"].items()}
        for name, base in result["baselines"].items():
            for k, v in base["scores"].items():
                figures[f"baseline_{name}/{k}"] = v
        return figures

    return eval_fn


def run_training(*, model: dict[str, Any], data: dict[str, Any], train: dict[str, Any],
                 output_dir: str | os.PathLike, eval: dict[str, Any] | None = None, eval_fn: Callable | None = None,
                 cache_dir: str | None = None, resume: bool = True, accelerator=None,
                 progress: bool = True) -> TrainResult:
    """Build the captioner and the data from plain dicts and train it (see the module docstring).

    eval: periodic evaluation on the validation records (``periodic_eval`` options: max_images,
    metrics, num_beams, max_new_tokens), every ``train.eval_every`` steps and at the end."""
    from sca.data.io import sha256_file
    from sca.models.captioner import SCAModel
    from sca.models.config import SCAConfig
    from sca.training.cache import EmbeddingCache
    from sca.training.collate import RegionCollator
    from sca.training.sca_task import CaptionLoss

    model_cfg = SCAConfig.from_dict(model)
    data_cfg = DataConfig.from_dict(data)
    train_cfg = TrainConfig.from_dict(train)
    # Parts without weights (tests, a random frozen LM) must come out the same in a resumed run.
    from accelerate.utils import set_seed

    set_seed(train_cfg.seed)
    captioner = SCAModel(model_cfg)
    if train_cfg.gradient_checkpointing:
        captioner.enable_gradient_checkpointing()
    captioner.train()
    seg = captioner.segmenter
    train_set, _ = build_datasets(data_cfg, image_size=seg.image_size, pixel_mean=seg.pixel_mean,
                                  pixel_std=seg.pixel_std, regions_per_image=train_cfg.regions_per_image,
                                  seed=train_cfg.seed)
    loss = CaptionLoss()
    if train_cfg.use_embedding_cache:
        if data_cfg.augments:
            raise ValueError("use_embedding_cache needs a run without image augmentation (jitter: false, hflip: 0)")
        context = {"records": sha256_file(data_cfg.train_records), "image_size": seg.image_size,
                   "mean": seg.pixel_mean, "std": seg.pixel_std}
        cache = EmbeddingCache(cache_dir or Path(output_dir) / "embedding-cache", seg, model_cfg.image_encoder,
                               context)
        loss = CaptionLoss(cache, cache_keys=lambda batch: [str(i) for i in batch.image_ids])
    if train_cfg.cache_segments:
        from sca.training.segment_cache import SegmentCache

        if data_cfg.jitter:
            raise ValueError("cache_segments needs data.jitter: false (every scale-jittered view is new); "
                             "flips are fine (two views per image)")
        if seg.trainable_module_names():
            raise ValueError(f"cache_segments needs a frozen segmenter; {model_cfg.image_encoder['name']!r} "
                             f"trains {seg.trainable_module_names()}")
        loss = CaptionLoss(segment_cache=SegmentCache(train_cfg.segment_cache_mb))
    if eval is not None and eval_fn is None:
        eval_fn = periodic_eval(data_cfg, output_dir, **eval)
    collator = RegionCollator(captioner.lm.require_tokenizer(), max_tokens=model_cfg.max_caption_tokens)
    run_config = {"model": model_cfg.to_dict(), "data": dict(data), "train": train_cfg.to_dict()}
    trainer = Trainer(captioner, train_set, collate_fn=collator, loss_fn=loss, config=train_cfg,
                      output_dir=output_dir, eval_fn=eval_fn, accelerator=accelerator, progress=progress,
                      run_config=run_config)
    result = trainer.fit(resume=resume)
    return result
