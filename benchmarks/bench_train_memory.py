"""Memory and time of one training step, with and without gradient checkpointing.

    .venv/bin/python benchmarks/bench_train_memory.py                        # SAM ViT-B + GPT-2, 4 / 8 / 16 regions
    .venv/bin/python benchmarks/bench_train_memory.py --models paper --regions 4 8   # ViT-H + GPT2-large

Each setting runs in a fresh process: the captioner (random weights, frozen SAM and LM, trainable
mixer, queries and projection), one image's cached embedding, then --steps forward + backward passes
of --regions box prompts with 12-token captions (what a training step does on the embedding cache;
the image encoder is not part of it). Printed per setting: the step's added peak resident memory
(VmHWM reset before the step, minus the resident size before it), that per region, and the step's
time (min / median over the steps after a warm-up step). ``train.gradient_checkpointing`` is the
switch measured here (``SCAModel.enable_gradient_checkpointing``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODELS = {
    "vit-b": {"image_encoder": {"name": "sam-vit-b"}, "language_model": {"name": "gpt2"}, "num_mixer_layers": 12},
    "paper": {"image_encoder": {"name": "sam-vit-h"}, "language_model": {"name": "gpt2-large"},
              "num_mixer_layers": 12},
}


def child(args: argparse.Namespace) -> None:
    import torch

    from sca.app.heap import memory_mb, release_free_memory, reset_peak_memory
    from sca.models.captioner import SCAModel
    from sca.models.config import SCAConfig
    from sca.models.segmenters import Prompts
    from sca.models.text import encode_captions

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SCAModel(SCAConfig(**MODELS[args.models[0]]))
    if args.checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    size = model.segmenter.image_size
    with torch.no_grad():
        features = model.encode_images(torch.randn(1, 3, size, size))
    g = torch.Generator().manual_seed(0)
    n = args.regions[0]
    xy = torch.rand(n, 2, generator=g) * size * 0.6
    boxes = torch.cat([xy, xy + (0.1 + 0.3 * torch.rand(n, 2, generator=g)) * size], 1)
    prompts, index = Prompts(boxes=boxes[:, None]), torch.zeros(n, dtype=torch.long)
    captions = encode_captions(model.lm.tokenizer, ["a man riding a red bike on the street"] * n,
                               model.config.max_caption_tokens)
    peaks, times = [], []
    for _ in range(args.steps + 1):
        release_free_memory()
        before = memory_mb("VmRSS")
        reset_peak_memory()
        t0 = time.perf_counter()
        out = model(prompts=prompts, features=features, image_index=index, task_ids=1, captions=captions)
        out.loss.backward()
        times.append(time.perf_counter() - t0)
        peaks.append(memory_mb("VmHWM") - before)
        model.zero_grad(set_to_none=True)
        del out
    print(json.dumps({"peak_mb": peaks[1:], "seconds": times[1:]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vit-b"], choices=list(MODELS))
    ap.add_argument("--regions", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    print(f"one training step (cached embedding, forward + backward), {args.steps} steps after a warm-up, "
          f"{args.threads} threads, random weights")
    print(f"{'model':>6} {'regions':>7} {'checkpointing':>13} {'+peak MB':>9} {'MB/region':>9} {'s min':>7} {'s med':>7}")
    for name in args.models:
        for regions in args.regions:
            base = None
            for checkpointing in (False, True):
                cmd = [sys.executable, __file__, "--child", "--models", name, "--regions", str(regions),
                       "--steps", str(args.steps), "--threads", str(args.threads)]
                if checkpointing:
                    cmd.append("--checkpointing")
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{name}, {regions} regions: the run failed:\n{out.stderr[-2000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                peak = max(r["peak_mb"])
                base = base or peak
                print(f"{name:>6} {regions:>7} {'on' if checkpointing else 'off':>13} {peak:9.0f} {peak / regions:9.1f} "
                      f"{min(r['seconds']):7.2f} {statistics.median(r['seconds']):7.2f}"
                      + (f"   memory x{peak / base:.2f}" if checkpointing else ""))


if __name__ == "__main__":
    main()
