"""AdamW with the paper's decay rule and learning-rate groups, and warm-up + cosine (paper.md §3)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "parameter_groups", "warmup_cosine"]


def parameter_groups(model: nn.Module, *, lr: float, weight_decay: float, lm_lr: float | None = None,
                     lm_prefix: str = "lm.") -> list[dict]:
    """Trainable parameters in up to four groups: {new modules, tuned LM} x {decay, no decay}.

    No decay for biases and 1-D parameters (LayerNorm weights), as in the reference recipe."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    names: dict[tuple[bool, bool], list[str]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith(lm_prefix), p.ndim > 1 and not name.endswith(".bias"))
        groups.setdefault(key, []).append(p)
        names.setdefault(key, []).append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    out = []
    for (is_lm, decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": (lm_lr if lm_lr is not None else lr) if is_lm else lr,
            "weight_decay": weight_decay if decay else 0.0,
            "group": f"{'lm' if is_lm else 'new'}-{'decay' if decay else 'no_decay'}",
            "param_names": names[(is_lm, decay)],
        })
    return out


def build_optimizer(model: nn.Module, config) -> torch.optim.AdamW:
    groups = parameter_groups(model, lr=config.lr, weight_decay=config.weight_decay, lm_lr=config.lm_lr)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


def warmup_cosine(step: int, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the peak learning rate: linear 0->1 over warm-up, then cosine 1->0 at max_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.max_steps)
    )
