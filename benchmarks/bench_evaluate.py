"""Evaluation throughput: generation regions/s and scoring regions/s, measured separately.

    .venv/bin/python benchmarks/bench_evaluate.py                          # tiny model, 16 synthetic images
    .venv/bin/python benchmarks/bench_evaluate.py --images 32 --num-beams 3 --max-new-tokens 20 --repeat 50

Generation: a tiny SCA model (``TINY_CONFIG``: 64-px tiny SAM, tiny GPT-2; random weights, so
captions run to ``--max-new-tokens``) over a synthetic test split through the real DataLoader,
collator and ``predict_to_file``. Scoring: ``score_captions`` (PTB tokenizer + BLEU/METEOR/ROUGE-L/
CIDEr-D) on those predictions, replicated ``--repeat`` times under distinct keys to see how scoring
scales; once cold (METEOR's JVM start included, as one ``sca evaluate`` pays it) and once warm
(a METEOR process already running).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sca.data.synthetic import SyntheticConfig, generate_synthetic
from sca.evaluation.metrics import MeteorScorer, score_captions
from sca.evaluation.predict import GenerationSettings, predict_to_file, read_predictions
from sca.evaluation.run import eval_dataset
from sca.models.captioner import SCAModel
from sca.models.config import TINY_CONFIG
from sca.training.collate import RegionCollator, make_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch")
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--region-chunk-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeat", type=int, default=20, help="replicate the predictions for scoring")
    parser.add_argument("--metrics", nargs="+", default=["BLEU", "METEOR", "ROUGE-L", "CIDEr-D"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SCAModel(TINY_CONFIG).eval()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate_synthetic(root, SyntheticConfig(splits={"test": args.images}, image_size=(96, 160)))
        dataset = eval_dataset(model, root / "test.jsonl.gz", root)
        loader = make_loader(dataset, RegionCollator(model.lm.require_tokenizer()), batch_size=args.batch_size,
                             shuffle=False, num_workers=args.workers)
        settings = GenerationSettings(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                                      region_chunk_size=args.region_chunk_size)
        print(f"tiny SCA model ({model.segmenter.image_size}px tiny SAM, tiny GPT-2), {args.images} synthetic images, "
              f"beams {args.num_beams}, {args.max_new_tokens} new tokens, threads {torch.get_num_threads()}")
        warm = predict_to_file(model, loader, Path(tmp) / "warm.jsonl", protocol="synthetic-captions", split="test",
                               settings=GenerationSettings(num_beams=1, max_new_tokens=2), progress=False)
        stats = predict_to_file(model, loader, Path(tmp) / "p.jsonl", protocol="synthetic-captions", split="test",
                                settings=settings, progress=False)
        print(f"generation: {stats.num_regions} regions in {stats.seconds:.2f} s = {stats.regions_per_second:.1f} "
              f"regions/s ({stats.model_regions_per_second:.1f} inside generate; warm-up pass "
              f"{warm.regions_per_second:.1f})")
        pred = read_predictions(Path(tmp) / "p.jsonl")
    cands = {f"{r}:{k}": c for r in range(args.repeat) for k, c in pred.candidates().items()}
    refs = {f"{r}:{k}": v for r in range(args.repeat) for k, v in pred.references().items()}
    t0 = time.perf_counter()
    result = score_captions(cands, refs, metrics=args.metrics)
    cold = time.perf_counter() - t0
    print(f"scoring, cold ({', '.join(result['raw'])}; METEOR JVM start included): {len(refs)} regions in "
          f"{cold:.2f} s = {len(refs) / cold:.1f} regions/s")
    if "METEOR" in result["raw"]:
        with MeteorScorer() as meteor:
            score_captions(dict(list(cands.items())[:1]), dict(list(refs.items())[:1]), metrics=["METEOR"],
                           meteor=meteor)  # waits for the JVM
            t0 = time.perf_counter()
            score_captions(cands, refs, metrics=args.metrics, meteor=meteor)
            hot = time.perf_counter() - t0
        print(f"scoring, warm METEOR: {len(refs)} regions in {hot:.2f} s = {len(refs) / hot:.1f} regions/s")


if __name__ == "__main__":
    main()
