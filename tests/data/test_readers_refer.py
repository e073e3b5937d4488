"""RefCOCO / RefCOCO+ / RefCOCOg readers and the restricted unpickler."""

import os
import pickle

import pytest

from sca.data.fixtures import py2_pickle_dumps, write_refer
from sca.data.readers import read_dataset, read_refer, safe_load_pickle
from sca.data.readers.refer import UnsafePickleError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_refer(tmp_path_factory.mktemp("refer"))


def test_py2_pickle_loads_as_plain_values(root):
    refs = safe_load_pickle(root / "refcocog" / "refs(umd).p")
    assert isinstance(refs, list) and len(refs) == 4
    assert refs[1]["sentences"][1]["raw"] == "left one (2)" and isinstance(refs[1]["split"], str)
    data = py2_pickle_dumps({"a": [1, 300, 70000, 2**40, -5, 1.5, None, True, ("t", "é")], "b": "x" * 300})
    assert pickle.loads(data, encoding="utf-8") == safe_load_pickle_bytes(data, root)


def safe_load_pickle_bytes(data, root):
    p = root / "tmp.p"
    p.write_bytes(data)
    return safe_load_pickle(p)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


class Plain:
    pass


def test_restricted_unpickler_refuses_code_and_classes(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([{"ok": 1}, _Evil(str(marker))], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"evil\.p: refused to load global '(posix|os)\.makedirs'"):
        safe_load_pickle(evil)
    assert not marker.exists()
    cls = tmp_path / "cls.p"
    cls.write_bytes(pickle.dumps(Plain(), protocol=2))
    with pytest.raises(UnsafePickleError, match="Plain'.*only plain builtin values"):
        safe_load_pickle(cls)
    ok = tmp_path / "set.p"
    ok.write_bytes(pickle.dumps({"s": {1, 2}, "f": frozenset([3])}, protocol=2))
    assert safe_load_pickle(ok) == {"s": {1, 2}, "f": frozenset([3])}


def test_refcocog_val_all_sentences_are_references(root):
    recs = read_dataset("refcocog", root, "val")
    assert [r.image_id for r in recs] == [25, 30]
    region = recs[1].regions[0]
    assert region.region_id == 3 and region.category == "person"
    assert region.phrases == ["the refcocog thing 3", "left one 6"]  # 'sent' form, both sentences
    assert region.box == (10.0, 10.0, 30.0, 30.0)
    assert recs[0].file_name == "train2014/COCO_train2014_000000000025.jpg"
    raw = read_refer(root, "val", dataset="refcocog", text="raw")
    assert raw[1].regions[0].phrases == ["The refcocog thing #3!", "left one (6)"]


def test_refer_splits_come_from_the_refs(root):
    assert [r.image_id for r in read_dataset("refcoco", root, "testA")] == [9]
    google = read_dataset("refcocog-google", root, "train")
    assert [len(r.regions) for r in google] == [2]  # both refs of image 9
    assert read_dataset("refcoco+", root, "all").num_regions == 4
    with pytest.raises(ValueError, match=r"has no split 'testA'; it has \['test', 'train', 'val'\]"):
        read_refer(root, "testA", dataset="refcocog")
    with pytest.raises(ValueError, match="split_by 'unc' is not one of \\('umd', 'google'\\)"):
        read_refer(root, "val", dataset="refcocog", split_by="unc")
    with pytest.raises(ValueError, match="refer dataset 'refclef' is not one of"):
        read_refer(root, "val", dataset="refclef")
