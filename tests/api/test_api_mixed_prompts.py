"""Captioner.caption with regions of different prompt kinds in one call (None marks a kind a region
lacks): every region's mask, IoU scores and caption equal those of the region asked alone, greedy
and with beam 3. The embedded default's trained tiny SAM and LM (tests/assets/embedded) with a
randomised mixer make every prompt matter (a padded 1-point region used to get another mask)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sca.app.api import Captioner
from sca.data.synthetic import SyntheticConfig, synthetic_image
from sca.models.captioner import SCAModel
from sca.models.config import SCAConfig
from sca.models.processor import PAD_LABEL, check_region_prompts

EMBEDDED = Path(__file__).resolve().parents[1] / "assets" / "embedded"

# One region per entry, in original pixels of the scene (box, points, labels, mask box).
REGIONS = {
    "box": dict(box=[10, 12, 70, 60]),
    "1pt": dict(points=[[40, 40]]),
    "2pt": dict(points=[[40, 40], [90, 80]], labels=[1, 0]),
    "3pt": dict(points=[[60, 70], [20, 20], [65, 75]], labels=[1, 0, 1]),
    "box+2pt": dict(box=[30, 30, 100, 100], points=[[60, 60], [35, 35]], labels=[1, 0]),
    "mask": dict(mask=[20, 20, 80, 70]),
    "box+mask": dict(box=[5, 5, 60, 90], mask=[10, 10, 50, 80]),
    "1pt+mask": dict(points=[[90, 90]], mask=[70, 60, 105, 105]),
}
MIXES = [("1pt", "3pt"), ("box", "1pt", "mask"), ("2pt", "box+2pt", "box+mask", "1pt+mask"), tuple(REGIONS)]


@pytest.fixture(scope="module")
def cap():
    torch.manual_seed(1)  # a mixer under which the regions of this scene get 3 different captions
    config = SCAConfig(image_encoder={"name": "tiny-sam", "weights": str(EMBEDDED / "segmenter")},
                       language_model={"name": "causal-lm", "weights": str(EMBEDDED / "lm")}, num_mixer_layers=2)
    model = SCAModel(config)
    with torch.no_grad():  # captions that depend on the region (the new modules' init is near zero)
        for p in list(model.mixer.parameters()) + list(model.projection.parameters()) + list(model.task_tokens.parameters()):
            p.normal_(0, 1.0)
    return Captioner(model, device="cpu")


@pytest.fixture(scope="module")
def scene():
    image, _ = synthetic_image(SyntheticConfig(), "test", 0)
    return image


def kwargs_of(kinds, shape):
    """caption() keywords for ``kinds``, with None where a region lacks a kind."""
    specs = [REGIONS[k] for k in kinds]
    out = {}
    if any("box" in s for s in specs):
        out["boxes"] = [s.get("box") for s in specs]
    if any("points" in s for s in specs):
        out["points"] = [s.get("points") for s in specs]
        out["point_labels"] = [s.get("labels", [1] * len(s["points"])) if "points" in s else None for s in specs]
    if any("mask" in s for s in specs):
        masks = []
        for s in specs:
            if "mask" not in s:
                masks.append(None)
                continue
            m = np.zeros(shape, bool)
            x0, y0, x1, y1 = s["mask"]
            m[y0:y1, x0:x1] = True
            masks.append(m)
        out["masks"] = masks
    return out


def test_mixed_lists_become_placeholders_and_regions_keep_their_own_prompts(scene):
    h, w = scene.shape[:2]
    p = check_region_prompts(w, h, **kwargs_of(("box", "3pt", "1pt+mask"), (h, w)))
    assert np.isnan(p.boxes[1:]).all() and not np.isnan(p.boxes[0]).any()
    assert p.point_labels.tolist() == [[PAD_LABEL] * 3, [1, 0, 1], [1, PAD_LABEL, PAD_LABEL]]
    assert p.masks[0] is None and p.masks[2].dtype == bool
    assert p.region(0) == {"box": [10.0, 12.0, 70.0, 60.0], "points": None, "point_labels": None}
    assert p.region(2)["points"] == [[90.0, 90.0]] and p.region(2)["box"] is None
    with pytest.raises(ValueError, match="region 1 has no prompt"):
        check_region_prompts(w, h, boxes=[[1, 1, 5, 5], None], points=[None, []])
    with pytest.raises(ValueError, match="region 1 has only background points"):
        check_region_prompts(w, h, boxes=[[1, 1, 5, 5], None], points=[None, [[3, 3]]], point_labels=[None, [0]])
    with pytest.raises(ValueError, match=r"box 1 \[9.0, 1.0, 5.0, 5.0\] is inverted"):
        check_region_prompts(w, h, boxes=[None, [9, 1, 5, 5]], points=[[[3, 3]], None])


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("mix", MIXES, ids=["1pt+3pt", "box+1pt+mask", "combined", "all"])
def test_every_region_of_a_mixed_call_is_the_region_alone(cap, scene, mix, num_beams):
    h, w = scene.shape[:2]
    enc = cap.encode(scene)
    together = cap.caption(enc, **kwargs_of(mix, (h, w)), num_beams=num_beams, max_new_tokens=8)
    assert len(together) == len(mix)
    for kind, r in zip(mix, together, strict=True):
        alone = cap.caption(enc, **kwargs_of((kind,), (h, w)), num_beams=num_beams, max_new_tokens=8)[0]
        assert r.caption == alone.caption, kind
        assert np.array_equal(r.mask, alone.mask), kind
        assert r.iou_scores == pytest.approx(alone.iou_scores, abs=1e-5), kind
        assert (r.box, r.points, r.point_labels) == (alone.box, alone.points, alone.point_labels)
    if len(mix) == len(REGIONS):
        assert len({r.caption for r in together}) > 1  # the captions depend on the region


def test_the_reported_case_one_point_beside_three_points(cap, scene):
    """A 1-point region captioned beside a 3-point region: same mask as alone (was IoU 0.85)."""
    enc = cap.encode(scene)
    pair = cap.caption(enc, points=[[[40, 40]], [[60, 70], [20, 20], [65, 75]]], point_labels=[[1], [1, 0, 1]],
                       num_beams=1, max_new_tokens=8)
    alone = cap.caption(enc, points=[[[40, 40]]], num_beams=1, max_new_tokens=8)[0]
    assert np.array_equal(pair[0].mask, alone.mask) and pair[0].iou_scores == alone.iou_scores
    assert pair[0].caption == alone.caption
