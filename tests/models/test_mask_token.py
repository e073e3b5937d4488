"""SCAConfig.mask_token: the mixer reads SAM's chosen mask, resampled into the region's frame, as one
more token.

The grid is +1 where the chosen mask (highest predicted IoU) covers a cell of the region's frame and
-1 elsewhere; the frame is the box prompt, or the box of the chosen mask for a region without one."""

from __future__ import annotations

import pytest
import torch

from sca.models.captioner import MASK_GRID, SCAModel, flatten_regions, mask_in_frame
from sca.models.config import SCAConfig
from sca.models.segmenters.prompts import Prompts, SegmenterOutput

NAN = float("nan")


def test_the_chosen_mask_is_resampled_in_its_frame():
    low = 64
    masks = torch.full((2, 3, low, low), -5.0)
    masks[0, 2, 16:32, 16:24] = 5.0   # chosen (IoU 0.8): the left half of the box [16, 16, 32, 32]
    masks[0, 0, :, :] = 5.0           # a mask that covers everything, not chosen
    masks[1, 0, 40:48, 8:16] = 5.0    # region 1 chose mask 0: it fills its box exactly
    ious = torch.tensor([[0.1, 0.2, 0.8], [0.9, 0.1, 0.1]])
    frames = torch.tensor([[16, 16, 32, 32], [8, 40, 16, 48]], dtype=torch.float32) / low
    grid = mask_in_frame(masks, ious, frames).reshape(2, MASK_GRID, MASK_GRID)
    half = MASK_GRID // 2
    assert torch.all(grid[0, :, :half] == 1) and torch.all(grid[0, :, half:] == -1)
    assert torch.all(grid[1] == 1)
    # the frame of the whole input holds the small mask in a few cells only
    whole = mask_in_frame(masks[1:], ious[1:], torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert 0 < int((whole == 1).sum()) <= 4


def test_a_region_without_a_box_reads_its_mask_in_the_mask_box():
    torch.manual_seed(0)
    model = SCAModel(SCAConfig(num_mixer_layers=1, mask_token=True)).eval()
    low = 4 * model.segmenter.embedding_size
    masks = torch.full((1, 1, 3, low, low), -1.0)
    masks[0, 0, 1, 4:10, 6:20] = 1.0
    ious = torch.tensor([[[0.1, 0.9, 0.2]]])
    seg = SegmenterOutput(masks=masks, iou_scores=ious, tokens=torch.zeros(1, 1, 7, 1),
                          image_tokens=torch.zeros(1, 1, 1, 1))
    prompts = Prompts(points=torch.zeros(1, 1, 1, 2), point_labels=torch.ones(1, 1, 1, dtype=torch.long))
    assert torch.all(model.region_mask_grid(prompts, seg) == 1)  # the mask fills its own box
    cached = SegmenterOutput(masks=None, iou_scores=ious, tokens=seg.tokens, image_tokens=seg.image_tokens)
    with pytest.raises(ValueError, match="mask_token"):
        model.region_mask_grid(prompts, cached)
    given = SegmenterOutput(masks=None, iou_scores=ious, tokens=seg.tokens, image_tokens=seg.image_tokens,
                            mask_grid=-torch.ones(1, 1, MASK_GRID * MASK_GRID))
    assert torch.all(model.region_mask_grid(prompts, given) == -1)  # a grid given is used as is


def _segments(model, box):
    s = model.segmenter.image_size
    pixels = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    features = model.encode_images(pixels)
    prompts, index = flatten_regions(Prompts(boxes=torch.tensor([[box]])), None)
    return prompts, model.segment_regions(features, prompts, index)


def test_queries_read_the_mask_and_the_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SCAModel(SCAConfig(num_mixer_layers=2, mask_token=True)).eval()
    assert model.mask_embedding.weight.requires_grad
    assert any(n.startswith("mask_embedding.") for n in model.trainable_state_dict())
    with torch.no_grad():
        for p in [*model.mixer.parameters(), *model.mask_embedding.parameters()]:  # (the init's are near zero)
            p.normal_(0, 1.0)
        prompts, seg = _segments(model, [4.0, 4.0, 30.0, 40.0])
        queries = model._mix(seg, prompts)
        assert queries.shape == (1, model.config.num_caption_queries, model.mixer.queries.weight.shape[1])
        flipped = SegmenterOutput(-seg.masks, seg.iou_scores, seg.tokens, seg.image_tokens)
        assert (model._mix(flipped, prompts) - queries).abs().max() > 1e-3  # another mask, other queries
    model.save_pretrained(tmp_path / "ckpt")
    loaded = SCAModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config.mask_token is True
    with torch.no_grad():
        torch.testing.assert_close(loaded._mix(seg, prompts), queries)


def test_without_use_sam_tokens_the_mask_token_is_still_read():
    torch.manual_seed(0)
    model = SCAModel(SCAConfig(num_mixer_layers=1, mask_token=True, use_sam_tokens=False)).eval()
    with torch.no_grad():
        for p in [*model.mixer.parameters(), *model.mask_embedding.parameters()]:
            p.normal_(0, 1.0)
        prompts, seg = _segments(model, [4.0, 4.0, 30.0, 40.0])
        flipped = SegmenterOutput(-seg.masks, seg.iou_scores, seg.tokens, seg.image_tokens)
        assert (model._mix(flipped, prompts) - model._mix(seg, prompts)).abs().max() > 1e-3


def test_the_paper_config_has_no_mask_token():
    torch.manual_seed(0)
    model = SCAModel(SCAConfig(num_mixer_layers=1)).eval()
    assert model.mask_embedding is None and "mask_token" not in model.config.to_dict()
    with torch.no_grad():
        prompts, seg = _segments(model, [4.0, 4.0, 30.0, 40.0])
        flipped = SegmenterOutput(-seg.masks, seg.iou_scores, seg.tokens, seg.image_tokens)
        assert torch.equal(model._mix(flipped, prompts), model._mix(seg, prompts))  # masks are not read


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="mask_token must be true or false, got 1"):
        SCAConfig(mask_token=1)
