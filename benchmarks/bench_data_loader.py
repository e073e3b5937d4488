"""Synthetic-set generation speed and DataLoader throughput (images/s) for the region data pipeline.

    .venv/bin/python benchmarks/bench_data_loader.py                       # 400 images, S 128 and 1024
    .venv/bin/python benchmarks/bench_data_loader.py --images 1000 --sizes 256 --workers 0 1 2

Generates a synthetic captions set (timed with 1 and 2 rendering processes, checking both give the same
bytes), then times full epochs of ``make_loader`` (train mode: large-scale jitter + flip, 16 regions
per image, GPT-2 tokenisation in the collator) for each image size S and worker count, and the same
over the real-image mini set (copied from the installed packages).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sca.data.dataset import RegionDataset
from sca.data.mini import write_mini
from sca.data.synthetic import SyntheticConfig, generate_synthetic
from sca.data.transforms import TransformConfig
from sca.training.collate import RegionCollator, make_loader

TOKENIZER = Path(__file__).resolve().parents[1] / "sca" / "assets" / "gpt2_tokenizer"


def time_epoch(ds, collator, workers: int, batch_size: int, epochs: int) -> tuple[float, int]:
    images = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in make_loader(ds, collator, batch_size=batch_size, shuffle=True, num_workers=workers, seed=epoch):
            images += len(batch)
    return time.perf_counter() - start, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="synthetic train images")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 1024], help="image sizes S")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    from transformers import GPT2TokenizerFast

    collator = RegionCollator(GPT2TokenizerFast.from_pretrained(str(TOKENIZER)))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SyntheticConfig(splits={"train": args.images})
        digests = []
        for procs in (1, 2):
            start = time.perf_counter()
            manifest = generate_synthetic(Path(tmp) / f"syn{procs}", cfg, workers=procs)
            took = time.perf_counter() - start
            digests.append(manifest["images"]["sha256"])
            print(f"generate {args.images} images, {procs} process(es): {took:.2f} s = {args.images / took:.0f} images/s")
        print(f"same bytes with 1 and 2 processes: {digests[0] == digests[1]}")
        root = Path(tmp) / "syn1"
        mini = Path(tmp) / "mini"
        write_mini(mini)
        sets = [("synthetic", root / "train.jsonl.gz", root), ("mini (photos)", mini / "mini.jsonl", mini)]
        for name, records, image_root in sets:
            for size in args.sizes:
                ds = RegionDataset(records, image_root, train=True, regions_per_image=16,
                                   transform=TransformConfig(image_size=size))
                for workers in args.workers:
                    took, n = time_epoch(ds, collator, workers, args.batch_size, args.epochs)
                    print(f"loader {name:<14} S={size:<5} workers={workers}: {n / took:7.1f} images/s "
                          f"({n} images in {took:.2f} s)")


if __name__ == "__main__":
    main()
