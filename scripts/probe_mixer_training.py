"""Can the mixer learn to read an attribute at all? Train a fresh mixer on the labels themselves.

``probe_segmenter.py`` asks what a frozen segmenter's features hold; this asks what the text
feature mixer can learn to pass on when nothing stands between it and the answer. A fresh
``TextFeatureMixer`` (the captioner's block, width and depth) reads a frozen segmenter's outputs for
every region (SAM's output tokens as queries, its updated image tokens with the image PE as keys,
exactly as in ``SCAModel``), and a linear head per attribute (colour, shape, size, 9-way place)
reads its flattened caption queries; all are trained with cross-entropy on the synthetic
generator's labels, no language model in the way. ``--mask-weight`` adds a head that decodes
the segmenter's own predicted mask, resampled to 16 x 16 inside the box, from the same queries
(binary cross-entropy): a dense, label-free target for the region's layout.

Prints, every fifth of the run, the test-split accuracy per attribute beside the accuracy on 400
fitting regions (a gap is overfitting), and the mask head's test loss when it is on.

    .venv/bin/python scripts/probe_mixer_training.py
    .venv/bin/python scripts/probe_mixer_training.py --fit-data data/generated/synthetic-weak
    .venv/bin/python scripts/probe_mixer_training.py --mask-weight 1.0
    .venv/bin/python scripts/probe_mixer_training.py --fit-data data/generated/synthetic-weak --box-frame-pe

``--box-frame-pe`` adds to the keys' image PE the PE at each token's place in the region's box, as
``SCAConfig.box_frame_pe`` does (``sca.models.captioner.box_frame_encoding``). ``--mask-token`` gives
the mixer one more token, a learned linear embedding of SAM's chosen mask in the region's box (16 x 16,
+1 / -1), as ``SCAConfig.mask_token`` does (``sca.models.captioner.mask_in_frame``); ``--mask-keys``
instead adds to each image token a learned embedding of the share of its cell inside that mask.

    .venv/bin/python scripts/probe_mixer_training.py --fit-data data/generated/synthetic-weak --box-frame-pe --mask-token
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_segmenter import region_attributes  # noqa: E402

ATTRIBUTES = ("colour", "shape", "size", "place")


@torch.no_grad()
def segment_regions(segmenter, records: str, images: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """SAM's outputs for every region of ``records`` (box prompts, no augmentation): output tokens
    [N, T, C], updated image tokens [N, h*w, C], the chosen mask inside its box [N, G*G] (0/1) and
    the share of each token's cell inside that mask [N, h*w]."""
    from sca.models.captioner import MASK_GRID, mask_in_frame
    from sca.training.collate import RegionCollator, make_loader
    from sca.training.run import DataConfig, build_datasets
    from sca.training.sca_task import region_inputs
    from sca.training.segmenter_stage import NoTextTokenizer

    data = DataConfig(train_records=records, images=images, jitter=False, hflip=0.0)
    dataset, _ = build_datasets(data, image_size=segmenter.image_size, pixel_mean=segmenter.pixel_mean,
                                pixel_std=segmenter.pixel_std, regions_per_image=64, seed=0)
    dataset.train = False  # every region, no sampling
    parts: dict[str, list[torch.Tensor]] = {"tokens": [], "image_tokens": [], "mask": [], "frames": [], "in_mask": []}
    ids: list[str] = []
    for batch in make_loader(dataset, RegionCollator(NoTextTokenizer()), batch_size=16, shuffle=False, num_workers=0):
        inputs = region_inputs(batch)
        index = inputs["image_index"]
        encoded = {k: v[index] for k, v in segmenter.encode(batch.pixel_values).items()}
        out = segmenter.decode(encoded, inputs["prompts"], multimask_output=True)
        n = len(index)
        parts["tokens"].append(out.tokens[:, 0])
        parts["image_tokens"].append(out.image_tokens[:, 0])
        frames = inputs["prompts"].boxes[:, 0] / segmenter.image_size
        parts["frames"].append(frames)
        parts["mask"].append((mask_in_frame(out.masks[:, 0], out.iou_scores[:, 0], frames, MASK_GRID) > 0).float())
        logits = out.masks[:, 0][torch.arange(n), out.iou_scores[:, 0].argmax(1)][:, None].float()
        side = int(out.image_tokens.shape[2] ** 0.5)
        parts["in_mask"].append(F.adaptive_avg_pool2d(torch.sigmoid(logits), side).reshape(n, -1))
        for rids in batch.region_ids:
            ids.extend(rids)
    return {k: torch.cat(v).float() for k, v in parts.items()}, ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segmenter", default='{"name": "tiny-sam", "weights": "runs/segmenter/model"}',
                    help="image-encoder registry spec as JSON")
    ap.add_argument("--data", default="data/generated/synthetic-captions", help="synthetic set scored on (test split)")
    ap.add_argument("--fit-data", default=None, help="synthetic set trained on (train split; default: --data)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=56, help="regions a step (the fine-tuning stage's ~56)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--label-weight", type=float, default=1.0, help="weight of the attribute cross-entropies")
    ap.add_argument("--mask-weight", type=float, default=0.0, help="weight of the in-box mask head (0: off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--box-frame-pe", action="store_true", help="keys also carry the PE in the region's box frame")
    ap.add_argument("--mask-keys", action="store_true", help="keys also carry a learned embedding of SAM's mask per token")
    ap.add_argument("--mask-token", action="store_true", help="one more SAM token: a learned embedding of SAM's mask in its box")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.steps < 5:
        raise SystemExit(f"--steps must be >= 5, got {args.steps}")

    from sca.models import load_registries
    from sca.models.captioner import MASK_GRID, box_frame_encoding
    from sca.models.mixer import TextFeatureMixer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.time()
    segmenter = load_registries()[0].build(**json.loads(args.segmenter)).eval()
    fit_data = args.fit_data or args.data
    fit, fit_ids = segment_regions(segmenter, f"{fit_data}/train.jsonl.gz", fit_data)
    test, test_ids = segment_regions(segmenter, f"{args.data}/test.jsonl.gz", args.data)
    attrs = {**region_attributes(f"{fit_data}/train.jsonl.gz"), **region_attributes(f"{args.data}/test.jsonl.gz")}
    vocab = {a: sorted({attrs[i][a] for i in fit_ids}) for a in ATTRIBUTES}
    missing = {a: sorted({attrs[i][a] for i in test_ids} - set(vocab[a])) for a in ATTRIBUTES}
    if any(missing.values()):
        raise SystemExit(f"test labels never seen in fitting: {missing}")
    y_fit = torch.tensor([[vocab[a].index(attrs[i][a]) for a in ATTRIBUTES] for i in fit_ids])
    y_test = torch.tensor([[vocab[a].index(attrs[i][a]) for a in ATTRIBUTES] for i in test_ids])

    block = segmenter.mixer_block_config()
    width = block["hidden_size"]
    mixer = TextFeatureMixer(hidden_size=width, num_layers=args.layers, num_queries=args.queries,
                             num_attention_heads=block["num_attention_heads"], mlp_dim=block["mlp_dim"],
                             attention_downsample_rate=block["attention_downsample_rate"])
    heads = torch.nn.ModuleList([torch.nn.Linear(args.queries * width, len(vocab[a])) for a in ATTRIBUTES])
    mask_head = torch.nn.Linear(args.queries * width, MASK_GRID * MASK_GRID)
    mask_embed = torch.nn.Linear(1, width)
    torch.nn.init.normal_(mask_embed.weight, std=0.02)
    torch.nn.init.zeros_(mask_embed.bias)
    mask_token = torch.nn.Linear(MASK_GRID * MASK_GRID, width)
    params = [*mixer.parameters(), *heads.parameters(), *mask_head.parameters(), *mask_embed.parameters(),
              *mask_token.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.02)
    pe = segmenter.image_positional_embeddings().detach().float()

    def predict(rows: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        keys_pe = pe
        if args.box_frame_pe:
            with torch.no_grad():
                keys_pe = pe + box_frame_encoding(segmenter, rows["frames"], pe.shape[-2:]).float()
        keys = rows["image_tokens"]
        if args.mask_keys:
            keys = keys + mask_embed(rows["in_mask"][..., None])
        extra = mask_token(rows["mask"] * 2 - 1)[:, None] if args.mask_token else None
        queries = mixer(rows["tokens"], keys, keys_pe, extra).flatten(1)
        return [head(queries) for head in heads], mask_head(queries)

    @torch.no_grad()
    def accuracy(rows: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[dict[str, float], float]:
        mixer.eval()
        logits, masks = predict(rows)
        mixer.train()
        acc = {a: float((logits[k].argmax(1) == labels[:, k]).float().mean()) for k, a in enumerate(ATTRIBUTES)}
        return acc, float(F.binary_cross_entropy_with_logits(masks, rows["mask"]))

    print(f"regions: {len(fit_ids)} to fit ({fit_data}), {len(test_ids)} to score ({args.data}); "
          f"{args.layers}-layer mixer, {args.queries} queries, width {width}; label weight {args.label_weight}, "
          f"mask weight {args.mask_weight}; box-frame PE {args.box_frame_pe}; features in {time.time() - start:.0f} s", flush=True)
    print("| step | " + " | ".join(f"{a} test / fit" for a in ATTRIBUTES) + " | mask BCE test |")
    print("|---" * (len(ATTRIBUTES) + 2) + "|", flush=True)
    seen = {k: v[:400] for k, v in fit.items()}
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(fit_ids), (args.batch,), generator=generator)
        logits, masks = predict({k: v[idx] for k, v in fit.items()})
        loss = args.label_weight * sum(F.cross_entropy(l, y_fit[idx, k]) for k, l in enumerate(logits))
        if args.mask_weight > 0:
            loss = loss + args.mask_weight * F.binary_cross_entropy_with_logits(masks, fit["mask"][idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % (args.steps // 5) == 0 or step == args.steps:
            on_test, bce = accuracy(test, y_test)
            on_fit, _ = accuracy(seen, y_fit[:400])
            cells = " | ".join(f"{on_test[a]:.2f} / {on_fit[a]:.2f}" for a in ATTRIBUTES)
            print(f"| {step} | {cells} | {bce:.3f} |", flush=True)
    print(f"done in {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
