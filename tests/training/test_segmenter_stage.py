"""The segmenter stage: SAM's losses on hand-made masks, prompt sampling, a short run end to end
(loss falls, the SamModel folder reloads to identical outputs, metrics.json, exact resume, the CLI),
and behind ``slow`` the embedded schedule reaching a useful mask IoU."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sca.cli import main
from sca.models.segmenters.base import SegmenterOutput
from sca.registry import IMAGE_ENCODERS
from sca.training.segmenter_prompts import box_as_mask, interior_points, noisy_boxes, sample_points
from sca.training.segmenter_stage import SegmenterLoss, mask_losses, run_segmenter_stage

TINY = {"name": "tiny-sam", "image_size": 32, "patch_size": 8, "hidden_size": 16, "vision_hidden_size": 16, "init": "sam"}


def _square(size=32, x0=8, y0=10, x1=20, y1=18):
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------
def test_perfect_logits_give_near_zero_focal_and_dice_and_iou_one():
    gt = _square()[None]  # [1, S, S]
    logits = torch.where(gt, 20.0, -20.0)[:, None]  # [1, 1, S, S]
    parts = mask_losses(logits, gt)
    assert parts["focal"].item() < 1e-9 and parts["dice"].item() < 1e-6
    assert parts["iou"].item() == 1.0


def test_focal_and_dice_match_their_textbook_formulas():
    torch.manual_seed(0)
    logits, gt = torch.randn(4, 3, 20, 20) * 3, torch.rand(4, 20, 20) > 0.7
    parts = mask_losses(logits, gt, alpha=0.25, gamma=2.0)
    t, p = gt[:, None].expand_as(logits).float().flatten(2), torch.sigmoid(logits.flatten(2))
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    focal = ((0.25 * t + 0.75 * (1 - t)) * (1 - p_t) ** 2 * ce).mean(-1)  # Lin et al. 2017, eq. 5
    dice = 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)
    torch.testing.assert_close(parts["focal"], focal, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(parts["dice"], dice, rtol=1e-4, atol=1e-6)


def test_iou_target_is_the_true_iou_and_the_best_mask_carries_the_loss():
    gt = _square(x0=8, x1=20)  # 12 x 8 = 96 px
    half = _square(x0=14, x1=26)  # overlaps 6 x 8 = 48 px; union 144
    empty = torch.zeros_like(gt)
    masks = torch.stack([torch.where(m, 20.0, -20.0) for m in (half, gt, empty)])  # [3, S, S]
    parts = mask_losses(masks[None], gt[None])
    torch.testing.assert_close(parts["iou"][0], torch.tensor([48 / 144, 1.0, 0.0]))
    assert parts["dice"][0, 1] < 1e-6 < parts["dice"][0, 0] < parts["dice"][0, 2]
    scores = torch.tensor([[[0.5, 0.9, 0.1]]])  # [n, 1, M]
    out = SegmenterOutput(masks=masks[None, None], iou_scores=scores, tokens=torch.zeros(1, 1, 1, 1),
                          image_tokens=torch.zeros(1, 1, 1, 1))
    loss, chosen = SegmenterLoss().region_loss(out, gt[None])
    expected_mse = ((scores[0, 0] - torch.tensor([48 / 144, 1.0, 0.0])) ** 2).mean()
    torch.testing.assert_close(chosen["iou_mse"][0], expected_mse)
    assert chosen["iou"][0] == 1.0  # the min-loss mask is the perfect one
    torch.testing.assert_close(loss[0], expected_mse, atol=1e-5, rtol=0)


def test_loss_skips_and_counts_regions_without_masks(synthetic_root):
    from sca.data.dataset import RegionDataset
    from sca.data.transforms import TransformConfig
    from sca.training.collate import RegionCollator
    from sca.training.segmenter_stage import NoTextTokenizer, TrainableSegmenter

    ds = RegionDataset(str(synthetic_root / "val.jsonl.gz"), synthetic_root, train=False, load_masks=True,
                       transform=TransformConfig(image_size=32, jitter=False, hflip=0.0))
    batch = RegionCollator(NoTextTokenizer())([ds[0], ds[1]])
    batch.has_mask[0, 0] = False
    real = int(batch.region_mask.sum())
    model = TrainableSegmenter(IMAGE_ENCODERS.build(**TINY))
    parts = SegmenterLoss()(model, batch)
    assert parts.count == real - 1 and parts.stats["skipped_no_mask"] == 1.0
    assert torch.isfinite(parts.loss_sum)
    batch.has_mask[:] = False
    none = SegmenterLoss()(model, batch)
    assert none.count == 0 and none.loss_sum.item() == 0.0 and none.loss_sum.requires_grad


def test_reconstruction_adds_its_weighted_pixel_error_and_needs_the_decoder(synthetic_root):
    from sca.data.dataset import RegionDataset
    from sca.data.transforms import TransformConfig
    from sca.training.collate import RegionCollator
    from sca.training.segmenter_stage import NoTextTokenizer, PixelDecoder, TrainableSegmenter

    ds = RegionDataset(str(synthetic_root / "val.jsonl.gz"), synthetic_root, train=False, load_masks=True,
                       transform=TransformConfig(image_size=32, jitter=False, hflip=0.0))
    batch = RegionCollator(NoTextTokenizer())([ds[0], ds[1]])
    torch.manual_seed(0)
    model = TrainableSegmenter(IMAGE_ENCODERS.build(**TINY), reconstruction=True)
    assert isinstance(model.pixel_decoder, PixelDecoder)
    _, pixels = model(batch.pixel_values, [])
    assert pixels.shape == batch.pixel_values.shape
    mse = torch.nn.functional.mse_loss(pixels, batch.pixel_values)
    torch.manual_seed(1)  # the same prompts for both losses
    plain = SegmenterLoss()(model, batch)
    torch.manual_seed(1)
    weighted = SegmenterLoss(reconstruction_weight=2.0)(model, batch)
    assert weighted.stats["reconstruction_mse"] == pytest.approx(float(mse.detach()), rel=1e-5)
    torch.testing.assert_close(weighted.loss_sum, plain.loss_sum + 2.0 * mse * plain.count, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="reconstruction=True"):
        SegmenterLoss(reconstruction_weight=1.0)(TrainableSegmenter(IMAGE_ENCODERS.build(**TINY)), batch)
    with pytest.raises(ValueError, match="reconstruction_weight must be >= 0"):
        SegmenterLoss(reconstruction_weight=-1.0)


def test_box_crops_resample_each_mask_inside_its_own_box():
    from sca.training.segmenter_heads import box_crops

    small, large = _square(32, 2, 2, 6, 6), _square(32, 8, 4, 28, 24)  # two filled boxes
    crops = box_crops(torch.stack([small, large]), torch.tensor([[2.0, 2, 6, 6], [8.0, 4, 28, 24]]), 8)
    assert crops.shape == (2, 8, 8) and crops.min() >= 0.5  # edge samples straddle the box's border
    assert crops[:, 1:-1, 1:-1].min() > 0.99  # the same (full) shape whatever the size and place
    ring = _square(32, 4, 4, 28, 28) & ~_square(32, 10, 10, 22, 22)
    crop = box_crops(ring[None], torch.tensor([[4.0, 4, 28, 28]]), 8)[0]
    assert crop[1, 1:-1].min() > 0.99 and crop[3:5, 3:5].max() < 0.01  # the hole stays in the middle


def test_token_mask_loss_adds_its_weighted_bce_and_trains_the_tokens(synthetic_root):
    from sca.data.dataset import RegionDataset
    from sca.data.transforms import TransformConfig
    from sca.training.collate import RegionCollator
    from sca.training.segmenter_stage import NoTextTokenizer, TokenMaskDecoder, TrainableSegmenter

    ds = RegionDataset(str(synthetic_root / "val.jsonl.gz"), synthetic_root, train=False, load_masks=True,
                       transform=TransformConfig(image_size=32, jitter=False, hflip=0.0))
    batch = RegionCollator(NoTextTokenizer())([ds[0], ds[1]])
    torch.manual_seed(0)
    model = TrainableSegmenter(IMAGE_ENCODERS.build(**TINY), token_masks=True)
    assert isinstance(model.token_mask_decoder, TokenMaskDecoder)
    torch.manual_seed(1)
    plain = SegmenterLoss()(model, batch)
    torch.manual_seed(1)
    weighted = SegmenterLoss(token_mask_weight=2.0)(model, batch)
    bce = weighted.stats["token_mask_bce"]
    assert 0 < bce < 5 and float(weighted.loss_sum) == pytest.approx(float(plain.loss_sum) + 2.0 * bce * plain.count,
                                                                      rel=1e-4)
    weighted.loss_sum.backward()
    decoder_token = model.segmenter.sam.mask_decoder.mask_tokens.weight.grad
    assert decoder_token is not None and decoder_token.abs().sum() > 0  # the tokens themselves learn
    assert model.token_mask_decoder.net[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="token_masks=True"):
        SegmenterLoss(token_mask_weight=1.0)(TrainableSegmenter(IMAGE_ENCODERS.build(**TINY)), batch)


def test_reconstruction_run_saves_only_the_sam_and_learns_the_pixels(synthetic_root, tmp_path):
    result = _stage(synthetic_root, tmp_path / "run", loss={"reconstruction_weight": 1.0})
    mse = [h["reconstruction_mse"] for h in result.history]
    assert mse[-1] < 0.8 * mse[0], mse
    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert not any("pixel_decoder" in k for k in saved)
    ckpt = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000016" / "trainable.safetensors"))
    assert any(k.startswith("pixel_decoder.") for k in ckpt)  # resumable: the decoder is checkpointed


# ------------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------------
def test_points_fall_inside_and_negatives_outside_the_mask():
    masks = torch.stack([_square(), _square(x0=0, y0=0, x1=5, y1=30)])
    boxes = torch.tensor([[8.0, 10, 20, 18], [0, 0, 5, 30]])
    pts, labels = sample_points(masks, boxes, 3, negative=True)
    assert pts.shape == (2, 4, 2) and labels.tolist() == [[1, 1, 1, 0]] * 2
    for i in range(2):
        x, y = pts[i].long().T
        assert masks[i, y[:3], x[:3]].all() and not masks[i, y[3], x[3]]
    with pytest.raises(ValueError, match="empty mask"):
        sample_points(torch.zeros(1, 32, 32, dtype=torch.bool), boxes[:1], 1, negative=False)


def test_interior_point_is_the_centre_of_a_square_and_inside_a_ring_like_shape():
    centre = interior_points(_square(x0=4, y0=4, x1=13, y1=13)[None])[0]
    assert centre.tolist() == [8.0, 8.0]
    ell = _square(x0=2, y0=2, x1=8, y1=30) | _square(x0=2, y0=24, x1=30, y1=30)  # an L: centroid is outside
    x, y = interior_points(ell[None])[0].long().tolist()
    assert ell[y, x]


def test_noisy_boxes_stay_in_the_frame_and_box_mask_fills_the_box():
    torch.manual_seed(1)
    boxes = torch.tensor([[0.0, 0, 32, 32], [10, 10, 11, 11]]).repeat(50, 1)
    noisy = noisy_boxes(boxes, 32, noise=0.5)
    assert (noisy >= 0).all() and (noisy <= 32).all()
    assert ((noisy[:, 2:] - noisy[:, :2]) >= 1 - 1e-5).all() and not torch.equal(noisy, boxes)
    filled = box_as_mask(torch.tensor([[8.0, 10, 20, 18]]), 32)[0]
    assert torch.equal(filled, _square())


# ------------------------------------------------------------------------------------------------
# A short run end to end
# ------------------------------------------------------------------------------------------------
def _stage(root, out, loss=None, **train):
    data = {"train_records": str(root / "train.jsonl.gz"), "images": str(root),
            "val_records": str(root / "val.jsonl.gz"), "jitter": False, "hflip": 0.0}
    cfg = {"max_steps": 16, "lr": 2e-2, "warmup_steps": 2, "images_per_step": 4, "regions_per_image": 3,
           "num_workers": 0, "log_every": 2, "seed": 5, **train}
    return run_segmenter_stage(segmenter=TINY, data=data, train=cfg, output_dir=out, progress=False, num_threads=1,
                               loss=loss)


def test_short_run_lowers_the_loss_and_writes_a_loadable_sam(synthetic_root, tmp_path):
    result = _stage(synthetic_root, tmp_path / "run")
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2, losses
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("mask_iou_box", "mask_iou_point", "baseline_box_as_mask", "mask_iou_box_oracle"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
    assert metrics["num_regions"] > 0 and metrics["steps"] == 16
    assert (tmp_path / "run" / "live" / "metrics.json").is_file()

    # The saved folder against the final checkpoint's weights (what the Trainer trained).
    folder = tmp_path / "run" / "model"
    loaded = IMAGE_ENCODERS.build("tiny-sam", weights=str(folder)).eval()
    saved = load_file(str(folder / "model.safetensors"))
    ckpt = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000016" / "trainable.safetensors"))
    assert len(ckpt) == len(saved) and any("vision_encoder" in k for k in saved)
    from sca.models.segmenters.base import Prompts

    fresh = IMAGE_ENCODERS.build(**TINY).eval()
    own = dict(fresh.named_parameters())  # tied weights appear once, as in the checkpoint
    assert set(own) == {k.removeprefix("segmenter.") for k in ckpt}
    with torch.no_grad():
        for k, v in ckpt.items():
            own[k.removeprefix("segmenter.")].copy_(v)
    pixels = torch.randn(2, 3, 32, 32)
    prompts = Prompts(boxes=torch.tensor([[[2.0, 3, 20, 25]], [[10, 0, 31, 12]]]))
    with torch.no_grad():
        a = loaded.decode(loaded.encode(pixels), prompts)
        b = fresh.decode(fresh.encode(pixels), prompts)
    torch.testing.assert_close(a.masks, b.masks, rtol=0, atol=0)
    torch.testing.assert_close(a.iou_scores, b.iou_scores, rtol=0, atol=0)
    assert result.steps == 16

    from sca.models.captioner import SCAModel
    from sca.models.config import SCAConfig

    sca = SCAModel(SCAConfig(image_encoder={"name": "tiny-sam", "weights": str(folder)},
                             language_model={"name": "tiny-gpt2"}, num_mixer_layers=1))
    assert not any(p.requires_grad for p in sca.segmenter.parameters())
    torch.testing.assert_close(sca.segmenter.state_dict(), loaded.state_dict(), rtol=0, atol=0)


def test_interrupted_stage_resumes_to_identical_weights(synthetic_root, tmp_path, write_config):
    config = {"segmenter": TINY,
              "data": {"train_records": str(synthetic_root / "train.jsonl.gz"), "images": str(synthetic_root),
                       "val_records": str(synthetic_root / "val.jsonl.gz"), "scale_range": [0.5, 1.5]},
              "train": {"max_steps": 6, "lr": 5e-3, "warmup_steps": 1, "images_per_step": 4, "regions_per_image": 3,
                        "num_workers": 0, "log_every": 1, "save_every": 2, "seed": 9}}
    path = write_config(config)
    assert main(["segmenter-train", "--config", str(path), "--output", str(tmp_path / "full")]) == 0

    from sca.training import trainer as trainer_module

    original, calls = trainer_module.Trainer._save, {"n": 0}

    def save_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    trainer_module.Trainer._save = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            main(["segmenter-train", "--config", str(path), "--output", str(tmp_path / "resumed")])
    finally:
        trainer_module.Trainer._save = original
    assert not (tmp_path / "resumed" / "model").exists()
    assert main(["segmenter-train", "--config", str(path), "--output", str(tmp_path / "resumed")]) == 0
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_cli_names_bad_config(tmp_path, write_config, capsys):
    path = write_config({"segmenter": TINY, "data": {"train_records": "x", "images": "y"}, "trian": {}})
    assert main(["segmenter-train", "--config", str(path), "--output", str(tmp_path / "o")]) == 2
    assert "trian" in capsys.readouterr().err
    path = write_config({"data": {"train_records": "x", "images": "y"}}, name="noval.yaml")
    assert main(["segmenter-train", "--config", str(path), "--output", str(tmp_path / "o")]) == 2
    assert "val_records" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# The embedded default's real schedule (minutes): a frozen SAM that really segments
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_embedded_schedule_beats_the_box_as_mask_baseline(tmp_path):
    from sca.data.synthetic import SyntheticConfig, generate_synthetic
    from sca.training.segmenter_stage import (
        EMBEDDED_SEGMENTER,
        EMBEDDED_SEGMENTER_LOSS,
        EMBEDDED_SEGMENTER_TRAIN,
    )

    root = tmp_path / "synthetic"  # the embedded pipeline's caption set (params.yaml: data)
    generate_synthetic(root, SyntheticConfig(flavour="captions", seed=0, splits={"train": 320, "val": 32},
                                             image_size=(96, 160)), workers=2)
    data = {"train_records": str(root / "train.jsonl.gz"), "images": str(root),
            "val_records": str(root / "val.jsonl.gz"), "jitter": False, "hflip": 0.5}
    result = run_segmenter_stage(segmenter=EMBEDDED_SEGMENTER, data=data, train=EMBEDDED_SEGMENTER_TRAIN,
                                 loss=EMBEDDED_SEGMENTER_LOSS, output_dir=tmp_path / "run", progress=False)
    m = result.metrics
    assert m["num_regions"] > 80
    assert m["mask_iou_box"] > m["baseline_box_as_mask"] + 0.05, m  # pipeline val split: 0.751 vs 0.586 (1000 steps)
    assert m["mask_iou_point"] > 0.55, m                               # one click or a few points: 0.707
