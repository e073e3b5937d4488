"""``sca data ...`` on the command line (in process)."""

import json

import pytest

from sca import cli
from sca.cli import main
from sca.data.io import read_records, write_records
from sca.data.records import ImageRecord, Region


@pytest.fixture(autouse=True)
def _only_data_commands(monkeypatch):
    """Build the CLI with just ``sca data``: other command modules are imported by their own tests
    (importing them here, under capsys, would leak this test's captured streams into theirs)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["sca.data.commands"])


def test_generate_verify_check_and_show(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "generate", "--out", str(out), "--train", "3", "--val", "1", "--test", "1",
                 "--flavour", "weak", "--workers", "1", "--no-gzip"]) == 0
    assert "wrote 5 images" in capsys.readouterr().out
    recs = read_records(out / "train.jsonl")
    assert len(recs) == 3 and all(reg.phrases == [reg.category] for r in recs for reg in r.regions)
    assert main(["data", "verify", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ok"] is True
    assert main(["data", "check", str(out / "val.jsonl"), "--image-root", str(out), "--images", "--strict"]) == 0
    assert main(["data", "show", str(out / "train.jsonl"), "--image-root", str(out), "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    (out / "val.jsonl").write_text("")
    assert main(["data", "verify", str(out)]) == 1


def test_check_reports_bad_records_and_strict_fails(tmp_path, capsys):
    rec = ImageRecord(image_id=1, file_name="none.png", width=10, height=10,
                      regions=[Region(box=(5, 5, 2, 2), phrases=["inverted"], region_id=1),
                               Region(box=(0, 0, 0, 3), phrases=["flat"], region_id=2)])
    write_records(tmp_path / "r.jsonl", [rec])
    assert main(["data", "check", str(tmp_path / "r.jsonl"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"box_empty/dropped-region": 1, "box_inverted/fixed": 1}
    # evaluation prompts and scores every region, the zero-area one too (VG-full)
    assert main(["data", "check", str(tmp_path / "r.jsonl"), "--json", "--use", "eval"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"box_empty/kept": 1, "box_inverted/fixed": 1}
    assert main(["data", "check", str(tmp_path / "r.jsonl"), "--strict"]) == 1
    assert main(["data", "check", str(tmp_path / "r.jsonl"), "--image-root", str(tmp_path), "--images"]) == 0
    assert "image_missing" in capsys.readouterr().out
    # user errors: one clear line, exit 2
    assert main(["data", "show", str(tmp_path / "r.jsonl"), "--image-root", ".", "--index", "5", "--out", "x.png"]) == 2
    assert "--index 5" in capsys.readouterr().err
