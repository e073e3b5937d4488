"""SCAConfig.box_frame_pe: the mixer's keys carry each token's place in the region's own box.

The box-frame term is SAM's own positional encoding evaluated at box-normalised coordinates, so a
box that spans the whole input gives exactly the image PE again, and moving a box by whole tokens
moves its map with it. Regions prompted without a box take the box of SAM's chosen mask."""

from __future__ import annotations

import pytest
import torch

from sca.models.captioner import SCAModel, flatten_regions
from sca.models.config import SCAConfig
from sca.models.segmenters.prompts import Prompts, SegmenterOutput

NAN = float("nan")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SCAModel(SCAConfig(num_mixer_layers=2, box_frame_pe=True)).eval()


def _frame_part(model, boxes: torch.Tensor) -> torch.Tensor:
    """The box-frame term of the key PE [N, C, h, w] for box prompts [N, 4] (input pixels)."""
    prompts = Prompts(boxes=boxes[:, None])
    n = len(boxes)
    seg = SegmenterOutput(masks=None, iou_scores=torch.zeros(n, 1, 3), tokens=torch.zeros(n, 1, 7, 1),
                          image_tokens=torch.zeros(n, 1, 1, 1))
    return model.key_positional_encoding(prompts, seg) - model.segmenter.image_positional_embeddings()


def test_a_box_over_the_whole_input_gives_the_image_pe(model):
    s = model.segmenter.image_size
    part = _frame_part(model, torch.tensor([[0.0, 0.0, s, s]]))
    torch.testing.assert_close(part, model.segmenter.image_positional_embeddings(), atol=1e-5, rtol=1e-5)


def test_moving_a_box_by_whole_tokens_moves_its_map(model):
    s = model.segmenter.image_size
    cell = s / model.segmenter.embedding_size
    box = torch.tensor([2.0, 3.0, 2.0 + 3.5 * cell, 3.0 + 2.0 * cell])
    moved = box + torch.tensor([2 * cell, cell, 2 * cell, cell])  # 2 tokens right, 1 down
    a, b = _frame_part(model, torch.stack([box, moved]))
    torch.testing.assert_close(b[:, 1:, 2:], a[:, :-1, :-2], atol=1e-4, rtol=1e-4)
    assert (a - b).abs().max() > 0.1  # and the map did move


def test_the_paper_config_keeps_the_image_pe():
    torch.manual_seed(0)
    m = SCAModel(SCAConfig(num_mixer_layers=2)).eval()
    assert "box_frame_pe" not in m.config.to_dict()
    seg = SegmenterOutput(masks=None, iou_scores=torch.zeros(1, 1, 3), tokens=torch.zeros(1, 1, 7, 1),
                          image_tokens=torch.zeros(1, 1, 1, 1))
    assert torch.equal(m.key_positional_encoding(None, seg), m.segmenter.image_positional_embeddings())


def test_regions_without_a_box_take_the_box_of_their_mask(model):
    s = model.segmenter.image_size
    low = 4 * model.segmenter.embedding_size
    n = 3
    masks = torch.full((n, 1, 3, low, low), -1.0)
    ious = torch.tensor([[[0.1, 0.9, 0.2]], [[0.5, 0.1, 0.1]], [[0.3, 0.2, 0.1]]])
    masks[0, 0, 1, 4:10, 6:20] = 1.0   # the chosen (IoU 0.9) mask of a point region
    masks[0, 0, 0, :, :] = 1.0         # a larger mask it did not choose
    masks[2, 0, 1, 0:3, 0:3] = 1.0     # region 2 chose mask 0, which is empty
    boxes = torch.tensor([[NAN] * 4, [0.25 * s, 0.5 * s, 0.75 * s, s], [NAN] * 4])
    prompts = Prompts(boxes=boxes[:, None], points=torch.zeros(n, 1, 1, 2),
                      point_labels=torch.tensor([[[1]], [[-10]], [[1]]]))
    seg = SegmenterOutput(masks=masks, iou_scores=ious, tokens=torch.zeros(n, 1, 7, 1),
                          image_tokens=torch.zeros(n, 1, 1, 1))
    frames = model.region_frames(prompts, seg)
    expected = torch.tensor([[6 / low, 4 / low, 20 / low, 10 / low], [0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(frames, expected)
    cached = SegmenterOutput(masks=None, iou_scores=ious, tokens=seg.tokens, image_tokens=seg.image_tokens)
    with pytest.raises(ValueError, match="box_frame_pe"):
        model.region_frames(prompts, cached)
    box_only = SegmenterOutput(masks=None, iou_scores=ious[1:2], tokens=seg.tokens[1:2],
                               image_tokens=seg.image_tokens[1:2])  # cached segments carry no masks
    torch.testing.assert_close(model.region_frames(Prompts(boxes=boxes[1:2, None]), box_only), expected[1:2])


def test_queries_follow_the_box_and_the_config_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SCAModel(SCAConfig(num_mixer_layers=2, box_frame_pe=True)).eval()
    s = model.segmenter.image_size
    pixels = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in model.mixer.parameters():  # a mixer that reads its keys (the init's is near zero)
            p.normal_(0, 1.0)
        features = model.encode_images(pixels)
        prompts, index = flatten_regions(Prompts(boxes=torch.tensor([[[4.0, 4.0, 30.0, 40.0]]])), None)
        seg = model.segment_regions(features, prompts, index)
        with_box = model._mix(seg, prompts)
        # the same SAM outputs read in another box frame give other queries
        other = Prompts(boxes=torch.tensor([[[0.0, 0.0, float(s), float(s)]]]))
        assert (model._mix(seg, other) - with_box).abs().max() > 1e-3
        with pytest.raises(ValueError, match="box_frame_pe"):
            model._mix(seg)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = SCAModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config.box_frame_pe is True
    with torch.no_grad():
        torch.testing.assert_close(loaded._mix(loaded.segment_regions(features, prompts, index), prompts), with_box)


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="box_frame_pe must be true or false, got 'yes'"):
        SCAConfig(box_frame_pe="yes")
