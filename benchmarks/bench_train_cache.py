"""Training steps/s without a cache, with the frozen-image-embedding cache and with the segment cache,
side by side in one process, repeated.

    .venv/bin/python benchmarks/bench_train_cache.py                      # 200 steps, 8 images x 4 regions
    .venv/bin/python benchmarks/bench_train_cache.py --steps 300 --images 64 --images-per-step 16 \
        --regions-per-image 16 --repeats 2                                # the embedded default's step

Both runs train the same captioner (the embedded default's shape: 128-px tiny SAM, random weights,
and the tiny GPT-2; the weights do not change the cost) on the same synthetic images without
augmentation (the cache needs fixed pixels), with the same seed. With the cache the SAM image
encoder runs once per image (the first epoch fills the cache); later epochs read embeddings from
disk. With the segment cache (`train.cache_segments`) all of SAM (encoder, prompt encoder, mask
decoder) runs once per region view and later steps run only the mixer and the LM. Reported per arm:
steps/s over the whole run (the Trainer's own timing windows), over the second half (cache warm),
wall seconds as min / median over the repeats (the arms alternate within a repeat), and the final loss.
"""

from __future__ import annotations

import argparse
import statistics
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
    parser.add_argument("--repeats", type=int, default=1)
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
        arms = {"no cache": {}, "embedding cache": {"use_embedding_cache": True},
                "segment cache": {"cache_segments": True}}
        runs: dict[str, list] = {name: [] for name in arms}
        for repeat in range(args.repeats):
            for name, extra in arms.items():
                t0 = time.perf_counter()
                result = run_training(model=model, data=data, train={**train, **extra},
                                      output_dir=Path(tmp) / f"{name.replace(' ', '-')}-{repeat}", progress=False)
                wall = time.perf_counter() - t0
                rates = [h["steps_per_s"] for h in result.history if "steps_per_s" in h]
                runs[name].append((sum(rates) / len(rates), statistics.mean(rates[len(rates) // 2:]), wall,
                                   result.final_loss))
        print(f"{'':>16} {'steps/s (all)':>14} {'steps/s (2nd half)':>19} {'wall s min / median':>20} {'final loss':>11}")
        for name, rows in runs.items():
            walls = [r[2] for r in rows]
            print(f"{name:>16} {statistics.median(r[0] for r in rows):14.2f} "
                  f"{statistics.median(r[1] for r in rows):19.2f} "
                  f"{min(walls):9.1f} / {statistics.median(walls):8.1f} {rows[0][3]:11.4f}")
        base = runs["no cache"][0][3]
        for name in ("embedding cache", "segment cache"):
            print(f"same final loss with the {name} as without: {abs(base - runs[name][0][3]) < 1e-4}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
