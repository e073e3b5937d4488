"""Training steps/s with and without the frozen-image-embedding cache, side by side in one process.

    .venv/bin/python benchmarks/bench_train_cache.py                      # embedded-default sizes, 200 steps
    .venv/bin/python benchmarks/bench_train_cache.py --steps 400 --images 64 --threads 2

Both runs train the same captioner (the embedded default's shape: 128-px tiny SAM, random weights,
and the tiny GPT-2; the weights do not change the cost) on the same synthetic images without
augmentation (the cache needs fixed pixels), with the same seed. With the cache the SAM image
encoder runs once per image (the first epoch fills the cache); later epochs read embeddings from
disk. Reported: steps/s over the whole run (the Trainer's own timing windows), over the second half
(cache warm), and wall seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sca.data.synthetic import SyntheticConfig, generate_synthetic
from sca.training.run import run_training
from sca.training.segmenter_stage import EMBEDDED_SEGMENTER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--images", type=int, default=32, help="training images (an epoch is images/images_per_step steps)")
    parser.add_argument("--images-per-step", type=int, default=8)
    parser.add_argument("--regions-per-image", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = {"image_encoder": dict(EMBEDDED_SEGMENTER), "language_model": {"name": "tiny-gpt2"}, "num_mixer_layers": 4}
    train = {"max_steps": args.steps, "images_per_step": args.images_per_step,
             "regions_per_image": args.regions_per_image, "lr": 1e-3, "warmup_steps": 10,
             "log_every": max(1, args.steps // 10), "num_workers": 0, "torch_threads": args.threads, "seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate_synthetic(root, SyntheticConfig(splits={"train": args.images}, image_size=(96, 160)), workers=1)
        data = {"train_records": str(root / "train.jsonl.gz"), "images": str(root), "jitter": False, "hflip": 0.0}
        print(f"{args.steps} steps, {args.images_per_step} images x {args.regions_per_image} regions per step, "
              f"{args.images} images, 128-px tiny SAM + tiny GPT-2, threads {args.threads}")
        print(f"{'':>16} {'steps/s (all)':>14} {'steps/s (2nd half)':>19} {'wall s':>8} {'final loss':>11}")
        losses = {}
        for name, cache in (("no cache", False), ("embedding cache", True)):
            t0 = time.perf_counter()
            result = run_training(model=model, data=data, train={**train, "use_embedding_cache": cache},
                                  output_dir=Path(tmp) / name.replace(" ", "-"), progress=False)
            wall = time.perf_counter() - t0
            rates = [h["steps_per_s"] for h in result.history if "steps_per_s" in h]
            half = rates[len(rates) // 2:]
            losses[name] = result.final_loss
            print(f"{name:>16} {sum(rates) / len(rates):14.2f} {sum(half) / len(half):19.2f} {wall:8.1f} "
                  f"{result.final_loss:11.4f}")
        print(f"same final loss with and without the cache: {abs(losses['no cache'] - losses['embedding cache']) < 1e-4}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
