"""Record I/O: JSON Lines round trip, deterministic bytes, manifest, the compact store, the report."""

import gzip
import json
import math
import pickle

import pytest

from sca.data.io import (
    RecordStore,
    dumps_record,
    iter_records,
    loads_record,
    read_manifest,
    read_records,
    verify_manifest,
    write_manifest,
    write_records,
)
from sca.data.records import ImageRecord, Region
from sca.data.report import DataReport


def _records(n=3):
    out = []
    for i in range(n):
        regions = [Region(box=(1, 2, 30.5, 40), phrases=["a red star", "ünïcödé 星"], category="star",
                          mask={"size": [50, 60], "counts": "PP0"}, region_id=f"{i}-0",
                          attributes={"colour": "red", "z": 0}),
                   Region(box=(0, 0, 5, 5), phrases=["dot"], task="recognition", region_id=7)]
        out.append(ImageRecord(image_id=i, file_name=f"images/{i}.png", width=60, height=50, regions=regions,
                               source="synthetic-captions" if i % 2 else "vg", split="train"))
    return out


def test_line_round_trip_omits_none_and_keeps_unicode():
    rec = _records(1)[0]
    line = dumps_record(rec)
    assert "\n" not in line and "星" in line  # UTF-8, not \u escapes
    d = json.loads(line)
    assert "category" not in d["regions"][1] and "mask" not in d["regions"][1]  # None fields left out
    back = loads_record(line)
    assert back == rec
    assert back.regions[0].box == (1.0, 2.0, 30.5, 40.0) and back.regions[1].task_id == 0


def test_old_lines_without_attributes_still_load():
    line = '{"file_name":"a.jpg","height":4,"image_id":1,"regions":[{"box":[0,0,1,1],"phrases":["x"]}],"width":4}'
    rec = loads_record(line)
    assert rec.regions[0].attributes is None and rec.regions[0].task == "caption"


@pytest.mark.parametrize("line, needle", [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"image_id": 1, "file_name": "a", "width": 1, "height": 1, "bogus": 2}', "schema"),
    ('{"image_id":1,"file_name":"a","width":1,"height":1,"regions":[{"box":[0,0,1],"phrases":[]}]}', "x0 y0 x1 y1"),
])
def test_bad_lines_name_the_problem(line, needle):
    with pytest.raises(ValueError, match=needle):
        loads_record(line)


@pytest.mark.parametrize("name", ["recs.jsonl", "recs.jsonl.gz"])
def test_write_is_deterministic_and_reads_back(tmp_path, name):
    recs = _records()
    s1 = write_records(tmp_path / "a" / name, recs)
    s2 = write_records(tmp_path / "b" / name, recs)
    b1, b2 = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
    assert b1 == b2 and s1["sha256"] == s2["sha256"] and s1["bytes"] == len(b1)
    if name.endswith(".gz"):
        assert b1[:2] == b"\x1f\x8b" and b1[4:8] == b"\0\0\0\0"  # gzip, mtime 0
        assert gzip.decompress(b1).count(b"\n") == 3
    assert read_records(tmp_path / "a" / name) == recs
    assert s1["images"] == 3 and s1["regions"] == 6 and s1["masks"] == 3 and s1["phrases"] == 9
    assert s1["sources"] == {"synthetic-captions": 1, "vg": 2} and s1["tasks"] == {"caption": 3, "recognition": 3}


def test_nan_box_refused_when_writing(tmp_path):
    rec = _records(1)[0]
    rec.regions[0].box = (math.nan, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="image 0"):
        write_records(tmp_path / "x.jsonl", [rec])
    store = RecordStore.from_records([rec])  # the in-memory store keeps it for the dataset to report
    assert math.isnan(store[0].regions[0].box[0])


def test_bad_lines_raise_with_file_and_line_or_are_reported(tmp_path):
    path = tmp_path / "r.jsonl"
    good = dumps_record(_records(1)[0])
    path.write_text(f"{good}\n\n{{broken\n{good}\n")
    with pytest.raises(ValueError, match=r"r\.jsonl:3"):
        read_records(path)
    report = DataReport()
    assert len(list(iter_records(path, report))) == 2
    assert report.count("record_invalid", "dropped-image") == 1
    assert "r.jsonl:3" in report.issues("record_invalid")[0].detail


def test_manifest_counts_checksums_and_tamper_detection(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.png").write_bytes(b"png-bytes")
    files = {"train.jsonl.gz": write_records(tmp_path / "train.jsonl.gz", _records(3)),
             "val.jsonl": write_records(tmp_path / "val.jsonl", _records(1))}
    m = write_manifest(tmp_path, files, image_dir="images", params={"seed": 0})
    assert read_manifest(tmp_path) == json.loads((tmp_path / "manifest.json").read_text()) == m
    assert m["totals"] == {"images": 4, "regions": 8, "masks": 4, "phrases": 12}
    assert m["sources"] == ["synthetic-captions", "vg"] and m["images"]["files"] == 1
    assert verify_manifest(tmp_path) == []
    (tmp_path / "val.jsonl").write_text("changed\n")
    (tmp_path / "images" / "1.png").write_bytes(b"new")
    problems = verify_manifest(tmp_path)
    assert any("val.jsonl" in p for p in problems) and any("images/" in p for p in problems)


def test_record_store_is_compact_indexable_and_picklable(tmp_path):
    recs = _records(5)
    store = RecordStore.from_records(recs)
    assert len(store) == 5 and store[3] == recs[3] and store[-1] == recs[4] and store[1:3] == recs[1:3]
    assert store.num_regions.tolist() == [2] * 5
    assert store.nbytes == sum(len(dumps_record(r).encode()) for r in recs) + 6 * 8 + 5 * 4  # lines + offsets + counts
    with pytest.raises(IndexError, match="out of range"):
        store[5]
    assert pickle.loads(pickle.dumps(store))[2] == recs[2]
    write_records(tmp_path / "r.jsonl.gz", recs)
    assert list(RecordStore.load(tmp_path / "r.jsonl.gz")) == recs


def test_report_counts_merges_and_round_trips():
    a, b = DataReport(keep=2), DataReport(keep=2)
    for i in range(3):
        a.add("box_inverted", "fixed", image_id=i, region_id=i * 10, detail="swapped")
    b.add("image_missing", "dropped-image", image_id="x.jpg", detail="no such file")
    a.merge(b)
    assert a.count() == 4 and a.count(action="fixed") == 3 and len(a.issues("box_inverted")) == 2
    s = a.summary()
    assert s["data/dropped_images"] == 1 and s["data/fixed"] == 3 and s["data/box_inverted/fixed"] == 3
    assert "image 'x.jpg'" in str(a) and "box_inverted" in str(a)
    back = DataReport.from_dict(json.loads(a.to_json()))
    assert back.counts == a.counts and back.issues("image_missing")[0].image_id == "x.jpg"
    with pytest.raises(ValueError, match="action"):
        a.add("box_empty", "ignored")
    assert not DataReport() and str(DataReport()) == "data report: no issues"
