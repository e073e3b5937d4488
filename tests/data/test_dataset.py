"""RegionDataset: train/eval sampling, determinism, and every kind of bad input handled or reported."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sca_data_testutil import scene, scene_record, tokenizer, write_png

from sca.data.dataset import BadSample, RegionDataset, Sample
from sca.data.records import ImageRecord, Region
from sca.data.synthetic import SyntheticConfig, generate_synthetic
from sca.data.transforms import TransformConfig
from sca.training.collate import RegionCollator, make_loader

S = 64


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, SyntheticConfig(splits={"train": 8, "val": 4}, objects=(3, 5)), workers=1)
    return root


def test_train_samples_n_regions_with_one_of_their_phrases(synthetic):
    ds = RegionDataset(synthetic / "train.jsonl.gz", synthetic, train=True, regions_per_image=2,
                       transform=TransformConfig(image_size=S))
    for i in range(len(ds)):
        s = ds[i]
        assert isinstance(s, Sample) and s.pixel_values.shape == (3, S, S)
        rec = ds.records[i]
        assert 1 <= len(s.targets) <= 2 and s.boxes.shape == (len(s.targets), 4)
        by_id = {r.region_id: r for r in rec.regions}
        for rid, target, refs in zip(s.region_ids, s.targets, s.references, strict=True):
            assert target in refs == by_id[rid].phrases  # flip_text "keep": phrases unchanged
        g = s.geometry
        assert (s.boxes[:, 2] <= g.content[0] + 1e-4).all() and (s.boxes[:, 3] <= g.content[1] + 1e-4).all()
        assert (s.boxes[:, 2] > s.boxes[:, 0]).all() and (s.boxes[:, 3] > s.boxes[:, 1]).all()


def test_train_target_first_always_trains_on_the_first_phrase(synthetic):
    first = RegionDataset(synthetic / "train.jsonl.gz", synthetic, train=True, regions_per_image=5,
                          transform=TransformConfig(image_size=S, hflip=0.0), train_target="first")
    drawn = RegionDataset(synthetic / "train.jsonl.gz", synthetic, train=True, regions_per_image=5,
                          transform=TransformConfig(image_size=S, hflip=0.0))
    others = 0
    for i in range(len(first)):
        a, b = first[i], drawn[i]
        assert all(t == refs[0] for t, refs in zip(a.targets, a.references, strict=True))
        others += sum(t != refs[0] for t, refs in zip(b.targets, b.references, strict=True))
    assert others > 0  # the default draws among the phrases
    with pytest.raises(ValueError, match="train_target 'longest' is not one of \\('random', 'first'\\)"):
        RegionDataset(synthetic / "train.jsonl.gz", synthetic, train=True, train_target="longest")


def test_eval_keeps_all_regions_in_order_and_maps_back(synthetic):
    ds = RegionDataset(synthetic / "val.jsonl.gz", synthetic, train=False, transform=TransformConfig(image_size=S))
    for i in range(len(ds)):
        s, rec = ds[i], ds.records[i]
        assert s.region_ids == [r.region_id for r in rec.regions]
        assert s.targets == [r.phrases[0] for r in rec.regions] and s.references == [r.phrases for r in rec.regions]
        assert s.task_ids.tolist() == [1] * len(rec.regions) and not s.geometry.flipped
        back = s.geometry.boxes_to_original(s.boxes.numpy())
        np.testing.assert_allclose(back, [r.box for r in rec.regions], atol=1e-3)
        assert s.original_size == (rec.height, rec.width) and not s.report


def test_same_seed_epoch_index_same_sample_and_epochs_differ(synthetic):
    def make(seed):
        return RegionDataset(synthetic / "train.jsonl.gz", synthetic, train=True, seed=seed, regions_per_image=2,
                             transform=TransformConfig(image_size=S))
    a, b, c = make(0), make(0), make(1)
    assert torch.equal(a[3].pixel_values, b[3].pixel_values) and a[3].targets == b[3].targets
    differ = [not torch.equal(a[i].boxes, c[i].boxes) for i in range(len(a))]
    a.set_epoch(1)
    differ_epoch = [not torch.equal(a[i].boxes, b[i].boxes) for i in range(len(a))]
    assert sum(differ) >= 6 and sum(differ_epoch) >= 6


def test_jpeg_draft_decoding_keeps_regions_aligned(tmp_path):
    img = np.full((301, 427, 3), 30, np.uint8)
    img[200:280, 330:410] = 250  # a white block near the bottom-right, where draft rounding would show
    Image.fromarray(img).save(tmp_path / "odd.jpg", quality=95)
    rec = ImageRecord(image_id=1, file_name="odd.jpg", width=427, height=301,
                      regions=[Region(box=(330, 200, 410, 280), phrases=["white block"])])
    outs = [RegionDataset([rec], tmp_path, train=False, draft=d, transform=TransformConfig(image_size=S))[0]
            for d in (True, False)]
    assert torch.equal(outs[0].boxes, outs[1].boxes)
    assert (outs[0].pixel_values - outs[1].pixel_values).abs().mean() < 0.05
    x0, y0, x1, y1 = outs[0].boxes[0].tolist()
    white = outs[0].pixel_values[0] > 1.5
    ys, xs = torch.nonzero(white, as_tuple=True)
    assert abs(xs.min().item() - x0) <= 1 and abs(xs.max().item() + 1 - x1) <= 1
    assert abs(ys.min().item() - y0) <= 1 and abs(ys.max().item() + 1 - y1) <= 1


def test_masks_are_loaded_into_the_frame(synthetic):
    ds = RegionDataset(synthetic / "val.jsonl.gz", synthetic, train=False, load_masks=True,
                       transform=TransformConfig(image_size=S))
    s = ds[0]
    assert s.masks.shape == (len(s.targets), S, S) and s.has_mask.all()
    for box, m in zip(s.boxes, s.masks, strict=True):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert len(xs) > 0
        assert xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1 and ys.min() >= box[1] - 1


# ---------------------------------------------------------------------------------------------------
# Bad inputs: each handled (and noted) or dropped (and reported with its id); nothing silent
# ---------------------------------------------------------------------------------------------------
def _save(path, img: Image.Image, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


@pytest.fixture
def bad_set(tmp_path):
    rgb = Image.fromarray(scene())
    recs = []
    write_png(tmp_path / "ok.png", scene())
    recs.append(scene_record("ok", "ok.png"))
    _save(tmp_path / "gray.png", rgb.convert("L"))
    recs.append(scene_record("gray", "gray.png"))
    _save(tmp_path / "rgba.png", rgb.convert("RGBA"))
    recs.append(scene_record("rgba", "rgba.png"))
    _save(tmp_path / "g16.png", Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
    recs.append(scene_record("g16", "g16.png"))
    _save(tmp_path / "cmyk.jpg", rgb.convert("CMYK"))
    recs.append(scene_record("cmyk", "cmyk.jpg"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored pixels rotated: viewers turn them 90 degrees clockwise
    _save(tmp_path / "exif.png", rgb.transpose(Image.Transpose.ROTATE_270).transpose(Image.Transpose.ROTATE_180),
          exif=exif.tobytes())
    recs.append(scene_record("exif-displayed", "exif.png"))  # annotations on the displayed (80 x 60) image
    _save(tmp_path / "exif_raw.png", rgb, exif=exif.tobytes())
    recs.append(scene_record("exif-raw", "exif_raw.png"))  # annotations on the stored (80 x 60) pixels
    recs.append(scene_record("missing", "nowhere.png"))
    buf = io.BytesIO()
    rgb.resize((400, 300)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:800])
    recs.append(scene_record("truncated", "cut.jpg", 400, 300))
    (tmp_path / "text.png").write_text("hello")
    recs.append(scene_record("corrupt", "text.png"))
    _save(tmp_path / "big.png", rgb.resize((160, 120), Image.Resampling.NEAREST))
    recs.append(scene_record("resized", "big.png"))  # same aspect, twice the record's size
    _save(tmp_path / "square.png", rgb.resize((80, 80)))
    recs.append(scene_record("aspect", "square.png"))
    boxes = scene_record("boxes", "ok.png")
    boxes.regions = [
        Region(box=(30, 40, 10, 20), phrases=["inverted white"], region_id="inv"),
        Region(box=(45, -10, 95, 25), phrases=["red, outside"], region_id="out"),
        Region(box=(10, 20, 10, 40), phrases=["zero width"], region_id="zero"),
        Region(box=(100, 100, 120, 120), phrases=["beyond the image"], region_id="beyond"),
        Region(box=(math.nan, 0, 5, 5), phrases=["nan"], region_id="nan"),
    ]
    recs.append(boxes)
    caps = scene_record("captions", "ok.png")
    long = "a very long caption " * 100
    caps.regions = [
        Region(box=(10, 20, 30, 40), phrases=["", "   ", "white square"], region_id="blank+ok"),
        Region(box=(10, 20, 30, 40), phrases=[""], region_id="blank"),
        Region(box=(50, 5, 70, 25), phrases=[long], region_id="long"),
        Region(box=(50, 5, 70, 25), phrases=["carré rouge 红色方块 🟥"], region_id="unicode"),
        Region(box=(50, 5, 70, 25), phrases=[3, "red"], region_id="notstr"),
        Region(box=(50, 5, 70, 25), phrases="red block", region_id="str"),
    ]
    recs.append(caps)
    none = scene_record("no-regions", "ok.png")
    none.regions = [Region(box=(0, 0, 0, 0), phrases=["x"], region_id="z")]
    recs.append(none)
    recs.append(ImageRecord(image_id="empty", file_name="ok.png", width=80, height=60, regions=[]))
    return tmp_path, recs


def _kinds(report, image_id):
    return sorted({(i.kind, i.action) for i in report.issues() if i.image_id == image_id})


def test_every_bad_input_is_handled_or_reported(bad_set):
    root, recs = bad_set
    ds = RegionDataset(recs, root, train=False, transform=TransformConfig(image_size=S), max_caption_chars=100)
    items = {rec.image_id: ds[i] for i, rec in enumerate(recs)}
    kept = {k for k, v in items.items() if isinstance(v, Sample)}
    # evaluation keeps zero-area regions (VG-full scores every region): "no-regions" has one such box
    assert kept == {"ok", "gray", "rgba", "g16", "cmyk", "exif-displayed", "exif-raw", "resized", "boxes", "captions",
                    "no-regions"}
    from sca.data.report import DataReport

    report = DataReport(keep=100)
    for item in items.values():
        report.merge(item.report)
    expect_dropped = {"missing": "image_missing", "truncated": "image_corrupt", "corrupt": "image_corrupt",
                      "aspect": "image_size_mismatch", "empty": "no_regions"}
    for image_id, kind in expect_dropped.items():
        assert isinstance(items[image_id], BadSample) and (kind, "dropped-image") in _kinds(report, image_id)
    assert ("image_missing", "dropped-image") in _kinds(report, "missing")
    assert "nowhere.png" in next(i.detail for i in report.issues("image_missing"))
    for image_id in ("gray", "rgba", "g16", "cmyk"):
        assert ("image_mode", "fixed") in _kinds(report, image_id)
    assert ("image_exif", "fixed") in _kinds(report, "exif-displayed") and ("image_exif", "fixed") in _kinds(report, "exif-raw")
    assert ("image_size_mismatch", "fixed") in _kinds(report, "resized")
    assert report.count("image_size_mismatch", "dropped-image") == 1
    # converted images carry the same content: the white block is where the record says
    for image_id in ("ok", "gray", "rgba", "g16", "cmyk", "exif-displayed", "exif-raw", "resized"):
        s = items[image_id]
        x0, y0, x1, y1 = (int(round(v)) for v in s.boxes[0].tolist())
        inside = s.pixel_values[:, y0 + 2:y1 - 2, x0 + 2:x1 - 2].mean().item()
        assert inside > 1.5, image_id  # white, normalised (~2.0); the dark background is ~ -1.7
    # boxes: inverted swapped, outside clamped, NaN dropped; zero-area (and clamped to zero) kept at
    # evaluation, dropped in training; each with its region id
    b = items["boxes"]
    assert b.region_ids == ["inv", "out", "zero", "beyond"]
    np.testing.assert_allclose(b.geometry.boxes_to_original(b.boxes.numpy()),
                               [[10, 20, 30, 40], [45, 0, 80, 25], [10, 20, 10, 40], [80, 60, 80, 60]], atol=1e-3)
    issues = {(i.kind, i.action, i.region_id) for i in report.issues() if i.image_id == "boxes"}
    assert issues == {("box_inverted", "fixed", "inv"), ("box_outside", "fixed", "out"),
                      ("box_empty", "kept", "zero"), ("box_outside", "fixed", "beyond"),
                      ("box_empty", "kept", "beyond"), ("box_nonfinite", "dropped-region", "nan")}
    train = RegionDataset(recs, root, train=True, transform=TransformConfig(image_size=S), max_caption_chars=100)
    index = {rec.image_id: i for i, rec in enumerate(recs)}
    tb = train[index["boxes"]]
    assert sorted(tb.region_ids) == ["inv", "out"]
    assert {(i.kind, i.action, i.region_id) for i in tb.report.issues() if i.kind == "box_empty"} == {
        ("box_empty", "dropped-region", "zero"), ("box_empty", "dropped-region", "beyond")}
    assert isinstance(train[index["no-regions"]], BadSample)
    # captions: blanks dropped, long cut (reference kept whole), unicode kept, non-strings dropped
    c = items["captions"]
    assert c.region_ids == ["blank+ok", "long", "unicode", "notstr", "str"]
    assert c.targets[0] == "white square" and len(c.targets[1]) == 100 and len(c.references[1][0]) == 2000
    assert c.targets[2] == "carré rouge 红色方块 🟥" and c.targets[3] == "red" and c.targets[4] == "red block"
    cap_issues = {(i.kind, i.action, i.region_id) for i in report.issues() if i.image_id == "captions"}
    assert cap_issues == {("caption_empty", "fixed", "blank+ok"), ("caption_empty", "dropped-region", "blank"),
                          ("caption_long", "fixed", "long"), ("caption_invalid", "fixed", "notstr"),
                          ("caption_invalid", "fixed", "str")}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_over_bad_data_never_dies_and_accounts_for_every_image(bad_set, workers):
    root, recs = bad_set
    ds = RegionDataset(recs, root, train=True, transform=TransformConfig(image_size=S), regions_per_image=3)
    loader = make_loader(ds, RegionCollator(tokenizer()), batch_size=4, shuffle=True, num_workers=workers, seed=0)
    seen, dropped, regions = [], 0, 0
    for batch in loader:
        seen += batch.image_ids
        dropped += batch.report.count(action="dropped-image")
        regions += batch.num_regions
        assert batch.captions is None or batch.captions.input_ids.shape[0] == batch.boxes.shape[0] * batch.boxes.shape[1]
    assert len(seen) + dropped == len(recs) and len(set(seen)) == len(seen) == 10
    assert regions > 10


def test_unforeseen_errors_are_reported_unless_strict(tmp_path, monkeypatch):
    write_png(tmp_path / "ok.png", scene())
    ds = RegionDataset([scene_record("ok", "ok.png")], tmp_path, train=False, transform=TransformConfig(image_size=S))

    def broken(*args, **kwargs):
        raise RuntimeError("resampler exploded")

    monkeypatch.setattr("sca.data.dataset.apply_geometry", broken)
    bad = ds[0]
    assert isinstance(bad, BadSample) and bad.image_id == "ok"
    assert "RuntimeError: resampler exploded" in bad.report.issues("sample_error")[0].detail
    ds.strict = True
    with pytest.raises(RuntimeError, match="exploded"):
        ds[0]


def test_check_runs_over_the_whole_set(bad_set):
    root, recs = bad_set
    report = RegionDataset(recs, root, train=True).check(images=True)
    assert report.count("image_missing") == 1 and report.count("image_corrupt") == 2
    assert report.count("box_nonfinite") == 1 and report.count("no_regions", "dropped-image") == 2
    evaluation = RegionDataset(recs, root, train=False).check()  # the zero-area region is scored there
    assert evaluation.count("no_regions", "dropped-image") == 1 and evaluation.count("box_empty", "kept") == 3


def test_bad_record_lines_are_counted_when_loading(tmp_path):
    good = '{"file_name":"ok.png","height":60,"image_id":1,"regions":[{"box":[10,20,30,40],"phrases":["w"]}],"width":80}'
    (tmp_path / "r.jsonl").write_text(f"{good}\n{{oops\n{good}\n")
    write_png(tmp_path / "ok.png", scene())
    ds = RegionDataset(tmp_path / "r.jsonl", tmp_path, train=False, transform=TransformConfig(image_size=S))
    assert len(ds) == 2 and ds.load_report.count("record_invalid", "dropped-image") == 1
    with pytest.raises(ValueError, match="regions_per_image"):
        RegionDataset([], tmp_path, train=True, regions_per_image=0)
