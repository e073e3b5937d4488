"""The SCA captioner on tiny models: loss alignment, gradients, masks, generation, bad inputs."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sca.models.captioner import SCAModel
from sca.models.config import TINY_CONFIG
from sca.models.segmenters import Prompts
from sca.models.text import encode_captions

BOXES = torch.tensor([[[1.0, 2, 30, 40], [10, 10, 60, 50], [0, 0, 63, 63]],
                      [[5.0, 5, 20, 20], [30, 30, 50, 60], [2, 40, 40, 62]]])
CAPTIONS = ["a red circle", "a big blue square on the left", "x", "two cats", "a tree", "the sky above"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SCAModel(TINY_CONFIG)


@pytest.fixture
def pixels():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _manual_loss(model, pixels, prompts, captions, task=1):
    """The loss of paper.md §2 written out: full logits, position p-1 predicts the first token."""
    feats = model.encode_images(pixels)
    flat, index = prompts.flatten(), torch.arange(2).repeat_interleave(3)
    seg = model.segment_regions(feats, flat, index)
    prefix = model.visual_prefix(seg, torch.full((6,), task))
    embeds = torch.cat([prefix, model.lm.embed(captions.input_ids)], 1)
    att = torch.cat([torch.ones(6, prefix.shape[1], dtype=torch.long), captions.attention_mask], 1)
    logits = model.lm.model(inputs_embeds=embeds, attention_mask=att).logits.float()
    p = prefix.shape[1]
    total, count = 0.0, 0
    for i in range(6):
        for t in range(captions.input_ids.shape[1]):
            if captions.attention_mask[i, t]:
                total = total + F.cross_entropy(logits[i, p - 1 + t], captions.input_ids[i, t], label_smoothing=0.1)
                count += 1
    return total / count


@pytest.mark.parametrize("lm_name", ["tiny-gpt2", "tiny-llama"])
def test_loss_alignment_matches_manual_computation(lm_name, pixels):
    torch.manual_seed(0)
    model = SCAModel(dataclasses.replace(TINY_CONFIG, language_model={"name": lm_name})).eval()
    caps = encode_captions(model.lm.tokenizer, CAPTIONS)
    out = model(pixel_values=pixels, prompts=Prompts(boxes=BOXES), captions=caps)
    torch.testing.assert_close(out.loss, _manual_loss(model, pixels, Prompts(boxes=BOXES), caps), rtol=1e-5, atol=1e-5)
    assert model.visual_prefix  # prefix = 6 task tokens + 8 queries
    assert caps.input_ids.shape[0] == 6


def test_only_new_modules_get_gradients_by_default(model, pixels):
    model.train()
    model.zero_grad()
    caps = encode_captions(model.lm.tokenizer, CAPTIONS)
    model(pixel_values=pixels, prompts=Prompts(boxes=BOXES), captions=caps).loss.backward()
    with_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"mixer", "projection", "task_tokens"}
    assert model.mixer.queries.weight.grad.abs().sum() > 0
    # Frozen is not eval mode (paper.md §2): the frozen LM trains with dropout on.
    assert model.lm.model.training
    # Only the caption task's 6 rows of the task tokens are used.
    grad_rows = model.task_tokens.weight.grad.abs().sum(1) > 0
    assert grad_rows.tolist() == [False] * 6 + [True] * 6
    model.zero_grad()
    model.eval()


def test_tuned_lm_gets_gradients(pixels):
    model = SCAModel(dataclasses.replace(TINY_CONFIG, freeze_lm=False))
    caps = encode_captions(model.lm.tokenizer, CAPTIONS)
    model(pixel_values=pixels, prompts=Prompts(boxes=BOXES), captions=caps).loss.backward()
    assert model.lm.model.get_input_embeddings().weight.grad is not None
    assert all(p.grad is None for p in model.segmenter.parameters())


def test_sam_masks_and_scores_unchanged(model, pixels):
    model.eval()
    with torch.no_grad():
        out = model(pixel_values=pixels, prompts=Prompts(boxes=BOXES))
        ref = model.segmenter.sam(pixel_values=pixels, input_boxes=BOXES, multimask_output=True)
    torch.testing.assert_close(out.masks, ref.pred_masks.flatten(0, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.iou_scores, ref.iou_scores.flatten(0, 1), rtol=1e-5, atol=1e-5)
    assert out.masks.shape == (6, 3, 32, 32)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_generation_equals_one_region_at_a_time(model, pixels, num_beams):
    model.eval()
    prompts = Prompts(boxes=BOXES)
    batched = model.generate(pixel_values=pixels, prompts=prompts, num_beams=num_beams, max_new_tokens=6)
    chunked = model.generate(pixel_values=pixels, prompts=prompts, num_beams=num_beams, max_new_tokens=6,
                             region_chunk_size=4)
    singles = []
    for b in range(2):
        for r in range(3):
            one = model.generate(pixel_values=pixels[b : b + 1], prompts=Prompts(boxes=BOXES[b : b + 1, r : r + 1]),
                                 num_beams=num_beams, max_new_tokens=6)
            singles.extend(one.token_ids)
    assert batched.token_ids == singles == chunked.token_ids
    # The vision chunk and the LM batch are independent, and neither needs to divide the other.
    for chunk, lm_batch in ((4, 5), (2, 3), (5, 2), (1, 6)):
        split = model.generate(pixel_values=pixels, prompts=prompts, num_beams=num_beams, max_new_tokens=6,
                               region_chunk_size=chunk, lm_batch_size=lm_batch)
        assert split.token_ids == singles, (chunk, lm_batch)
        torch.testing.assert_close(split.masks, batched.masks)
        torch.testing.assert_close(split.iou_scores, batched.iou_scores)
    assert len(batched.captions) == 6 and all(isinstance(c, str) for c in batched.captions)
    assert batched.masks.shape == (6, 3, 32, 32)


def test_greedy_generation_starts_right_after_the_prefix(model, pixels):
    model.eval()
    prompts = Prompts(boxes=BOXES[:1, :1])
    result = model.generate(pixel_values=pixels[:1], prompts=prompts, max_new_tokens=3)
    feats = model.encode_images(pixels[:1])
    seg = model.segment_regions(feats, prompts.flatten(), torch.zeros(1, dtype=torch.long))
    prefix = model.visual_prefix(seg, torch.ones(1, dtype=torch.long))
    first = model.lm.model(inputs_embeds=prefix).logits[0, -1].argmax().item()
    assert result.token_ids[0][0] == first


def test_flat_regions_with_image_index_match_batched(model, pixels):
    model.eval()
    flat = Prompts(boxes=BOXES.reshape(6, 1, 4))
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    a = model.generate(pixel_values=pixels, prompts=flat, image_index=index, max_new_tokens=4)
    b = model.generate(pixel_values=pixels, prompts=Prompts(boxes=BOXES), max_new_tokens=4)
    assert a.token_ids == b.token_ids


def test_point_and_mask_prompts(model, pixels):
    model.eval()
    points = torch.tensor([[[[10.0, 12.0], [40.0, 40.0]]]]).repeat(2, 2, 1, 1)
    labels = torch.tensor([[[1, 0]]]).repeat(2, 2, 1)
    out = model.generate(pixel_values=pixels, prompts=Prompts(points=points, point_labels=labels), max_new_tokens=3)
    assert len(out.captions) == 4
    masks = torch.randn(2, 2, 1, 32, 32)
    out = model.generate(pixel_values=pixels, prompts=Prompts(boxes=BOXES[:, :2], masks=masks), max_new_tokens=3)
    assert out.iou_scores.shape == (4, 3)


def test_training_lowers_the_loss(pixels):
    # A random frozen 32-wide LM gives near-uniform logits whatever its input; tune it here so the
    # test measures the whole path learning (the frozen-LM recipe is exercised by the engine tests).
    torch.manual_seed(0)
    model = SCAModel(dataclasses.replace(TINY_CONFIG, freeze_lm=False)).train()
    caps = encode_captions(model.lm.tokenizer, CAPTIONS)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    feats = model.encode_images(pixels)
    for _ in range(40):
        loss = model(features=feats, prompts=Prompts(boxes=BOXES), captions=caps).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_bad_inputs_name_the_value(model, pixels):
    with pytest.raises(ValueError, match=r"pixel_values must be \[B, 3, S, S\], got shape \(3, 64, 64\)"):
        model.encode_images(pixels[0])
    with pytest.raises(ValueError, match=r"must be 64x64 .* got \(32, 32\)"):
        model.encode_images(pixels[:, :, :32, :32])
    with pytest.raises(ValueError, match="float tensor"):
        model.encode_images((pixels * 100).to(torch.uint8))
    with pytest.raises(ValueError, match="zero regions"):
        Prompts(boxes=torch.zeros(1, 0, 4))
    with pytest.raises(ValueError, match="at least one of boxes, points or masks"):
        Prompts()
    with pytest.raises(ValueError, match=r"boxes must end in 4 .* got shape \(1, 2, 3\)"):
        Prompts(boxes=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"task ids must be in \[0, 2\).*\[5"):
        model.generate(pixel_values=pixels, prompts=Prompts(boxes=BOXES), task_ids=5)
    caps = encode_captions(model.lm.tokenizer, CAPTIONS[:2])
    with pytest.raises(ValueError, match="2 captions for 6 regions"):
        model(pixel_values=pixels, prompts=Prompts(boxes=BOXES), captions=caps)
    with pytest.raises(ValueError, match="features hold 2 images but prompts are for 1"):
        model.segmenter.decode(model.encode_images(pixels), Prompts(boxes=BOXES[:1]))


@pytest.mark.parametrize(("lm_name", "freeze_lm", "mixer_inputs"),
                         [("tiny-gpt2", True, {}), ("tiny-gpt2", False, {}), ("tiny-llama", True, {}),
                          ("tiny-gpt2", True, {"box_frame_pe": True, "mask_token": True})])
def test_gradient_checkpointing_recomputes_and_changes_nothing(lm_name, freeze_lm, mixer_inputs, pixels):
    config = dataclasses.replace(TINY_CONFIG, language_model={"name": lm_name}, freeze_lm=freeze_lm, **mixer_inputs)
    torch.manual_seed(0)
    plain = SCAModel(config)
    checkpointed = SCAModel(config)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.enable_gradient_checkpointing()
    caps = encode_captions(plain.lm.tokenizer, CAPTIONS)
    calls = {"mixer": 0, "lm": 0}
    # Pre-hooks: a recomputation stops as soon as the saved tensors are back, before a block's end.
    checkpointed.mixer.transformer.layers[0].register_forward_pre_hook(
        lambda *_: calls.__setitem__("mixer", calls["mixer"] + 1))
    # transformers checkpoints a layer's forward (its own hooks stay outside): watch its first norm.
    lm_layer = (checkpointed.lm.model.transformer.h[0].ln_1 if lm_name == "tiny-gpt2"
                else checkpointed.lm.model.model.layers[0].input_layernorm)
    lm_layer.register_forward_pre_hook(lambda *_: calls.__setitem__("lm", calls["lm"] + 1))
    results = []
    for m in (plain, checkpointed):
        m.train()  # dropout on: its random state must be replayed by the recomputation
        torch.manual_seed(3)
        out = m(pixel_values=pixels, prompts=Prompts(boxes=BOXES), captions=caps)
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    assert calls == {"mixer": 2, "lm": 2}  # forward, then again in the backward pass
    torch.testing.assert_close(results[1][0], results[0][0])
    assert results[0][1].keys() == results[1][1].keys() and len(results[0][1]) > 10
    assert any(n.startswith("lm.") for n in results[0][1]) == (not freeze_lm)
    assert ("mask_embedding.weight" in results[0][1]) == bool(mixer_inputs.get("mask_token"))
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # Inference is untouched: no recomputation without gradients.
    calls.update(mixer=0, lm=0)
    with torch.no_grad():
        checkpointed(pixel_values=pixels, prompts=Prompts(boxes=BOXES), captions=caps)
    assert calls == {"mixer": 1, "lm": 1}
