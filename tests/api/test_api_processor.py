"""sca.models.processor: accepted images and their conventions, prompt validation, frame mapping."""

import numpy as np
import pytest
import torch
from PIL import Image

from sca.data.images import ImageError
from sca.data.transforms import resize_geometry
from sca.models.processor import (
    PAD_LABEL,
    RegionProcessor,
    check_region_prompts,
    to_rgb,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)


# -- images ---------------------------------------------------------------------------------------
def test_rgb_uint8_array_passes_through_and_torch_is_channel_first():
    assert np.array_equal(to_rgb(RGB), RGB)
    assert np.array_equal(to_rgb(torch.from_numpy(RGB).permute(2, 0, 1)), RGB)
    assert np.array_equal(to_rgb(Image.fromarray(RGB)), RGB)


def test_gray_images_become_three_equal_channels():
    gray = RGB[..., 0]
    for image in (gray, gray[..., None], torch.from_numpy(gray)[None], Image.fromarray(gray)):
        out = to_rgb(image)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8
        assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)


def test_rgba_array_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: its colour
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    out = to_rgb(rgba)
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [255, 255, 255]


def test_cmyk_and_palette_pil_images_are_converted():
    cmyk = Image.fromarray(RGB).convert("CMYK")
    assert np.array_equal(to_rgb(cmyk), np.asarray(cmyk.convert("RGB")))
    pal = Image.fromarray(RGB).convert("P")
    assert np.array_equal(to_rgb(pal), np.asarray(pal.convert("RGB")))


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((8, 8, 2), np.uint8), "2 channels are ambiguous"),
    (np.zeros((3, 8, 9), np.uint8), "channel-first"),
    (np.zeros((8, 8, 5), np.uint8), "[H, W, 4] RGBA"),
    (np.zeros((2, 8, 8, 3), np.uint8), "(2, 8, 8, 3)"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
])
def test_unusable_shapes_are_refused_by_name(array, message):
    with pytest.raises(ValueError, match="image") as err:
        to_rgb(array)
    assert message in str(err.value)


def test_dtype_conventions():
    assert to_rgb(np.full((2, 2), 1.0, np.float32))[0, 0, 0] == 255  # [0, 1] floats scaled
    assert to_rgb(np.full((2, 2), 0.5, np.float64))[0, 0, 0] == 128
    assert to_rgb(np.full((2, 2), 200.0, np.float32))[0, 0, 0] == 200  # [0, 255] floats as is
    assert to_rgb(np.full((2, 2), 65535, np.uint16))[0, 0, 0] == 255  # uint16 scaled
    assert to_rgb(np.full((2, 2), 7, np.int64))[0, 0, 0] == 7
    assert to_rgb(np.ones((2, 2), bool))[0, 0, 0] == 255


@pytest.mark.parametrize(("array", "message"), [
    (np.full((2, 2, 3), -0.5, np.float32), r"\[0, 1\] or \[0, 255\]; got \[-0.5, -0.5\]"),
    (np.full((2, 2, 3), 300.0, np.float32), r"got \[300, 300\]"),
    (np.array([[np.nan, 0.0]], np.float32), "NaN"),
    (np.full((2, 2), 256, np.int32), r"\[0, 255\].*\[256, 256\]"),
    (np.full((2, 2), 1 + 1j), "unsupported image dtype complex128"),
])
def test_bad_values_are_refused_with_their_range(array, message):
    with pytest.raises(ValueError, match=message):
        to_rgb(array)


def test_paths_missing_files_and_bad_types(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    assert np.array_equal(to_rgb(tmp_path / "a.png"), RGB)
    assert np.array_equal(to_rgb(str(tmp_path / "a.png")), RGB)
    with pytest.raises(ImageError, match="image_missing.*nope.png"):
        to_rgb(tmp_path / "nope.png")
    (tmp_path / "b.png").write_text("not an image")
    with pytest.raises(ImageError, match="image_corrupt.*b.png"):
        to_rgb(tmp_path / "b.png")
    with pytest.raises(ValueError, match="unsupported image type list"):
        to_rgb([[1, 2], [3, 4]])


# -- prompts --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "no prompts"),
    ({"boxes": []}, "boxes is an empty list"),
    ({"boxes": [[10, 5, 4, 9]]}, r"box 0 \[10.0, 5.0, 4.0, 9.0\] is inverted"),
    ({"boxes": [[1, 1, 5, 5], [2, 2, 2, 9]]}, r"box 1 .* is inverted or empty"),
    ({"boxes": [[0, 0, 31, 10]]}, r"box 0 \[0.0, 0.0, 31.0, 10.0\] lies outside the 30x20 image"),
    ({"boxes": [[-2, 0, 5, 10]]}, "lies outside"),
    ({"boxes": [[0, 0, 5]]}, r"boxes must be \[R, 4\]"),
    ({"boxes": [[0, 0, 5, float("nan")]]}, "NaN"),
    ({"points": []}, "points is an empty list"),
    ({"points": [[[5, 25]]]}, r"point \(5.0, 25.0\) of region 0 lies outside the 30x20 image"),
    ({"points": [[[5, 5]]], "point_labels": [[2]]}, r"1 \(foreground\) or 0 \(background\); region 0 has \[2.0\]"),
    ({"points": [[[5, 5], [6, 6]]], "point_labels": [[1]]}, "region 0 has 2 points but 1 labels"),
    ({"points": [[[5, 5]]], "point_labels": [[0]]}, "region 0 has only background points"),
    ({"point_labels": [[1]]}, "point_labels given without points"),
    ({"masks": np.zeros((1, 10, 10))}, "masks are 10x10 .* the image is 30x20"),
    ({"masks": np.full((1, 20, 30), 2.0)}, r"values in \[2, 2\]"),
    ({"boxes": [[0, 0, 5, 5]], "points": [[[1, 1]], [[2, 2]]]}, r"counts must agree; got \{'boxes': 1, 'points': 2\}"),
])
def test_bad_prompts_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_region_prompts(30, 20, **kwargs)


def test_prompt_layouts():
    p = check_region_prompts(30, 20, boxes=[1, 2, 30, 20])  # one box, edge coordinates allowed
    assert p.boxes.shape == (1, 4) and p.num_regions == 1
    ragged = check_region_prompts(30, 20, points=[[[1, 1], [2, 2], [3, 3]], [[4, 4]]],
                                  point_labels=[[1, 0, 1], [1]])
    assert ragged.points.shape == (2, 3, 2)
    assert ragged.point_labels.tolist() == [[1, 0, 1], [1, PAD_LABEL, PAD_LABEL]]
    assert ragged.region(1) == {"box": None, "points": [[4.0, 4.0]], "point_labels": [1]}
    flat = check_region_prompts(30, 20, points=np.array([[1.0, 2.0], [3.0, 4.0]]))  # [R, 2]: a point each
    assert flat.points.shape == (2, 1, 2) and flat.point_labels.tolist() == [[1], [1]]
    # A background-only click set is fine when a box prompts the same region.
    check_region_prompts(30, 20, boxes=[[0, 0, 9, 9]], points=[[[1, 1]]], point_labels=[[0]])


def test_prompts_map_into_the_sam_frame_like_segment_anything():
    from segment_anything.utils.transforms import ResizeLongestSide

    proc = RegionProcessor(64, 16, (0.5,) * 3, (0.25,) * 3)
    geom = resize_geometry(30, 20, 64)
    prompts = check_region_prompts(30, 20, boxes=[[1, 2, 29, 19]], points=[[[3, 4], [25, 17]]])
    model_prompts = proc.to_model(prompts, geom)
    sam = ResizeLongestSide(64)
    assert torch.allclose(model_prompts.boxes[0], torch.as_tensor(
        sam.apply_boxes(np.array([[1, 2, 29, 19.0]]), (20, 30)), dtype=torch.float32))
    assert torch.allclose(model_prompts.points[0, 0], torch.as_tensor(
        sam.apply_coords(np.array([[3, 4], [25, 17.0]]), (20, 30)), dtype=torch.float32))
    assert model_prompts.point_labels.tolist() == [[[1, 1]]]


def test_mask_prompt_and_postprocessing_are_inverse_up_to_resolution():
    proc = RegionProcessor(64, 16, (0.5,) * 3, (0.25,) * 3)
    geom = resize_geometry(60, 40, 64)
    mask = np.zeros((1, 40, 60), bool)
    mask[0, 8:32, 10:44] = True
    low = proc.to_model(check_region_prompts(60, 40, masks=mask), geom).masks[0]  # [1, 1, 16, 16] logits
    assert low.shape == (1, 1, 16, 16)
    assert low.max() == pytest.approx(10.0) and low.min() == pytest.approx(-10.0)
    assert (low[0, 0, 12:, :] < 0).all()  # the padding below the 64x43 content is background
    back = proc.postprocess_masks(low, geom)[0, 0] > 0  # [40, 60]
    iou = (back.numpy() & mask[0]).sum() / (back.numpy() | mask[0]).sum()
    assert back.shape == (40, 60) and iou > 0.85
