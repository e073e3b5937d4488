"""DeepSpeed ZeRO (stage 1 / 2) under the trainer: its configuration and its exact resume.

Launched with ``accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml``, accelerate
wraps the model in a DeepSpeed engine and the optimizer in DeepSpeed's ZeRO optimizer, which keeps
fp32 master weights and the AdamW moments partitioned over the processes (each holds 1/W of them).

- ``configure_deepspeed``: the per-process micro-batch, gradient accumulation and clipping come from
  the run's ``TrainConfig`` (DeepSpeed needs them before ``prepare``; the trainer hands no DataLoader
  to accelerate, so it cannot infer them).
- ``write_partition`` / ``read_partition``: each process's share of the optimizer (the base optimizer's
  state dict, the fp32 partitions and the loss scaler's figures) as plain tensors and numbers, so a
  checkpoint is read with ``torch.load(weights_only=True)``; DeepSpeed's own checkpoint files pickle
  its classes and cannot be. Parameters themselves are replicated under ZeRO-1/2 and are saved by
  the trainer as for any run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["configure_deepspeed", "is_deepspeed", "master_weights", "read_partition", "write_partition",
           "zero_optimizer"]


def is_deepspeed(accelerator) -> bool:
    return getattr(accelerator.state, "deepspeed_plugin", None) is not None


def configure_deepspeed(accelerator, config) -> None:
    """Fill the DeepSpeed config of this launch from ``config`` (a TrainConfig); refuse what the
    trainer cannot resume exactly (ZeRO-3 partitions the parameters themselves, and offloading
    moves the optimizer out of these files)."""
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    stage = int(ds.get("zero_optimization", {}).get("stage", 0))
    if stage not in (0, 1, 2):
        raise ValueError(f"DeepSpeed ZeRO stage {stage} is not supported by the trainer (parameters partitioned); "
                         f"use stage 1 or 2 (configs/accelerate/deepspeed_zero2.yaml) or FSDP")
    for key in ("offload_optimizer", "offload_param"):
        device = ds.get("zero_optimization", {}).get(key, {}).get("device", "none")
        if device not in ("none", None):
            raise ValueError(f"DeepSpeed {key} to {device!r} is not supported by the trainer's checkpoints; "
                             f"set offload_optimizer_device / offload_param_device: none")
    world = accelerator.num_processes
    launched = int(os.environ.get("WORLD_SIZE", world))
    if launched != world:
        # accelerate 1.x gives a DeepSpeed launch without GPUs no process group of its own (num_processes
        # 1 in every process): each would train on all the data. GPUs (or one CPU process) are fine.
        raise ValueError(f"accelerate sees {world} process(es) of a DeepSpeed launch of WORLD_SIZE={launched} "
                         f"(DeepSpeed without GPUs): launch one process, or use the DDP launch on CPUs")
    micro = config.images_per_step // config.gradient_accumulation
    if micro % world:
        raise ValueError(f"images per micro-batch ({micro}) must be divisible by the {world} processes")
    ds["train_micro_batch_size_per_gpu"] = micro // world
    ds["gradient_accumulation_steps"] = config.gradient_accumulation
    ds["train_batch_size"] = config.images_per_step
    ds["gradient_clipping"] = float(config.grad_clip) if config.grad_clip > 0 else 0.0
    ds.setdefault("steps_per_print", 10**9)  # the trainer logs; DeepSpeed's own step prints are off


def zero_optimizer(optimizer):
    """DeepSpeed's ZeRO optimizer inside accelerate's wrapper, or None (stage 0 / not DeepSpeed)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return inner if hasattr(inner, "single_partition_of_fp32_groups") else None


def master_weights(model, optimizer) -> dict[str, torch.Tensor]:
    """The fp32 master copy of every trainable parameter, by name, gathered from the ZeRO partitions
    of all processes (a collective: every process calls it). Under DeepSpeed's bf16 / fp16 the model's
    own parameters are 16-bit roundings of these; checkpoints and the final model keep these.

    Layout (DeepSpeed's ZeRO-1/2 optimizer): each parameter group is one flat buffer, its parameters
    at ``round_robin_bit16_offsets`` in ``round_robin_bit16_groups`` order, split into equal partitions,
    process r holding partition r in fp32 (``single_partition_of_fp32_groups``)."""
    from deepspeed import comm as dist

    zero = zero_optimizer(optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for i, params in enumerate(zero.round_robin_bit16_groups):
        part = zero.single_partition_of_fp32_groups[i].detach()
        group = zero.real_dp_process_group[i]
        world = dist.get_world_size(group=group)
        if world > 1:
            pieces = [torch.empty_like(part) for _ in range(world)]
            dist.all_gather(pieces, part, group=group)
            flat = torch.cat(pieces)
        else:
            flat = part
        for param, offset in zip(params, zero.round_robin_bit16_offsets[i], strict=True):
            out[names[id(param)]] = flat[offset : offset + param.numel()].view(param.shape).float().cpu().clone()
    return out


def _scaler_figures(zero) -> dict[str, float | int | bool]:
    scaler = getattr(zero, "loss_scaler", None)
    if scaler is None:
        return {}
    return {k: v for k, v in vars(scaler).items() if isinstance(v, (bool, int, float))}


def write_partition(folder: str | os.PathLike, rank: int, optimizer) -> Path:
    """This process's optimizer share -> ``folder/rank-<r>.pt`` (atomic)."""
    zero = zero_optimizer(optimizer)
    if zero is None:
        raise ValueError("write_partition needs DeepSpeed's ZeRO optimizer (stage 1 or 2)")
    folder = Path(folder)
    payload: dict[str, Any] = {
        "base": zero.optimizer.state_dict(),
        "fp32": [t.detach().cpu().clone() for t in zero.single_partition_of_fp32_groups],
        "loss_scaler": _scaler_figures(zero),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".rank-{rank}.", dir=folder)
    os.close(fd)
    torch.save(payload, tmp)
    target = folder / f"rank-{rank}.pt"
    os.replace(tmp, target)
    return target


def read_partition(folder: str | os.PathLike, rank: int, world: int, optimizer) -> None:
    """Restore this process's optimizer share from a checkpoint's ``zero/`` folder."""
    zero = zero_optimizer(optimizer)
    folder = Path(folder)
    if zero is None:
        raise ValueError(f"checkpoint {str(folder.parent)!r} was written by a DeepSpeed ZeRO run; resume it under "
                         f"the same accelerate config (DeepSpeed ZeRO stage 1 or 2)")
    saved = sorted(folder.glob("rank-*.pt"))
    if len(saved) != world:
        raise ValueError(f"checkpoint {str(folder.parent)!r} holds the ZeRO partitions of {len(saved)} process(es); "
                         f"this run has {world}: resume with the same number of processes")
    payload = torch.load(folder / f"rank-{rank}.pt", map_location="cpu", weights_only=True)
    groups = zero.single_partition_of_fp32_groups
    if len(payload["fp32"]) != len(groups) or any(a.shape != b.shape for a, b in zip(payload["fp32"], groups, strict=False)):
        raise ValueError(f"ZeRO partition {str(folder / f'rank-{rank}.pt')!r} does not fit this model's partitions "
                         f"({[tuple(t.shape) for t in payload['fp32']]} vs {[tuple(t.shape) for t in groups]})")
    zero.optimizer.load_state_dict(payload["base"])
    with torch.no_grad():
        for target, value in zip(groups, payload["fp32"], strict=True):
            target.copy_(value.to(target.device, target.dtype))
    scaler = getattr(zero, "loss_scaler", None)
    for key, value in payload["loss_scaler"].items():
        setattr(scaler, key, value)
