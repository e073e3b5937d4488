"""Anything mode: the point grid, stability score and mask boxes against SAM's own code, and the
filters + NMS on a segmenter whose masks are known (disks around the prompted point)."""

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score

from sca.app.anything import (
    AnythingConfig,
    caption_everything,
    generate_masks,
    masks_to_boxes,
    point_grid,
    stability_score,
)
from sca.models.segmenters.base import SegmenterOutput


def test_point_grid_matches_sam():
    for n in (1, 4, 32):
        ours = point_grid(n, 96, 64)
        assert np.allclose(ours, build_point_grid(n) * np.array([96, 64]))


def test_stability_score_matches_sam():
    logits = torch.randn(5, 40, 30) * 4
    logits[4] = -5  # an empty union
    theirs = calculate_stability_score(logits, 0.0, 1.0)
    ours = stability_score(logits, 0.0, 1.0)
    assert torch.allclose(ours[:4], theirs[:4]) and ours[4] == 0


def test_mask_boxes_are_sam_boxes_with_exclusive_far_edges():
    masks = torch.zeros(3, 12, 20, dtype=torch.bool)
    masks[0, 2:5, 3:8] = True
    masks[1, 0, 19] = True
    ours = masks_to_boxes(masks)
    sam = batched_mask_to_box(masks).float()
    assert ours[0].tolist() == [3, 2, 8, 5] and ours[1].tolist() == [19, 0, 20, 1]
    assert torch.equal(ours[:2], sam[:2] + torch.tensor([0, 0, 1, 1.0]))
    assert ours[2].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"points_per_side": 0}, "points_per_side must be a positive int, got 0"),
    ({"pred_iou_thresh": 1.5}, "pred_iou_thresh must be a number in"),
    ({"stability_score_offset": -1}, "stability_score_offset must be >= 0"),
    ({"max_regions": 0}, "max_regions must be None or an int >= 1"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnythingConfig(**kwargs)


# -- a segmenter with known masks ------------------------------------------------------------------
# Mask 0: a disk of radius 3 low-res pixels around the point, steep logits (stable), predicted IoU 0.95.
# Mask 1: radius 3.5 (its box overlaps mask 0's by IoU 0.81 > 0.7), stable, IoU 0.9.
# Mask 2: the whole image at logit 0.5 (stability 0: nothing above +1), IoU 0.5.
@pytest.fixture
def disk_segmenter(captioner, monkeypatch):
    model = captioner.model
    real = model.segment_regions
    s, low = model.segmenter.image_size, captioner.processor.mask_size

    def fake(features, prompts, image_index):
        if prompts.points is None:  # box prompts (the caption stage): the real decoder
            return real(features, prompts, image_index)
        centre = prompts.points[:, 0, 0].float() * low / s  # [b, 2] low-res pixels
        yy, xx = torch.meshgrid(torch.arange(low) + 0.5, torch.arange(low) + 0.5, indexing="ij")
        dist = ((xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2).sqrt()
        masks = torch.stack([(3.0 - dist) * 40, (3.5 - dist) * 40, torch.full_like(dist, 0.5)], dim=1)
        b = masks.shape[0]
        iou = torch.tensor([0.95, 0.9, 0.5]).expand(b, 3)
        empty = torch.zeros(b, 1, 0, 1)
        return SegmenterOutput(masks[:, None], iou[:, None], empty, empty)

    monkeypatch.setattr(model, "segment_regions", fake)
    return captioner


def _proposals(captioner, photo_rgb, **kwargs):
    enc = captioner.encode(photo_rgb)
    return generate_masks(captioner, enc, AnythingConfig(points_per_side=2, **kwargs))


def test_iou_filter_stability_filter_and_nms(disk_segmenter, photo_rgb):
    p = _proposals(disk_segmenter, photo_rgb)  # SAM's defaults: masks 0 and 1 pass, 1 loses the NMS
    assert len(p) == 4 and p.num_candidates == 12
    assert p.mask_index.tolist() == [0] * 4 and np.allclose(p.iou_scores, 0.95)
    assert (p.stability_scores >= 0.95).all()
    grid = point_grid(2, 96, 64)
    assert sorted(map(tuple, p.points.tolist())) == sorted(map(tuple, grid.tolist()))
    for compact, box, (x, y) in zip(p.masks, p.boxes, p.points, strict=True):
        mask = compact.to_dense()
        assert mask.shape == (64, 96) and mask[int(y), int(x)]  # a disk around its own point
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert 8 <= (xs.max() + 1 - xs.min()) / 2 <= 10  # radius 3 low-res px = 9 original px

    assert len(_proposals(disk_segmenter, photo_rgb, nms_iou=0.85)) == 8  # mask 1 survives a looser NMS
    # Without the stability filter the whole-image masks come in (IoU 0.5 > 0.4), one after NMS.
    p = _proposals(disk_segmenter, photo_rgb, pred_iou_thresh=0.4, stability_score_thresh=0.0)
    assert len(p) == 5 and sorted(p.mask_index.tolist()) == [0, 0, 0, 0, 2]
    assert len(_proposals(disk_segmenter, photo_rgb, pred_iou_thresh=0.96).masks) == 0
    assert len(_proposals(disk_segmenter, photo_rgb, max_regions=3)) == 3
    assert len(_proposals(disk_segmenter, photo_rgb, min_mask_area=10_000)) == 0


def test_everything_captions_every_kept_mask_with_its_box(disk_segmenter, photo_rgb):
    regions = caption_everything(disk_segmenter, photo_rgb, AnythingConfig(points_per_side=2),
                                 num_beams=1, max_new_tokens=3)
    p = _proposals(disk_segmenter, photo_rgb)
    assert len(regions) == 4
    direct = disk_segmenter.caption(photo_rgb, boxes=p.boxes, num_beams=1, max_new_tokens=3)
    for r, mask, box, d in zip(regions, p.masks, p.boxes, direct, strict=True):
        assert np.array_equal(r.mask, mask.to_dense()) and r.box == box.tolist() == r.mask_box
        assert r.caption == d.caption and r.caption  # the caption of the mask's box prompt
        assert r.stability_score >= 0.95 and r.iou_score == pytest.approx(0.95)
        assert r.points[0] in p.points.tolist() and r.point_labels == [1]
        assert r.to_dict()["stability_score"] == round(r.stability_score, 5)


def test_everything_on_the_real_tiny_model(captioner, photo):
    # Random weights predict IoU ~0: thresholds 0 keep candidates; NMS leaves distinct boxes.
    regions = captioner.everything(photo, points_per_side=3, pred_iou_thresh=-1.0, stability_score_thresh=0.0,
                                   num_beams=1, max_new_tokens=2)
    assert 1 <= len(regions) <= 27
    boxes = torch.tensor([r.box for r in regions])
    from torchvision.ops import box_iou

    iou = box_iou(boxes, boxes) - torch.eye(len(regions))
    assert (iou <= 0.7 + 1e-6).all()  # what NMS promises
    assert all(r.mask.shape == (64, 96) and r.area > 0 for r in regions)
