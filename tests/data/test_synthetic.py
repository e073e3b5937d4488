"""The synthetic generator: determinism, exact masks and boxes, captions that depend on the region."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from sca.data.io import read_records, verify_manifest
from sca.data.masks import mask_to_box, rle_decode
from sca.data.synthetic import COLOURS, SHAPES, SyntheticConfig, generate_synthetic, synthetic_image
from sca.data.synthetic_captions import place

CFG = SyntheticConfig(splits={"train": 6, "val": 2, "test": 2})


def _images(n=30, cfg=CFG, split="train"):
    return [synthetic_image(cfg, split, i) for i in range(n)]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    m1 = generate_synthetic(tmp_path / "a", CFG, workers=1)
    m2 = generate_synthetic(tmp_path / "b", CFG, workers=2)  # parallel rendering: same bytes
    m3 = generate_synthetic(tmp_path / "c", SyntheticConfig(seed=1, splits=CFG.splits), workers=1)
    assert m1 == m2
    assert m1["images"]["sha256"] != m3["images"]["sha256"]
    for name in ("train.jsonl.gz", "val.jsonl.gz", "test.jsonl.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert m1["totals"]["images"] == 10 and m1["files"]["val.jsonl.gz"]["images"] == 2
    assert m1["params"]["seed"] == 0 and m1["sources"] == ["synthetic-captions"]
    assert verify_manifest(tmp_path / "a") == []
    # regenerating into the same folder replaces it; a foreign non-empty folder is refused
    generate_synthetic(tmp_path / "a", SyntheticConfig(splits={"train": 2}), workers=1)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["images", "manifest.json", "train.jsonl.gz"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        generate_synthetic(tmp_path / "mine", CFG)


def test_growing_a_split_keeps_its_first_images():
    small = synthetic_image(SyntheticConfig(splits={"train": 3}), "train", 2)
    big = synthetic_image(SyntheticConfig(splits={"train": 300}), "train", 2)
    assert (small[0] == big[0]).all() and small[1] == big[1]
    other = synthetic_image(CFG, "val", 2)[0]  # another split, another stream
    assert other.shape != small[0].shape or (other != small[0]).any()


def test_records_on_disk_match_images_and_masks_are_exact(tmp_path):
    generate_synthetic(tmp_path, CFG, workers=1)
    for rec in read_records(tmp_path / "train.jsonl.gz"):
        img = np.asarray(Image.open(tmp_path / rec.file_name))
        assert img.shape == (rec.height, rec.width, 3) and CFG.image_size[0] <= rec.width <= CFG.image_size[1]
        union = np.zeros(img.shape[:2], bool)
        for reg in rec.regions:
            m = rle_decode(reg.mask)
            assert mask_to_box(m) == reg.box  # the box is the mask's box
            assert not (union & m).any()  # visible masks never overlap
            union |= m
            # every mask pixel has the object's colour or its texture accent, not the background's
            colour = np.array(COLOURS[reg.attributes["colour"]])
            near = np.abs(img[m].astype(int) - colour).max(1) <= 12
            if reg.attributes["texture"] == "plain":
                assert near.mean() > 0.97
            else:
                assert 0.2 < near.mean() < 0.97
            assert reg.attributes["visible_fraction"] >= CFG.min_visible
        # outside all masks there is only background (muted, never a saturated object colour)
        bg = img[~union].astype(int)
        assert (bg.max(1) - bg.min(1)).mean() < 40


def test_scenes_vary_and_respect_the_config():
    cfg = SyntheticConfig(objects=(2, 5))
    recs = [r for _, r in _images(60, cfg)]
    counts = [len(r.regions) for r in recs]
    assert min(counts) >= 1 and max(counts) <= 5 and len(set(counts)) >= 3
    shapes = {reg.category for r in recs for reg in r.regions}
    colours = {reg.attributes["colour"] for r in recs for reg in r.regions}
    assert shapes == set(SHAPES) and colours == set(COLOURS)
    assert {reg.attributes["texture"] for r in recs for reg in r.regions} == {"plain", "striped", "dotted", "checkered"}
    assert {reg.attributes["size"] for r in recs for reg in r.regions} == {"small", "medium", "large"}
    assert sum(reg.attributes["visible_fraction"] < 1 for r in recs for reg in r.regions) > 10  # overlaps happen
    sizes = {(r.width, r.height) for r in recs}
    assert len(sizes) > 30


def test_weak_flavour_caption_is_the_category():
    cfg = SyntheticConfig(flavour="weak", splits={"train": 5})
    for _, rec in _images(10, cfg):
        assert rec.source == "synthetic-weak"
        for reg in rec.regions:
            assert reg.phrases == [reg.category] and reg.category in SHAPES and reg.task == "recognition"
    assert SyntheticConfig(flavour="weak", task="caption").region_task == "caption"


def test_weak_flavour_colour_shape_vocabulary():
    cfg = SyntheticConfig(flavour="weak", splits={"train": 5}, categories="colour-shape")
    names = set()
    for _, rec in _images(10, cfg):
        for reg in rec.regions:
            colour, shape = reg.category.split(" ")
            assert reg.phrases == [reg.category] and shape == reg.attributes["shape"] in SHAPES
            assert colour == reg.attributes["colour"]
            names.add(reg.category)
    assert len(names) > 8  # more names than shapes
    # the same scenes as the shape vocabulary: only the names differ
    img_a, rec_a = synthetic_image(cfg, "train", 3)
    img_b, rec_b = synthetic_image(SyntheticConfig(flavour="weak", splits={"train": 5}), "train", 3)
    assert (img_a == img_b).all() and [r.box for r in rec_a.regions] == [r.box for r in rec_b.regions]
    with pytest.raises(ValueError, match="categories 'colour' is not one of"):
        SyntheticConfig(flavour="weak", categories="colour")


def test_captions_depend_on_the_region_and_its_context():
    relation = re.compile(r"^the (\w+) (\w+) (to the left of|to the right of|above|below) the (\w+) (\w+)$")
    seen_relations = seen_occlusion = seen_rank = 0
    for _, rec in _images(40):
        names = {(r.attributes["colour"], r.attributes["shape"]) for r in rec.regions}
        assert len(names) == len(rec.regions)  # colour + shape name one object per image
        firsts = [r.phrases[0] for r in rec.regions]
        assert len(set(firsts)) == len(firsts)  # no two regions share their main caption
        centres = {}
        for reg in rec.regions:
            m = rle_decode(reg.mask)
            ys, xs = np.nonzero(m)
            centres[(reg.attributes["colour"], reg.attributes["shape"])] = (xs.mean() + 0.5, ys.mean() + 0.5)
        for reg in rec.regions:
            a = reg.attributes
            assert len(reg.phrases) == len(set(reg.phrases)) >= 2
            main = reg.phrases[0]
            # the main caption states size, colour, shape and where the region is
            assert a["size"] in main and a["colour"] in main and a["shape"] in main
            v, h = place(centres[(a["colour"], a["shape"])], rec.width, rec.height)
            assert (v, h) == (a["vertical"], a["horizontal"])
            for part in (v, h):
                if part in ("top", "bottom", "left", "right"):
                    assert part in main
            for p in reg.phrases:
                if (mo := relation.match(p)) is not None:  # the stated relation is true
                    seen_relations += 1
                    me, other = (mo.group(1), mo.group(2)), (mo.group(4), mo.group(5))
                    assert me == (a["colour"], a["shape"]) and other in centres
                    (x0, y0), (x1, y1) = centres[me], centres[other]
                    rel = mo.group(3)
                    assert {"to the left of": x0 < x1, "to the right of": x0 > x1, "above": y0 < y1,
                            "below": y0 > y1}[rel]
                if "partly hidden behind" in p:
                    seen_occlusion += 1
                    assert a["visible_fraction"] < 1
                if "leftmost of the" in p:
                    seen_rank += 1
                    same = [c for (col, s), c in centres.items() if s == a["shape"]]
                    assert len(same) >= 2 and centres[(a["colour"], a["shape"])][0] == min(c[0] for c in same)
    assert seen_relations > 10 and seen_occlusion > 2 and seen_rank > 0


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="flavour 'poems'"):
        SyntheticConfig(flavour="poems")
    with pytest.raises(ValueError, match="objects"):
        SyntheticConfig(objects=(0, 3))
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=(200, 100))


def test_records_serialise_compactly(tmp_path):
    generate_synthetic(tmp_path, SyntheticConfig(splits={"train": 4}), compress=False)
    line = (tmp_path / "train.jsonl").read_text().splitlines()[0]
    d = json.loads(line)
    assert d["source"] == "synthetic-captions" and d["file_name"].startswith("images/train/")
    assert set(d["regions"][0]) == {"attributes", "box", "category", "mask", "phrases", "region_id", "task"}
