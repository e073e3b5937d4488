"""Caption-generation throughput for one image: encode once + batched regions versus re-encoding
the image for every region (the baseline a naive per-region captioner pays).

    .venv/bin/python benchmarks/bench_generate.py                      # SAM ViT-B + GPT-2 (random weights)
    .venv/bin/python benchmarks/bench_generate.py --image-encoder tiny-sam --lm tiny-gpt2 --regions 1 16 64

Weights are random (speed does not depend on them); generation runs a fixed number of new tokens
(EOS is disabled) so both modes do the same LM work. Prints regions/s side by side.
"""

from __future__ import annotations

import argparse
import time

import torch

from sca.models.captioner import SCAModel
from sca.models.config import SCAConfig
from sca.models.segmenters import Prompts


def random_boxes(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size * 0.7
    wh = (0.1 + 0.2 * torch.rand(n, 2, generator=generator)) * size
    return torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-encoder", default="sam-vit-b")
    parser.add_argument("--lm", default="gpt2")
    parser.add_argument("--mixer-layers", type=int, default=12)
    parser.add_argument("--regions", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=16, help="region chunk size of the batched mode")
    parser.add_argument("--baseline-max-regions", type=int, default=64,
                        help="skip the per-region baseline above this many regions (it is slow)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = SCAConfig(image_encoder={"name": args.image_encoder}, language_model={"name": args.lm},
                       num_mixer_layers=args.mixer_layers)
    model = SCAModel(config).eval()
    lm_gen = model.lm.model.generation_config
    lm_gen.eos_token_id = None  # fixed-length generation: same LM work in both modes
    size = model.segmenter.image_size
    pixels = torch.randn(1, 3, size, size)
    gen = torch.Generator().manual_seed(0)
    kwargs = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, eos_token_id=None,
                  min_new_tokens=args.max_new_tokens)
    print(f"image encoder {args.image_encoder} ({size}px), LM {args.lm}, mixer {args.mixer_layers} layers, "
          f"{args.max_new_tokens} new tokens, beams {args.num_beams}, threads {torch.get_num_threads()}")
    print(f"{'regions':>8} {'encode-once batched':>22} {'re-encode per region':>22} {'speed-up':>9}")
    with torch.inference_mode():
        model.generate(pixel_values=pixels, prompts=Prompts(boxes=random_boxes(1, size, gen)[None]), **kwargs)
        for n in args.regions:
            boxes = random_boxes(n, size, gen)[None]
            t0 = time.perf_counter()
            model.generate(pixel_values=pixels, prompts=Prompts(boxes=boxes), region_chunk_size=args.chunk, **kwargs)
            batched = n / (time.perf_counter() - t0)
            if n <= args.baseline_max_regions:
                t0 = time.perf_counter()
                for i in range(n):
                    model.generate(pixel_values=pixels, prompts=Prompts(boxes=boxes[:, i : i + 1]), **kwargs)
                naive = n / (time.perf_counter() - t0)
                print(f"{n:>8} {batched:>18.2f} r/s {naive:>18.2f} r/s {batched / naive:>8.1f}x")
            else:
                print(f"{n:>8} {batched:>18.2f} r/s {'(skipped)':>22}")


if __name__ == "__main__":
    main()
