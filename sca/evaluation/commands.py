"""``sca evaluate``: caption every region of an evaluation split, score it beside trivial baselines.

    sca evaluate --checkpoint runs/tiny --records data/synthetic/test.jsonl.gz --images data/synthetic \\
        --train-records data/synthetic/train.jsonl.gz --out runs/tiny/eval-test

writes ``predictions.jsonl``, ``metrics.json`` and ``figure.png`` in ``--out`` and prints the table.
``--predictions FILE`` re-scores an existing predictions file instead of generating (no model needed).
The protocol defaults to the one of the records' source; a different one is refused.
"""

from __future__ import annotations

# Light imports only: ``sca --help`` imports this module (sca.evaluation.baselines pulls in torch).
from sca.evaluation.metrics import METRICS
from sca.evaluation.protocols import protocol_names


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="caption every region of an evaluation split and score it (+ baselines)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="SCA checkpoint folder or hub id (not needed with --predictions)")
    p.add_argument("--records", required=True, help="evaluation region records (JSON Lines, .gz ok)")
    p.add_argument("--images", help="image root the records' file names are relative to")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--protocol", choices=protocol_names(), help="default: from the records' source")
    p.add_argument("--split", help="default: from the records")
    p.add_argument("--train-records", help="training records, for the baselines (strongly advised)")
    p.add_argument("--predictions", help="score this predictions file instead of generating")
    p.add_argument("--num-beams", type=int, default=3, help="beam size (paper: 3)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="(paper: 20)")
    p.add_argument("--region-chunk-size", type=int, default=32, help="regions per SAM decoder + mixer call")
    p.add_argument("--lm-batch-size", type=int, default=64, help="regions per LM generate call")
    p.add_argument("--task", choices=["caption", "recognition"], help="task token for every region "
                   "(default: each region's own task)")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--limit", type=int, help="only the first N images (a quick look; not a result)")
    p.add_argument("--metrics", nargs="+", default=list(METRICS), help=f"any of {list(METRICS)}")
    p.add_argument("--baselines", nargs="*", default=None,
                   help="baselines to score beside the model (default: all of sca.evaluation.baselines.BASELINES; "
                        "none: the flag alone)")
    p.add_argument("--figure-images", type=int, default=4, help="images in figure.png (0: no figure)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _records(path: str, limit: int | None):
    from sca.data.io import RecordStore

    store = RecordStore.load(path)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        return store[:limit]
    return store


def run(args) -> int:
    from sca.evaluation.baselines import BASELINES, evaluate_run
    from sca.evaluation.predict import GenerationSettings

    if args.baselines is None:
        args.baselines = list(BASELINES)
    unknown = [b for b in args.baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown {unknown}; use any of {list(BASELINES)}")

    settings = {"records": args.records, "images": args.images, "checkpoint": args.checkpoint,
                "train_records": args.train_records, "limit": args.limit}
    if args.predictions:
        from sca.evaluation.run import infer_protocol

        records = _records(args.records, args.limit)
        protocol, _ = infer_protocol(records, args.protocol, args.split)
        result = evaluate_run(args.predictions, args.out, protocol=protocol, train_records=args.train_records,
                              eval_records=records, metrics=args.metrics, baselines=args.baselines,
                              settings={**settings, "predictions_from": args.predictions})
    else:
        if not args.checkpoint or not args.images:
            raise ValueError("generating predictions needs --checkpoint and --images (or give --predictions)")
        import torch

        from sca.evaluation.run import evaluate_model
        from sca.models.captioner import SCAModel

        model = SCAModel.from_pretrained(args.checkpoint).to(torch.device(args.device)).eval()
        generation = GenerationSettings(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                                        region_chunk_size=args.region_chunk_size,
                                        lm_batch_size=args.lm_batch_size, task=args.task)
        result = evaluate_model(model, _records(args.records, args.limit), args.images, args.out,
                                protocol=args.protocol, split=args.split, train_records=args.train_records,
                                generation=generation, batch_size=args.batch_size, num_workers=args.workers,
                                metrics=args.metrics, baselines=args.baselines, figure_images=args.figure_images,
                                progress=not args.no_progress, settings=settings)
    print(format_table(result))
    return 0


def format_table(result: dict) -> str:
    """metrics.json -> a plain table: one row per system, one column per metric (x100)."""
    rows = {"model": result["model"], **result["baselines"]}
    names = list(result["model"]["scores"])
    lines = [f"{result['protocol']} / {result['split']}: {result['num_regions']} regions, "
             f"{result['num_images']} images (tokenizer: {result['model']['tokenizer']})"]
    lines.append(f"{'system':<26}" + "".join(f"{n:>9}" for n in names))
    for system, r in rows.items():
        lines.append(f"{system:<26}" + "".join(f"{r['scores'].get(n, float('nan')):>9.2f}" for n in names))
    for metric, why in result["model"]["skipped"].items():
        lines.append(f"{metric}: {why}")
    for name, why in result.get("baselines_skipped", {}).items():
        lines.append(f"baseline {name}: {why}")
    if not result["model"]["comparable"]:
        lines.append(f"WARNING: {result['model'].get('note', 'not comparable')}")
    pred = result["settings"].get("prediction")
    if pred:
        lines.append(f"generation: {pred['num_regions']} regions in {pred['seconds']:.1f} s = "
                     f"{pred['regions_per_second']:.2f} regions/s")
    lines.append(f"scoring: {result['settings']['scoring_seconds']:.1f} s for {result['settings']['scored_systems']} "
                 f"systems = {result['num_regions'] / max(result['settings']['scoring_seconds'], 1e-9):.1f} regions/s")
    return "\n".join(lines)

