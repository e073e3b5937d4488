"""Regions of every prompt kind in one batch: each region's masks, IoU scores, SAM tokens, caption,
logits and gradients equal those of the same region alone (sca.models.segmenters.prompts).

Padding used to change results: a region with 1 point batched beside one with 3 got two padding
points (label -10), which SAM's prompt encoder turns into zero tokens that every token attends to.
The segmenters here are sensitive (trained weights, or SAM's own init), so a placeholder token, a
NaN box or a padded mask reaching SAM shows up far above the tolerances."""

from __future__ import annotations

import copy

from pathlib import Path

import pytest
import torch

from sca.models import load_registries
from sca.models.captioner import SCAModel, flatten_regions
from sca.models.config import SCAConfig
from sca.models.segmenters.prompts import PAD_LABEL, Prompts, region_signatures, split_by_signature
from sca.models.segmenters.sam import sam_reference_init
from sca.models.text import CaptionBatch, encode_captions

IMAGE_ENCODERS, _ = load_registries()
EMBEDDED = Path(__file__).resolve().parents[1] / "assets" / "embedded"  # the embedded default's trained SAM + LM
EMBEDDED_SAM, EMBEDDED_LM = EMBEDDED / "segmenter", EMBEDDED / "lm"
NAN = float("nan")

# Region kinds, in units of the input side S: (box, points with labels, mask prompt).
KINDS = {
    "box": dict(box=(0.1, 0.15, 0.6, 0.5)),
    "1pt": dict(points=[(0.3, 0.3)], labels=[1]),
    "1pt-other": dict(points=[(0.7, 0.6)], labels=[1]),
    "2pt": dict(points=[(0.25, 0.3), (0.8, 0.75)], labels=[1, 0]),
    "3pt": dict(points=[(0.6, 0.55), (0.2, 0.2), (0.65, 0.5)], labels=[1, 0, 1]),
    "box+1pt": dict(box=(0.4, 0.3, 0.95, 0.9), points=[(0.6, 0.6)], labels=[1]),
    "box+2bg": dict(box=(0.05, 0.05, 0.5, 0.55), points=[(0.2, 0.2), (0.4, 0.1)], labels=[0, 0]),
    "mask": dict(mask=1),
    "box+mask": dict(box=(0.2, 0.2, 0.7, 0.8), mask=2),
    "2pt+mask": dict(points=[(0.5, 0.5), (0.1, 0.9)], labels=[1, 0], mask=3),
    "box+3pt+mask": dict(box=(0.1, 0.4, 0.9, 0.95), points=[(0.5, 0.7), (0.3, 0.5), (0.8, 0.9)],
                         labels=[1, 1, 0], mask=4),
}
MIXES = [
    ("1pt", "3pt"),  # the reported case
    ("3pt", "1pt"),
    ("box", "1pt"),
    ("1pt", "2pt", "3pt", "box"),
    ("mask", "box+mask", "2pt+mask"),
    ("box+2bg", "1pt-other", "box+1pt"),
    ("1pt", "1pt-other", "box+3pt+mask", "1pt"),
    tuple(KINDS),
]


def build(kinds, size: int, mask_size: int, batch: int = 1) -> Prompts:
    """Prompts [batch, R, ...] for regions of ``kinds`` (the same regions in every image), absent
    kinds as placeholders: NaN boxes, padding points, NaN masks."""
    specs = [KINDS[k] for k in kinds]
    r, p = len(specs), max([len(s.get("points", [])) for s in specs] + [1])
    boxes = torch.full((batch, r, 4), NAN)
    points = torch.zeros(batch, r, p, 2)
    labels = torch.full((batch, r, p), PAD_LABEL)
    masks = torch.full((batch, r, 1, mask_size, mask_size), NAN)
    for i, s in enumerate(specs):
        if "box" in s:
            boxes[:, i] = torch.tensor(s["box"]) * size
        if "points" in s:
            k = len(s["points"])
            points[:, i, :k] = torch.tensor(s["points"]) * size
            labels[:, i, :k] = torch.tensor(s["labels"])
        if "mask" in s:
            g = torch.Generator().manual_seed(s["mask"])
            masks[:, i, 0] = torch.randn(mask_size, mask_size, generator=g) * 4
    has = lambda key: any(key in s for s in specs)  # noqa: E731
    return Prompts(boxes=boxes if has("box") else None, points=points if has("points") else None,
                   point_labels=labels if has("points") else None, masks=masks if has("mask") else None)


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 3e-5) -> bool:
    """Equal up to the float rounding of batched vs single matrix products (a group of 2 regions vs
    1): at most ``tol`` times the values' scale. Measured: most outputs bit-identical, at most 4e-5 on
    image tokens of scale 3.6 (1.1e-5 relative); a padding token changes masks by > 1e-3."""
    return a.shape == b.shape and float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


def sensitive(name: str):
    torch.manual_seed(3)
    seg = IMAGE_ENCODERS.build(name).eval()
    sam_reference_init(seg.sam)  # SAM's own init: prompts matter (transformers' init is near-constant)
    return seg


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_signatures_and_groups_hold_exactly_each_regions_own_prompts():
    prompts = build(("1pt", "3pt", "box+mask", "1pt-other"), 64, 32).flatten()
    sig = region_signatures(prompts)
    assert [(s.has_box, s.num_points, s.has_mask) for s in sig] == [(False, 1, False), (False, 3, False),
                                                                      (True, 0, True), (False, 1, False)]
    groups = split_by_signature(prompts)
    assert [rows.tolist() for rows, _ in groups] == [[0, 3], [1], [2]]
    one = groups[0][1]
    assert one.boxes is None and one.masks is None and one.points.shape == (2, 1, 1, 2)
    assert not (one.point_labels == PAD_LABEL).any()
    assert groups[2][1].points is None and not torch.isnan(groups[2][1].boxes).any()
    # A region with nothing, and a half-NaN box, are refused by name.
    empty = Prompts(boxes=torch.tensor([[[1.0, 1, 5, 5]], [[NAN] * 4]]))
    with pytest.raises(ValueError, match="region 1 has no prompt"):
        region_signatures(empty)
    with pytest.raises(ValueError, match=r"Prompts.boxes of region 0 holds some NaN values"):
        region_signatures(Prompts(boxes=torch.tensor([[[1.0, NAN, 5, 5]]])))


@pytest.mark.parametrize("name", sorted(IMAGE_ENCODERS.names(tiny=True)))
@pytest.mark.parametrize("mix", [MIXES[0], MIXES[4], MIXES[-1]], ids=["1pt+3pt", "masks", "all"])
def test_segmenter_outputs_of_a_mixed_batch_are_each_regions_alone(name, mix):
    seg = sensitive(name)
    s, low = seg.image_size, 4 * seg.embedding_size
    with torch.no_grad():
        features = seg.encode(torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0)))
        out = seg.decode(features, build(mix, s, low, batch=2))
        for b in range(2):
            one_image = {k: v[b: b + 1] for k, v in features.items()}
            for i, kind in enumerate(mix):
                alone = seg.decode(one_image, build((kind,), s, low))
                t = alone.tokens.shape[2]
                assert close(out.masks[b, i], alone.masks[0, 0]), (kind, b)
                assert close(out.iou_scores[b, i], alone.iou_scores[0, 0])
                assert close(out.tokens[b, i, :t], alone.tokens[0, 0])
                assert close(out.image_tokens[b, i], alone.image_tokens[0, 0])
                if out.token_mask is not None:
                    assert out.token_mask[b, i].tolist() == [True] * t + [False] * (out.tokens.shape[2] - t)
                    assert (out.tokens[b, i, t:] == 0).all()
    # The placeholders matter: SAM given the padded points directly decodes the 1-point region otherwise.
    if mix == MIXES[0]:
        padded = build(mix, s, low)
        sparse, dense = seg.sam.prompt_encoder(input_points=padded.points[0, :, None], input_labels=padded.point_labels[
            0, :, None], input_boxes=None, input_masks=None)
        emb = features["image_embeddings"][:1].expand(2, -1, -1, -1)
        pe = seg.image_positional_embeddings().expand(2, -1, -1, -1)
        with torch.no_grad():
            masks, _ = seg._run_mask_decoder(emb, pe, sparse, dense, True,
                                             {k: v[:1].expand(2, *v.shape[1:]) for k, v in features.items()
                                              if k != "image_embeddings"})
        assert (masks[0, 0] - out.masks[0, 0]).abs().max() > 1e-3


@pytest.fixture(scope="module", params=[False, True, "mask"], ids=["image-pe", "box-frame-pe", "mask-token"])
def model(request):
    # box_frame_pe: the mixer's key PE also depends on each region's box, which a region prompted
    # without one takes from its own mask: still nothing of another region. "mask": box_frame_pe and
    # mask_token, the mixer also reads each region's own mask in its frame.
    torch.manual_seed(0)
    config = SCAConfig(image_encoder={"name": "tiny-sam", "weights": str(EMBEDDED_SAM)},
                       language_model={"name": "causal-lm", "weights": str(EMBEDDED_LM)}, num_mixer_layers=2,
                       box_frame_pe=bool(request.param), mask_token=request.param == "mask")
    m = SCAModel(config).eval()
    with torch.no_grad():  # a mixer and projection that move the caption (the init's are near zero)
        for p in list(m.mixer.parameters()) + list(m.projection.parameters()) + list(m.task_tokens.parameters()):
            p.normal_(0, 1.0)
        if m.mask_embedding is not None:  # a mask token of the other tokens' scale (256 inputs of +-1)
            m.mask_embedding.weight.normal_(0, 1.0 / 16)
    return m


@pytest.fixture(scope="module")
def features(model):
    s = model.segmenter.image_size
    pixels = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.encode_images(pixels)


def _image(features, b):
    return {k: v[b: b + 1] for k, v in features.items()}


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("mix", MIXES, ids=["+".join(m) if len(m) < 5 else "all" for m in MIXES])
def test_generate_of_a_mixed_batch_gives_each_region_its_own_caption_and_mask(model, features, mix, num_beams):
    s, low = model.segmenter.image_size, 4 * model.segmenter.embedding_size
    out = model.generate(prompts=build(mix, s, low, batch=2), features=features, num_beams=num_beams,
                         max_new_tokens=6, region_chunk_size=3)
    r = len(mix)
    for b in range(2):
        for i, kind in enumerate(mix):
            alone = model.generate(prompts=build((kind,), s, low), features=_image(features, b), num_beams=num_beams,
                                   max_new_tokens=6)
            n = b * r + i
            assert out.token_ids[n] == alone.token_ids[0], (kind, b)
            assert out.captions[n] == alone.captions[0]
            assert close(out.masks[n], alone.masks[0])
            assert close(out.iou_scores[n], alone.iou_scores[0])
    if len(mix) > 5:
        assert len(set(out.captions)) > 1  # regions are told apart: equal captions mean something


def _row(c: CaptionBatch, n: int) -> CaptionBatch:
    width = int(c.attention_mask[n].sum())
    return CaptionBatch(c.input_ids[n: n + 1, :width], c.attention_mask[n: n + 1, :width], c.labels[n: n + 1, :width])


def _captions(model, n):
    words = ["red", "a large blue circle", "the square", "small green star on the left", "it"]
    return encode_captions(model.lm.require_tokenizer(), [words[k % len(words)] for k in range(n)], 18)


def test_forward_and_training_batches_of_mixed_regions_are_sums_of_regions_alone(model, features):
    mix = MIXES[-1]
    s, low = model.segmenter.image_size, 4 * model.segmenter.embedding_size
    flat, index = flatten_regions(build(mix, s, low, batch=2), None)  # a training batch: flat regions
    captions = _captions(model, len(index))
    with torch.no_grad():
        out = model(prompts=flat, features=features, image_index=index, captions=captions, return_logits=True)
    total = 0.0
    for n in range(len(index)):
        one = flat.map(lambda t, n=n: t[n: n + 1])
        with torch.no_grad():
            alone = model(prompts=one, features=features, image_index=index[n: n + 1],
                          captions=_row(captions, n), return_logits=True)
        width = alone.logits.shape[1]
        assert close(out.logits[n, :width], alone.logits[0]), mix[n % len(mix)]
        assert close(out.masks[n], alone.masks[0])
        total += float(alone.loss_sum)
    assert float(out.loss_sum) == pytest.approx(total, rel=1e-5)

    # Training: the mixer's gradient of the batch loss sum is the sum of the regions' own gradients.
    # In float64, where summing 22 regions' gradients through a randomised (steep) mixer is exact to
    # ~1e-11 of the gradients' scale (float32: up to ~3e-3); a region seeing another's prompt would be O(1) apart.
    model64 = copy.deepcopy(model).double()
    features64 = {k: v.double() for k, v in features.items()}
    flat64 = flat.map(lambda t: t.double() if t.is_floating_point() else t)

    def grads(prompts, idx, caps):
        model64.zero_grad()
        model64(prompts=prompts, features=features64, image_index=idx, captions=caps).loss_sum.backward()
        return [p.grad.clone() for p in model64.mixer.parameters()]

    with torch.enable_grad():
        for p in model64.mixer.parameters():
            p.requires_grad_(True)
        batch = grads(flat64, index, captions)
        summed = None
        for n in range(len(index)):
            g = grads(flat64.map(lambda t, n=n: t[n: n + 1]), index[n: n + 1],
                      _row(captions, n))
            summed = g if summed is None else [a + b for a, b in zip(summed, g, strict=True)]
    scale = max(float(b.abs().max()) for b in summed)
    assert max(float((a - b).abs().max()) for a, b in zip(batch, summed, strict=True)) <= 1e-8 * scale
