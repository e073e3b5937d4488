"""Peak memory of anything mode (``Captioner.everything``) on images from 1 to 108 megapixels.

    .venv/bin/python benchmarks/bench_anything_memory.py                       # 1, 12, 48, 108 MP, 2 runs each
    .venv/bin/python benchmarks/bench_anything_memory.py --megapixels 1 150 --runs 3
    .venv/bin/python benchmarks/bench_anything_memory.py --checkpoint runs/finetune/model

Each run is a fresh interpreter (peak RSS only grows within a process), which loads the captioner,
then reads a PNG file of the size from disk with the project's loader (the path of the CLI, the demo
and ``Captioner.everything(path)``), then runs anything mode on it. Printed per size, min / median
over the runs:

- ``model``: peak RSS after loading the captioner (MB);
- ``+image/peak``: the resident size after decoding the file / the peak while decoding it, both over
  ``model`` (the RGB array, 3 bytes a pixel, stays; the PNG decoder's buffers are freed; when
  loading the model peaked above what it keeps, the first figure is below the array's size);
- ``+anything``: anything mode's peak over what was resident before it (the model and the image):
  its working memory, which the design bounds independently of the image size (candidates are
  scored at SAM's working size, at most ``mask_chunk_size`` at a time; only kept masks go to full
  resolution, as run-length columns). Its peak is measured alone: the kernel's peak counter
  (VmHWM) is reset after decoding;
- ``peak``: the process's peak resident size over the whole run;
- ``full-res f32``: what the candidates alone would take expanded to full resolution in float32
  (the approach that used 23.6 GB on a 108 MP upload), for comparison; it is computed, not run.

The 1 MP row is the baseline: a size at which nothing is resized. ``--compare-heap`` adds, per size,
a row for runs with ``sca.app.heap.release_free_memory`` disabled (freed candidate logits left in
glibc's heap arenas), interleaved with the normal runs. Thresholds are set to keep every
candidate NMS leaves (``--keep-all``, the default, the worst case for the masks kept); weights are
random unless ``--checkpoint`` is given, and captions are 2 greedy tokens (memory does not depend on
the LM's work). The picture is a grid of coloured rectangles, so there are many distinct masks.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sca.app.heap import memory_mb, reset_peak_memory


def _rss_mb() -> float:
    """Peak resident size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_picture(path: Path, megapixels: float) -> tuple[int, int]:
    """A 4:3 PNG of about ``megapixels`` MP: 6 x 4 rectangles of distinct colours on grey, built in
    row bands so writing it does not need the whole image in memory more than once."""
    import numpy as np
    from PIL import Image

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    rgb = np.full((height, width, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(0)
    for i in range(6):
        for j in range(4):
            x0, y0 = int(width * (i + 0.15) / 6), int(height * (j + 0.15) / 4)
            x1, y1 = int(width * (i + 0.85) / 6), int(height * (j + 0.85) / 4)
            rgb[y0:y1, x0:x1] = rng.integers(0, 256, 3, dtype=np.uint8)
    Image.fromarray(rgb).save(path, compress_level=1)
    return width, height


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from sca.app.api import Captioner

    if args.checkpoint:
        captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    else:
        from sca.models.captioner import SCAModel
        from sca.models.config import TINY_CONFIG

        torch.manual_seed(0)
        captioner = Captioner(SCAModel(TINY_CONFIG).eval(), device="cpu")
    model_mb = _rss_mb()
    if args.no_release:
        import sca.app.anything

        sca.app.anything.release_free_memory = lambda: False
    from sca.models.processor import to_rgb

    t0 = time.perf_counter()
    image = to_rgb(args.image)
    image_mb = _rss_mb()  # decoding's own peak
    live_mb = memory_mb("VmRSS") or image_mb  # what stays: the model and the RGB array
    reset = reset_peak_memory()
    options = {"pred_iou_thresh": -1.0, "stability_score_thresh": -1.0} if args.keep_all else {}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regions = captioner.everything(image, num_beams=1, max_new_tokens=2, points_per_side=args.points_per_side,
                                       **options)
    seconds = time.perf_counter() - t0
    height, width = image.shape[:2]
    report = regions.report
    candidates = report.candidates
    anything_peak = memory_mb("VmHWM") if reset else None
    print(json.dumps({"model_mb": model_mb, "image_mb": image_mb, "live_mb": live_mb, "peak_mb": _rss_mb(),
                      "anything_mb": (anything_peak if anything_peak is not None else _rss_mb()) - live_mb,
                      "seconds": seconds,
                      "width": width, "height": height, "kept": len(regions), "candidates": candidates}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megapixels", type=float, nargs="+", default=[1, 12, 48, 108])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sam-thresholds", dest="keep_all", action="store_false",
                    help="keep the checkpoint's / SAM's thresholds instead of keeping every candidate")
    ap.add_argument("--compare-heap", action="store_true",
                    help="also run every size with freed memory left in the heap (no malloc_trim)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-release", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--image", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    print(f"anything mode, peak RSS per run (MB), {args.runs} fresh processes per size, "
          f"points_per_side {args.points_per_side}, {'every candidate kept' if args.keep_all else 'thresholds'}, "
          f"{'random tiny model' if not args.checkpoint else args.checkpoint}")
    print(f"{'size':>24} {'model':>7} {'+image/peak':>12} {'+anything min/med':>18} {'peak':>7} {'kept':>5} "
          f"{'cand.':>6} {'full-res f32':>13} {'s med':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.megapixels:
            path = Path(tmp) / f"{mp:g}mp.png"
            width, height = write_picture(path, mp)
            variants = [("", False)] + ([(" no trim", True)] if args.compare_heap else [])
            rows: dict[str, list[dict]] = {label: [] for label, _ in variants}
            for _ in range(args.runs):
                for label, no_release in variants:
                    cmd = [sys.executable, __file__, "--child", "--image", str(path), "--points-per-side",
                           str(args.points_per_side), "--threads", str(args.threads)]
                    if args.checkpoint:
                        cmd += ["--checkpoint", args.checkpoint]
                    if not args.keep_all:
                        cmd.append("--sam-thresholds")
                    if no_release:
                        cmd.append("--no-release")
                    out = subprocess.run(cmd, capture_output=True, text=True)
                    if out.returncode != 0:
                        raise SystemExit(f"{mp:g} MP: the run failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
                    rows[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
            for label, _ in variants:
                runs = rows[label]
                added = [r["anything_mb"] for r in runs]
                r = runs[0]
                full_res = r["candidates"] * width * height * 4 / 2**20
                size = f"{width}x{height} {mp:g}MP{label}"
                print(f"{size:>24} {r['model_mb']:7.0f} {r['live_mb'] - r['model_mb']:6.0f}/{r['image_mb'] - r['model_mb']:<5.0f} "
                      f"{min(added):8.0f} / {statistics.median(added):<7.0f} {max(x['peak_mb'] for x in runs):7.0f} "
                      f"{r['kept']:5d} {r['candidates']:6d} {full_res:13.0f} "
                      f"{statistics.median(x['seconds'] for x in runs):6.1f}")

if __name__ == "__main__":
    main()
