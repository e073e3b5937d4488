"""``sca caption``, ``sca everything`` and ``sca demo``: the Captioner from the command line.

    sca caption photo.jpg --checkpoint runs/vg --box 10 20 200 240 --box 300 40 420 200 --overlay out.png
    sca caption photo.jpg --checkpoint runs/vg --point 120 80 --neg-point 150 90
    sca everything photo.jpg --checkpoint runs/vg --points-per-side 16 --output regions.json
    sca demo --checkpoint runs/vg --host 127.0.0.1 --port 7860

Regions: every ``--box`` is one region; all ``--point``/``--neg-point`` clicks together prompt one
more region (SAM's interactive convention), or with ``--each-point`` every ``--point`` is its own
region. Coordinates are original pixels. JSON goes to stdout (or ``--output``); stage messages and
progress bars go to stderr.

Every argument is checked before anything heavy is imported or loaded (``sca.app.arguments``): the
device exists, output files are writable file names, the image exists and decodes, numbers are in
range, prompts lie inside the image; a bad one is one line on stderr and exit code 2. torch,
transformers and gradio are imported only once the arguments are known to be good.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sca.app import arguments as check

DTYPES = ("float32", "float16", "bfloat16")
DEMO_MAX_POINTS_PER_SIDE, DEMO_MAX_REGIONS = 64, 128  # the demo's slider ranges (sca.app.demo.SLIDERS)
CHECKPOINT_OR_SAM = "default: the checkpoint's calibrated value, else SAM's"


def _common(p) -> None:
    p.add_argument("image", help="image file (any format Pillow reads; EXIF orientation applied)")
    p.add_argument("--checkpoint", required=True,
                   help="SCA checkpoint folder, run folder (with model/ inside) or hub id")
    p.add_argument("--task", choices=["caption", "recognition"], default="caption",
                   help="caption (default) or recognition (category names)")
    p.add_argument("--num-beams", type=int, default=3, help="beam size (paper: 3)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="(paper: 20)")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    p.add_argument("--overlay", help="also write a picture of the masks and captions (PNG/JPEG)")
    p.add_argument("--masks", choices=["rle", "none"], default="rle",
                   help="masks in the JSON as COCO RLE (default) or left out")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--dtype", choices=DTYPES, help="default: bfloat16/float16 on GPU, float32 on CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or stage messages")


def register(sub) -> None:
    p = sub.add_parser("caption", help="caption regions of an image given boxes or points",
                       description=__doc__.split("\n\n")[0])
    _common(p)
    p.add_argument("--box", nargs=4, type=float, action="append", default=[], metavar=("X0", "Y0", "X1", "Y1"),
                   help="a region's box in pixels (repeat for more regions)")
    p.add_argument("--point", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"),
                   help="a foreground click (all clicks form one region unless --each-point)")
    p.add_argument("--neg-point", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"),
                   help="a background click of the clicked region")
    p.add_argument("--each-point", action="store_true", help="every --point is its own region")
    p.set_defaults(func=run_caption)

    p = sub.add_parser("everything", help="anything mode: SAM's automatic masks, each captioned",
                       description="Segment the whole image from a grid of point prompts (SAM's automatic "
                                   "mask generator recipe) and caption every kept mask.")
    _common(p)
    p.add_argument("--points-per-side", type=int, help=f"grid of N x N point prompts ({CHECKPOINT_OR_SAM} 32)")
    p.add_argument("--points-per-batch", type=int, default=64, help="points decoded at a time (SAM: 64)")
    p.add_argument("--pred-iou-thresh", type=float, help=f"keep masks above, -1 to 1 ({CHECKPOINT_OR_SAM} 0.88)")
    p.add_argument("--stability-score-thresh", type=float,
                   help=f"keep masks at or above, -1 to 1 ({CHECKPOINT_OR_SAM} 0.95)")
    p.add_argument("--stability-score-offset", type=float, help=f"logit offset, >= 0 ({CHECKPOINT_OR_SAM} 1.0)")
    p.add_argument("--nms-iou", type=float, help=f"box NMS IoU, -1 to 1 ({CHECKPOINT_OR_SAM} 0.7)")
    p.add_argument("--min-mask-area", type=int, help=f"drop masks with fewer pixels ({CHECKPOINT_OR_SAM} 0)")
    p.add_argument("--max-regions", type=int, help="caption at most N masks (best predicted IoU first)")
    p.set_defaults(func=run_everything)

    p = sub.add_parser("demo", help="the web demo (gradio): upload, click or draw, read captions")
    p.add_argument("--checkpoint", required=True, help="SCA checkpoint folder, run folder or hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--dtype", choices=DTYPES, help="default: bfloat16/float16 on GPU, float32 on CPU")
    p.add_argument("--num-beams", type=int, default=3, help="(paper: 3)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="(paper: 20)")
    p.add_argument("--points-per-side", type=int, default=16,
                   help=f"anything mode's initial grid, 1 to {DEMO_MAX_POINTS_PER_SIDE} (SAM: 32)")
    p.add_argument("--pred-iou-thresh", type=float,
                   help=f"anything mode's initial value, -1 to 1 ({CHECKPOINT_OR_SAM} 0.88)")
    p.add_argument("--stability-score-thresh", type=float,
                   help=f"anything mode's initial value, 0 to 1 ({CHECKPOINT_OR_SAM} 0.95)")
    p.add_argument("--max-regions", type=int, default=24,
                   help=f"anything mode's initial value, 1 to {DEMO_MAX_REGIONS}")
    p.set_defaults(func=run_demo)


# ---------------------------------------------------------------------------------------------------
def _say(args, message: str) -> None:
    if not getattr(args, "no_progress", False):
        print(f"sca {args.command}: {message}", file=sys.stderr, flush=True)


def _check_generation(args) -> None:
    check.check_range(args.num_beams, "--num-beams", low=1)
    check.check_range(args.max_new_tokens, "--max-new-tokens", low=1)


def _check_inputs(args) -> tuple[int, int]:
    """The arguments every image command shares -> the image's (width, height) from its header
    (the checkpoint is checked last, by the command: its own arguments' errors come first)."""
    _check_generation(args)
    check.check_device(args.device)
    check.check_output(args.output, "--output", image=args.image)
    check.check_output(args.overlay, "--overlay", image=args.image, picture=True, other=("--output", args.output))
    return check.check_image(args.image)


def _decode(args):
    """The whole image, decoded by the API's own path (``sca.models.processor.to_rgb``: the loader,
    and the image-size limit checked from the header before decoding)."""
    from sca.models.processor import to_rgb

    return to_rgb(Path(args.image).expanduser())


def _heavy_imports(args) -> None:
    """torch and the model code, then the device as torch sees it (still before any checkpoint)."""
    t0 = time.perf_counter()
    _say(args, "loading torch and transformers ...")
    import sca.app.api  # noqa: F401

    check.confirm_device(args.device)
    _say(args, f"libraries loaded in {time.perf_counter() - t0:.1f} s")


def _captioner(args):
    import torch

    from sca.app.api import Captioner

    t0 = time.perf_counter()
    _say(args, f"loading checkpoint {args.checkpoint} ...")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if not getattr(args, "no_progress", False):
        cap = Captioner.from_pretrained(args.checkpoint, device=args.device, dtype=dtype)
    else:
        from transformers.utils import logging as hf_logging

        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' "Loading weights" bars
        try:
            cap = Captioner.from_pretrained(args.checkpoint, device=args.device, dtype=dtype)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
    _say(args, f"checkpoint loaded in {time.perf_counter() - t0:.1f} s ({cap.device}, "
               f"{str(cap.dtype).replace('torch.', '')})")
    return cap


def _point_groups(args) -> list[list[list[float]]]:
    """The clicked regions' points, after the CLI's own rules (no torch)."""
    if args.neg_point and not args.point:
        raise ValueError("--neg-point needs at least one --point: background clicks refine a clicked region")
    if args.each_point:
        if args.neg_point:
            raise ValueError("--each-point makes every --point its own region; it cannot take --neg-point")
        return [[p] for p in args.point]
    return [list(args.point) + list(args.neg_point)] if args.point else []


def _prompt_groups(args, width: int, height: int) -> list:
    """Validated prompts (``sca.models.processor``): the boxes, then the clicked region(s)."""
    from sca.models.processor import check_region_prompts

    groups = []
    if args.box:
        groups.append(check_region_prompts(width, height, boxes=args.box))
    if args.point:
        if args.each_point:
            groups.append(check_region_prompts(width, height, points=_point_groups(args)))
        else:
            labels = [1] * len(args.point) + [0] * len(args.neg_point)
            groups.append(check_region_prompts(width, height, points=_point_groups(args), point_labels=[labels]))
    return groups


def _finish(args, rgb, regions, timings: dict, extra: dict) -> int:
    out = {"image": str(args.image), "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
           "checkpoint": str(args.checkpoint), "task": args.task, "num_beams": args.num_beams,
           "max_new_tokens": args.max_new_tokens, **extra,
           "seconds": {k: round(v, 3) for k, v in timings.items()},
           "regions": [{"id": k + 1, **r.to_dict(mask=args.masks)} for k, r in enumerate(regions)]}
    if args.overlay:
        from sca.app.overlay import render_overlay

        Path(args.overlay).expanduser().parent.mkdir(parents=True, exist_ok=True)
        render_overlay(rgb, regions).save(Path(args.overlay).expanduser())
        _say(args, f"overlay written to {args.overlay}")
    text = json.dumps(out, indent=2)
    if args.output:
        target = Path(args.output).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")
        _say(args, f"{len(regions)} region(s) written to {args.output}")
    else:
        print(text)
    return 0


def run_caption(args) -> int:
    width, height = _check_inputs(args)
    groups = _point_groups(args)
    if not args.box and not groups:
        raise ValueError("no prompts: give --box X0 Y0 X1 Y1 and/or --point X Y (or use `sca everything`)")
    check.check_prompts(width, height, boxes=args.box, points=groups)
    check.check_checkpoint(args.checkpoint)
    _heavy_imports(args)
    rgb = _decode(args)
    prompts = _prompt_groups(args, rgb.shape[1], rgb.shape[0])
    t0 = time.perf_counter()
    cap = _captioner(args)
    t1 = time.perf_counter()
    _say(args, f"encoding the {width}x{height} image")
    enc = cap.encode(rgb)
    t2 = time.perf_counter()
    regions = []
    for group in prompts:
        regions += cap.caption_prompts(enc, group, task=args.task, num_beams=args.num_beams,
                                       max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    t3 = time.perf_counter()
    return _finish(args, rgb, regions, {"load": t1 - t0, "encode": t2 - t1, "caption": t3 - t2}, {})


def _check_anything(args, *, demo: bool = False) -> None:
    """Anything mode's numbers (``AnythingConfig`` checks them again); the demo's within its sliders."""
    if demo:
        check.check_range(args.points_per_side, "--points-per-side", low=1, high=DEMO_MAX_POINTS_PER_SIDE)
        check.check_range(args.max_regions, "--max-regions", low=1, high=DEMO_MAX_REGIONS)
        check.check_range(args.pred_iou_thresh, "--pred-iou-thresh", low=-1, high=1)
        check.check_range(args.stability_score_thresh, "--stability-score-thresh", low=0, high=1)
        return
    check.check_range(args.points_per_side, "--points-per-side", low=1)
    check.check_range(args.points_per_batch, "--points-per-batch", low=1)
    for flag, value in (("--pred-iou-thresh", args.pred_iou_thresh),
                        ("--stability-score-thresh", args.stability_score_thresh), ("--nms-iou", args.nms_iou)):
        check.check_range(value, flag, low=-1, high=1)
    check.check_range(args.stability_score_offset, "--stability-score-offset", low=0)
    check.check_range(args.min_mask_area, "--min-mask-area", low=0)
    check.check_range(args.max_regions, "--max-regions", low=1)


def _anything_options(args, names) -> dict:
    """The anything-mode options given on the command line (the others: the checkpoint's or SAM's)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _caption_everything(args, cap, rgb, config):
    """Anything mode; an empty result's warning becomes one stderr line (its report's summary)."""
    import warnings

    from sca.app.anything import AnythingWarning, caption_everything

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=AnythingWarning)  # said below, in one line
        regions = caption_everything(cap, rgb, config, task=args.task, num_beams=args.num_beams,
                                     max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    if not regions:
        _say(args, regions.report.summary())
    return regions


ANYTHING_OPTIONS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                    "stability_score_offset", "nms_iou", "min_mask_area", "max_regions")


def run_everything(args) -> int:
    width, height = _check_inputs(args)
    _check_anything(args)
    check.check_checkpoint(args.checkpoint)
    _heavy_imports(args)

    from sca.app.anything import AnythingConfig

    config = AnythingConfig(**_anything_options(args, ANYTHING_OPTIONS))
    rgb = _decode(args)
    t0 = time.perf_counter()
    cap = _captioner(args)
    t1 = time.perf_counter()
    _say(args, f"anything mode on the {width}x{height} image: {int(config.points_per_side) ** 2} point prompts")
    regions = _caption_everything(args, cap, rgb, config)
    t2 = time.perf_counter()
    extra = {"anything": regions.report.config, "report": regions.report.to_dict()}
    return _finish(args, rgb, regions, {"load": t1 - t0, "everything": t2 - t1}, extra)


def run_demo(args) -> int:
    import importlib.util

    _check_generation(args)
    _check_anything(args, demo=True)
    check.check_device(args.device)
    check.check_checkpoint(args.checkpoint)
    check.check_port(args.host, args.port)
    if importlib.util.find_spec("gradio") is None:
        raise ValueError("the demo needs gradio, which is not installed; install it with "
                         "pip install -c requirements/constraints.txt -e '.[demo]'")
    _heavy_imports(args)
    from sca.app.anything import AnythingConfig
    from sca.app.demo import build_demo

    anything = AnythingConfig(**_anything_options(args, ("points_per_side", "pred_iou_thresh",
                                                          "stability_score_thresh", "max_regions")))
    cap = _captioner(args)
    demo = build_demo(cap, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, anything=anything)
    _say(args, f"serving on http://{args.host}:{args.port} (Ctrl+C to stop)")
    from sca.app.demo import launch

    launch(demo, host=args.host, port=args.port, block=True)
    return 0
