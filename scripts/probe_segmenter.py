"""What do a segmenter's features say about a region? Linear probes on the synthetic caption set.

For every region of the synthetic caption set (train split to fit, test split to score), features
from a frozen segmenter are probed with a logistic regression for the attributes the captions name
(colour, shape, size, horizontal/vertical place, texture):

- ``tokens``: SAM's output tokens for the box prompt, flattened (what the mixer's queries see);
- ``image_tokens``: SAM's updated image tokens, averaged inside the predicted mask (the mixer's keys);
- ``embedding``: the image encoder's embedding, averaged inside the box;
- ``box``: the four box coordinates (position and size only);
- ``box+extent``: the box and the image's extent inside the padded input square (what the box-bin
  baseline knows: a place is a third of the image, not of the square);
- ``pixels``: the mean normalised colour inside the box (no model at all);
- ``tokens_roi``: SAM's updated image tokens resampled to 4 x 4 cells inside the box (RoIAlign, the
  read-out of the paper's ROIAlign ablation): where the region's layout lives;
- ``predicted_mask`` / ``true_mask``: SAM's chosen mask / the ground-truth mask, resampled to 16 x 16
  inside the box: how much of the shape SAM's own output and the ideal mask hold;
- ``mixer <checkpoint>``: with ``--captioner``, the caption queries a captioner's mixer makes of SAM's
  outputs (``random`` builds an untrained mixer), flattened: what reaches the language model.

    .venv/bin/python scripts/probe_segmenter.py --segmenter '{"name": "tiny-sam", "weights": "runs/segmenter/model"}'
    .venv/bin/python scripts/probe_segmenter.py --captioner random --captioner runs/pretrain/model \
        --captioner runs/finetune/model --features tokens mixer

prints one row per attribute and one column per feature and probe (logistic regression; ``--mlp``
adds a one-hidden-layer MLP): accuracy on the test split beside the majority-class rate.
"""

from __future__ import annotations

import argparse
import gzip
import json

import numpy as np
import torch
import torch.nn.functional as F

ATTRIBUTES = ("colour", "shape", "size", "horizontal", "vertical", "place", "texture")
FEATURES = ("tokens", "image_tokens", "embedding", "box", "box+extent", "pixels", "tokens_roi", "predicted_mask",
            "true_mask")


def region_attributes(path: str) -> dict[str, dict]:
    out = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            for region in json.loads(line)["regions"]:
                attrs = dict(region.get("attributes") or {})
                if "vertical" in attrs:
                    attrs["place"] = f"{attrs['vertical']} {attrs['horizontal']}"
                out[region["region_id"]] = attrs
    return out


@torch.no_grad()
def region_features(segmenter, records: str, images: str, captioners=()) -> tuple[dict[str, np.ndarray], list[str]]:
    """Features of every region of ``records`` (no augmentation) from a frozen ``segmenter``;
    ``captioners``: (name, SCAModel) pairs whose mixers read the same SAM outputs."""
    from torchvision.ops import roi_align

    from sca.models.segmenters.prompts import SegmenterOutput
    from sca.training.collate import RegionCollator, make_loader
    from sca.training.run import DataConfig, build_datasets
    from sca.training.sca_task import region_inputs
    from sca.training.segmenter_stage import NoTextTokenizer

    data = DataConfig(train_records=records, images=images, jitter=False, hflip=0.0, load_masks=True)
    dataset, _ = build_datasets(data, image_size=segmenter.image_size, pixel_mean=segmenter.pixel_mean,
                                pixel_std=segmenter.pixel_std, regions_per_image=64, seed=0)
    dataset.train = False  # every region, no sampling
    feats: dict[str, list] = {k: [] for k in FEATURES}
    for name, _ in captioners:
        feats[f"mixer {name}"] = []
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
        # the image's content width and height in the square: original (w, h) x scale (sx, sy)
        extent = (batch.original_sizes.flip(1).float() * batch.scales)[index] / segmenter.image_size
        feats["box+extent"].append(torch.cat([boxes / segmenter.image_size, extent], 1))
        rois = torch.cat([torch.arange(n, dtype=boxes.dtype)[:, None], boxes * side / segmenter.image_size], 1)
        grid = image_tokens.transpose(1, 2).reshape(n, -1, side, side)
        feats["tokens_roi"].append(roi_align(grid, rois, output_size=4, aligned=True).reshape(n, -1))
        low = out.masks[:, 0][torch.arange(n), best][:, None].float()  # [n, 1, 4h, 4w] logits
        rois_low = torch.cat([rois[:, :1], boxes * low.shape[-1] / segmenter.image_size], 1)
        feats["predicted_mask"].append((roi_align(low, rois_low, output_size=16, aligned=True) > 0).float().reshape(n, -1))
        true = batch.masks[batch.region_mask][:, None].float()
        rois_px = torch.cat([rois[:, :1], boxes], 1)
        feats["true_mask"].append(roi_align(true, rois_px, output_size=16, aligned=True).reshape(n, -1))
        seg = SegmenterOutput(masks=None, iou_scores=out.iou_scores, tokens=out.tokens, image_tokens=out.image_tokens)
        for name, captioner in captioners:
            feats[f"mixer {name}"].append(captioner._mix(seg, inputs["prompts"]).reshape(n, -1))
        for rids in batch.region_ids:
            ids.extend(rids)
    return {k: torch.cat(v).float().numpy() for k, v in feats.items()}, ids


def load_captioner(spec: str, segmenter_spec: dict, layers: int):
    """A trained SCA checkpoint folder, or ``random`` (an untrained mixer of ``layers`` layers)."""
    from sca.models.captioner import SCAModel
    from sca.models.config import SCAConfig

    if spec == "random":
        torch.manual_seed(0)
        config = SCAConfig.from_dict({"image_encoder": segmenter_spec, "language_model": {"name": "tiny-gpt2"},
                                      "num_mixer_layers": layers})
        return SCAModel(config).eval()
    return SCAModel.from_pretrained(spec).eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segmenter", default='{"name": "tiny-sam", "weights": "runs/segmenter/model"}',
                    help="image-encoder registry spec as JSON")
    ap.add_argument("--data", default="data/generated/synthetic-captions",
                    help="a synthetic caption set (train.jsonl.gz, test.jsonl.gz, images/)")
    ap.add_argument("--fit-data", default=None,
                    help="fit the probes on this set's train split instead (e.g. data/generated/synthetic-weak)")
    ap.add_argument("--features", nargs="*", default=None, help=f"columns to show (default: all); of {FEATURES} and mixer")
    ap.add_argument("--captioner", action="append", default=[],
                    help="a captioner checkpoint folder (or 'random') whose mixer output is probed; repeatable")
    ap.add_argument("--mixer-layers", type=int, default=2, help="layers of the 'random' mixer")
    ap.add_argument("--mlp", action="store_true", help="also probe with a one-hidden-layer MLP (256 units)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from sca.models import load_registries

    torch.set_num_threads(args.threads)
    spec = json.loads(args.segmenter)
    segmenter = load_registries()[0].build(**spec).eval()
    captioners = [(c, load_captioner(c, spec, args.mixer_layers)) for c in args.captioner]
    fit_data = args.fit_data or args.data
    fit, fit_ids = region_features(segmenter, f"{fit_data}/train.jsonl.gz", fit_data, captioners)
    score, score_ids = region_features(segmenter, f"{args.data}/test.jsonl.gz", args.data, captioners)
    attrs = {**region_attributes(f"{fit_data}/train.jsonl.gz"), **region_attributes(f"{args.data}/test.jsonl.gz")}
    wanted = args.features
    columns = [k for k in fit if wanted is None or k in wanted or (k.startswith("mixer") and "mixer" in wanted)]
    probes = [("", lambda: LogisticRegression(max_iter=3000))]
    if args.mlp:
        probes.append((" (MLP)", lambda: MLPClassifier((256,), max_iter=500, random_state=0)))
    print(f"regions: {len(fit_ids)} to fit ({fit_data}), {len(score_ids)} to score ({args.data}); "
          f"segmenter {args.segmenter}")
    heads = [f"{k}{suffix}" for k in columns for suffix, _ in probes]
    print("| attribute | majority | " + " | ".join(heads) + " |")
    print("|---" * (len(heads) + 2) + "|")
    for name in ATTRIBUTES:
        y_fit = [attrs[i].get(name) for i in fit_ids]
        y_score = [attrs[i].get(name) for i in score_ids]
        if None in y_fit or None in y_score:
            print(f"| {name} | (not every region names it) |", flush=True)
            continue
        majority = max(set(y_fit), key=y_fit.count)
        row = [f"{np.mean([y == majority for y in y_score]):.2f}"]
        for key in columns:
            for _, make in probes:
                row.append(f"{make().fit(fit[key], y_fit).score(score[key], y_score):.2f}")
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
