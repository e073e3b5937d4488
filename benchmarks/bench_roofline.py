"""Roofline of the captioner: this machine's GEMM peak, and every part's FLOPs, time and share of it.

    .venv/bin/python benchmarks/bench_roofline.py                          # embedded default + ViT-B/GPT-2
    .venv/bin/python benchmarks/bench_roofline.py --models paper --repeat 1 # SAM ViT-H + GPT2-large (slow on a CPU)
    .venv/bin/python benchmarks/bench_roofline.py --models vit-b --dtypes float32 bfloat16 --regions 16

1. Peak: ``torch.matmul`` of n x n matrices (n = 1024, 2048, 3072), min time of --repeat runs; the
   best rate over n is the peak of each dtype (float32, and bfloat16 / float16 where they run).
2. Parts, for one image and --regions box prompts (random boxes), with random weights unless the
   model is the embedded default's trained checkpoint (``runs/finetune/model``):
   image encoder; SAM decoder (prompts -> masks, tokens); mixer + projection (tokens -> LM prefix);
   LM prefix (one forward over the prefix); generation, greedy and beam 3, of --new-tokens tokens
   (EOS off, so every run does the same work; it includes decoder, mixer and prefix); one training
   step (forward + backward of decoder, mixer and LM loss on a cached image embedding).
   FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions,
   attention; element-wise work is not counted, so a part dominated by it shows a low share).
   Time: min and median of --repeat runs after one warm-up (one run when a part takes > 30 s).
   bfloat16 / float16 rows build the model in that dtype (``SCAConfig.dtype``, what
   ``Captioner(dtype=...)`` and ``from_pretrained(dtype=...)`` do); the loss stays float32.
3. Projection: wall time of VG-full evaluation (5,000 DenseCap test images, ~230K regions, beam 3,
   paper.md §4-5) and of 100K training steps of 1 image x 16 regions (paper.md §3), from the
   measured per-image and per-region times at the printed shape, on this machine; and the FLOPs
   those take, to divide by another machine's rate.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

MODELS = {
    "default": None,  # the embedded default: runs/finetune/model if it exists, else its shapes with random weights
    "vit-b": {"image_encoder": {"name": "sam-vit-b"}, "language_model": {"name": "gpt2"}, "num_mixer_layers": 12},
    "paper": {"image_encoder": {"name": "sam-vit-h"}, "language_model": {"name": "gpt2-large"},
              "num_mixer_layers": 12},
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
VG_FULL_IMAGES, VG_FULL_REGIONS = 5_000, 230_000  # paper.md §4: DenseCap test split
TRAIN_STEPS, TRAIN_REGIONS = 100_000, 16  # paper.md §3: per GPU, 1 image x 16 regions a step


def timed(fn: Callable[[], object], repeat: int, slow: float = 30.0) -> list[float]:
    fn()  # warm-up (allocations, oneDNN kernel selection)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if times[-1] > slow:
            break
    return times


def gemm_peak(dtype: torch.dtype, repeat: int) -> tuple[float, int] | None:
    """(best GFLOP/s, its n) of n x n matmuls, or None when the dtype does not run here."""
    best = None
    for n in (1024, 2048, 3072):
        try:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            t = min(timed(lambda a=a, b=b: torch.matmul(a, b), repeat))
        except RuntimeError:
            return None
        rate = 2 * n**3 / t / 1e9
        if best is None or rate > best[0]:
            best = (rate, n)
    return best


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation", "mkldnn::")
ATTENTION_OPS = ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")
CONV_OPS = ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution_backward", "aten::_slow_conv")


def time_shares(fn: Callable[[], object]) -> dict[str, float]:
    """Share of one run's self CPU time (torch.profiler) in GEMMs, fused attention, convolutions
    and everything else (element-wise, normalisation, softmax, copies, indexing): why a part's
    counted FLOPs run below the GEMM peak."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    shares = {"GEMM": 0.0, "attention": 0.0, "conv": 0.0, "other": 0.0}
    for event in prof.key_averages():
        kind = ("GEMM" if event.key.startswith(GEMM_OPS) else "attention" if event.key.startswith(ATTENTION_OPS)
                else "conv" if event.key.startswith(CONV_OPS) else "other")
        shares[kind] += event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return {k: v / total for k, v in shares.items()}


def flops_of(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def build(name: str, dtype: str):
    from sca.models.captioner import SCAModel
    from sca.models.config import TINY_CONFIG, SCAConfig

    torch.manual_seed(0)
    if name == "default":
        trained = Path("runs/finetune/model")
        if (trained / "config.json").is_file():
            return SCAModel.from_pretrained(trained, dtype=dtype), f"default ({trained})"
        return SCAModel(SCAConfig.from_dict({**TINY_CONFIG.to_dict(), "dtype": dtype})), "default shapes (tiny-sam + tiny-gpt2, random weights; runs/finetune absent)"
    spec = MODELS[name]
    label = f"{spec['image_encoder']['name']} + {spec['language_model']['name']}, mixer {spec['num_mixer_layers']}"
    return SCAModel(SCAConfig(**spec, dtype=dtype)), f"{name}: {label} (random weights)"


def parts(model, regions: int, new_tokens: int) -> dict[str, Callable[[], object]]:
    from sca.models.segmenters import Prompts
    from sca.models.text import encode_captions

    size = model.segmenter.image_size
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(regions, 2, generator=g) * size * 0.6
    boxes = torch.cat([xy, xy + (0.1 + 0.3 * torch.rand(regions, 2, generator=g)) * size], 1).clamp(max=size - 1)
    prompts = Prompts(boxes=boxes[:, None])  # flat: [N, 1, 4] with an image index
    index = torch.zeros(regions, dtype=torch.long)
    pixels = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        features = model.encode_images(pixels)
        seg = model.segment_regions(features, prompts, index)
        prefix = model.visual_prefix(seg, model._task_ids(1, regions), prompts)
    tok = model.lm.tokenizer
    words = ["a man riding a red bike on the street next to a tall building"] * regions
    captions = encode_captions(tok, words, model.config.max_caption_tokens)
    gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None, image_index=index, task_ids=1,
               region_chunk_size=regions)
    train_features = {k: v.detach().clone() for k, v in features.items()}

    def infer(fn):
        def run():
            with torch.inference_mode():
                return fn()
        return run

    def train_step():
        model.train()
        out = model(prompts=prompts, features=train_features, image_index=index, task_ids=1, captions=captions)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        model.eval()

    return {
        "image encoder (1 image)": infer(lambda: model.encode_images(pixels)),
        "SAM decoder": infer(lambda: model.segment_regions(features, prompts, index)),
        "mixer + projection": infer(lambda: model.visual_prefix(seg, model._task_ids(1, regions), prompts)),
        "LM prefix": infer(lambda: model.lm.model(inputs_embeds=prefix.to(next(model.lm.model.parameters()).dtype),
                                                  use_cache=True)),
        f"generate greedy ({new_tokens} tok)": infer(lambda: model.generate(prompts=prompts, features=features,
                                                                            num_beams=1, **gen)),
        f"generate beam 3 ({new_tokens} tok)": infer(lambda: model.generate(prompts=prompts, features=features,
                                                                            num_beams=3, **gen)),
        "train step (fwd + bwd)": train_step,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["default", "vit-b"], choices=list(MODELS))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=list(DTYPES))
    ap.add_argument("--regions", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true",
                    help="also print each part's self-time shares: GEMM / attention / conv / other")
    ap.add_argument("--parts", nargs="+", default=None, help="only the parts whose name starts with one of these")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    peaks = {}
    for name in args.dtypes:
        peak = gemm_peak(DTYPES[name], args.repeat)
        peaks[name] = peak
        print(f"GEMM peak {name:>8}: " + (f"{peak[0]:7.1f} GFLOP/s (n = {peak[1]})" if peak else "does not run here"))
    fp32 = peaks.get("float32") or gemm_peak(torch.float32, args.repeat)
    for model_name in args.models:
        per_part: dict[tuple[str, str], tuple[float, float]] = {}
        for dtype_name in args.dtypes:
            if peaks.get(dtype_name) is None:
                continue
            model, label = build(model_name, dtype_name)
            model.eval()
            model.lm.model.generation_config.eos_token_id = None
            print(f"\n{label}, {dtype_name}; {args.regions} regions, image {model.segmenter.image_size} px")
            print(f"{'part':<28} {'GFLOP':>9} {'ms min':>9} {'ms med':>9} {'GFLOP/s':>8} {'% peak':>7} {'% fp32':>7}"
                  + ("   time in GEMM / attn / conv / other" if args.profile else ""))
            for part, fn in parts(model, args.regions, args.new_tokens).items():
                if args.parts and not part.startswith(tuple(args.parts)):
                    continue
                flops = flops_of(fn)
                times = timed(fn, args.repeat)
                rate = flops / min(times) / 1e9
                per_part[(part, dtype_name)] = (min(times), flops)
                shares = ""
                if args.profile:
                    t = time_shares(fn)
                    shares = "   " + " / ".join(f"{100 * t[k]:3.0f}%" for k in ("GEMM", "attention", "conv", "other"))
                print(f"{part:<28} {flops / 1e9:9.2f} {min(times) * 1e3:9.1f} {statistics.median(times) * 1e3:9.1f} "
                      f"{rate:8.1f} {100 * rate / peaks[dtype_name][0]:6.0f}% {100 * rate / fp32[0]:6.0f}%{shares}")
            del model
        for dtype_name in args.dtypes:
            enc = per_part.get(("image encoder (1 image)", dtype_name))
            beam = per_part.get((f"generate beam 3 ({args.new_tokens} tok)", dtype_name))
            step = per_part.get(("train step (fwd + bwd)", dtype_name))
            if not (enc and beam and step):
                continue
            per_region = beam[0] / args.regions
            eval_s = VG_FULL_IMAGES * enc[0] + VG_FULL_REGIONS * per_region
            eval_flops = VG_FULL_IMAGES * enc[1] + VG_FULL_REGIONS * beam[1] / args.regions
            step_s = enc[0] + step[0] * TRAIN_REGIONS / args.regions  # encoder forward (no cache) + regions
            step_flops = enc[1] + step[1] * TRAIN_REGIONS / args.regions
            print(f"projection {dtype_name}: VG-full evaluation {eval_s / 3600:8.1f} h here "
                  f"({eval_flops / 1e15:.1f} PFLOP); {TRAIN_STEPS // 1000}K training steps of 1 image x "
                  f"{TRAIN_REGIONS} regions {TRAIN_STEPS * step_s / 3600:8.1f} h here ({TRAIN_STEPS * step_flops / 1e15:.1f} PFLOP)")


if __name__ == "__main__":
    main()
