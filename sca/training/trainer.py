"""The training loop, on accelerate: one code path for a CPU, one GPU, several GPUs and machines.

``Trainer`` is generic: a model, a dataset, a ``loss_fn(model, batch) -> LossParts`` and a
``TrainConfig``. It owns what must be exact for resuming:

- data order: epoch e visits ``randperm(seed, e)``; optimizer step k of an epoch takes the next
  ``images_per_step`` images, split into ``gradient_accumulation`` micro-batches, each split across
  processes. A resumed run skips to its data position without reading the skipped images;
- randomness: augmentation is keyed by (seed, epoch, index) in the dataset; dropout uses the torch
  RNG, whose state (per process) is in every checkpoint;
- the loss: a sum over caption tokens divided by the count over ALL processes (and micro-batches),
  so N processes compute the same gradient as one process with the same global batch.

Distribution (DDP; FSDP or DeepSpeed ZeRO-2 by ``accelerate config``), mixed precision and
gradient accumulation come from accelerate; nothing here is process-group code.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sca.training.config import TrainConfig
from sca.training.optim import build_optimizer, build_scheduler
from sca.training.state import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from sca.training.zero import (
    configure_deepspeed,
    is_deepspeed,
    master_weights,
    read_partition,
    write_partition,
    zero_optimizer,
)

__all__ = ["LossParts", "StepBatchSampler", "Trainer", "TrainResult"]


@dataclass
class LossParts:
    """What a loss function returns for one micro-batch on one process.

    loss_sum: sum of per-token (or per-item) losses (a tensor with grad).
    count: how many tokens/items that sum is over.
    stats: extra figures to log (floats, averaged over the log window).
    """

    loss_sum: torch.Tensor
    count: int
    stats: dict[str, float] | None = None


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    history: list[dict[str, float]]
    output_dir: Path
    metrics: dict[str, Any]
    data_report: Any = None


class StepBatchSampler(Sampler[list[int]]):
    """Index batches of one epoch for one process: ``micro_batch`` images of a global micro-batch,
    this process's share (``rank::world``), starting at micro-batch ``start``. Only whole optimizer
    steps are used (the remainder of the epoch is skipped), so step boundaries align with epochs."""

    def __init__(self, n: int, *, images_per_step: int, accumulation: int, seed: int, epoch: int,
                 rank: int = 0, world: int = 1, start: int = 0, shuffle: bool = True):
        global_micro = images_per_step // accumulation
        if global_micro % world:
            raise ValueError(
                f"images per micro-batch ({images_per_step} / accumulation {accumulation} = {global_micro}) "
                f"must be divisible by the {world} processes"
            )
        if n < images_per_step:
            raise ValueError(f"the training set has {n} images, fewer than images_per_step={images_per_step}")
        self.global_micro = global_micro
        self.steps = n // images_per_step
        self.micro_batches = self.steps * accumulation
        g = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
        self.order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
        self.rank, self.world, self.start = rank, world, start

    def __len__(self) -> int:
        return self.micro_batches - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for m in range(self.start, self.micro_batches):
            chunk = self.order[m * self.global_micro : (m + 1) * self.global_micro]
            yield chunk[self.rank :: self.world]


class _EpochBatches(Sampler[list[tuple[int, int]]]):
    """The batch sampler of a DataLoader that lives for the whole run: ``set_epoch(epoch, start)``
    picks the epoch's ``StepBatchSampler``; its indices go out as ``(epoch, index)`` pairs."""

    def __init__(self, make: Callable[[int, int], StepBatchSampler]):
        self.make = make
        self.epoch, self.current = 0, None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.current = int(epoch), self.make(int(epoch), int(start))

    def __len__(self) -> int:
        return len(self.current) if self.current is not None else 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.current is None:
            raise RuntimeError("_EpochBatches.set_epoch(epoch, start) must be called before iterating")
        for batch in self.current:
            yield [(self.epoch, i) for i in batch]


class _EpochTagged(Dataset):
    """``dataset[(epoch, index)]``: sets the epoch of this copy of the dataset (in a worker, its own
    copy) and returns ``dataset[index]``, so a sample's randomness (``set_epoch``) follows the
    epoch whatever process loads it and however long the workers live."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class Trainer:
    """Train ``model`` on ``dataset`` with ``loss_fn``; see the module docstring.

    Args:
        model: a module whose ``requires_grad`` parameters train.
        dataset: map-style dataset; ``set_epoch(e)`` is called if it has one.
        collate_fn: batches items (e.g. ``RegionCollator``).
        loss_fn: ``(model, batch) -> LossParts``.
        config: the recipe.
        output_dir: checkpoints in ``output_dir/checkpoints``, dvclive logs in ``output_dir/live``
            (or ``live_dir``).
        eval_fn: ``(model, step) -> {name: value}`` called every ``eval_every`` steps and at the end,
            on the main process.
        save_fn: ``(model, folder)`` writes the final model (default: ``model.save_pretrained``).
        accelerator: an ``accelerate.Accelerator`` (default: one built from the config).
    """

    def __init__(self, model: torch.nn.Module, dataset: Dataset, *, collate_fn: Callable, loss_fn: Callable,
                 config: TrainConfig, output_dir: str | Path, eval_fn: Callable | None = None,
                 save_fn: Callable | None = None, accelerator=None, live_dir: str | Path | None = None,
                 use_live: bool = True, progress: bool = True, run_config: dict[str, Any] | None = None):
        from accelerate import Accelerator

        self.config = config
        self.output_dir = Path(output_dir)
        self.ckpt_dir = self.output_dir / "checkpoints"
        precision = config.mixed_precision
        if precision == "auto":
            precision = "fp16" if torch.cuda.is_available() else "no"
        if accelerator is None and precision == "fp16":
            from accelerate import PartialState

            if PartialState().device.type == "cpu":
                # accelerate takes fp16 on a CPU but runs it without autocast (float32): say so instead.
                raise ValueError("mixed_precision 'fp16' needs a GPU (on a CPU accelerate would train in float32 "
                                 "without autocast); use 'bf16' or 'no' here")
        self.accelerator = accelerator or Accelerator(mixed_precision=precision,
                                                      gradient_accumulation_steps=config.gradient_accumulation)
        self.model = model
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.loss_fn = loss_fn
        self.eval_fn = eval_fn
        self.save_fn = save_fn
        self.live_dir = Path(live_dir) if live_dir else self.output_dir / "live"
        self.use_live = use_live
        self.progress = progress
        self.data_report = None
        # Checkpoints remember what run wrote them: a changed configuration starts over instead of
        # "resuming" someone else's training (DVC keeps checkpoint folders across runs).
        self.fingerprint = _fingerprint(run_config if run_config is not None else config.to_dict())

    # -- helpers ----------------------------------------------------------------------------------
    def _loader(self) -> tuple[DataLoader, _EpochBatches]:
        """One DataLoader for the whole run: with workers they persist across epochs (starting them
        again cost ~0.3 s a pass in a fine-tuning process, over a third of fine-tuning on 1/8 of the
        caption images, 2 steps a pass), and the epoch reaches each worker's copy of the dataset
        with every index."""
        acc = self.accelerator

        def batches(epoch: int, start: int) -> StepBatchSampler:
            return StepBatchSampler(len(self.dataset), images_per_step=self.config.images_per_step,
                                    accumulation=self.config.gradient_accumulation, seed=self.config.seed,
                                    epoch=epoch, rank=acc.process_index, world=acc.num_processes, start=start)

        sampler = _EpochBatches(batches)
        workers = self.config.num_workers
        loader = DataLoader(_EpochTagged(self.dataset), batch_sampler=sampler, collate_fn=self.collate_fn,
                            num_workers=workers, generator=torch.Generator().manual_seed(self.config.seed),
                            persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
        return loader, sampler

    def _trainable(self, model) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def _gather_rng(self) -> list[dict[str, Any]]:
        from accelerate.utils import gather_object

        from sca.training.state import _rng_state

        return gather_object([_rng_state()])

    def _global_count(self, count: int) -> int:
        if self.accelerator.num_processes == 1:
            return count
        t = torch.tensor([count], device=self.accelerator.device, dtype=torch.long)
        return int(self.accelerator.reduce(t, reduction="sum").item())

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, resume: bool = True) -> TrainResult:
        acc, cfg = self.accelerator, self.config
        found = latest_checkpoint(self.ckpt_dir) if resume else None
        if found is not None and _checkpoint_fingerprint(found) != self.fingerprint:
            acc.print(f"{self.ckpt_dir} holds checkpoints of another configuration: starting over")
            acc.wait_for_everyone()
            if acc.is_main_process:
                shutil.rmtree(self.ckpt_dir, ignore_errors=True)
                shutil.rmtree(self.live_dir, ignore_errors=True)
            acc.wait_for_everyone()
            found = None
        threads = torch.get_num_threads()
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        determinism = (torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled())
        if cfg.deterministic:
            if torch.cuda.is_available():  # cuBLAS needs it for deterministic GEMMs (PyTorch's reproducibility notes)
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            return self._fit(acc, cfg, found)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])

    def _fit(self, acc, cfg, found) -> TrainResult:
        model = self.model
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg)
        state = TrainState()
        deepspeed = is_deepspeed(acc)
        if deepspeed:
            configure_deepspeed(acc, cfg)
        if found is not None and not deepspeed and (found / "zero").is_dir():
            raise ValueError(f"checkpoint {str(found)!r} was written under DeepSpeed ZeRO; resume it with the same "
                             f"accelerate config")
        if found is not None:
            # Under DeepSpeed the optimizer is ZeRO's, built by prepare: its share is read after it.
            weights, state, _ = load_checkpoint(found, optimizer=None if deepspeed else optimizer,
                                                scheduler=scheduler, process_index=acc.process_index)
            _load_trainable(model, weights, str(found))
            acc.print(f"resuming from {found} (step {state.step}, epoch {state.epoch})")
        else:
            torch.manual_seed(cfg.seed + acc.process_index)
            if cfg.init_from:
                _init_from(model, cfg.init_from)
        model, optimizer = acc.prepare(model, optimizer)
        if deepspeed and found is not None:
            if (found / "zero").is_dir():
                read_partition(found / "zero", acc.process_index, acc.num_processes, optimizer)
            else:
                raise ValueError(f"checkpoint {str(found)!r} holds no ZeRO partitions (zero/): it was not written "
                                 f"under DeepSpeed; resume it with the launch that wrote it")
        live = self._live(resume=found is not None) if acc.is_main_process and self.use_live else None
        history: list[dict[str, float]] = []
        window: dict[str, float] = {}
        window_n, t_window, regions_window = 0, time.perf_counter(), 0
        last_loss = float(state.extra.get("last_loss", math.nan))  # a finished run resumed keeps its figure
        bar = _progress(cfg.max_steps, state.step, acc.is_main_process and self.progress)
        from sca.data.report import DataReport

        self.data_report = DataReport()
        loader, sampler = self._loader()
        while state.step < cfg.max_steps:
            sampler.set_epoch(state.epoch, state.batches_in_epoch)
            for batch in loader:
                state.batches_in_epoch += 1
                report = getattr(batch, "report", None)
                if report is not None:
                    self.data_report.merge(report)
                with acc.accumulate(model):
                    parts = self.loss_fn(model, batch)
                    # Divide by the token count of this micro-batch over ALL processes; DDP then
                    # averages over W processes (hence x W) and accelerate divides by the
                    # accumulation steps: the gradient of the global mean whatever W is.
                    loss = parts.loss_sum * (acc.num_processes / max(self._global_count(parts.count), 1))
                    acc.backward(loss)
                    grad_norm = None
                    if acc.sync_gradients and cfg.grad_clip > 0:
                        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss = parts.loss_sum.detach().float().item() / max(parts.count, 1)
                _accumulate(window, {"loss": step_loss, **(parts.stats or {})})
                window_n += 1
                regions_window += int(getattr(batch, "num_regions", 0) or 0)
                if not acc.sync_gradients:
                    continue
                scheduler.step()
                state.step += 1
                state.samples_seen += cfg.images_per_step
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.3f}")
                if grad_norm is not None:
                    _accumulate(window, {"grad_norm": float(grad_norm)}, weight=cfg.gradient_accumulation)
                if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                    elapsed = time.perf_counter() - t_window
                    row = {k: v / window_n for k, v in window.items()}
                    row.update(step=state.step, lr=scheduler.get_last_lr()[0],
                               steps_per_s=(window_n / cfg.gradient_accumulation) / max(elapsed, 1e-9),
                               regions_per_s=regions_window * acc.num_processes / max(elapsed, 1e-9))
                    last_loss = state.extra["last_loss"] = row["loss"]
                    history.append(row)
                    if live is not None:
                        live.step = state.step
                        for k, v in row.items():
                            if k != "step":
                                live.log_metric(f"train/{k}", v)
                        live.next_step()
                    window, window_n, t_window, regions_window = {}, 0, time.perf_counter(), 0
                if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.max_steps:
                    self._evaluate(model, state.step, live)
                if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.max_steps:
                    self._save(model, optimizer, scheduler, state)
                if state.step >= cfg.max_steps:
                    break
            else:
                state.epoch += 1
                state.batches_in_epoch = 0
        del loader  # its persistent workers stop here, not at some later collection
        if bar is not None:
            bar.close()
        master = self._save(model, optimizer, scheduler, state)
        unwrapped = acc.unwrap_model(model)
        if master is not None and any(p.dtype != torch.float32 for p in unwrapped.parameters()):
            # DeepSpeed's bf16 / fp16 cast the whole model: it leaves as float32 with the fp32 masters.
            unwrapped.float()
            _load_trainable(unwrapped, master, "the ZeRO master weights")
        metrics = self._evaluate(model, state.step, live) if self.eval_fn is not None else {}
        acc.wait_for_everyone()
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            (self.save_fn or (lambda m, d: m.save_pretrained(d)))(unwrapped, self.output_dir / "model")
            if live is not None:
                live.end()
        self.model = acc.unwrap_model(model)
        return TrainResult(steps=state.step, final_loss=last_loss, history=history, output_dir=self.output_dir,
                           metrics=metrics or {}, data_report=self.data_report)

    def _save(self, model, optimizer, scheduler, state: TrainState) -> dict[str, torch.Tensor] | None:
        """Write a checkpoint; returns the fp32 master weights it gathered under DeepSpeed ZeRO (else None)."""
        acc = self.accelerator
        state.extra["fingerprint"] = self.fingerprint
        rng = self._gather_rng()
        attach = {}
        trainable = None
        if zero_optimizer(optimizer) is not None:  # every process writes its ZeRO share, then main files it
            trainable = master_weights(acc.unwrap_model(model), optimizer)
            staging = self.ckpt_dir / f".zero-step-{state.step:08d}"
            if acc.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            acc.wait_for_everyone()
            write_partition(staging, acc.process_index, optimizer)
            attach = {"zero": staging}
        acc.wait_for_everyone()
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            save_checkpoint(self.ckpt_dir, trainable=trainable if trainable is not None else self._trainable(unwrapped),
                            optimizer=None if attach else optimizer, scheduler=scheduler, state=state,
                            config=self.config.to_dict(), keep=self.config.keep_checkpoints, rng_states=rng,
                            attach=attach)
        acc.wait_for_everyone()
        return trainable

    def _evaluate(self, model, step: int, live) -> dict[str, float] | None:
        acc = self.accelerator
        if self.eval_fn is None:
            return None
        acc.wait_for_everyone()
        metrics = None
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            was_training = unwrapped.training
            unwrapped.eval()
            # Evaluation must not disturb the training RNG stream (exact resume).
            with torch.random.fork_rng(devices=[]):
                metrics = self.eval_fn(unwrapped, step) or {}
            unwrapped.train(was_training)
            if live is not None:
                for k, v in metrics.items():
                    if isinstance(v, int | float):
                        live.log_metric(f"eval/{k}", v)
        acc.wait_for_everyone()
        return metrics

    def _live(self, resume: bool):
        try:
            from dvclive import Live
        except ImportError:  # dvclive is optional outside the pipeline
            return None
        return Live(str(self.live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the source that decides what training computes (sca/models, sca/training, sca/data).

    Part of the run fingerprint: after a code change, checkpoints of the old code (even a finished
    run's, which DVC keeps) are not resumed, so ``dvc repro`` really retrains."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for sub in ("models", "training", "data"):
        for path in sorted((root / sub).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _fingerprint(run_config: dict[str, Any]) -> str:
    import json

    payload = {"run": run_config, "code": code_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _checkpoint_fingerprint(folder: Path) -> str | None:
    import json

    payload = json.loads((folder / "state.json").read_text())
    return payload.get("extra", {}).get("fingerprint")


def _accumulate(window: dict[str, float], row: dict[str, float], weight: float = 1.0) -> None:
    for k, v in row.items():
        window[k] = window.get(k, 0.0) + float(v) * weight


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def _load_trainable(model, weights: dict[str, torch.Tensor], where: str) -> None:
    own = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(f"{where}: trainable parameters do not match the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}); was it written by another configuration?")
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(weights[n].to(p.dtype))


def _init_from(model, source: str) -> None:
    """Start from the trained weights of a previous stage: a model folder (model.safetensors) or a
    training-checkpoint folder (trainable.safetensors). Parameters absent there keep their init."""
    from safetensors.torch import load_file

    folder = Path(source)
    for name in ("model.safetensors", "trainable.safetensors"):
        if (folder / name).is_file():
            weights = load_file(str(folder / name))
            break
    else:
        found = latest_checkpoint(folder / "checkpoints") if (folder / "checkpoints").is_dir() else None
        if found is None:
            raise FileNotFoundError(f"init_from {source!r}: no model.safetensors, trainable.safetensors or checkpoints/")
        weights = load_file(str(found / "trainable.safetensors"))
    own = dict(model.named_parameters())
    used = 0
    with torch.no_grad():
        for name, value in weights.items():
            if name in own and own[name].requires_grad and own[name].shape == value.shape:
                own[name].copy_(value.to(own[name].dtype))
                used += 1
    if used == 0:
        raise ValueError(f"init_from {source!r}: none of its {len(weights)} tensors matches a trainable parameter")
