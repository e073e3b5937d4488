"""What do a segmenter's features say about a region? Linear probes on the synthetic caption set.

For every region of the synthetic caption set (train split to fit, test split to score), features
from a frozen segmenter are probed with a logistic regression for the attributes the captions name
(colour, shape, size, horizontal/vertical place, texture):

- ``tokens``: SAM's output tokens for the box prompt, flattened (what the mixer's queries see);
- ``image_tokens``: SAM's updated image tokens, averaged inside the predicted mask (the mixer's keys);
- ``embedding``: the image encoder's embedding, averaged inside the box;
- ``box``: the four box coordinates (position and size only);
- ``pixels``: the mean normalised colour inside the box (no model at all).

    .venv/bin/python scripts/probe_segmenter.py --segmenter '{"name": "tiny-sam", "weights": "runs/segmenter/model"}'

prints one row per attribute: test accuracy per feature beside the majority-class rate.
"""

from __future__ import annotations

import argparse
import gzip
import json

import numpy as np
import torch
import torch.nn.functional as F

ATTRIBUTES = ("colour", "shape", "size", "horizontal", "vertical", "texture")


def region_attributes(path: str) -> dict[str, dict]:
    out = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            for region in json.loads(line)["regions"]:
                out[region["region_id"]] = region.get("attributes") or {}
    return out


@torch.no_grad()
def region_features(segmenter, records: str, images: str) -> tuple[dict[str, np.ndarray], list[str]]:
    from sca.training.collate import RegionCollator, make_loader
    from sca.training.run import DataConfig, build_datasets
    from sca.training.sca_task import region_inputs
    from sca.training.segmenter_stage import NoTextTokenizer

    data = DataConfig(train_records=records, images=images, jitter=False, hflip=0.0)
    dataset, _ = build_datasets(data, image_size=segmenter.image_size, pixel_mean=segmenter.pixel_mean,
                                pixel_std=segmenter.pixel_std, regions_per_image=64, seed=0)
    dataset.train = False  # every region, no sampling
    feats: dict[str, list] = {k: [] for k in ("tokens", "image_tokens", "embedding", "box", "pixels")}
    ids: list[str] = []
    for batch in make_loader(dataset, RegionCollator(NoTextTokenizer()), batch_size=16, shuffle=False, num_workers=0):
        inputs = region_inputs(batch)
        index, boxes = inputs["image_index"], inputs["prompts"].boxes[:, 0]
        encoded = segmenter.encode(batch.pixel_values)
        region_encoded = {k: v[index] for k, v in encoded.items()}
        out = segmenter.decode(region_encoded, inputs["prompts"], multimask_output=True)
        n = len(index)
        feats["tokens"].append(out.tokens[:, 0].reshape(n, -1))
        best = out.iou_scores[:, 0].argmax(1)
        mask = (out.masks[:, 0][torch.arange(n), best] > 0).float()
        image_tokens = out.image_tokens[:, 0]  # [n, h*w, C]
        side = int(image_tokens.shape[1] ** 0.5)
        weight = F.interpolate(mask[:, None], size=(side, side), mode="area").reshape(n, -1, 1)
        feats["image_tokens"].append((image_tokens * weight).sum(1) / weight.sum(1).clamp(min=1e-6))
        emb = region_encoded["image_embeddings"]
        cell = (boxes * emb.shape[-1] / segmenter.image_size).long().clamp(0, emb.shape[-1] - 1)
        pixels = batch.pixel_values[index]
        pix = boxes.long()
        feats["embedding"].append(torch.stack([emb[i, :, cell[i, 1]:cell[i, 3] + 1, cell[i, 0]:cell[i, 2] + 1].mean((1, 2))
                                               for i in range(n)]))
        feats["pixels"].append(torch.stack([pixels[i, :, pix[i, 1]:pix[i, 3] + 1, pix[i, 0]:pix[i, 2] + 1].mean((1, 2))
                                            for i in range(n)]))
        feats["box"].append(boxes / segmenter.image_size)
        for rids in batch.region_ids:
            ids.extend(rids)
    return {k: torch.cat(v).float().numpy() for k, v in feats.items()}, ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segmenter", default='{"name": "tiny-sam", "weights": "runs/segmenter/model"}',
                    help="image-encoder registry spec as JSON")
    ap.add_argument("--data", default="data/generated/synthetic-captions",
                    help="a synthetic caption set (train.jsonl.gz, test.jsonl.gz, images/)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    from sca.models import load_registries

    torch.set_num_threads(args.threads)
    spec = json.loads(args.segmenter)
    segmenter = load_registries()[0].build(spec.pop("name"), **spec).eval()
    fit, fit_ids = region_features(segmenter, f"{args.data}/train.jsonl.gz", args.data)
    score, score_ids = region_features(segmenter, f"{args.data}/test.jsonl.gz", args.data)
    attrs = {**region_attributes(f"{args.data}/train.jsonl.gz"), **region_attributes(f"{args.data}/test.jsonl.gz")}
    print(f"regions: {len(fit_ids)} to fit, {len(score_ids)} to score; segmenter {args.segmenter}")
    print("| attribute | majority | " + " | ".join(fit) + " |")
    print("|---" * (len(fit) + 2) + "|")
    for name in ATTRIBUTES:
        y_fit = [attrs[i][name] for i in fit_ids]
        y_score = [attrs[i][name] for i in score_ids]
        majority = max(set(y_fit), key=y_fit.count)
        row = [f"{np.mean([y == majority for y in y_score]):.2f}"]
        for key in fit:
            clf = LogisticRegression(max_iter=2000).fit(fit[key], y_fit)
            row.append(f"{clf.score(score[key], y_score):.2f}")
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
