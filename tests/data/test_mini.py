"""The real-image mini set (package images + hand annotations) and the drawing functions."""

import numpy as np
import pytest
import torch

from sca.data.dataset import RegionDataset, Sample
from sca.data.io import read_records, verify_manifest
from sca.data.masks import mask_to_box, rle_decode
from sca.data.mini import mini_records, package_image, segment_coins, vg_to_records, write_mini
from sca.data.transforms import TransformConfig

pytest.importorskip("skimage")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    write_mini(root)
    return root


def test_annotations_are_consistent():
    recs = mini_records()
    assert len(recs) == 10 and sum(len(r.regions) for r in recs) == 82
    assert sum(reg.mask is not None for r in recs for reg in r.regions) == 31
    ids = [reg.region_id for r in recs for reg in r.regions]
    assert len(set(ids)) == len(ids)
    for rec in recs:
        for reg in rec.regions:
            x0, y0, x1, y1 = reg.box
            assert 0 <= x0 < x1 <= rec.width and 0 <= y0 < y1 <= rec.height, (rec.image_id, reg.region_id)
            assert reg.phrases[0].strip() and reg.task == "caption"
            if reg.mask is not None:
                m = rle_decode(reg.mask)
                assert m.shape == (rec.height, rec.width) and m.sum() > 50
                mx0, my0, mx1, my1 = mask_to_box(m)  # the mask lies inside its box (a pixel of slack)
                assert mx0 >= x0 - 1 and my0 >= y0 - 1 and mx1 <= x1 + 1 and my1 <= y1 + 1, reg.region_id
    coins = next(r for r in recs if r.file_name == "coins.png")
    assert len(coins.regions) == 24 and all(reg.mask is not None for reg in coins.regions)
    assert any("佛香阁" in reg.phrases[0] for r in recs for reg in r.regions)  # a non-ASCII caption


def test_coin_masks_match_a_fresh_segmentation():
    coins = next(r for r in mini_records() if r.file_name == "coins.png")
    for reg, fresh in zip(coins.regions, segment_coins(), strict=True):
        stored = rle_decode(reg.mask)
        iou = (stored & fresh).sum() / (stored | fresh).sum()
        assert iou > 0.97


def test_vg_format_conversion_and_errors():
    descs = [{"id": 5, "regions": [{"region_id": 9, "image_id": 5, "phrase": "a cat", "x": 2, "y": 3,
                                    "width": 10, "height": 4}]}]
    data = [{"image_id": 5, "width": 20, "height": 10, "url": "https://x/VG_100K/5.jpg"}]
    (rec,) = vg_to_records(descs, data, {"9": {"polygons": [[2, 3, 12, 3, 12, 7, 2, 7]]}})
    assert rec.file_name == "5.jpg" and rec.regions[0].box == (2.0, 3.0, 12.0, 7.0)
    assert rle_decode(rec.regions[0].mask).sum() == 40
    with pytest.raises(ValueError, match="absent from image_data"):
        vg_to_records(descs, [])
    with pytest.raises(ValueError, match="pkg://"):
        package_image("https://example.com/a.png")
    with pytest.raises(ValueError, match="unknown package"):
        package_image("pkg://numpy/a.png")


def test_write_mini_copies_real_images_and_they_decode(mini):
    assert verify_manifest(mini) == []
    recs = read_records(mini / "mini.jsonl")
    ds = RegionDataset(recs, mini, train=False, transform=TransformConfig(image_size=128), load_masks=True)
    modes = set()
    for i in range(len(ds)):
        s = ds[i]
        assert isinstance(s, Sample) and len(s.targets) == len(recs[i].regions)
        assert s.pixel_values.abs().max() < 3 and s.pixel_values.std() > 0.2  # a real, normalised photo
        modes |= {issue.detail.split(": ")[1] for issue in s.report.issues("image_mode")}
        if s.has_mask.any():  # masked regions' masks survive the resize
            assert all(m.any() for m, h in zip(s.masks, s.has_mask, strict=True) if h)
    assert modes == {"L converted to RGB", "RGBA with transparency composited over white"}  # coins/camera, horse


def test_records_render_with_boxes_masks_and_captions(mini):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from sca.data.viz import draw_record, draw_records

    recs = read_records(mini / "mini.jsonl")
    coins = next(r for r in recs if r.file_name.endswith("coins.png"))
    ax = draw_record(coins, image_root=mini, max_regions=3)
    fig = ax.figure
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
    colourful = (pixels.max(-1) - pixels.min(-1)) > 60  # the coins image is gray: colour = boxes, masks, labels
    assert colourful.mean() > 0.01
    assert len(ax.patches) == 3 and [t.get_text() for t in ax.texts][0].startswith("the leftmost coin")
    assert len(ax.images) == 2  # the photo and the mask overlay
    plain = draw_record(coins, image_root=mini, masks=False, captions=False, max_regions=3)
    assert len(plain.images) == 1 and not plain.texts
    grid = draw_records(recs[:4], mini, cols=2)
    assert len([a for a in grid.axes if a.images]) == 4
    with pytest.raises(ValueError, match="image_root"):
        draw_record(coins)


def test_samples_render_as_the_model_sees_them(mini):
    from sca.data.viz import draw_sample

    recs = read_records(mini / "mini.jsonl")
    ds = RegionDataset(recs[:1], mini, train=True, transform=TransformConfig(image_size=96), load_masks=True)
    s = ds[0]
    ax = draw_sample(s)
    assert len(ax.patches) == len(s.targets) and ax.images[0].get_array().shape[:2] == (96, 96)
    assert torch.is_tensor(s.pixel_values)
