"""Visual Genome readers (v1.2 + DenseCap split, GRiT, GLaMM) and the streaming JSON walker."""

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sca.data.fixtures import write_vg, write_vg_glamm, write_vg_grit
from sca.data.readers import read_dataset, read_vg, read_vg_glamm
from sca.data.readers.jsonstream import JSONStreamError, iter_array, walk_object


@pytest.fixture(scope="module")
def vg_root(tmp_path_factory):
    return write_vg_glamm(write_vg_grit(write_vg(tmp_path_factory.mktemp("vg"))))


def test_vg_train_boxes_are_xyxy_and_phrases_raw(vg_root):
    recs = read_dataset("vg", vg_root, "train")
    assert len(recs) == 3 and recs.num_regions == 7
    first = recs[0]
    assert (first.image_id, first.file_name, first.width, first.height) == (1, "VG_100K_2/1.jpg", 64, 48)
    assert first.regions[0].box == (2.0, 3.0, 22.0, 13.0)  # x, y, w, h = 2, 3, 20, 10
    assert [r.phrases for r in first.regions][1:] == [["The sky is BLUE "], ['sign reading "{stop}"']]
    assert [r.region_id for r in first.regions] == [101, 102, 103]
    assert all(r.task == "caption" and r.category is None for r in first.regions)
    assert recs[1].regions[0].phrases == ["a café with a red door"]
    # no box dedup: image 3's two identical regions both stay
    assert [r.box for r in recs[2].regions] == [(1.0, 1.0, 11.0, 11.0)] * 2


def test_vg_odd_boxes_kept_and_reported_or_dropped(vg_root):
    recs = read_vg(vg_root, "train")
    rep = recs.report
    assert rep.issues["box_outside"] == [(1, 103)]
    assert rep.issues["box_empty"] == [(2, 202)]
    assert 103 in [r.region_id for r in recs[0].regions]
    dropped = read_vg(vg_root, "train", bad_boxes="drop")
    assert dropped.num_regions == 5 and sorted(dropped.report.issues["box_dropped"]) == [(1, 103), (2, 202)]
    with pytest.raises(ValueError, match="bad_boxes='nope' is not one of \\('keep', 'drop'\\)"):
        read_vg(vg_root, "train", bad_boxes="nope")


def test_vg_test_split_reports_image_without_regions(vg_root):
    recs = read_vg(vg_root, "test")
    assert [r.image_id for r in recs] == [6]
    assert recs.report.issues["image_without_regions"] == [5]
    assert recs.report.images == 1 and recs.report.regions == 2
    kept = read_vg(vg_root, "test", keep_empty=True)
    assert [r.image_id for r in kept] == [5, 6] and kept[0].regions == []


def test_vg_all_split_and_split_errors(vg_root, tmp_path):
    assert len(read_vg(vg_root, "all")) == 5  # image 5 has no region
    with pytest.raises(ValueError, match="'dev' is not one of"):
        read_vg(vg_root, "dev")
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": [1, 999], "test": [6]}))
    recs = read_vg(vg_root, "train", splits_file=splits)
    assert [r.image_id for r in recs] == [1]
    assert recs.report.issues["split_image_unknown"] == [999]
    with pytest.raises(ValueError, match="has no split 'val'"):
        read_vg(vg_root, "val", splits_file=splits)
    bare = write_vg(tmp_path / "bare", images=False)
    (bare / "densecap_splits.json").unlink()
    with pytest.raises(FileNotFoundError, match="DenseCap split file .*none of these files exists: .*bare/densecap_splits.json, .*bare/annotations/densecap_splits.json"):
        read_vg(bare, "train")
    assert len(read_vg(bare, "all")) == 5


def test_vg_task_option(vg_root):
    recs = read_vg(vg_root, "val", task="recognition")
    assert recs[0].regions[0].task_id == 0
    with pytest.raises(ValueError, match="'detect' is not one of"):
        read_vg(vg_root, "val", task="detect")


@pytest.mark.parametrize("chunk", [16, 17, 33, 101])
def test_vg_tiny_chunks_give_identical_records(vg_root, chunk):
    # values, multi-byte UTF-8 ("café") and numbers cut at chunk boundaries
    ref = [r.to_dict() for r in read_vg(vg_root, "all")]
    assert [r.to_dict() for r in read_vg(vg_root, "all", chunk=chunk)] == ref


def test_grit_and_glamm_files(vg_root, tmp_path):
    grit = read_dataset("vg-grit", vg_root, "train")
    assert (len(grit), grit.num_regions) == (3, 7)
    assert grit[0].file_name == "VG_100K_2/1.jpg"  # mapped through image_data.json
    assert grit[0].regions[2].phrases == ['sign reading "{stop}"'] and grit[0].regions[2].category is None
    glamm = read_dataset("vg-glamm", vg_root, "test")
    assert [len(r.regions) for r in glamm] == [1, 1] and [r.image_id for r in glamm] == [4, 6]
    assert glamm[1].regions[0].phrases == ["a cat's ear"] and glamm[1].regions[0].box == (0.0, 0.0, 16.0, 16.0)
    # without image_data.json: GRiT's / GLaMM's flat images/ folder
    write_vg_glamm(tmp_path)
    assert read_dataset("vg-glamm", tmp_path, "test")[0].file_name == "images/4.jpg"
    with pytest.raises(ValueError, match="GLaMM VG split 'train' is not one of \\('test',\\)"):
        read_vg_glamm(vg_root, "train")


@pytest.mark.parametrize("fast", [True, False])
def test_iter_array_numbers_across_chunks(tmp_path, fast):
    p = tmp_path / "a.json"
    p.write_text('[1234567, 89, {"k": [true, null, -1.5e3]}, "x\\"y"]  \n')
    assert list(iter_array(p, chunk=16, fast=fast)) == [1234567, 89, {"k": [True, None, -1500.0]}, 'x"y']
    p.write_text(" \n[]")
    assert list(iter_array(p, fast=fast)) == []


@pytest.mark.parametrize("chunk", [16, 23, 64, 1 << 20])
def test_fast_path_quotes_backslashes_and_brackets_in_strings(tmp_path, chunk):
    items = [{"phrase": 'a "quoted" {brace} [bracket]', "n": i} for i in range(5)]
    items += [{"p": "ends with backslash \\", "q": ["\\\"", "}]"]}, {"deep": [[[{"x": "]}"}]]]}, {"é": "ü €"}]
    p = tmp_path / "s.json"
    p.write_text(json.dumps(items, ensure_ascii=False))
    assert list(iter_array(p, chunk=chunk, fast=True)) == items
    assert list(iter_array(p, chunk=chunk, fast=False)) == items


def test_walk_object_streams_only_asked_keys(tmp_path):
    p = tmp_path / "o.json"
    p.write_text('{"info": {"a": 1}, "images": [{"id": 1}, {"id": 2}], "annotations": [], "n": 3}')
    got = list(walk_object(p, {"images", "annotations"}, chunk=16))
    assert got == [("info", {"a": 1}, False), ("images", {"id": 1}, True), ("images", {"id": 2}, True),
                   ("n", 3, False)]


@pytest.mark.parametrize("text, message", [
    ('[{"a": 1}, {"b": ', "invalid JSON"),
    ('[1, 2] trailing', "unexpected data after the top-level array"),
    ('{"a": 1}', "expected one of '\\['"),
])
@pytest.mark.parametrize("fast", [True, False])
def test_stream_errors_name_file_and_offset(tmp_path, text, message, fast):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(JSONStreamError, match=message) as err:
        list(iter_array(p, chunk=16, fast=fast))
    assert "bad.json" in str(err.value) and re.search(r"at (character|byte) \d+", str(err.value))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(alphabet='ab{}[]",\\ é\n', max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='k"\\{]', max_size=3), inner,
                                                                 max_size=3),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.dictionaries(st.text(max_size=4), _json_values, max_size=3) | st.lists(_json_values,
                                                                                                 max_size=3),
                      max_size=6),
       chunk=st.integers(16, 80), indent=st.sampled_from([None, 1]))
def test_fast_and_stdlib_paths_agree_with_json_loads(tmp_path, items, chunk, indent):
    p = tmp_path / "h.json"
    p.write_text(json.dumps(items, ensure_ascii=False, indent=indent))
    assert list(iter_array(p, chunk=chunk, fast=True)) == items
    assert list(iter_array(p, chunk=chunk, fast=False)) == items
