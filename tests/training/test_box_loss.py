"""The training-only box loss (SCAConfig.box_loss_weight): its targets, its head and its place in the loss."""

import math

import numpy as np
import pytest
import torch

from sca.models.config import SCAConfig


def _model(weight, seed=0):
    from sca.models.captioner import SCAModel

    torch.manual_seed(seed)
    return SCAModel(SCAConfig.from_dict({"image_encoder": {"name": "tiny-sam"},
                                         "language_model": {"name": "tiny-gpt2", "dropout": 0.0},
                                         "num_mixer_layers": 1, "box_loss_weight": weight}))


def _batch(root, model, *, hflip, jitter):
    from sca.training.collate import RegionCollator
    from sca.training.run import DataConfig, build_datasets

    seg = model.segmenter
    data = DataConfig.from_dict({"train_records": str(root / "train.jsonl.gz"), "images": str(root),
                                 "jitter": jitter, "hflip": hflip, "scale_range": [0.5, 1.5]})
    train, _ = build_datasets(data, image_size=seg.image_size, pixel_mean=seg.pixel_mean, pixel_std=seg.pixel_std,
                              regions_per_image=3, seed=0)
    samples = [train[i] for i in range(6)]
    return samples, RegionCollator(model.lm.require_tokenizer(), max_tokens=12)(samples)


@pytest.mark.parametrize("hflip,jitter", [(0.0, False), (1.0, False), (1.0, True)])
def test_box_targets_are_fractions_of_the_image_as_shown(synthetic_root, hflip, jitter):
    from sca.training.sca_task import box_targets

    model = _model(0.0)
    samples, batch = _batch(synthetic_root, model, hflip=hflip, jitter=jitter)
    expected = []
    for s in samples:
        g = s.geometry
        b = g.boxes_to_original(s.boxes.numpy())  # original pixels, unflipped
        if g.flipped:  # the image as the batch shows it: flipped
            b[:, [0, 2]] = g.width - b[:, [2, 0]]
        b = b / np.array([g.width, g.height, g.width, g.height])
        expected.append(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0],
                                  b[:, 3] - b[:, 1]], 1))
    got = box_targets(batch)
    assert got.shape == (batch.num_regions, 4) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), np.concatenate(expected), atol=1e-5)
    if not jitter:  # whole images: every box lies inside its image
        assert (got[:, :2] > 0).all() and (got[:, :2] < 1).all() and (got[:, 2:] > 0).all() and (got[:, 2:] <= 1).all()


def test_a_flip_mirrors_the_horizontal_centre(synthetic_root):
    from sca.training.sca_task import box_targets

    model = _model(0.0)
    _, plain = _batch(synthetic_root, model, hflip=0.0, jitter=False)
    _, flipped = _batch(synthetic_root, model, hflip=1.0, jitter=False)
    a, b = box_targets(plain), box_targets(flipped)
    torch.testing.assert_close(b[:, 0], 1 - a[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(b[:, 1:], a[:, 1:], atol=1e-5, rtol=0)


def test_the_loss_adds_the_weighted_box_error_per_caption_token(synthetic_root):
    from sca.training.sca_task import CaptionLoss, box_targets, region_inputs

    weight = 2.5
    model = _model(weight)
    model.train()
    _, batch = _batch(synthetic_root, model, hflip=0.5, jitter=False)
    parts = CaptionLoss()(model, batch)
    inputs = region_inputs(batch)
    out = model(pixel_values=batch.pixel_values, box_targets=box_targets(batch), **inputs)
    assert out.box_loss is not None and out.box_loss.item() > 0
    torch.testing.assert_close(parts.loss_sum, out.loss_sum + weight * out.box_loss * out.num_tokens)
    assert parts.count == out.num_tokens and parts.stats["box_loss"] == pytest.approx(out.box_loss.item())
    # The box error reaches the head and the mixer; the frozen SAM gets no gradient.
    model.zero_grad()
    out.box_loss.backward()
    assert model.box_head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mixer.parameters())
    assert all(p.grad is None for p in model.segmenter.parameters())


def test_a_few_steps_on_the_box_loss_alone_lower_it(synthetic_root):
    from sca.training.sca_task import box_targets, region_inputs

    model = _model(1.0)
    model.train()
    _, batch = _batch(synthetic_root, model, hflip=0.0, jitter=False)
    inputs, targets = region_inputs(batch), box_targets(batch)
    with torch.no_grad():
        features = model.encode_images(batch.pixel_values)
    params = list(model.box_head.parameters()) + list(model.mixer.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        out = model(features=features, box_targets=targets, **inputs)
        out.box_loss.backward()
        opt.step()
        losses.append(out.box_loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_off_by_default_and_out_of_the_config_dict():
    model = _model(0.0)
    assert model.box_head is None
    assert "box_loss_weight" not in model.config.to_dict()  # configs of models without it are unchanged
    on = SCAConfig.from_dict({"box_loss_weight": 0.5})
    assert on.to_dict()["box_loss_weight"] == 0.5
    assert SCAConfig.from_dict(on.to_dict()).box_loss_weight == 0.5


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1", True])
def test_a_bad_weight_is_named(bad):
    with pytest.raises(ValueError, match="box_loss_weight"):
        SCAConfig.from_dict({"box_loss_weight": bad})


def test_box_targets_without_the_head_or_captions_are_refused(synthetic_root):
    from sca.training.sca_task import box_targets, region_inputs

    model = _model(0.0)
    _, batch = _batch(synthetic_root, model, hflip=0.0, jitter=False)
    inputs = region_inputs(batch)
    with pytest.raises(ValueError, match="box_loss_weight"):
        model(pixel_values=batch.pixel_values, box_targets=box_targets(batch), **inputs)
    model = _model(1.0)
    inputs.pop("captions")
    with pytest.raises(ValueError, match="captions"):
        model(pixel_values=batch.pixel_values, box_targets=box_targets(batch), **inputs)


def test_a_checkpoint_keeps_the_head_and_captions_without_it(synthetic_root, tmp_path):
    from sca.models.captioner import SCAModel

    model = _model(1.0)
    model.eval()
    model.save_pretrained(tmp_path / "m")
    loaded = SCAModel.from_pretrained(tmp_path / "m")
    assert loaded.config.box_loss_weight == 1.0
    torch.testing.assert_close(loaded.box_head.weight, model.box_head.weight)
