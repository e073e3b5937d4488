"""The demo's handlers without a browser: sessions, clicks, boxes, anything mode, errors."""

import html
import json
import re

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")

from sca.app.anything import AnythingConfig  # noqa: E402
from sca.app.demo import MODES, DemoHandlers, DemoSession, build_demo  # noqa: E402


def _click(handlers, session, mode, x, y, task="caption"):
    return handlers.click(session, mode, task, gr.SelectData(None, {"index": [x, y], "value": None}))


def _prompts(listing: str) -> list[dict]:
    return [json.loads(html.unescape(p)) for p in re.findall(r'data-prompt="([^"]*)"', listing)]


def _captions(listing: str) -> list[str]:
    return [html.unescape(c) for c in re.findall(r'<span class="sca-caption">(.*?)</span>', listing)]


def test_points_and_boxes_caption_like_the_api(captioner, photo_rgb):
    h = DemoHandlers(captioner, num_beams=1, max_new_tokens=3)
    session, _, _, _, status = h.upload(photo_rgb)
    assert status.startswith("Image 96x64 encoded")
    session, preview, annotated, listing, status = _click(h, session, MODES[0], 20, 20)
    assert status == "1 region(s) captioned." and preview.shape == (64, 96, 3)
    assert preview[20, 20].tolist() != photo_rgb[20, 20].tolist()  # the click is drawn
    expected = captioner.caption(photo_rgb, points=[[[20, 20]]], num_beams=1, max_new_tokens=3)[0]
    assert _captions(listing) == [expected.caption or "(empty caption)"]
    image, anns = annotated.value["image"], annotated.value["annotations"]
    assert image is not None and len(anns) == 1 and anns[0]["label"] == f"1: {expected.caption}"

    session, *_, status = _click(h, session, MODES[1], 70, 50)  # a background click refines region 1
    assert session.labels == [1, 0] and status == "1 region(s) captioned."
    session, *_, status = _click(h, session, MODES[2], 50, 35)
    assert status.startswith("Box: now click the opposite corner") and session.corner == [50.0, 35.0]
    session, *_, status = _click(h, session, MODES[2], 50.5, 60)
    assert status.startswith("Box is empty") and session.boxes == []
    session, *_, status = _click(h, session, MODES[2], 50, 35)
    session, _, _, listing, status = _click(h, session, MODES[2], 90, 60)
    assert status == "2 region(s) captioned." and session.boxes == [[50.0, 35.0, 90.0, 60.0]]
    assert _prompts(listing) == [{"box": None, "points": [[20.0, 20.0], [70.0, 50.0]], "point_labels": [1, 0]},
                                 {"box": [50.0, 35.0, 90.0, 60.0], "points": None, "point_labels": None}]
    box = captioner.caption(photo_rgb, boxes=[[50, 35, 90, 60]], num_beams=1, max_new_tokens=3)[0]
    clicks = captioner.caption(photo_rgb, points=[[[20, 20], [70, 50]]], point_labels=[[1, 0]], num_beams=1,
                               max_new_tokens=3)[0]
    assert _captions(listing) == [clicks.caption, box.caption]

    session, image, output, listing, status = h.clear(session)
    assert status == "Prompts cleared." and session.points == [] and session.enc is not None
    assert np.array_equal(image, photo_rgb) and output is None


def test_background_only_clicks_and_no_image(captioner, photo_rgb):
    h = DemoHandlers(captioner, num_beams=1, max_new_tokens=2)
    *_, status = _click(h, DemoSession(), MODES[0], 1, 1)
    assert status == "Upload an image first."
    session = h.upload(photo_rgb)[0]
    *_, status = _click(h, session, MODES[1], 5, 5)
    assert status.startswith("Add a foreground point")
    assert h.everything(DemoSession(), "caption", 4, 0.5, 0.5, 0.7, 3)[2] == "Upload an image first."
    bad = h.upload(np.zeros((4, 4, 2), np.uint8))
    assert bad[4].startswith("Cannot use this image:") and "2 channels" in bad[4]


def test_everything_button(captioner, photo_rgb):
    h = DemoHandlers(captioner, num_beams=1, max_new_tokens=2)
    session = h.upload(photo_rgb)[0]
    annotated, listing, status = h.everything(session, "recognition", 3, -1.0, 0.0, 0.7, 4)
    n = int(re.search(r"Anything mode: (\d+) region", status).group(1))
    assert 1 <= n <= 4 and listing.count('class="sca-region"') == n
    assert len(annotated.value["annotations"]) == n
    *_, status = h.everything(session, "caption", 0, 0.5, 0.5, 0.7, 4)
    assert status.startswith("Error: points_per_side must be a positive int")


def test_build_demo_wires_the_components(captioner):
    demo = build_demo(captioner, anything=AnythingConfig(points_per_side=4))
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"sca-input", "sca-mode", "sca-everything", "sca-output", "sca-captions", "sca-status"} <= ids

