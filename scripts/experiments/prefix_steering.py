# ruff: noqa: E701, E702, E741, SIM115  (an experiment script kept as it was run)
"""Ad-hoc experiment (kept for reproducibility, not part of the package): can a prefix built from
given region features steer the frozen embedded LM? Figures in README "Embedded default: captions".

SAM outputs for every region of the synthetic caption set are computed once (no augmentation) and
cached; then only a prefix maker trains against the frozen LM, on random phrases of the training
regions, and the test split reports (loss, shuffle gap, distinct captions of 64, std across
regions, magnitude) every 100 steps. --variant: mixer (SCA's mixer on the updated image tokens),
mixer_raw / mixer_sum (on the encoder embedding / both), tokmlp (MLP on SAM's output tokens),
boxmlp (box coordinates), attrmlp (the true attributes, one-hot: an upper bound).

    DATA=data/generated/synthetic-captions .venv/bin/python scripts/experiments/prefix_steering.py \\
        --seg '{"name": "tiny-sam", "weights": "runs/segmenter/model"}' --variant mixer --steps 400 --cache /tmp/f.pt
"""
import argparse
import gzip
import json
import random
import time

import numpy as np
import torch

from sca.training.collate import RegionCollator, make_loader
from sca.models.captioner import SCAModel
from sca.models.config import SCAConfig
from sca.models.text import encode_captions
from sca.training.run import DataConfig, build_datasets
from sca.training.sca_task import region_inputs

DATA = __import__("os").environ.get("DATA", "data/generated/synthetic-captions")
torch.set_num_threads(int(__import__('os').environ.get('NT', '2')))
ap = argparse.ArgumentParser()
ap.add_argument("--seg", default='{"name": "tiny-sam", "weights": "runs/segmenter/model"}')
ap.add_argument("--layers", type=int, default=4); ap.add_argument("--steps", type=int, default=400)
ap.add_argument("--lr", type=float, default=2e-3); ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--variant", default="mixer"); ap.add_argument("--init_std", type=float, default=0.02)
ap.add_argument("--ls", type=float, default=0.1); ap.add_argument("--wd", type=float, default=0.01)
ap.add_argument("--cache", default=None); ap.add_argument("--lm_lr", type=float, default=0)
a = ap.parse_args()
torch.manual_seed(0); random.seed(0)
cfg = SCAConfig.from_dict({"image_encoder": json.loads(a.seg), "language_model": {"name": "causal-lm", "weights": "runs/lm/model"},
      "num_mixer_layers": a.layers, "num_caption_queries": 8, "label_smoothing": a.ls})
m = SCAModel(cfg)
if a.init_std != 0.02:
    from sca.models.mixer import init_new_module
    init_new_module(m.mixer, a.init_std)
seg = m.segmenter; tok = m.lm.require_tokenizer()
def feats(split):
    d = DataConfig(train_records=f"{DATA}/{split}.jsonl.gz", images=DATA, jitter=False, hflip=0.0)
    ds, _ = build_datasets(d, image_size=seg.image_size, pixel_mean=seg.pixel_mean, pixel_std=seg.pixel_std, regions_per_image=16, seed=0)
    ds.train = False
    coll = RegionCollator(tok, max_tokens=18)
    T, I, B, P = [], [], [], []
    for batch in make_loader(ds, coll, batch_size=16, shuffle=False, num_workers=0):
        inp = region_inputs(batch)
        with torch.no_grad():
            f = m.encode_images(batch.pixel_values)
            s = m.segment_regions(f, inp["prompts"], inp["image_index"])
        T.append(s.tokens[:, 0]); I.append(torch.stack([s.image_tokens[:, 0], f["image_embeddings"][inp["image_index"]].flatten(2).transpose(1, 2)], 1)); B.append(inp["prompts"].boxes[:, 0] / seg.image_size)
        for b in range(len(batch)): P.extend(batch.references[b])
    return torch.cat(T), torch.cat(I), torch.cat(B), P
if a.cache and __import__("os").path.exists(a.cache):
    D = torch.load(a.cache, weights_only=True)
else:
    D = {"train": feats("train"), "test": feats("test")}
    if a.cache: torch.save(D, a.cache)
Ttr, Itr, Btr, Ptr = D["train"]; Tte, Ite, Bte, Pte = D["test"]
def attr_onehot(split):
    rows = []
    for line in gzip.open(f"{DATA}/{split}.jsonl.gz", "rt"):
        r = json.loads(line)
        for g in r["regions"]:
            rows.append(g["attributes"])
    return rows
KEYS = ["colour", "shape", "size", "horizontal", "vertical", "texture"]
Atr, Ate = attr_onehot("train"), attr_onehot("test")
VOC = {k: sorted({r[k] for r in Atr + Ate}) for k in KEYS}
def onehot(rows):
    out = torch.zeros(len(rows), sum(len(v) for v in VOC.values()))
    for i, r in enumerate(rows):
        o = 0
        for k in KEYS:
            out[i, o + VOC[k].index(r[k])] = 1; o += len(VOC[k])
    return out
Otr, Ote = onehot(Atr), onehot(Ate)
assert len(Otr) == len(Ptr) and len(Ote) == len(Pte), (len(Otr), len(Ptr))
attrmlp = torch.nn.Sequential(torch.nn.Linear(Otr.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 8 * 128))
print("regions", len(Ptr), len(Pte), flush=True)
pe = seg.image_positional_embeddings().detach()
H = m.lm.hidden_size
boxmlp = torch.nn.Sequential(torch.nn.Linear(4, 128), torch.nn.GELU(), torch.nn.Linear(128, 8 * H))
tokmlp = torch.nn.Sequential(torch.nn.Linear(Ttr.shape[1] * Ttr.shape[2], 256), torch.nn.GELU(), torch.nn.Linear(256, 8 * H))
def prefix(idx, T, I, B):
    n = len(idx)
    tt = m.task_tokens(torch.arange(6, 12))[None].expand(n, -1, -1)
    if a.variant == "mixer":
        q = m.projection(m.mixer(T[idx], I[idx][:, 0], pe))
    elif a.variant == "mixer_raw":
        q = m.projection(m.mixer(T[idx], I[idx][:, 1], pe))
    elif a.variant == "mixer_sum":
        q = m.projection(m.mixer(T[idx], I[idx][:, 0] + I[idx][:, 1], pe))
    elif a.variant == "boxmlp":
        q = boxmlp(B[idx]).reshape(n, 8, H)
    elif a.variant == "attrmlp":
        q = attrmlp((Otr if T is Ttr else Ote)[idx]).reshape(n, 8, H)
    elif a.variant == "tokmlp":
        q = tokmlp(T[idx].reshape(n, -1)).reshape(n, 8, H)
    return torch.cat([tt, q], 1)
params = [p for p in list(m.mixer.parameters()) + list(m.projection.parameters()) + list(m.task_tokens.parameters()) + list(boxmlp.parameters()) + list(tokmlp.parameters()) + list(attrmlp.parameters())]
groups = [{"params": params}]
if a.lm_lr:
    for p in m.lm.parameters(): p.requires_grad_(True)
    groups.append({"params": list(m.lm.parameters()), "lr": a.lm_lr})
    params = params + list(m.lm.parameters())
opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=a.wd)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 20) * 0.5 * (1 + np.cos(np.pi * min(s, a.steps) / a.steps)))
def evaluate():
    m.eval(); g = torch.Generator().manual_seed(0)
    idx = torch.arange(len(Pte)); perm = torch.randperm(len(Pte), generator=g)
    caps = [p[0] for p in Pte]
    cb = encode_captions(tok, caps, 18)
    out = []
    with torch.no_grad():
        for order in (idx, perm):
            ls, n, _ = m._caption_loss(prefix(order, Tte, Ite, Bte), cb, False, label_smoothing=0.0)
            out.append(float(ls) / n)
        pr = prefix(idx[:64], Tte, Ite, Bte)
        g = m.lm.model.generate(inputs_embeds=pr, attention_mask=torch.ones(pr.shape[:2], dtype=torch.long), max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = [tok.decode(r, skip_special_tokens=True) for r in g.tolist()]
        q = prefix(idx, Tte, Ite, Bte)[:, 6:]
    m.train()
    return out[0], out[1] - out[0], len(set(texts)), float(q.std(0).mean()), float(q.abs().mean()), texts[:3]
t0 = time.time()
for step in range(a.steps):
    idx = torch.randint(0, len(Ptr), (a.bs,))
    caps = [random.choice(Ptr[i]) for i in idx.tolist()]
    cb = encode_captions(tok, caps, 18)
    ls, n, _ = m._caption_loss(prefix(idx, Ttr, Itr, Btr), cb, False)
    loss = ls / n
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step()
    if step % 100 == 0 or step == a.steps - 1:
        print(step, f"train {float(loss):.3f}", "test loss/gap/distinct64/std/mag", evaluate(), f"{time.time()-t0:.0f}s", flush=True)
