"""Regions/s of the user API on one image, side by side with the two ways people caption regions
without it:

- api:      ``Captioner.caption(image, boxes=R boxes)``: the image is encoded once, the regions are
            decoded, mixed and captioned in batches (the SCA design, paper.md §1);
- per-call: the same Captioner called once per region (the image re-encoded every time);
- crop:     a crop-and-recaption pipeline in the style of Caption Anything, built from the same
            parts: SAM's mask for every box (one encoding of the image), then per region the image is
            cropped to the mask's box (``--crop-background white`` also blanks pixels off the mask),
            encoded as a new image and captioned with a whole-image box prompt.

    .venv/bin/python benchmarks/bench_api.py                                    # SAM ViT-B + GPT-2
    .venv/bin/python benchmarks/bench_api.py --image-encoder mobile-sam --threads 1
    .venv/bin/python benchmarks/bench_api.py --checkpoint runs/vg --image photo.jpg

Weights are random unless --checkpoint is given (speed does not depend on them); generation runs
exactly --max-new-tokens tokens (EOS off) so every contender does the same LM work. The per-region
contenders cost the same for every region, so above --baseline-regions regions they are timed on the
first N regions and their rate is reported from those (marked *; crop adds its one mask stage for all
R regions). SAM ViT-B + GPT-2 has about the encoder-to-LM compute ratio of the paper's ViT-H +
GPT2-large (~15 region captions per image encoding); MobileSAM + GPT-2 is the unfavourable case for
encoding once (an encoding costs about one region caption).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from sca.app.api import Captioner
from sca.models.captioner import SCAModel
from sca.models.config import SCAConfig
from sca.models.processor import RegionPrompts


def load_image(path: str | None) -> np.ndarray:
    from sca.models.processor import to_rgb

    if path:
        return to_rgb(path)
    import skimage.data

    return skimage.data.astronaut()  # 512 x 512 RGB, ships with scikit-image


def random_boxes(n: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 4] boxes of 10-40% of each side, inside the image."""
    wh = rng.uniform(0.1, 0.4, (n, 2)) * [width, height]
    xy = rng.uniform(0, 1, (n, 2)) * ([width, height] - wh)
    return np.concatenate([xy, xy + wh], axis=1).round(1)


def run_api(cap: Captioner, rgb, boxes, gen) -> float:
    t0 = time.perf_counter()
    cap.caption(rgb, boxes=boxes, **gen)
    return time.perf_counter() - t0


def run_per_call(cap: Captioner, rgb, boxes, gen, limit: int) -> tuple[float, int]:
    """Seconds for the first ``limit`` regions, one ``caption`` call each; -> (seconds, regions)."""
    n = min(limit, len(boxes))
    t0 = time.perf_counter()
    for box in boxes[:n]:
        cap.caption(rgb, boxes=[box], **gen)
    return time.perf_counter() - t0, n


@torch.inference_mode()
def sam_masks(cap: Captioner, enc, boxes) -> list[np.ndarray]:
    """SAM's best mask of every box (no captions): the mask stage of crop-and-recaption."""
    prompts = cap.processor.to_model(RegionPrompts(np.asarray(boxes, float), None, None, None), enc.geometry)
    prompts = prompts.flatten().to(cap.device, cap.dtype)
    seg = cap.model.segment_regions(enc.features, prompts, torch.zeros(len(boxes), dtype=torch.long))
    low, iou = seg.masks[:, 0], seg.iou_scores[:, 0]
    best = low[torch.arange(len(boxes)), iou.argmax(1)][:, None]
    return list((cap.processor.postprocess_masks(best, enc.geometry)[:, 0] > 0).numpy())


def crop_to_mask(rgb: np.ndarray, mask: np.ndarray, box, background: str) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if ys.size:
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    else:  # an empty mask: the prompt box
        x0, y0, x1, y1 = (int(v) for v in np.round(box))
    crop = rgb[y0:y1, x0:x1].copy()
    if background == "white":
        crop[~mask[y0:y1, x0:x1]] = 255
    return crop


def run_crop(cap: Captioner, rgb, boxes, gen, limit: int, background: str) -> tuple[float, float, int]:
    """-> (mask-stage seconds for all regions, seconds for the first ``limit`` crops, crops)."""
    t0 = time.perf_counter()
    enc = cap.encode(rgb)
    masks = sam_masks(cap, enc, boxes)
    t_mask = time.perf_counter() - t0
    n = min(limit, len(boxes))
    t0 = time.perf_counter()
    for mask, box in zip(masks[:n], boxes[:n], strict=True):
        crop = crop_to_mask(rgb, mask, box, background)
        cap.caption(crop, boxes=[[0, 0, crop.shape[1], crop.shape[0]]], **gen)
    return t_mask, time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="an SCA checkpoint/run folder (default: random weights)")
    parser.add_argument("--image-encoder", default="sam-vit-b")
    parser.add_argument("--lm", default="gpt2")
    parser.add_argument("--mixer-layers", type=int, default=12)
    parser.add_argument("--image", help="image file (default: scikit-image's astronaut, 512x512)")
    parser.add_argument("--regions", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--num-beams", type=int, default=3, help="(paper: 3)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="(paper: 20)")
    parser.add_argument("--chunk", type=int, default=32, help="region chunk size of the api")
    parser.add_argument("--baseline-regions", type=int, default=4,
                        help="time the per-region contenders on at most this many regions")
    parser.add_argument("--crop-background", choices=["keep", "white"], default="keep")
    parser.add_argument("--threads", type=int, help="torch threads (1 is much faster on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.checkpoint:
        cap = Captioner.from_pretrained(args.checkpoint, device="cpu")
        name = args.checkpoint
    else:
        config = SCAConfig(image_encoder={"name": args.image_encoder}, language_model={"name": args.lm},
                           num_mixer_layers=args.mixer_layers)
        cap = Captioner(SCAModel(config), device="cpu")
        name = f"{args.image_encoder} + {args.lm} (random weights), mixer {args.mixer_layers} layers"
    rgb = load_image(args.image)
    height, width = rgb.shape[:2]
    gen = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens, "region_chunk_size": args.chunk,
           "eos_token_id": None, "min_new_tokens": args.max_new_tokens}
    per_region = {k: v for k, v in gen.items() if k != "region_chunk_size"}
    rng = np.random.default_rng(args.seed)

    print(f"model: {name}; image {width}x{height} -> {cap.processor.image_size}px; beams {args.num_beams}, "
          f"{args.max_new_tokens} new tokens; threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    run_api(cap, rgb, random_boxes(1, width, height, rng), gen)  # warm-up
    t0 = time.perf_counter()
    cap.encode(rgb)
    print(f"one image encoding: {time.perf_counter() - t0:.2f} s")
    print(f"{'regions':>7} | {'api':>12} | {'per-call':>12} | {'crop':>12} | api vs per-call, vs crop")
    for n in args.regions:
        boxes = random_boxes(n, width, height, rng)
        t_api = run_api(cap, rgb, boxes, gen)
        t_call, k_call = run_per_call(cap, rgb, boxes, per_region, args.baseline_regions)
        t_mask, t_crops, k_crop = run_crop(cap, rgb, boxes, per_region, args.baseline_regions, args.crop_background)
        api = n / t_api
        call = k_call / t_call
        crop = n / (t_mask + t_crops / k_crop * n)  # the mask stage once + every region's crop
        mark = "*" if k_call < n else " "
        print(f"{n:>7} | {api:>8.3f} r/s | {call:>7.3f} r/s{mark} | {crop:>7.3f} r/s{mark} | "
              f"{api / call:5.1f}x, {api / crop:5.1f}x", flush=True)
    print(f"* timed on the first {args.baseline_regions} regions (per-region cost is the same for every region)")


if __name__ == "__main__":
    main()
