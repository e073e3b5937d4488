"""LM batch size of caption generation: regions per ``generate`` call, the vision chunk held fixed.

    .venv/bin/python benchmarks/bench_lm_batch.py                                   # SAM ViT-B + GPT-2
    .venv/bin/python benchmarks/bench_lm_batch.py --image-encoder tiny-sam --lm tiny-gpt2 --regions 64

The image is encoded once; then --regions box prompts are captioned with SAM's decoder and the mixer
in chunks of --region-chunk-size (32, the default) and the LM's ``generate`` in batches of each
--lm-batch size, one after the other in this process, --repeat times (min and median). The first
--lm-batch value is the baseline (the vision chunk: what generation did before the two were
decoupled). Weights are random unless --checkpoint is given; EOS is disabled so every run does the
same LM work. Every setting's token ids are compared with the baseline's (they must be equal).
"""

from __future__ import annotations

import argparse
import statistics
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-encoder", default="sam-vit-b")
    parser.add_argument("--lm", default="gpt2")
    parser.add_argument("--mixer-layers", type=int, default=12)
    parser.add_argument("--checkpoint", default=None, help="a trained model folder instead of random weights")
    parser.add_argument("--regions", type=int, default=128)
    parser.add_argument("--region-chunk-size", type=int, default=32)
    parser.add_argument("--lm-batch", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    if args.checkpoint:
        model, label = SCAModel.from_pretrained(args.checkpoint).eval(), args.checkpoint
    else:
        config = SCAConfig(image_encoder={"name": args.image_encoder}, language_model={"name": args.lm},
                           num_mixer_layers=args.mixer_layers)
        model, label = SCAModel(config).eval(), f"{args.image_encoder} + {args.lm} (random weights)"
    model.lm.model.generation_config.eos_token_id = None
    size = model.segmenter.image_size
    boxes = random_boxes(args.regions, size, torch.Generator().manual_seed(0))
    prompts = Prompts(boxes=boxes[:, None])
    index = torch.zeros(args.regions, dtype=torch.long)
    print(f"{label}; {args.regions} regions, vision chunk {args.region_chunk_size}, {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads, repeat {args.repeat}")
    print(f"{'beams':>5} {'LM batch':>8} {'ms/region min':>14} {'ms/region med':>14} {'vs first':>9} {'ids equal':>10}")
    with torch.inference_mode():
        features = model.encode_images(torch.randn(1, 3, size, size))
        for beams in args.beams:
            base_time = base_ids = None
            for lm_batch in args.lm_batch:
                def run(lm_batch=lm_batch, beams=beams):
                    return model.generate(prompts=prompts, features=features, image_index=index, num_beams=beams,
                                          max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                                          eos_token_id=None, region_chunk_size=args.region_chunk_size,
                                          lm_batch_size=lm_batch)

                ids = run().token_ids  # warm-up, and the ids to compare
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    run()
                    times.append((time.perf_counter() - t0) / args.regions)
                if base_time is None:
                    base_time, base_ids = min(times), ids
                same = sum(a == b for a, b in zip(ids, base_ids, strict=True))
                print(f"{beams:>5} {lm_batch:>8} {1e3 * min(times):>14.1f} {1e3 * statistics.median(times):>14.1f} "
                      f"{base_time / min(times):>8.2f}x {same:>5}/{len(ids)}")


if __name__ == "__main__":
    main()
