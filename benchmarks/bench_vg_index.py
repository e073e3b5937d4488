"""Time and peak memory to index Visual Genome's region descriptions with ``sca.data.readers.read_vg``.

Generates files of VG v1.2's shape and size (``--scale 1``: 108,077 images, ~5.4M region
descriptions, region_descriptions.json ~700 MB, plus image_data.json and densecap_splits.json with
DenseCap's 77,398 / 5,000 / 5,000 proportions), then reads each split in a fresh child process and
prints wall time, peak RSS (ru_maxrss) and the size of the compact store.

    .venv/bin/python benchmarks/bench_vg_index.py                  # full size (~1 min to generate)
    .venv/bin/python benchmarks/bench_vg_index.py --scale 0.1 --splits train test
    .venv/bin/python benchmarks/bench_vg_index.py --baseline --stdlib
    .venv/bin/python benchmarks/bench_vg_index.py --dir /tmp/vg --keep     # then --dir /tmp/vg --reuse

``--baseline`` loads the whole file at once with orjson (the obvious alternative) to show the memory
that the streaming reader avoids; ``--stdlib`` indexes the first split again without orjson.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VG_IMAGES = 108_077
VG_REGIONS_PER_IMAGE = 5_408_689 / 108_077  # ~50
DENSECAP = {"train": 77_398 / VG_IMAGES, "val": 5_000 / VG_IMAGES, "test": 5_000 / VG_IMAGES}
WORDS = ("man woman person shirt white black red blue green yellow the a an of on in with is are sky tree "  # noqa: SIM905
         "leaves building window door car street sign pole light wall floor table chair plate food grass "
         "water cloud clouds hair head hand arm leg jacket wearing holding sitting standing parked large "
         "small tall short wooden metal glass brick open closed front back left right top bottom edge").split()


def generate(out: Path, scale: float, seed: int = 0) -> dict:
    """Write image_data.json, region_descriptions.json, densecap_splits.json of VG's shape."""
    rng = random.Random(seed)
    n = max(3, round(VG_IMAGES * scale))
    out.mkdir(parents=True, exist_ok=True)
    sizes = [(rng.choice((500, 640, 800, 1024)), rng.choice((333, 375, 480, 600, 768))) for _ in range(n)]
    with open(out / "image_data.json", "w") as fh:
        fh.write(json.dumps([{"width": w, "url": f"https://cs.stanford.edu/people/rak248/"
                              f"{'VG_100K' if i % 3 else 'VG_100K_2'}/{i + 1}.jpg", "height": h, "image_id": i + 1,
                              "coco_id": None, "flickr_id": None} for i, (w, h) in enumerate(sizes)]))
    rid, regions = 1, 0
    with open(out / "region_descriptions.json", "w", buffering=1 << 22) as fh:
        fh.write("[")
        for i, (w, h) in enumerate(sizes):
            k = max(0, int(rng.gauss(VG_REGIONS_PER_IMAGE, 15)))
            items = []
            for _ in range(k):
                phrase = " ".join(rng.choices(WORDS, k=rng.randint(2, 9)))
                x, y = rng.randrange(w), rng.randrange(h)
                items.append(f'{{"region_id": {rid}, "width": {rng.randint(1, w - x + 5)}, "height": '
                             f'{rng.randint(1, h - y + 5)}, "image_id": {i + 1}, "phrase": "{phrase}", '
                             f'"y": {y}, "x": {x}}}')
                rid += 1
            regions += k
            fh.write(("" if i == 0 else ", ") + '{"regions": [' + ", ".join(items) + f'], "id": {i + 1}}}')
        fh.write("]")
    ids = list(range(1, n + 1))
    rng.shuffle(ids)
    n_val, n_test = max(1, round(n * DENSECAP["val"])), max(1, round(n * DENSECAP["test"]))
    n_train = min(n - n_val - n_test, round(n * DENSECAP["train"]))
    splits = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val],
              "test": ids[n_train + n_val:n_train + n_val + n_test]}
    (out / "densecap_splits.json").write_text(json.dumps(splits))
    return {"images": n, "regions": regions, "bytes": (out / "region_descriptions.json").stat().st_size}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    """CPU seconds of this process (user + system): less sensitive than wall time to other load."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(root: str, split: str) -> dict:
    """Runs in a fresh process: index one split, touch 10K records, report figures."""
    from sca.data.readers import read_vg

    split, _, path = split.partition(":")
    base, cpu0 = _rss_mb(), _cpu_s()
    t0 = time.perf_counter()
    recs = read_vg(root, split, fast=path != "stdlib")
    t_index, cpu_index = time.perf_counter() - t0, _cpu_s() - cpu0
    t0 = time.perf_counter()
    n = min(len(recs), 10_000)
    touched = sum(len(recs[i].regions) for i in range(n))
    t_touch = time.perf_counter() - t0
    return {"split": split + (" (json module)" if path == "stdlib" else ""), "images": len(recs), "regions": recs.num_regions, "index_s": t_index, "cpu_s": cpu_index,
            "peak_rss_mb": _rss_mb(), "rss_after_imports_mb": base, "store_mb": recs.nbytes / 2**20,
            "records_per_s": n / t_touch if t_touch else 0.0, "touched_regions": touched}


def child_baseline(root: str) -> dict:
    import orjson

    base, cpu0 = _rss_mb(), _cpu_s()
    t0 = time.perf_counter()
    data = orjson.loads(Path(root, "region_descriptions.json").read_bytes())
    regions = sum(len(e["regions"]) for e in data)
    return {"split": "orjson.loads(whole file)", "images": len(data), "regions": regions,
            "index_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - cpu0, "peak_rss_mb": _rss_mb(), "rss_after_imports_mb": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of VG's size (1.0 = full)")
    parser.add_argument("--dir", help="where to write the files (default: a temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--reuse", action="store_true", help="with --dir: index the files already there")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "val", "test", "all"])
    parser.add_argument("--baseline", action="store_true", help="also time orjson.loads of the whole file")
    parser.add_argument("--stdlib", action="store_true",
                        help="also index the first split with the json-module path (no orjson)")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "SPLIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, split = args.child
        print(json.dumps(child_baseline(root) if split == "baseline" else child(root, split)))
        return
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="bench_vg_")
    root = Path(args.dir or tmp.name)
    t0 = time.perf_counter()
    if args.reuse and (root / "region_descriptions.json").is_file():
        print(f"reusing {root}: region_descriptions.json "
              f"{(root / 'region_descriptions.json').stat().st_size / 2**20:,.0f} MiB")
    else:
        info = generate(root, args.scale)
        print(f"generated {info['images']:,} images, {info['regions']:,} regions, region_descriptions.json "
              f"{info['bytes'] / 2**20:,.0f} MiB in {time.perf_counter() - t0:.1f} s ({root})")
    print(f"load average before the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'split':<26}{'images':>9}{'regions':>11}{'index s':>9}{'cpu s':>7}{'peak RSS MiB':>14}{'RSS imports':>13}"
          f"{'store MiB':>11}{'records/s':>11}")
    runs = [*args.splits, *([f"{args.splits[0]}:stdlib"] if args.stdlib else []),
            *(["baseline"] if args.baseline else [])]
    for split in runs:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        out = subprocess.run([sys.executable, __file__, "--child", str(root), split], check=True,
                             capture_output=True, text=True, env=env)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['split']:<26}{r['images']:>9,}{r['regions']:>11,}{r['index_s']:>9.1f}{r['cpu_s']:>7.1f}"
              f"{r['peak_rss_mb']:>14,.0f}"
              f"{r['rss_after_imports_mb']:>13,.0f}{r.get('store_mb', float('nan')):>11,.0f}"
              f"{r.get('records_per_s', float('nan')):>11,.0f}")
    if tmp is not None and not args.keep:
        tmp.cleanup()
    elif args.keep or args.dir:
        print(f"files kept in {root}")


if __name__ == "__main__":
    main()
