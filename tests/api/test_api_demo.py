"""The demo's handlers without a browser: sessions, clicks, boxes, anything mode, errors."""

import html
import json
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")

import sca.models.processor as processor  # noqa: E402
from sca.app.anything import AnythingConfig  # noqa: E402
from sca.app.demo import MODES, DemoHandlers, DemoSession, build_demo  # noqa: E402
from sca.app.overlay import region_color  # noqa: E402


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



# ---------------------------------------------------------------------------------------------------
# Uploads: decoded by sca, exactly as the API decodes the same file; every bad file is a message.
# ---------------------------------------------------------------------------------------------------
def _payload(path, name=None):
    """What gradio gives the upload handler (preprocess=False): the uploaded file, not decoded."""
    return {"path": str(path), "orig_name": name or path.name, "url": None, "size": None, "mime_type": None,
            "is_stream": False, "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """A 16-bit grayscale PNG and an RGBA PNG (half transparent), the files gradio's own decoding
    gets wrong (16-bit: clipped to white; RGBA: alpha dropped, not composited over white)."""
    root = tmp_path_factory.mktemp("uploads")
    y, x = np.mgrid[0:48, 0:80]
    gray16 = ((x * 800 + y * 300) % 65536).astype(np.uint16)
    Image.fromarray(gray16).save(root / "deep.png")
    rgba = np.zeros((48, 80, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = x * 3, y * 5, 200
    rgba[..., 3] = np.where(x < 40, 255, 60)
    Image.fromarray(rgba, "RGBA").save(root / "alpha.png")
    return {"16-bit": root / "deep.png", "rgba": root / "alpha.png"}


@pytest.mark.parametrize("kind", ["16-bit", "rgba"])
def test_uploads_are_decoded_exactly_as_the_api_decodes_the_file(kind, odd_images, captioner):
    path = odd_images[kind]
    h = DemoHandlers(captioner, num_beams=1, max_new_tokens=3)
    session, shown, output, listing, status = h.upload(_payload(path, "mine.png"))
    expected = captioner.encode(path)
    assert status == "Image 80x48 encoded. Click on it to add prompts." and output is None
    assert np.array_equal(session.enc.rgb, expected.rgb) and np.array_equal(shown, expected.rgb)
    # Not what gradio's decoding (PIL convert to RGB) would have given.
    assert not np.array_equal(expected.rgb, np.asarray(Image.open(path).convert("RGB")))
    if kind == "16-bit":
        assert expected.rgb.min() < 100  # scaled from 16 bits, not clipped to white
    else:
        over_white = [int((v * 60 + 255 * 195) / 255 + 0.5) for v in (237, 0, 200)]  # alpha 60 at x = 79
        assert expected.rgb[0, 79].tolist() == over_white and expected.rgb[0, 0].tolist() == [0, 0, 200]
    *_, listing, status = _click(h, session, MODES[0], 20, 20)
    api = captioner.caption(path, points=[[[20, 20]]], num_beams=1, max_new_tokens=3)[0]
    assert status == "1 region(s) captioned." and _captions(listing) == [api.caption or "(empty caption)"]
    assert h.upload(str(path))[4] == "Image 80x48 encoded. Click on it to add prompts."  # a plain path too


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height 1-bit pixels, with almost no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_bad_uploads_are_a_message_naming_the_file(captioner, photo, tmp_path):
    h = DemoHandlers(captioner, num_beams=1, max_new_tokens=2)
    text = tmp_path / "upload-1"
    text.write_text("this is a text file, not a picture\n")
    truncated = tmp_path / "upload-2"
    data = photo.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "upload-3"
    empty.write_bytes(b"")
    huge = _png_header_only(tmp_path / "upload-4", 20_000, 9_000)  # 180 megapixels
    cases = [(text, "notes.png", "it is not a readable image (UnidentifiedImageError"),
             (truncated, "cut.png", "it is not a readable image (OSError"),
             (empty, "empty.png", "the file is empty (0 bytes)"),
             (huge, "huge.png", "limit"),
             (tmp_path / "gone", "gone.png", "the uploaded file is gone")]
    limit = getattr(processor, "MAX_IMAGE_PIXELS", None)  # the API's image-size limit, where it has one
    if limit is not None:
        side = int(limit ** 0.5) + 1
        cases.append((_png_header_only(tmp_path / "upload-5", side, side), "big.png", "megapixels"))
    for path, name, message in cases:
        session, shown, output, listing, status = h.upload(_payload(path, name))
        assert status.startswith(f"Cannot use {name!r}: ") and message in status, status
        assert str(tmp_path) not in status  # the server's temporary path is never shown
        assert session.enc is None and shown is None and output is None and listing == ""
    # The handler keeps serving: a good upload right after works.
    assert h.upload(_payload(photo))[4].startswith("Image 96x64 encoded")


def test_box_colours_follow_the_region_numbers(captioner, photo):
    h = DemoHandlers(captioner, num_beams=1, max_new_tokens=2)

    def swatches(listing):
        return re.findall(r"background:(#[0-9a-f]{6})", listing)

    def hex_(k):
        return "#" + "".join(f"{v:02x}" for v in region_color(k))

    session = h.upload(_payload(photo))[0]
    session, *_ = _click(h, session, MODES[0], 20, 20)  # region 1: the clicks
    session, *_ = _click(h, session, MODES[2], 50, 35)
    session, preview, _, listing, status = _click(h, session, MODES[2], 90, 60)  # region 2: the box
    assert status == "2 region(s) captioned." and swatches(listing) == [hex_(0), hex_(1)]
    assert tuple(preview[35, 70]) == region_color(1)  # the box's top edge in region 2's colour
    session, *_ = _click(h, session, MODES[2], 5, 40)
    session, preview, _, listing, _ = _click(h, session, MODES[2], 40, 62)  # region 3
    assert swatches(listing) == [hex_(0), hex_(1), hex_(2)] and tuple(preview[40, 20]) == region_color(2)

    # Boxes only, or with background clicks only (no clicked region): box k is region k + 1.
    for clicks in ([], [(5, 5)]):
        session = h.upload(_payload(photo))[0]
        for x, y in clicks:
            session, *_ = _click(h, session, MODES[1], x, y)
        session, *_ = _click(h, session, MODES[2], 50, 35)
        session, preview, _, listing, status = _click(h, session, MODES[2], 90, 60)
        assert status == "1 region(s) captioned." and swatches(listing) == [hex_(0)]
        assert tuple(preview[35, 70]) == region_color(0)


def test_empty_anything_result_says_why(captioner, photo):
    h = DemoHandlers(captioner, num_beams=1, max_new_tokens=2)
    session = h.upload(_payload(photo))[0]
    annotated, listing, status = h.everything(session, "caption", 3, 1.0, 1.0, 0.7, 4)  # nothing passes
    assert status.startswith("Anything mode: 0 region(s) kept. ") and listing == "<p>No regions.</p>", status
    assert "lower" in status  # what to change: the report's hint, or the demo's own


def test_unexpected_errors_are_a_message_and_the_demo_keeps_serving(captioner, photo, monkeypatch):
    h = DemoHandlers(captioner, num_beams=1, max_new_tokens=2)
    session = h.upload(_payload(photo))[0]

    def broken(*args, **kwargs):
        raise RuntimeError("out of device memory")

    monkeypatch.setattr(captioner, "caption_prompts", broken)
    *_, status = _click(h, session, MODES[0], 20, 20)
    assert status == "Error: out of device memory"
    monkeypatch.setattr(captioner, "encode", broken)
    status = h.upload(_payload(photo, "p.png"))[4]
    assert status.startswith("Cannot use 'p.png': unexpected error (RuntimeError: out of device memory)")


def test_only_upload_and_everything_are_api_endpoints(captioner):
    demo = build_demo(captioner)
    info = demo.get_api_info()
    assert sorted(info["named_endpoints"]) == ["/everything", "/upload"]
    assert not info.get("unnamed_endpoints")
    visibility = {fn.name: fn.api_visibility for fn in demo.fns.values()}
    assert visibility == {"upload": "public", "<lambda>": "private", "click": "private", "clear": "private",
                          "everything": "public"}
