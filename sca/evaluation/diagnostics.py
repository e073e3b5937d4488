"""Does the captioner look at its region? A prompt-shuffle test.

A conditional LM with a strong text prior can learn to ignore its condition: the visual prefix then
acts as a fixed soft prompt and every region gets the same caption, while the loss still falls (the
LM prior is learnt) and CIDEr-D still beats a most-frequent-caption baseline (generic words score).
Two numbers tell this apart from real region captioning:

- ``loss_gap``: teacher-forced caption loss (per token, no label smoothing) with every region's own
  prompt versus the same captions with the prompts permuted among the regions of the batch
  (images follow their prompts). A captioner that uses its region scores clearly worse shuffled
  (gap > 0); one that ignores it shows a gap of ~0.
- ``distinct_candidates``: share of distinct generated captions among the regions (from the
  predictions file), ~0 when every region gets the same text.

On the synthetic sets, whose records keep what the generator drew, ``attribute_accuracy`` says
which facts a caption gets right: the share of captions that name the region's colour, shape and
size (exactly one word of that kind, and the right one) and state its place phrase.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["attribute_accuracy", "distinct_share", "prompt_shuffle_gap"]


@torch.no_grad()
def prompt_shuffle_gap(model, loader, *, max_batches: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Loss per caption token with true and with shuffled prompts over ``loader`` (RegionBatches with
    captions, e.g. an eval loader); returns {loss_true, loss_shuffled, loss_gap, num_tokens, num_regions}.
    Batches with fewer than two regions are skipped (nothing to shuffle)."""
    from sca.training.sca_task import region_inputs

    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    true_sum = shuf_sum = 0.0
    tokens = regions = 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            if batch.num_regions < 2 or batch.captions is None:
                continue
            inputs = region_inputs(batch, model.device)
            features = model.encode_images(batch.pixel_values.to(model.device))
            n = inputs["image_index"].shape[0]
            perm = torch.randperm(n, generator=gen)
            while n > 1 and bool((perm == torch.arange(n)).any()):  # a derangement: no region keeps its prompt
                perm = torch.randperm(n, generator=gen)
            task_ids = model._task_ids(inputs["task_ids"], n)
            for order, acc in ((torch.arange(n), "true"), (perm, "shuffled")):
                order = order.to(model.device)
                prompts = inputs["prompts"].map(lambda t, o=order: t[o])
                seg = model.segment_regions(features, prompts, inputs["image_index"][order])
                loss, count, _ = model._caption_loss(model.visual_prefix(seg, task_ids[order], prompts), inputs["captions"],
                                                     False, label_smoothing=0.0)
                loss = float(loss)
                if acc == "true":
                    true_sum += loss
                    tokens += count
                else:
                    shuf_sum += loss
            regions += n
    finally:
        model.train(was_training)
    if tokens == 0:
        raise ValueError("prompt_shuffle_gap: the loader gave no batch with two or more captioned regions")
    loss_true, loss_shuffled = true_sum / tokens, shuf_sum / tokens
    return {"loss_true": loss_true, "loss_shuffled": loss_shuffled, "loss_gap": loss_shuffled - loss_true,
            "num_tokens": tokens, "num_regions": regions}


def distinct_share(candidates: list[str]) -> float:
    """Distinct captions / regions (1.0: all different; 1/N: one caption for all)."""
    if not candidates:
        raise ValueError("distinct_share needs at least one caption")
    return len(set(candidates)) / len(candidates)


def _named(text: str, vocabulary) -> list[str]:
    """Words of ``vocabulary`` that ``text`` names (plurals count: 'two crosses' names 'cross')."""
    words = set(text.lower().replace(",", " ").split())
    return [v for v in vocabulary if v in words or (v + "s") in words or (v + "es") in words]


def attribute_accuracy(candidates: dict[str, str], records) -> dict[str, Any]:
    """Share of captions that state each attribute of their region right, for regions whose records
    carry the synthetic generator's ``attributes`` (colour, shape, size, vertical, horizontal).

    candidates: region key (``sca.evaluation.predict.region_key``) -> caption; records: the
    evaluation ImageRecords. colour / shape / size: the caption names exactly one word of that kind
    and it is the region's; place: it contains the region's place phrase ("in the top left corner").
    Returns {colour, shape, size, place, num_regions}; {} when no region has attributes."""
    from sca.data.synthetic import COLOURS, SHAPES, SIZES
    from sca.data.synthetic_captions import place_phrase
    from sca.evaluation.predict import region_key

    hits = {"colour": 0, "shape": 0, "size": 0, "place": 0}
    n = 0
    for rec in records:
        for index, region in enumerate(rec.regions):
            attrs = region.attributes or {}
            key = region_key({"image_id": rec.image_id, "region_id": region.region_id, "region_index": index})
            if not {"colour", "shape", "size", "vertical", "horizontal"} <= set(attrs) or key not in candidates:
                continue
            text = candidates[key]
            n += 1
            for name, vocabulary in (("colour", COLOURS), ("shape", SHAPES), ("size", SIZES)):
                hits[name] += _named(text, vocabulary) == [attrs[name]]
            hits["place"] += place_phrase(attrs["vertical"], attrs["horizontal"]) in text.lower()
    if n == 0:
        return {}
    return {**{k: v / n for k, v in hits.items()}, "num_regions": n}
