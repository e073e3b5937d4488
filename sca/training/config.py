"""TrainConfig: the recipe of paper.md §3 as defaults, every field a plain value (params.yaml-ready)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["TrainConfig"]

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """
    max_steps: optimizer steps (paper: 200K VG-only, or 100K pretrain + 100K finetune).
    lr: peak learning rate of the new modules (1e-4 at 8 images/step; linear scaling: 4e-4 at 32).
    lm_lr: learning rate of the LM when it is tuned (freeze_lm False); None: lr.
    weight_decay: AdamW decay, not applied to biases and LayerNorm (1-D) parameters.
    betas, eps: AdamW's.
    warmup_steps: linear warm-up, then cosine decay to 0 at max_steps (200).
    grad_clip: max global gradient norm (1.0); 0 disables.
    images_per_step: images in one optimizer step over all processes (8; headline runs 32).
    regions_per_image: random regions per image at train (16).
    gradient_accumulation: micro-batches per optimizer step (images_per_step is divided by it and
        by the number of processes).
    mixed_precision: "auto" = fp16 on CUDA, none on CPU; or "no", "fp16", "bf16".
    seed: seeds data order, augmentation and dropout.
    num_workers: DataLoader worker processes.
    log_every: steps between logged training figures; eval_every: steps between evaluations (0: end
        only); save_every: steps between checkpoints (0: end only); keep_checkpoints: newest kept.
    init_from: a checkpoint (folder) whose trained weights start this run (weak pretraining ->
        fine-tuning: the mixer, queries, task tokens and projection carry over).
    gradient_checkpointing: recompute the mixer's blocks and the LM's layers in the backward pass
        instead of storing their activations (``SCAModel.enable_gradient_checkpointing``): less
        memory for about one more forward pass of those parts.
    use_embedding_cache: reuse frozen image embeddings across epochs/stages (only without image
        augmentation; see sca.training.cache).
    cache_segments: keep the frozen segmenter's outputs per region view in memory
        (``sca.training.segment_cache``; needs ``jitter: false``, flips are fine): after the first
        epoch a step runs only the mixer and the LM. Same results as without it.
    segment_cache_mb: the segment cache's bound (MiB); regions beyond it are recomputed each time.
    torch_threads: CPU threads for this run (restored after); None leaves torch's setting. Tiny
        models on a 2-core machine run faster on 1 thread with a data worker on the other core.
    deterministic: run ``fit`` under ``torch.use_deterministic_algorithms(True, warn_only=True)``
        (restored after), so two runs of one configuration give the same weights. Without it, a
        40-step segmenter run on 2 busy CPU threads changed its loss in the 8th digit, which moved
        CIDEr-D by a point downstream. Ops with no deterministic version warn instead of failing.
    """

    max_steps: int = 1000
    lr: float = 1e-4
    lm_lr: float | None = None
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 200
    grad_clip: float = 1.0
    images_per_step: int = 8
    regions_per_image: int = 16
    gradient_accumulation: int = 1
    mixed_precision: str = "auto"
    seed: int = 42
    num_workers: int = 2
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 0
    keep_checkpoints: int = 2
    init_from: str | None = None
    gradient_checkpointing: bool = False
    use_embedding_cache: bool = False
    cache_segments: bool = False
    segment_cache_mb: float = 2048.0
    torch_threads: int | None = None
    deterministic: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "images_per_step", "regions_per_image", "gradient_accumulation", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        for name in ("warmup_steps", "eval_every", "save_every", "num_workers", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an int >= 0, got {value!r}")
        if self.lr <= 0 or (self.lm_lr is not None and self.lm_lr <= 0):
            raise ValueError(f"TrainConfig learning rates must be > 0, got lr={self.lr!r}, lm_lr={self.lm_lr!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"TrainConfig.mixed_precision {self.mixed_precision!r} is not one of {MIXED_PRECISION}")
        if self.images_per_step % self.gradient_accumulation:
            raise ValueError(
                f"images_per_step {self.images_per_step} is not divisible by gradient_accumulation "
                f"{self.gradient_accumulation}"
            )
        if self.use_embedding_cache and self.cache_segments:
            raise ValueError("TrainConfig: use_embedding_cache and cache_segments are alternatives; set one")
        if not self.segment_cache_mb > 0:
            raise ValueError(f"TrainConfig.segment_cache_mb must be > 0, got {self.segment_cache_mb!r}")
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TrainConfig got unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
