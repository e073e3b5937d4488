"""``sca data``: make, check and look at region-record data.

    sca data generate --flavour captions --out data/generated/synthetic-captions --train 2000 --val 200 --test 200
    sca data mini --out data/generated/mini
    sca data check data/generated/mini/mini.jsonl --image-root data/generated/mini --images
    sca data verify data/generated/synthetic-captions
    sca data show data/generated/mini/mini.jsonl --image-root data/generated/mini --index 0 --out mini0.png
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("data", help="generate the synthetic and mini sets; check, verify and draw records")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    g = data_sub.add_parser("generate", help="write a seeded synthetic region-caption set (images, records, manifest)")
    g.add_argument("--out", required=True, help="output folder (replaced if it holds an earlier generation)")
    g.add_argument("--flavour", choices=["captions", "weak"], default="captions")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train", type=int, default=200, help="train images")
    g.add_argument("--val", type=int, default=20, help="val images")
    g.add_argument("--test", type=int, default=20, help="test images")
    g.add_argument("--min-size", type=int, default=96, help="smallest image side")
    g.add_argument("--max-size", type=int, default=160, help="largest image side")
    g.add_argument("--min-objects", type=int, default=2)
    g.add_argument("--max-objects", type=int, default=5)
    g.add_argument("--phrases", type=int, default=3, help="references per region (captions flavour)")
    g.add_argument("--task", choices=["caption", "recognition"], help="region task (default by flavour)")
    g.add_argument("--categories", choices=["shape", "colour-shape"], default="shape",
                   help="the weak flavour's category names: 'circle' or 'red circle'")
    g.add_argument("--workers", type=int, default=2, help="processes rendering images")
    g.add_argument("--no-gzip", action="store_true", help="write .jsonl instead of .jsonl.gz")
    g.set_defaults(func=run_generate)

    m = data_sub.add_parser("mini", help="write the real-image mini set (package images + hand annotations)")
    m.add_argument("--out", required=True)
    m.set_defaults(func=run_mini)

    c = data_sub.add_parser("check", help="report bad boxes, captions (and images) of a records file")
    c.add_argument("records", help="a .jsonl or .jsonl.gz records file")
    c.add_argument("--image-root", default=None, help="folder the records' file_name is relative to")
    c.add_argument("--images", action="store_true", help="also decode every image (needs --image-root)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--strict", action="store_true", help="exit 1 if anything would be dropped")
    c.add_argument("--use", choices=("train", "eval"), default="train",
                   help="check as training reads the records (zero-area boxes dropped; default) or as "
                        "evaluation does (every region kept and scored)")
    c.set_defaults(func=run_check)

    v = data_sub.add_parser("verify", help="check a data folder's files against its manifest.json")
    v.add_argument("root")
    v.set_defaults(func=run_verify)

    s = data_sub.add_parser("show", help="draw one record (image, boxes, masks, captions) to a PNG")
    s.add_argument("records")
    s.add_argument("--image-root", required=True)
    s.add_argument("--index", type=int, default=0)
    s.add_argument("--out", required=True, help="PNG path")
    s.set_defaults(func=run_show)


def run_generate(args) -> int:
    from sca.data.synthetic import SyntheticConfig, generate_synthetic

    cfg = SyntheticConfig(flavour=args.flavour, seed=args.seed,
                          splits={"train": args.train, "val": args.val, "test": args.test},
                          image_size=(args.min_size, args.max_size), objects=(args.min_objects, args.max_objects),
                          phrases=args.phrases, task=args.task, categories=args.categories)
    start = time.perf_counter()
    manifest = generate_synthetic(args.out, cfg, workers=args.workers, compress=not args.no_gzip)
    took = time.perf_counter() - start
    t = manifest["totals"]
    print(f"wrote {t['images']} images, {t['regions']} regions to {args.out} in {took:.1f} s "
          f"({t['images'] / max(took, 1e-9):.0f} images/s); images sha256 {manifest['images']['sha256'][:16]}")
    return 0


def run_mini(args) -> int:
    from sca.data.mini import write_mini

    manifest = write_mini(args.out)
    t = manifest["totals"]
    print(f"wrote {t['images']} images, {t['regions']} regions, {t['masks']} masks to {args.out}")
    return 0


def run_check(args) -> int:
    from sca.data.dataset import RegionDataset

    if args.images and not args.image_root:
        raise ValueError("--images needs --image-root")
    ds = RegionDataset(args.records, args.image_root or ".", train=args.use == "train")
    report = ds.check(images=args.images)
    print(report.to_json() if args.json else f"{len(ds)} images checked\n{report}")
    dropped = report.count(action="dropped-image") + report.count(action="dropped-region")
    return 1 if args.strict and dropped else 0


def run_verify(args) -> int:
    from sca.data.io import verify_manifest

    problems = verify_manifest(args.root)
    for p in problems:
        print(p)
    print(json.dumps({"root": args.root, "ok": not problems, "problems": len(problems)}))
    return 1 if problems else 0


def run_show(args) -> int:
    from sca.data.io import RecordStore
    from sca.data.viz import draw_record

    store = RecordStore.load(args.records)
    if not 0 <= args.index < len(store):
        raise ValueError(f"--index {args.index} is outside the {len(store)} records of {args.records}")
    ax = draw_record(store[args.index], image_root=args.image_root)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(args.out)
    print(f"drew record {args.index} to {args.out}")
    return 0
