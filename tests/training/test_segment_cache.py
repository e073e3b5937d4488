"""The segment cache: SAM's outputs per region view, the same training as without it, bounded."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sca.training.run import run_training


def _weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _batch_and_model(root, hflip, **config):
    from sca.models.captioner import SCAModel
    from sca.models.config import SCAConfig
    from sca.training.collate import RegionCollator
    from sca.training.run import DataConfig, build_datasets

    torch.manual_seed(0)
    model = SCAModel(SCAConfig.from_dict({"image_encoder": {"name": "tiny-sam"},
                                          "language_model": {"name": "tiny-gpt2", "dropout": 0.0},
                                          "num_mixer_layers": 1, **config}))
    model.train()
    seg = model.segmenter
    data = DataConfig.from_dict({"train_records": str(root / "train.jsonl.gz"), "images": str(root),
                                 "jitter": False, "hflip": hflip})
    train, _ = build_datasets(data, image_size=seg.image_size, pixel_mean=seg.pixel_mean, pixel_std=seg.pixel_std,
                              regions_per_image=3, seed=0)
    collate = RegionCollator(model.lm.require_tokenizer(), max_tokens=12)
    return model, train, collate


@pytest.mark.parametrize("config", [{}, {"box_frame_pe": True, "mask_token": True}], ids=["paper", "mask-token"])
def test_cached_segments_give_the_same_loss_and_gradients_in_both_views(synthetic_root, config):
    # mask_token: the cache keeps each region's mask grid (its masks are dropped) and gives the same bits
    from sca.training.sca_task import CaptionLoss
    from sca.training.segment_cache import SegmentCache

    model, train, collate = _batch_and_model(synthetic_root, hflip=0.0, **config)
    # Two batches of the same images: one as they are, one flipped (the view is in the key).
    plain = collate([train[i] for i in range(4)])
    train.transform.hflip = 1.0
    flipped = collate([train[i] for i in range(4)])
    assert not plain.flipped.any() and flipped.flipped.all()
    cache = SegmentCache()
    uncached, cached = CaptionLoss(), CaptionLoss(segment_cache=cache)
    params = [p for p in model.parameters() if p.requires_grad]
    for batch in (plain, flipped, plain, flipped):
        grads = []
        for loss_fn in (uncached, cached):
            model.zero_grad()
            parts = loss_fn(model, batch)
            (parts.loss_sum / parts.count).backward()
            grads.append((parts.loss_sum.detach(), [p.grad.clone() for p in params]))
        assert torch.equal(grads[0][0], grads[1][0])
        for a, b in zip(grads[0][1], grads[1][1]):
            assert torch.equal(a, b)
    n = plain.num_regions + flipped.num_regions
    assert len(cache) == n  # each region view once: the flipped views are their own entries
    assert cache.misses == n and cache.hits == n


def test_the_cache_is_bounded_and_stays_right_when_full(synthetic_root):
    from sca.training.sca_task import CaptionLoss
    from sca.training.segment_cache import SegmentCache

    model, train, collate = _batch_and_model(synthetic_root, hflip=0.0)
    batch = collate([train[i] for i in range(4)])
    full = CaptionLoss()(model, batch).loss_sum
    one_region = SegmentCache().segments(model, batch, _inputs(batch))
    row_mb = sum(t[0].numel() * t.element_size() for t in
                 (one_region.tokens, one_region.image_tokens, one_region.iou_scores)) / 2**20
    cache = SegmentCache(max_mb=2.5 * row_mb)  # room for two regions
    for _ in range(2):
        assert torch.equal(CaptionLoss(segment_cache=cache)(model, batch).loss_sum, full)
    assert len(cache) == 2 and cache.full and cache.bytes <= cache.max_bytes
    with pytest.raises(ValueError, match="max_mb"):
        SegmentCache(max_mb=0)


def _inputs(batch):
    from sca.training.sca_task import region_inputs

    return region_inputs(batch)


def test_training_with_cached_segments_ends_at_the_same_weights(synthetic_root, tiny_run_config, tmp_path):
    base = tiny_run_config(synthetic_root, max_steps=8, save_every=0)  # 2 epochs of the 16 images
    base["data"].update(jitter=False, hflip=0.5)
    run_training(**base, output_dir=tmp_path / "plain", progress=False)
    cached = json.loads(json.dumps(base))
    cached["train"]["cache_segments"] = True
    run_training(**cached, output_dir=tmp_path / "cached", progress=False)
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "cached")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_cached_segments_refuse_jitter_and_the_embedding_cache_beside_them(synthetic_root, tiny_run_config, tmp_path):
    cfg = tiny_run_config(synthetic_root, cache_segments=True)
    cfg["data"].update(jitter=True)
    with pytest.raises(ValueError, match="jitter: false"):
        run_training(**cfg, output_dir=tmp_path / "jitter", progress=False)
    both = tiny_run_config(synthetic_root, cache_segments=True, use_embedding_cache=True)
    with pytest.raises(ValueError, match="alternatives"):
        run_training(**both, output_dir=tmp_path / "both", progress=False)
