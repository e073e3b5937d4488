"""COCO 2017, Objects365 v2 and V3Det readers (COCO format, weak supervision)."""

import json
import shutil

import pytest

from sca.data.fixtures import O365_LAYOUTS, write_coco, write_o365, write_v3det
from sca.data.readers import read_coco, read_coco_json, read_dataset, read_o365


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("det")
    return {"coco": write_coco(base / "coco"), "o365": write_o365(base / "o365"), "v3det": write_v3det(base / "v3det")}


def test_coco_regions_grouped_by_image_in_file_order(roots):
    recs = read_coco(roots["coco"], "train")
    assert [r.image_id for r in recs] == [9, 25]  # 'images' order, although ann 4 (image 25) comes first
    im9 = recs[0]
    assert im9.file_name == "train2017/000000000009.jpg"
    assert [r.region_id for r in im9.regions] == [1, 2, 3]  # 3 is a crowd annotation, kept as the reference does
    assert im9.regions[0].box == (1.5, 2.25, 21.5, 32.75)  # xywh 1.5, 2.25, 20, 30.5
    assert im9.regions[1].phrases == ["traffic light"] and im9.regions[1].category == "traffic light"
    assert all(r.task == "caption" for r in im9.regions)  # default, as in the reference code


def test_coco_crowd_kept_or_skipped_and_empty_image_reported(roots):
    rep = read_coco(roots["coco"], "train").report
    assert rep.issues["crowd_kept"] == [(9, 3)] and "crowd_skipped" not in rep.issues
    assert rep.issues["image_without_regions"] == [30]
    assert rep.issues["box_empty"] == [(25, 5)]
    assert (rep.images, rep.regions) == (2, 5)
    assert "crowd_kept: 1" in rep.summary()
    skipped = read_dataset("coco", roots["coco"], "train", crowd="skip")
    assert skipped.report.issues["crowd_skipped"] == [(9, 3)] and skipped.num_regions == 4
    assert [r.region_id for r in skipped[0].regions] == [1, 2]
    with pytest.raises(ValueError, match="crowd='drop' is not one of \\('keep', 'skip'\\)"):
        read_coco(roots["coco"], "train", crowd="drop")


def test_coco_task_recognition_and_masks(roots):
    from sca.data.masks import mask_to_box, rle_area, rle_decode

    recs = read_dataset("coco", roots["coco"], "train", task="recognition", with_masks=True)
    region = recs[0].regions[0]
    assert region.task == "recognition" and region.task_id == 0
    assert region.mask["size"] == [48, 64] and isinstance(region.mask["counts"], str)
    assert abs(rle_area(region.mask) - 20.0 * 30.5) < 60  # rasterised 20 x 30.5 polygon
    x0, y0, x1, y1 = mask_to_box(rle_decode(region.mask))
    assert abs(x0 - 1.5) <= 1 and abs(y0 - 2.25) <= 1 and abs(x1 - 21.5) <= 1 and abs(y1 - 32.75) <= 1
    assert read_coco(roots["coco"], "train")[0].regions[0].mask is None  # masks only when asked


@pytest.mark.parametrize("layout", O365_LAYOUTS)
@pytest.mark.parametrize("split", ["train", "val"])
def test_o365_every_layout_and_annotation_name_points_at_its_images(tmp_path, layout, split):
    root = write_o365(tmp_path / layout, layout=layout)
    recs = read_o365(root, split)
    assert len(recs) == {"train": 3, "val": 2}[split]
    for rec in recs:  # every record points at an image that is there, v1 and v2 patches alike
        assert (root / rec.file_name).is_file(), (layout, rec.file_name)
    if split == "train":
        assert [r.phrases for r in recs[0].regions] == [["Person"], ["Other Shoes"]]
        assert recs.report.issues["box_outside"] == [(2, 13)]
    expected = {"mmdetection": "val/patch16/", "official": "val/images/v2/patch16/", "reference": "val/images/v2/patch16/"}
    if split == "val":
        assert recs[1].file_name == expected[layout] + "objects365_v2_00000017.jpg"


def test_o365_missing_images_and_annotations_say_where_they_were_looked_for(tmp_path):
    root = write_o365(tmp_path / "o", layout="official")
    shutil.rmtree(root / "val/images")
    recs = read_o365(root, "val")
    assert recs[0].file_name == "val/images/v1/patch0/objects365_v1_00000016.jpg"  # official path, reported
    assert any("no images found for v1/patch0" in n and "val/patch0" in n for n in recs.report.notes)
    with pytest.raises(FileNotFoundError, match="Objects365 v2 train annotations: none of these files exists: "
                       ".*annotations/zhiyuan_objv2_train.json.*objects365v2_train_fixann.json"):
        read_o365(tmp_path / "empty", "train")


def test_v3det(roots):
    recs = read_dataset("v3det", roots["v3det"], "val")
    assert recs[0].file_name == "images/n07742313/5_100_1234_abcd_c.jpg"
    assert (roots["v3det"] / recs[0].file_name).is_file()
    assert recs[0].regions[0].phrases == ["Granny Smith"] and recs[0].regions[0].box == (0.0, 0.0, 48.0, 48.0)


def test_unknown_image_and_category_are_reported(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({
        "annotations": [{"id": 1, "image_id": 5, "bbox": [0, 0, 2, 2], "category_id": 1},
                        {"id": 2, "image_id": 999, "bbox": [0, 0, 2, 2], "category_id": 1},
                        {"id": 3, "image_id": 5, "bbox": [0, 0, 2, 2], "category_id": 77}],
        "images": [{"id": 5, "file_name": "5.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "cup"}]}))
    recs = read_coco_json(p, source="t", split="train")
    assert recs.num_regions == 1 and recs[0].regions[0].phrases == ["cup"]
    assert recs.report.issues["annotation_for_unknown_image"] == [(999, 2)]
    assert recs.report.issues["annotation_unknown_category"] == [(5, 3)]
    with pytest.raises(ValueError, match="phrase='text' is not one of"):
        read_coco_json(p, source="t", split="train", phrase="text")
