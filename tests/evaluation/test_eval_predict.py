"""Predictions files: one record per region, boxes back in original pixels, protocols enforced,
atomic writes, merging."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sca.data.io import read_records
from sca.evaluation.predict import (
    FIELDS,
    GenerationSettings,
    merge_predictions,
    predict_to_file,
    read_predictions,
    region_key,
    write_jsonl_atomic,
)
from sca.evaluation.protocols import ProtocolMismatchError, get_protocol, protocol_for_source


def test_one_record_per_region_with_boxes_in_original_pixels(predictions_run, synthetic_root):
    path, stats = predictions_run
    records = read_records(synthetic_root / "test.jsonl.gz")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [(rec, k, reg) for rec in records for k, reg in enumerate(rec.regions)]
    assert len(lines) == len(expected) == stats.num_regions > 0
    assert stats.num_images == len(records) and stats.bad_images == 0
    assert stats.regions_per_second > 0 and stats.model_seconds <= stats.seconds
    for line, (rec, k, reg) in zip(lines, expected, strict=True):
        assert set(FIELDS) <= set(line)
        assert (line["protocol"], line["split"]) == ("synthetic-captions", "test")
        assert (line["image_id"], line["region_id"], line["region_index"]) == (rec.image_id, reg.region_id, k)
        assert line["image_size"] == [rec.width, rec.height]
        assert rec.width != 64 or rec.height != 64  # the S frame (64) is not the original frame
        np.testing.assert_allclose(line["box"], reg.box, atol=0.01)  # S-frame prompt mapped back
        assert line["references"] == reg.phrases
        assert line["task"] == "caption"
        assert isinstance(line["candidate"], str)
        assert len(line["iou_scores"]) == 3 and all(np.isfinite(line["iou_scores"]))
    pred = read_predictions(path, protocol="synthetic-captions")
    assert len(pred) == len(lines) and list(pred.candidates()) == [region_key(x) for x in lines]


def test_forced_task_is_recorded(tiny_model, eval_dataset, tmp_path):
    from sca.training.collate import RegionCollator, make_loader

    loader = make_loader(eval_dataset, RegionCollator(tiny_model.lm.require_tokenizer()), batch_size=3,
                         shuffle=False, num_workers=0)
    path = tmp_path / "p.jsonl"
    predict_to_file(tiny_model, loader, path, protocol="synthetic-captions", split="test", progress=False,
                    settings=GenerationSettings(num_beams=1, max_new_tokens=2, task="recognition"))
    assert {r["task"] for r in read_predictions(path).records} == {"recognition"}


def test_generation_refuses_records_of_another_protocol(tiny_model, eval_dataset, tmp_path):
    from sca.training.collate import RegionCollator, make_loader

    loader = make_loader(eval_dataset, RegionCollator(tiny_model.lm.require_tokenizer()), batch_size=1,
                         shuffle=False, num_workers=0)
    with pytest.raises(ProtocolMismatchError, match=r"synthetic-captions.*'vg-full'.*\['vg'\]"):
        predict_to_file(tiny_model, loader, tmp_path / "p.jsonl", protocol="vg-full", split="test", progress=False)
    assert not (tmp_path / "p.jsonl").exists()


def test_reading_refuses_another_protocol(predictions_run, tmp_path):
    path, _ = predictions_run
    with pytest.raises(ProtocolMismatchError, match=r"'synthetic-captions', not 'refcocog'"):
        read_predictions(path, protocol="refcocog")
    mixed = tmp_path / "mixed.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[-1]["protocol"] = "vg-sub"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ProtocolMismatchError, match="mixes protocols"):
        read_predictions(mixed)
    with pytest.raises(ValueError, match="unknown evaluation protocol 'vg'.*vg-full"):
        read_predictions(path, protocol="vg")


def test_merge_checks_protocol_split_and_duplicates(predictions_run, tmp_path):
    path, _ = predictions_run
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl_atomic(a, rows[:3])
    write_jsonl_atomic(b, rows[3:])
    merged = merge_predictions([a, b], tmp_path / "m.jsonl", protocol="synthetic-captions")
    assert read_predictions(tmp_path / "m.jsonl").records == rows == merged.records
    with pytest.raises(ValueError, match="appears twice"):
        merge_predictions([a, a], tmp_path / "dup.jsonl", protocol="synthetic-captions")
    other = tmp_path / "other.jsonl"
    write_jsonl_atomic(other, [{**r, "protocol": "synthetic-weak"} for r in rows[3:]])
    with pytest.raises(ProtocolMismatchError):
        merge_predictions([a, other], tmp_path / "bad.jsonl", protocol="synthetic-captions")
    assert not (tmp_path / "dup.jsonl").exists() and not (tmp_path / "bad.jsonl").exists()


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl_atomic(path, [{"a": 1}])

    def failing():
        yield {"a": 2}
        raise RuntimeError("generation died")

    with pytest.raises(RuntimeError, match="generation died"):
        write_jsonl_atomic(path, failing())
    assert path.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]  # no temp file left behind


def test_settings_and_protocol_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="num_beams must be an int >= 1, got 0"):
        GenerationSettings(num_beams=0)
    with pytest.raises(ValueError, match="task 'describe'"):
        GenerationSettings(task="describe")
    assert protocol_for_source("vg") == "vg-full" and protocol_for_source("vg-glamm") == "vg-sub"
    assert protocol_for_source("synthetic-weak") == "synthetic-weak"
    with pytest.raises(ValueError, match="no evaluation protocol for record source 'flickr'"):
        protocol_for_source("flickr")
    for name in ("vg-full", "vg-sub", "refcoco", "refcoco+", "refcocog", "synthetic-captions", "synthetic-weak"):
        assert get_protocol(name).name == name
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"protocol": "vg-full"}\n')
    with pytest.raises(ValueError, match=r"lacks \['split'"):
        read_predictions(bad)
