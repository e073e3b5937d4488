"""Transforms into the S frame: SAM preprocessing (checked against segment_anything), LSJ, flip, masks."""

import numpy as np
import pytest
import torch
from sca_data_testutil import scene

from sca.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformConfig,
    apply_geometry,
    denormalize,
    jitter_geometry,
    resize_geometry,
    swap_left_right,
)


def _photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("h, w, size", [(400, 600, 1024), (427, 640, 256), (300, 451, 64), (512, 512, 128)])
def test_resize_matches_segment_anything_exactly(h, w, size):
    sam_transforms = pytest.importorskip("segment_anything.utils.transforms")
    rlt = sam_transforms.ResizeLongestSide(size)
    image = _photo(h, w)
    boxes = np.array([[10.0, 20.0, 100.5, 200.0], [0, 0, w, h]])
    geom = resize_geometry(w, h, size)
    out = apply_geometry(image, geom, boxes)
    ref_img = rlt.apply_image(image)  # [h', w', 3] uint8
    assert geom.content == (ref_img.shape[1], ref_img.shape[0])
    # SAM's Sam.preprocess: (x - mean*255) / (std*255), then zero padding bottom/right.
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None] * 255
    std = torch.tensor(IMAGENET_STD)[:, None, None] * 255
    ref = (torch.from_numpy(ref_img).permute(2, 0, 1).float() - mean) / std
    ref = torch.nn.functional.pad(ref, (0, size - ref.shape[2], 0, size - ref.shape[1]))
    assert out.pixel_values.shape == (3, size, size)
    torch.testing.assert_close(out.pixel_values, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.boxes.numpy(), rlt.apply_boxes(boxes, (h, w)), atol=1e-4)


def test_padding_is_zero_and_content_is_normalised():
    img = np.full((30, 60, 3), 255, np.uint8)
    out = apply_geometry(img, resize_geometry(60, 30, 64))
    assert (out.pixel_values[:, 32:] == 0).all()  # 30 * 64/60 = 32 rows of content
    expect = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out.pixel_values[:, :32].mean(dim=(1, 2)), expect)
    back = denormalize(out.pixel_values)
    assert (back[:32] == 255).all() and (np.abs(back[40].astype(int) - np.array(IMAGENET_MEAN) * 255) <= 1).all()


def test_geometry_round_trips_boxes_with_crop_and_flip():
    rng = np.random.default_rng(0)
    boxes = np.array([[3.0, 4.0, 50.0, 33.0], [0, 0, 80, 60]])
    for _ in range(20):
        g = jitter_geometry(80, 60, 64, rng, (0.1, 2.0), hflip=0.5)
        np.testing.assert_allclose(g.boxes_to_original(g.boxes_to_input(boxes)), boxes, atol=1e-9)
        assert 0 < g.content[0] <= 64 and 0 < g.content[1] <= 64
        lo, hi = 0.1 * 64 / 80, 2.0 * 64 / 80
        assert lo - 0.02 <= g.scale[0] <= hi + 0.02


def test_jitter_draws_scales_over_the_range_and_flips_half():
    rng = np.random.default_rng(1)
    geoms = [jitter_geometry(100, 100, 100, rng, (0.1, 2.0), 0.5) for _ in range(400)]
    scales = np.array([g.scale[0] for g in geoms])
    assert 0.09 < scales.min() < 0.2 and 1.9 < scales.max() <= 2.0
    assert 150 < sum(g.flipped for g in geoms) < 250
    assert any(g.offset != (0.0, 0.0) for g in geoms)  # crops of up-scaled images move
    a = [jitter_geometry(100, 80, 64, np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]  # seeded


def test_boxes_and_masks_follow_the_pixels_under_jitter_and_flip():
    img = scene()  # white block x 10..30, y 20..40; red block x 50..70, y 5..25
    white = np.zeros((60, 80), bool)
    white[20:40, 10:30] = True
    red = np.zeros((60, 80), bool)
    red[5:25, 50:70] = True
    boxes = np.array([[10, 20, 30, 40], [50, 5, 70, 25]], dtype=float)
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(30):
        g = jitter_geometry(80, 60, 64, rng, (0.5, 2.0), 0.5)
        out = apply_geometry(img, g, boxes, [white, red])
        pix = denormalize(out.pixel_values).astype(int)
        for j, i in enumerate(np.flatnonzero(out.keep)):
            box, mask = out.boxes[j].numpy(), out.masks[j].numpy()
            assert (box[[0, 2]] <= g.content[0]).all() and (box[[1, 3]] <= g.content[1]).all() and (box >= 0).all()
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            # the mask sits where its block's colour is, and its extent matches the box within a pixel
            colour = pix[ys, xs].mean(0)
            assert (colour[1] > 200) if i == 0 else (colour[0] > 200 and colour[1] < 60)
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1.01)
            checked += 1
        if g.flipped and out.keep.all():  # the red block (right in the image) is left of the white one
            assert out.boxes[1, 0] < out.boxes[0, 0]
    assert checked > 20


def test_empty_boxes_are_dropped_after_clamping():
    g = resize_geometry(80, 60, 64)
    out = apply_geometry(scene(), g, np.array([[10, 20, 30, 40], [85, 10, 95, 20], [5, 5, 5, 9]], dtype=float))
    assert out.keep.tolist() == [True, False, False] and out.boxes.shape == (1, 4)
    out = apply_geometry(scene(), g, np.array([[10, 20, 11, 40]], dtype=float), min_box_size=1.0)
    assert out.keep.tolist() == [False]  # 0.8 px wide in the S frame


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="scale_range"):
        TransformConfig(scale_range=(2.0, 0.1))
    with pytest.raises(ValueError, match="flip_text"):
        TransformConfig(flip_text="mirror")
    with pytest.raises(ValueError, match="uint8"):
        apply_geometry(np.zeros((4, 4, 3), np.float32), resize_geometry(4, 4, 16))


def test_swap_left_right_keeps_case_and_other_words():
    assert swap_left_right("Left cup, leftmost plate, right-hand side") == "Right cup, rightmost plate, left-hand side"
    assert swap_left_right("LEFT leftover bright copyright") == "RIGHT leftover bright copyright"
