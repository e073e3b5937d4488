"""Anything mode at its defaults on a model trained on the scenes: a briefly trained tiny SAM finds
nothing at SAM's thresholds (its IoU predictions live on another scale), its checkpoint gets
thresholds calibrated on validation scenes (``sca.app.calibrate``), and at the defaults anything
mode then finds the objects of held-out test scenes, in the API and the CLI; the pipeline stage
writes the calibration into the checkpoint's config.json."""

import json

import numpy as np
import pytest
import torch

from sca.app.anything import AnythingConfig
from sca.app.api import Captioner
from sca.app.calibrate import calibrate_anything, calibrate_checkpoint, scenes_from_records
from sca.cli import main
from sca.data.io import iter_records
from sca.data.synthetic import SyntheticConfig, generate_synthetic
from sca.models.captioner import SCAModel
from sca.models.config import SCAConfig
from sca.models.hub import set_anything_defaults
from sca.pipeline.stages import calibrate_anything_defaults
from sca.training.segmenter_stage import run_segmenter_stage

SEGMENTER = {"name": "tiny-sam", "image_size": 64, "patch_size": 8, "hidden_size": 32, "vision_hidden_size": 32,
             "vision_layers": 2, "init": "sam"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("anything-scenes")
    generate_synthetic(root, SyntheticConfig(flavour="captions", seed=5, splits={"train": 64, "val": 16, "test": 12},
                                             image_size=(64, 80), objects=(2, 3), overlap=0.0), workers=1)
    return root


@pytest.fixture(scope="module")
def checkpoint(scenes, tmp_path_factory):
    """A tiny SCA checkpoint whose SAM was trained on the scenes (600 steps, about a minute) and whose LM is
    random: anything mode's masks come from SAM alone."""
    out = tmp_path_factory.mktemp("anything-segmenter")
    torch.manual_seed(0)
    run_segmenter_stage(segmenter=SEGMENTER,
                        data={"train_records": str(scenes / "train.jsonl.gz"), "images": str(scenes),
                              "val_records": str(scenes / "val.jsonl.gz"), "jitter": False, "hflip": 0.5},
                        train={"max_steps": 600, "images_per_step": 8, "regions_per_image": 4, "lr": 0.003,
                               "warmup_steps": 20, "log_every": 1000, "save_every": 1000, "num_workers": 0,
                               "seed": 0},
                        output_dir=out, num_threads=1, progress=False)
    config = SCAConfig(image_encoder={"name": "tiny-sam", "weights": str(out / "model")},
                       language_model={"name": "tiny-gpt2"}, num_mixer_layers=1, num_caption_queries=2)
    path = tmp_path_factory.mktemp("anything-ckpt") / "sca"
    SCAModel(config).save_pretrained(path)
    return path


def _found(regions, masks, match_iou=0.5):
    """Objects (ground-truth masks) matched by some region's mask with IoU > match_iou."""
    found = 0
    for gt in masks:
        best = max((np.logical_and(r.mask, gt).sum() / max(1, np.logical_or(r.mask, gt).sum()) for r in regions),
                   default=0.0)
        found += best > match_iou
    return found


def _test_scenes(scenes):
    return list(scenes_from_records(scenes / "test.jsonl.gz", scenes))


def test_calibrated_defaults_find_the_objects_sam_defaults_miss(checkpoint, scenes):
    cap = Captioner.from_pretrained(checkpoint, device="cpu")
    assert cap.model.config.anything is None
    test = _test_scenes(scenes)
    objects = sum(len(m) for _, m in test)
    # SAM's thresholds: the briefly trained SAM's predicted IoUs stay below 0.88
    at_sam = [cap.everything(img, num_beams=1, max_new_tokens=2) for img, _ in test]
    assert sum(len(r) for r in at_sam) < objects / 2
    assert all(r.report.sources["pred_iou_thresh"] == "SAM's default" for r in at_sam)

    cal = calibrate_checkpoint(checkpoint, scenes / "val.jsonl.gz", scenes, max_scenes=16)
    assert cal.scenes == 16 and cal.objects >= 32
    assert cal.f1 > cal.at_sam_defaults["f1"] and cal.recall >= 0.5
    assert cal.thresholds["pred_iou_thresh"] < 0.88
    saved = json.loads((checkpoint / "config.json").read_text())
    assert saved["anything"] == cal.thresholds

    cap = Captioner.from_pretrained(checkpoint, device="cpu")  # the weights' record still verifies
    results = [cap.everything(img, num_beams=1, max_new_tokens=2) for img, _ in test]
    assert all(r.report.sources["pred_iou_thresh"] == "checkpoint" for r in results)
    found = sum(_found(r, m) for r, (_, m) in zip(results, test, strict=True))
    assert found >= 0.4 * objects, (found, objects, [r.report.summary() for r in results])
    assert found > sum(_found(r, m) for r, (_, m) in zip(at_sam, test, strict=True))
    # a given threshold still wins over the checkpoint's
    given = cap.everything(test[0][0], pred_iou_thresh=0.99, num_beams=1, max_new_tokens=2)
    assert given.report.sources["pred_iou_thresh"] == "given" and len(given) == 0
    set_anything_defaults(checkpoint, None)  # leave the module's checkpoint as it was
    assert "anything" not in json.loads((checkpoint / "config.json").read_text())


def test_cli_everything_uses_the_checkpoint_thresholds(checkpoint, scenes, tmp_path, capsys):
    rec = next(iter(iter_records(scenes / "test.jsonl.gz")))
    set_anything_defaults(checkpoint, {"pred_iou_thresh": -1.0, "stability_score_thresh": 0.0})
    try:
        out = tmp_path / "regions.json"
        code = main(["everything", str(scenes / rec.file_name), "--checkpoint", str(checkpoint), "--points-per-side",
                     "4", "--num-beams", "1", "--max-new-tokens", "2", "--output", str(out), "--no-progress"])
        assert code == 0
        payload = json.loads(out.read_text())
        assert payload["report"]["sources"]["pred_iou_thresh"] == "checkpoint"
        assert payload["report"]["config"]["pred_iou_thresh"] == -1.0 and payload["regions"]
    finally:
        set_anything_defaults(checkpoint, None)


def test_calibration_picks_the_best_pair_and_refuses_bad_input(checkpoint, scenes):
    cap = Captioner.from_pretrained(checkpoint, device="cpu")
    val = list(scenes_from_records(scenes / "val.jsonl.gz", scenes, limit=3))
    grid = (0.0, 0.5, 0.99)
    cal = calibrate_anything(cap, val, pred_grid=grid, stability_grid=grid, store=False)
    assert cal.thresholds["pred_iou_thresh"] in grid and cap.model.config.anything is None
    assert 0 <= cal.precision <= 1 and 0 <= cal.recall <= 1
    # the thresholds that keep nothing score 0; the chosen pair scores at least as well as every other
    nothing = calibrate_anything(cap, val, pred_grid=(0.999,), stability_grid=(0.999,), store=False)
    assert nothing.f1 <= cal.f1
    with pytest.raises(ValueError, match="no scenes"):
        calibrate_anything(cap, [], store=False)
    with pytest.raises(ValueError, match="match_iou"):
        calibrate_anything(cap, val, match_iou=1.5, store=False)
    img, masks = val[0]
    with pytest.raises(ValueError, match="ground-truth mask"):
        calibrate_anything(cap, [(img, [np.zeros((5, 5), bool)])], store=False)
    with pytest.raises(ValueError, match="unknown key"):
        set_anything_defaults(checkpoint, {"pred_iou": 0.5})
    with pytest.raises(ValueError, match="'anything' section"):
        calibrate_anything_defaults(checkpoint, {"records": "x"})


def test_defaults_resolve_given_then_checkpoint_then_sam():
    cfg = AnythingConfig(nms_iou=0.5).resolve({"pred_iou_thresh": 0.3, "nms_iou": 0.9})
    assert (cfg.pred_iou_thresh, cfg.nms_iou, cfg.stability_score_thresh) == (0.3, 0.5, 0.95)
    assert cfg.sources == {"points_per_side": "SAM's default", "pred_iou_thresh": "checkpoint",
                           "stability_score_thresh": "SAM's default", "stability_score_offset": "SAM's default",
                           "nms_iou": "given", "min_mask_area": "SAM's default"}
