"""Data loading of a training run across many short epochs: workers started again at every epoch
(a new DataLoader per pass, the Trainer's earlier design) against the Trainer's one loader whose
workers persist (``Trainer._loader``), side by side in one process.

    .venv/bin/python benchmarks/bench_trainer_epochs.py                      # 40 and 320 images, 200 steps, 3 runs
    .venv/bin/python benchmarks/bench_trainer_epochs.py --images 40 --steps 400 --runs 5

The set is the embedded default's synthetic caption set (generated here), 16 images a step, 16
regions an image, GPT-2 tokenisation in the collator, one worker: the fine-tuning stage's loading
(``params.yaml`` finetune). With 40 images (the central claim's scarcest share, 1/8 of the 320)
an epoch is 2 steps, so a 1,000-step run makes 500 passes. Only the loading is timed (no model).
Printed per set: seconds for ``--steps`` steps, min / median over ``--runs`` runs of each, and
whether both gave the same batches.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sca.data.dataset import RegionDataset
from sca.data.synthetic import SyntheticConfig, generate_synthetic
from sca.data.transforms import TransformConfig
from sca.training.collate import RegionCollator
from sca.training.config import TrainConfig
from sca.training.trainer import StepBatchSampler, Trainer

TOKENIZER = Path(__file__).resolve().parents[1] / "sca" / "assets" / "gpt2_tokenizer"


def _fingerprint(batch) -> tuple:
    return tuple(batch.image_ids), tuple(batch.flipped.tolist()), round(float(batch.pixel_values.sum()), 3)


def restarted(ds, collator, cfg: TrainConfig, steps: int) -> tuple[float, list]:
    """A new DataLoader (new workers) every epoch."""
    seen, epoch, start = [], 0, time.perf_counter()
    while len(seen) < steps:
        ds.set_epoch(epoch)
        sampler = StepBatchSampler(len(ds), images_per_step=cfg.images_per_step, accumulation=1, seed=cfg.seed,
                                   epoch=epoch)
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collator, num_workers=cfg.num_workers,
                            generator=torch.Generator().manual_seed(cfg.seed + epoch), persistent_workers=False)
        for batch in loader:
            seen.append(_fingerprint(batch))
            if len(seen) == steps:
                break
        epoch += 1
    return time.perf_counter() - start, seen


def persistent(ds, collator, cfg: TrainConfig, steps: int, out: Path) -> tuple[float, list]:
    """The Trainer's loader: one DataLoader, persistent workers, the epoch sent with every index."""
    trainer = Trainer(torch.nn.Linear(1, 1), ds, collate_fn=collator, loss_fn=None, config=cfg, output_dir=out,
                      use_live=False, progress=False)
    seen, epoch, start = [], 0, time.perf_counter()
    loader, sampler = trainer._loader()
    while len(seen) < steps:
        sampler.set_epoch(epoch)
        for batch in loader:
            seen.append(_fingerprint(batch))
            if len(seen) == steps:
                break
        epoch += 1
    del loader
    return time.perf_counter() - start, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[40, 320], help="training images of each set")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from transformers import GPT2TokenizerFast

    collator = RegionCollator(GPT2TokenizerFast.from_pretrained(str(TOKENIZER)))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.images:
            root = Path(tmp) / f"syn{n}"
            generate_synthetic(root, SyntheticConfig(splits={"train": n}), workers=1)
            ds = RegionDataset(root / "train.jsonl.gz", root, train=True, regions_per_image=16,
                               transform=TransformConfig(image_size=128, jitter=False, hflip=0.5), seed=2)
            cfg = TrainConfig(max_steps=args.steps, images_per_step=16, num_workers=args.workers, seed=2)
            times = {"restarted": [], "persistent": []}
            same = True
            for run in range(args.runs):  # interleaved: both see the same machine state
                t_old, old = restarted(ds, collator, cfg, args.steps)
                t_new, new = persistent(ds, collator, cfg, args.steps, Path(tmp) / f"run{n}-{run}")
                times["restarted"].append(t_old)
                times["persistent"].append(t_new)
                same = same and old == new
            passes = args.steps / (n // 16)
            for name, ts in times.items():
                print(f"{n:>4} images ({passes:.0f} passes), workers {name:<10}: {args.steps} steps in "
                      f"min {min(ts):6.2f} s / median {statistics.median(ts):6.2f} s")
            print(f"{n:>4} images: same batches both ways: {same}")


if __name__ == "__main__":
    main()
