"""sca.app.api.Captioner on the tiny model: loading, agreement with the model's own generate, batching,
input kinds, prompt kinds, tasks, dtype, errors."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sca.app.api import Captioner, RegionCaption, default_device, default_dtype, resolve_checkpoint
from sca.data.masks import rle_decode
from sca.models.segmenters.base import Prompts

BOXES = [[4, 6, 40, 30], [50, 35, 90, 60], [0, 0, 96, 64], [10, 10, 20, 50], [60, 2, 95, 20]]
FAST = {"num_beams": 1, "max_new_tokens": 4}


# -- loading --------------------------------------------------------------------------------------
def test_load_from_checkpoint_run_folder_and_errors(tiny_checkpoint, tmp_path):
    assert resolve_checkpoint(tiny_checkpoint) == tiny_checkpoint
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run / "model")
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    assert resolve_checkpoint(run) == run / "model"
    cap = Captioner.from_pretrained(run, device="cpu")
    assert isinstance(cap, Captioner) and cap.device.type == "cpu" and cap.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="no such folder, and not a hub id"):
        Captioner.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"checkpoints' is neither a checkpoint folder .* nor a run folder .* holds \['step-2'\]"):
        Captioner.from_pretrained(run / "checkpoints")
    with pytest.raises(ValueError, match="is a file"):
        Captioner.from_pretrained(tiny_checkpoint / "config.json")
    # A hub id cannot be fetched offline (HF_HUB_OFFLINE=1 in tests): a clear error, no download.
    with pytest.raises(FileNotFoundError, match=r"'nobody/no-such-sca-model': no such local folder, and fetching"):
        Captioner.from_pretrained("nobody/no-such-sca-model")


def test_default_device_and_dtype():
    if not torch.cuda.is_available():
        assert default_device().type in ("cpu", "mps")
    assert default_dtype(torch.device("cpu")) == torch.float32


# -- agreement with the model ---------------------------------------------------------------------
def test_boxes_agree_with_the_model_on_hand_preprocessed_inputs(captioner, photo_rgb):
    regions = captioner.caption(photo_rgb, boxes=BOXES[:2], num_beams=2, max_new_tokens=5)
    assert [type(r) for r in regions] == [RegionCaption] * 2
    # By hand: 96x64 -> 64x43 (scale 2/3), normalise, pad; boxes scaled by 2/3.
    proc = captioner.processor
    pixels, geom = proc.preprocess(photo_rgb)
    assert geom.content == (64, 43)
    by_hand = torch.tensor(BOXES[:2], dtype=torch.float32) * torch.tensor([64 / 96, 43 / 64] * 2)
    boxes = torch.from_numpy(geom.boxes_to_input(np.array(BOXES[:2]))).float()
    assert torch.allclose(boxes, by_hand, atol=1e-5)
    out = captioner.model.generate(prompts=Prompts(boxes=boxes[None]), pixel_values=pixels, num_beams=2,
                                   max_new_tokens=5)
    assert [r.caption for r in regions] == out.captions
    for j, r in enumerate(regions):
        assert r.iou_scores == pytest.approx(out.iou_scores[j].tolist())
        assert r.mask_index == int(out.iou_scores[j].argmax()) and r.iou_score == max(r.iou_scores)
        full = proc.postprocess_masks(out.masks[j : j + 1, r.mask_index : r.mask_index + 1], geom)[0, 0] > 0
        assert r.mask.shape == (64, 96) and r.mask.dtype == bool and np.array_equal(r.mask, full.numpy())
        assert r.box == [float(v) for v in BOXES[j]] and r.points is None and r.task == "caption"


def test_results_do_not_depend_on_batching_or_encoding_reuse(captioner, photo_rgb, monkeypatch):
    together = captioner.caption(photo_rgb, boxes=BOXES, region_chunk_size=2, **FAST)
    alone = [captioner.caption(photo_rgb, boxes=[b], **FAST)[0] for b in BOXES]
    assert [r.caption for r in together] == [r.caption for r in alone]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(together, alone, strict=True))
    small_lm_batch = captioner.caption(photo_rgb, boxes=BOXES, region_chunk_size=3, lm_batch_size=2, **FAST)
    assert [r.caption for r in small_lm_batch] == [r.caption for r in alone]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(small_lm_batch, alone, strict=True))
    # An EncodedImage is encoded once for any number of calls.
    enc = captioner.encode(photo_rgb)
    calls = []
    real = captioner.model.encode_images
    monkeypatch.setattr(captioner.model, "encode_images", lambda x: calls.append(1) or real(x))
    again = captioner.caption(enc, boxes=BOXES[:1], **FAST) + captioner.caption(enc, boxes=BOXES[1:2], **FAST)
    assert calls == [] and [r.caption for r in again] == [r.caption for r in together[:2]]


def test_paths_pil_arrays_and_tensors_give_the_same_result(captioner, photo, photo_rgb):
    ref = captioner.caption(photo_rgb, boxes=BOXES[:1], **FAST)[0]
    for image in (photo, str(photo), Image.open(photo), torch.tensor(photo_rgb).permute(2, 0, 1),
                  photo_rgb.astype(np.float32) / 255):
        r = captioner.caption(image, boxes=BOXES[:1], **FAST)[0]
        assert r.caption == ref.caption and np.array_equal(r.mask, ref.mask)


def test_points_with_background_clicks_and_masks(captioner, photo_rgb):
    regions = captioner.caption(photo_rgb, points=[[[20, 20], [70, 50]], [[80, 10]]],
                                point_labels=[[1, 0], [1]], **FAST)
    assert regions[0].points == [[20.0, 20.0], [70.0, 50.0]] and regions[0].point_labels == [1, 0]
    assert regions[1].points == [[80.0, 10.0]] and regions[1].point_labels == [1]
    # Padding: region 1 equals the same point asked alone (its pad point is ignored by SAM).
    alone = captioner.caption(photo_rgb, points=[[[80, 10]]], **FAST)[0]
    assert alone.caption == regions[1].caption and alone.iou_scores == pytest.approx(regions[1].iou_scores, abs=1e-5)
    # A background click changes the region.
    single = captioner.caption(photo_rgb, points=[[[20, 20]]], **FAST)[0]
    assert single.iou_scores != pytest.approx(regions[0].iou_scores, abs=1e-7)
    mask = np.zeros((64, 96), bool)
    mask[10:30, 12:40] = True
    with_mask = captioner.caption(photo_rgb, boxes=BOXES[:1], masks=mask[None], **FAST)[0]
    without = captioner.caption(photo_rgb, boxes=BOXES[:1], **FAST)[0]
    assert with_mask.iou_scores != pytest.approx(without.iou_scores, abs=1e-7)


def test_recognition_task_and_bad_settings(captioner, photo_rgb):
    r = captioner.caption(photo_rgb, boxes=BOXES[:1], task="recognition", **FAST)[0]
    pixels, geom = captioner.processor.preprocess(photo_rgb)
    boxes = torch.tensor(geom.boxes_to_input(np.array(BOXES[:1])), dtype=torch.float32)[None]
    out = captioner.model.generate(prompts=Prompts(boxes=boxes), pixel_values=pixels, task_ids=0, **FAST)
    assert r.task == "recognition" and r.caption == out.captions[0]
    assert captioner.caption(photo_rgb, boxes=BOXES[:1], task=0, **FAST)[0].caption == r.caption
    with pytest.raises(ValueError, match=r"unknown task 'detect'; use one of \['recognition', 'caption'\]"):
        captioner.caption(photo_rgb, boxes=BOXES[:1], task="detect")
    with pytest.raises(ValueError, match=r"num_beams must be a whole number >= 1 \(1 = greedy.*got 0"):
        captioner.caption(photo_rgb, boxes=BOXES[:1], num_beams=0)
    with pytest.raises(ValueError, match=r"box 0 \[50.0, 0.0, 10.0, 10.0\] is inverted"):
        captioner.caption(photo_rgb, boxes=[[50, 0, 10, 10]])
    with pytest.raises(ValueError, match="lies outside the 96x64 image"):
        captioner.caption(photo_rgb, points=[[[100, 10]]])
    with pytest.raises(ValueError, match="no prompts"):
        captioner.caption(photo_rgb)
    with pytest.raises(ValueError, match="2 channels are ambiguous"):
        captioner.caption(np.zeros((8, 8, 2), np.uint8), boxes=[[0, 0, 4, 4]])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_beams": 1.5}, r"num_beams must be a whole number >= 1 .*got 1.5 of type float"),
    ({"num_beams": True}, r"num_beams must be a whole number >= 1 .*got True"),
    ({"num_beams": "3"}, r"num_beams must be a whole number >= 1 .*got '3' of type str"),
    ({"max_new_tokens": 0}, r"max_new_tokens must be a whole number >= 1 \(the paper's evaluation uses 20\), got 0"),
    ({"max_new_tokens": 2.0}, r"max_new_tokens must be a whole number >= 1 .*got 2.0 of type float"),
    ({"region_chunk_size": -1}, r"region_chunk_size must be a whole number >= 1 .*got -1"),
    ({"lm_batch_size": 0}, r"lm_batch_size must be a whole number >= 1 \(regions through the LM's generate at a time\), got 0"),
    ({"num_return_sequences": 2}, r"num_return_sequences must be 1 \(one caption per region\), got 2"),
    ({"inputs_embeds": None}, r"generate options \['inputs_embeds'\] are set by SCAModel.generate itself"),
    ({"task": "nope"}, r"unknown task 'nope'; use one of \['recognition', 'caption'\] \(or their ids \[0, 1\]\)"),
    ({"task": 5}, r"unknown task 5"),
])
def test_generation_arguments_are_validated_with_the_value_and_what_is_accepted(captioner, photo_rgb, kwargs, message):
    with pytest.raises(ValueError, match=message):
        captioner.caption(photo_rgb, boxes=BOXES[:1], **{**FAST, **kwargs})
    if "task" not in kwargs:  # the model's own generate checks them too
        pixels, geom = captioner.processor.preprocess(photo_rgb)
        boxes = torch.tensor(geom.boxes_to_input(np.array(BOXES[:1])), dtype=torch.float32)[None]
        with pytest.raises(ValueError, match=message):
            captioner.model.generate(prompts=Prompts(boxes=boxes), pixel_values=pixels, **{**FAST, **kwargs})


def test_everything_checks_task_and_generation_options_before_any_work(captioner, photo_rgb, monkeypatch):
    monkeypatch.setattr(captioner, "encode", lambda image: pytest.fail("encoded before checking the options"))
    with pytest.raises(ValueError, match=r"unknown task 'nope'; use one of \['recognition', 'caption'\]"):
        captioner.everything(photo_rgb, task="nope")
    with pytest.raises(ValueError, match=r"num_beams must be a whole number >= 1 .*got 1.5"):
        captioner.everything(photo_rgb, num_beams=1.5)
    with pytest.raises(ValueError, match=r"pred_iou_thresh must be a number in \[-1, 1\] \(IoU scale\), got 2"):
        captioner.everything(photo_rgb, pred_iou_thresh=2)


def test_to_dict_is_json_ready_with_an_rle_mask(captioner, photo_rgb):
    import json

    r = captioner.caption(photo_rgb, boxes=BOXES[:1], **FAST)[0]
    d = json.loads(json.dumps(r.to_dict()))
    assert np.array_equal(rle_decode(d["mask"]), r.mask) and d["area"] == r.area
    assert d["mask_box"] == r.mask_box and d["box"] == BOXES[0] and d["caption"] == r.caption
    assert "mask" not in r.to_dict(mask="none")


def test_bfloat16_on_cpu(tiny_checkpoint, photo_rgb):
    cap = Captioner.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.bfloat16)
    assert cap.model.projection.weight.dtype == torch.bfloat16
    r = cap.caption(photo_rgb, boxes=BOXES[:2], **FAST)
    assert len(r) == 2 and r[0].mask.shape == (64, 96) and isinstance(r[0].caption, str)
