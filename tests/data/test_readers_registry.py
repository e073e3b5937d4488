"""The dataset table, the dispatcher, and the compact record store over every fixture."""

import pytest
from PIL import Image

from sca.data.fixtures import write_all
from sca.data.readers import DATASETS, dataset_names, read_dataset
from sca.data.records import ImageRecord


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("all"))


CASES = [(name, split) for name, spec in DATASETS.items() for split in spec.splits]


@pytest.mark.parametrize("name, split", CASES)
def test_every_dataset_split_reads_and_points_at_real_images(roots, name, split):
    recs = read_dataset(name, roots[name], split)
    assert len(recs) > 0 and recs.report.images == len(recs) and recs.report.regions == recs.num_regions
    for rec in recs:
        with Image.open(roots[name] / rec.file_name) as im:
            assert im.size == (rec.width, rec.height)
        assert rec.source == recs.source and rec.split == split and rec.regions
        for region in rec.regions:
            assert region.phrases and all(isinstance(p, str) and p for p in region.phrases)
            assert len(region.box) == 4


def test_dispatcher_errors_list_what_is_accepted(roots):
    assert {"vg", "vg-grit", "vg-glamm", "coco", "o365", "v3det", "refcoco", "refcoco+", "refcocog"} <= set(
        dataset_names())
    with pytest.raises(KeyError, match="unknown dataset 'visualgenome'; known datasets: \\['vg'"):
        read_dataset("visualgenome", roots["vg"], "train")
    with pytest.raises(ValueError, match="has no split 'testA'; splits: \\('train', 'val'\\)"):
        read_dataset("coco", roots["coco"], "testA")
    with pytest.raises(TypeError, match="dataset 'coco'.*'text'"):
        read_dataset("coco", roots["coco"], "val", text="raw")
    with pytest.raises(TypeError, match="fixes options \\['dataset'\\]"):
        read_dataset("refcoco", roots["refcoco"], "val", dataset="refcocog")
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        read_dataset("coco", roots["vg"], "val")


def test_compact_records_sequence_behaviour(roots):
    recs = read_dataset("vg", roots["vg"], "all")
    assert recs[-1].image_id == recs[len(recs) - 1].image_id
    assert [r.image_id for r in recs[1:3]] == [recs[1].image_id, recs[2].image_id]
    with pytest.raises(IndexError, match="out of range for 5 records"):
        recs[5]
    assert ImageRecord.from_dict(recs[0].to_dict()) == recs[0]
    assert 0 < recs.nbytes < 10_000
    assert recs.region_counts().tolist() == [3, 2, 2, 1, 2]


def test_builder_keeps_non_integer_region_ids():
    from sca.data.readers.compact import RecordsBuilder

    b = RecordsBuilder(source="t", split="x")
    b.add_image(1, "a.jpg", 10, 10)
    b.add_single_phrase_regions([0, 0, 1, 1, 0, 0, 2, 2], ["p", "q"], [7, 8])
    b.add_region((1, 1, 3, 3), ["r", "s"], "ref-9", category="cup")
    b.add_single_phrase_regions([0, 0, 1, 1], ["t"], [None])
    recs = b.build().finalize()
    assert [r.region_id for r in recs[0].regions] == [7, 8, "ref-9", None]
    assert recs[0].regions[2].phrases == ["r", "s"] and recs[0].regions[2].category == "cup"
