"""The files users really have: `sca download NAME --from DIR` and the data stage on every layout the
official archives, the reference code, mmdetection, GLaMM and the refer toolkit leave on disk. The
tests write each layout (sca.data.fixtures); nothing reaches the network."""

import json
import shutil

import pytest

from sca.cli import main
from sca.data.download import fetch
from sca.data.fixtures import (
    O365_LAYOUTS,
    write_coco,
    write_o365,
    write_o365_archives,
    write_refer,
    write_refer_zips,
    write_v3det,
    write_vg,
    write_vg_glamm,
    write_vg_grit,
)
from sca.data.locate import AmbiguousFileError
from sca.data.prepare import DataItem, ImagesMissingError, prepare_item
from sca.data.readers import read_dataset

QUIET = {"log": lambda m: None, "progress": False}


def _all_images_there(root, records):
    missing = [r.file_name for r in records if not (root / r.file_name).is_file()]
    assert not missing, missing[:3]


def _download(capsys, *args):
    code = main(["download", *map(str, args), "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- Objects365 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", O365_LAYOUTS)
def test_o365_from_an_unpacked_copy_in_every_layout(tmp_path, capsys, layout):
    mine = write_o365(tmp_path / "mine", layout=layout)
    root = tmp_path / "root"
    code, out, err = _download(capsys, "o365", "--root", root, "--from", mine)
    assert code == 0, err
    assert "linked" in out and "downloaded" not in out
    for split, n in (("train", 3), ("val", 2)):
        recs = read_dataset("o365", root, split)
        assert len(recs) == n
        _all_images_there(root, recs)
    # a second run finds everything in root
    code, out, _ = _download(capsys, "o365", "--root", root)
    assert code == 0 and set(line.split()[0] for line in out.splitlines()[:-1]) == {"present"}


@pytest.mark.parametrize("nested", [False, True], ids=["patch-folders", "images-vK-patch-folders"])
def test_o365_from_the_official_archives(tmp_path, capsys, nested):
    mine = write_o365_archives(tmp_path / "served", nested=nested)
    root = tmp_path / "root"
    code, out, err = _download(capsys, "o365", "--root", root, "--from", mine)
    assert code == 0, err
    assert "copied     val/images/v2/patch16.tar.gz" in out
    assert (root / "val/images/v2/patch16/objects365_v2_00000017.jpg").is_file()  # moved up when nested
    assert not list(root.rglob("*.tar.gz")) and not (root / "val/images/v2/images").exists()
    for split in ("train", "val"):
        _all_images_there(root, read_dataset("o365", root, split))


def test_val_only_copies_with_split(tmp_path, capsys):
    o365 = write_o365(tmp_path / "o365", layout="official")
    shutil.rmtree(o365 / "train")
    coco = write_coco(tmp_path / "coco")
    shutil.rmtree(coco / "train2017")
    (coco / "annotations/instances_train2017.json").unlink()
    v3det = write_v3det(tmp_path / "v3det")
    (v3det / "annotations/v3det_2023_v1_train.json").unlink()
    for name, mine in (("o365", o365), ("coco", coco), ("v3det", v3det)):
        root = tmp_path / f"root-{name}"
        code, out, err = _download(capsys, name, "--root", root, "--from", mine, "--split", "val")
        assert code == 0, (name, err)
        _all_images_there(root, read_dataset(name, root, "val"))
    # without --split the missing train files are named, with where they were looked for and the layouts
    code, _, err = _download(capsys, "o365", "--root", tmp_path / "r2", "--from", o365)
    assert code == 1
    assert "annotations/zhiyuan_objv2_train.json" in err and f"looked for {o365}/" in err
    assert "Accepted layouts: the official tree" in err and "mmdetection's" in err
    code, _, err = _download(capsys, "vg", "--split", "train")
    assert code == 2 and "every one of its files serves all splits" in err
    code, _, err = _download(capsys, "coco", "--split", "test")
    assert code == 2 and "its splits: ['train', 'val']" in err


# ---- Visual Genome ---------------------------------------------------------------------------------------
def test_vg_reference_layout_with_annotations_folder(tmp_path, capsys):
    mine = write_vg(tmp_path / "VisualGenome", layout="reference")
    write_vg_grit(mine / "annotations")
    write_vg_glamm(mine / "annotations")
    # read in place (download: false) ...
    for name, split in (("vg", "test"), ("vg", "train"), ("vg-grit", "train"), ("vg-glamm", "test")):
        recs = read_dataset(name, mine, split)
        assert len(recs) and all((mine / r.file_name).is_file() for r in recs), name
    # ... or linked into a root by --from
    root = tmp_path / "root"
    for name in ("vg", "vg-grit", "vg-glamm"):
        code, out, err = _download(capsys, name, "--root", root, "--from", mine)
        assert code == 0, err
    assert read_dataset("vg", root, "train").num_regions == 7
    _all_images_there(root, read_dataset("vg-grit", root, "test"))


def test_a_file_already_in_root_needs_no_live_url(tmp_path, capsys):
    root = write_vg_grit(tmp_path / "vg")  # GRiT's train.json / test.json: their URL is dead
    code, out, err = _download(capsys, "vg-grit", "--root", root)
    assert code == 0, err
    assert out.splitlines()[:2] == ["present    train.json", "present    test.json"]
    shutil.move(root / "train.json", tmp_path / "train.json")
    code, _, err = _download(capsys, "vg-grit", "--root", root)
    assert code == 1 and "train.json has no live download" in err and f"{root}/train.json is not there" in err
    (root / "annotations").mkdir()
    shutil.move(tmp_path / "train.json", root / "annotations/train.json")  # where the reference code keeps it
    assert _download(capsys, "vg-grit", "--root", root)[0] == 0
    assert read_dataset("vg-grit", root, "train").num_regions > 0


def test_ambiguous_names_are_refused_with_the_places(tmp_path):
    mine = tmp_path / "mine"
    write_vg_grit(mine / "a")
    write_vg_grit(mine / "b")
    with pytest.raises(AmbiguousFileError, match="train.json: found in 2 places .*a/train.json, .*b/train.json"):
        fetch("vg-grit", tmp_path / "root", from_dir=mine, **QUIET)


# ---- RefCOCO family ---------------------------------------------------------------------------------------
def test_refer_toolkit_data_folder_links_every_split_file(tmp_path, capsys):
    data = write_refer(tmp_path / "refer" / "data", layout="refer-toolkit")
    root = tmp_path / "root"
    for name in ("refcoco", "refcoco+", "refcocog"):
        code, out, err = _download(capsys, name, "--root", root, "--from", data)
        assert code == 0, err
    assert (root / "refcoco/refs(google).p").is_file() and (root / "refcocog/refs(google).p").is_file()
    assert (root / "train2014").resolve() == (data / "images/mscoco/images/train2014").resolve()
    for name, split in (("refcoco", "testA"), ("refcoco-google", "test"), ("refcoco+", "val"),
                        ("refcocog", "val"), ("refcocog-google", "val")):
        recs = read_dataset(name, root, split)
        assert len(recs), name
        _all_images_there(root, recs)
    # the toolkit's folder read in place finds its images folder too
    _all_images_there(data, read_dataset("refcoco", data, "val"))


def test_refer_reference_zips_and_a_copy_without_the_google_file(tmp_path, capsys):
    zips = write_refer_zips(tmp_path / "zips")
    root = tmp_path / "root"
    code, _, err = _download(capsys, "refcoco", "--root", root, "--from", zips)
    assert code == 1 and "train2014.zip (--from copy of train2014.zip): size mismatch: expected 13510573713" in err
    code, out, err = _download(capsys, "refcoco", "--root", root, "--from", zips, "--no-verify")  # a fixture zip
    assert code == 0, err
    assert "present    refcoco.zip" in out and "copied     train2014.zip" in out
    _all_images_there(root, read_dataset("refcoco-google", root, "val"))
    # a copy without refs(google).p: linked, the missing file said, the unc split readable
    mine = write_refer(tmp_path / "mine")
    (mine / "refcoco/refs(google).p").unlink()
    notes = []
    fetch("refcoco", tmp_path / "root2", from_dir=mine, log=notes.append, progress=False)
    assert any("refcoco/refs(google).p is not in your copy" in n for n in notes)
    assert len(read_dataset("refcoco", tmp_path / "root2", "val"))
    with pytest.raises(FileNotFoundError, match="refs\\(google\\).p"):
        read_dataset("refcoco-google", tmp_path / "root2", "val")


def test_refcoco_splits_have_names_and_protocols():
    from sca.data.readers import DATASETS
    from sca.evaluation.protocols import get_protocol, protocol_for_source

    for name in ("refcoco", "refcoco-google", "refcoco+", "refcocog", "refcocog-google"):
        assert name in DATASETS and get_protocol(name).name == name
        assert protocol_for_source(name) == name


# ---- the data stage ---------------------------------------------------------------------------------------
def test_data_stage_items_on_official_and_reference_layouts(tmp_path):
    vg = write_vg(tmp_path / "VisualGenome", layout="reference")
    write_vg_glamm(vg / "annotations")
    o365 = write_o365_archives(tmp_path / "o365-served")
    refer = write_refer(tmp_path / "refer/data", layout="refer-toolkit")
    out = tmp_path / "records"
    items = [{"name": "vg", "splits": ["train", "test"], "root": str(tmp_path / "d/vg"), "from": str(vg)},
             {"name": "vg-glamm", "splits": ["test"], "root": str(vg), "download": False},
             {"name": "o365", "splits": ["val"], "root": str(tmp_path / "d/o365"), "from": str(o365)},
             {"name": "refcocog", "splits": ["val"], "root": str(tmp_path / "d/refer"), "from": str(refer)}]
    summary = {}
    for item in items:
        summary.update(prepare_item(item, out, log=lambda m: None))
    assert set(summary) == {"vg/train", "vg/test", "vg-glamm/test", "o365/val", "refcocog/val"}
    assert all(v["images_missing"]["count"] == 0 for v in summary.values()), summary
    assert not (tmp_path / "d/o365/train").exists()  # only the val split's files were fetched
    assert (out / "o365/val.jsonl.gz").is_file() and (out / "o365/images").resolve() == (tmp_path / "d/o365").resolve()
    # VG-full keeps the zero-area test region in the records; crowd annotations are kept and counted
    test = read_dataset("vg", tmp_path / "d/vg", "test")
    assert test.num_regions == 2


def test_data_stage_errors_name_the_key_or_the_file(tmp_path):
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['form'\\]; accepted: \\['name', 'splits', 'root', "
                                         "'from', 'download', 'parts', 'as', 'options', 'check_images'\\]"):
        DataItem.from_dict({"name": "vg", "splits": ["test"], "form": "x"})
    with pytest.raises(ValueError, match="no split\\(s\\) \\['testA'\\]; vg has"):
        prepare_item({"name": "vg", "splits": ["testA"]}, tmp_path)
    root = write_o365(tmp_path / "o365", layout="official")
    shutil.rmtree(root / "val/images")
    with pytest.raises(ImagesMissingError, match="o365/val: none of its 2 images is under .* \\(first: "
                       ".*val/images/v1/patch0/objects365_v1_00000016.jpg\\).*looked in"):
        prepare_item({"name": "o365", "splits": ["val"], "root": str(root), "download": False}, tmp_path / "out")
    summary = prepare_item({"name": "o365", "splits": ["val"], "root": str(root), "download": False,
                            "check_images": False}, tmp_path / "out2")
    assert "images_missing" not in summary["o365/val"]
    assert (tmp_path / "out2/o365/val.jsonl.gz").is_file()


def test_a_name_is_never_taken_from_another_dataset_or_split(tmp_path, capsys):
    mine = write_refer(tmp_path / "mine")
    shutil.rmtree(mine / "refcoco")  # refcocog/instances.json must not stand in for refcoco's
    code, _, err = _download(capsys, "refcoco", "--root", tmp_path / "root", "--from", mine, "--only", "annotations")
    assert code == 1 and "refcoco/instances.json" in err and "inside a folder named refcoco" in err
    o365 = write_o365(tmp_path / "o365", layout="mmdetection")
    shutil.rmtree(o365 / "val")  # train/patch3 must not stand in for val's patch3
    code, _, err = _download(capsys, "o365", "--root", tmp_path / "r2", "--from", o365, "--split", "val", "--only",
                             "images")
    assert code == 1 and "val/images/v1/patch0" in err and "44 files missing in all" in err


def test_the_data_stage_function_writes_the_summary(tmp_path):
    from sca.pipeline.stages import make_data

    mine = write_o365(tmp_path / "mine", layout="reference")
    out = tmp_path / "records"
    summary = make_data({"source": "real", "out": str(out), "datasets": [
        {"name": "o365", "splits": ["train", "val"], "root": str(tmp_path / "o365"), "from": str(mine),
         "options": {"task": "caption"}}]})
    assert summary["o365/train"]["images_missing"] == {"count": 0, "of": 3, "first": []}
    assert json.loads((out / "summary.json").read_text())["o365/val"]["stats"]
