"""The web demo end to end in headless Chromium: ``sca demo`` serving the tiny checkpoint on 127.0.0.1,
an image uploaded, clicks and a box drawn on it, anything mode run, the captions read from the page
and checked against the Python API; a 16-bit PNG and an RGBA PNG shown and captioned exactly as the API
decodes them; broken files (not an image, truncated, empty) a message on the page; only the public
endpoints listed for API clients.

Needs the Playwright Python package and the system Chromium (scripts/setup.sh installs both; never
`playwright install`). Every request that leaves 127.0.0.1 is aborted and fails the test.
Screenshots go to $SCA_SCREENSHOT_DIR when set (else the test's tmp folder).
"""

import contextlib
import html
import io
import json
import os
import re
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get("SCA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is missing: pip install -e '.[demo]'")
if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
    pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/setup.sh (apt-get install chromium chromium-driver) "
                f"or set SCA_CHROMIUM", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

from sca.cli import main  # noqa: E402

W, H = 320, 240


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 255 // W, y * 255 // H, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    rgb[40:120, 30:150] = (240, 200, 30)
    rgb[130:220, 180:300] = (30, 60, 220)
    path = tmp_path_factory.mktemp("browser") / "scene.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    """``sca demo`` on the tiny checkpoint as a user starts it, on a free loopback port; in this process
    (a new interpreter would re-import torch and gradio: ~20 s more), with the one difference that
    ``launch`` returns once serving instead of blocking."""
    import sca.app.demo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = []

    def launch_in_background(demo, **kwargs):
        served.append(demo)
        return real_launch(demo, **{**kwargs, "block": False, "quiet": True})

    real_launch = sca.app.demo.launch
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(stderr):
        mp.setattr(sca.app.demo, "launch", launch_in_background)
        code = main(["demo", "--checkpoint", str(tiny_checkpoint), "--host", "127.0.0.1", "--port", str(port),
                     "--num-beams", "1", "--max-new-tokens", "4", "--points-per-side", "3",
                     "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--max-regions", "4"])
    assert code == 0 and len(served) == 1
    url = f"http://127.0.0.1:{port}"
    assert f"serving on {url}" in stderr.getvalue() and f"loading checkpoint {tiny_checkpoint} ..." in stderr.getvalue()
    yield url
    served[0].close()


@pytest.fixture(scope="module")
def page(server):
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def only_loopback(route):
            if route.request.url.startswith(server):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_loopback)
        page.goto(server)
        page.wait_for_selector("#sca-input")
        yield page
        browser.close()
    assert outside == [], f"the demo page reached beyond 127.0.0.1: {outside[:5]}"


def _wait_status(page, text: str, timeout: float = 60_000) -> str:
    page.wait_for_function("t => document.querySelector('#sca-status').innerText.includes(t)", arg=text,
                           timeout=timeout)
    return page.inner_text("#sca-status")


def _regions(page) -> list[dict]:
    items = page.locator("#sca-caption-list li.sca-region")
    return [{"caption": items.nth(k).locator(".sca-caption").inner_text(),
             **json.loads(html.unescape(items.nth(k).get_attribute("data-prompt")))}
            for k in range(items.count())]


def _click_image(page, fx: float, fy: float) -> None:
    img = page.locator("#sca-input img").first
    box = img.bounding_box()
    img.click(position={"x": box["width"] * fx, "y": box["height"] * fy})


def _shot(page, tmp_path, name: str) -> Path:
    folder = Path(os.environ.get("SCA_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)
    return folder / name


def test_upload_click_box_and_everything_in_a_browser(page, picture, captioner, tmp_path):
    page.set_input_files("#sca-input input[type=file]", str(picture))
    assert f"Image {W}x{H} encoded" in _wait_status(page, "encoded")

    # A foreground click at 1/4 width, 1/2 height of the displayed image.
    _click_image(page, 0.25, 0.5)
    _wait_status(page, "1 region(s) captioned.")
    [clicked] = _regions(page)
    (x, y), = clicked["points"]
    assert abs(x - W * 0.25) <= 2 and abs(y - H * 0.5) <= 2 and clicked["point_labels"] == [1]
    expected = captioner.caption(picture, points=[clicked["points"]], num_beams=1, max_new_tokens=4)[0]
    assert clicked["caption"] == (expected.caption or "(empty caption)")
    assert page.locator("#sca-output img").count() >= 1  # the masks are shown
    _shot(page, tmp_path, "demo-click.png")

    # A box from two corner clicks.
    page.get_by_label("Box (click two corners)").check()
    _click_image(page, 0.6, 0.55)
    _wait_status(page, "opposite corner")
    _click_image(page, 0.9, 0.9)
    _wait_status(page, "2 region(s) captioned.")
    clicked_again, boxed = _regions(page)
    assert clicked_again == clicked
    x0, y0, x1, y1 = boxed["box"]
    assert [round(x0 / W, 1), round(y0 / H, 2), round(x1 / W, 1), round(y1 / H, 1)] == [0.6, 0.55, 0.9, 0.9]
    expected = captioner.caption(picture, boxes=[boxed["box"]], num_beams=1, max_new_tokens=4)[0]
    assert boxed["caption"] == (expected.caption or "(empty caption)")
    legend = page.inner_text("#sca-output")
    assert f"1: {clicked['caption']}" in legend and f"2: {boxed['caption']}" in legend
    _shot(page, tmp_path, "demo-box.png")

    # Anything mode in one button.
    page.click("#sca-everything")
    status = _wait_status(page, "Anything mode:")
    n = int(re.search(r"Anything mode: (\d+) region", status).group(1))
    assert 1 <= n <= 4 and len(_regions(page)) == n
    assert all(r["box"] is not None and len(r["points"]) == 1 for r in _regions(page))
    _shot(page, tmp_path, "demo-everything.png")


# ---------------------------------------------------------------------------------------------------
# Files gradio would decode differently from sca, and broken files.
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uploads(tmp_path_factory, picture):
    root = tmp_path_factory.mktemp("uploads")
    y, x = np.mgrid[0:H, 0:W]
    deep = ((x * 200 + y * 90) % 65536).astype(np.uint16)  # 16-bit gray: gradio's decoding clips it to white
    Image.fromarray(deep).save(root / "deep16.png")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = x * 255 // W, y * 255 // H, 40
    rgba[..., 3] = np.where(x < W // 2, 255, 70)  # right half mostly transparent: composited over white
    rgba[60:140, 40:120] = (250, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(root / "alpha.png")
    (root / "broken.png").write_text("a text file with an image's name\n")
    data = picture.read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 3])
    (root / "empty.png").write_bytes(b"")
    return root


def _fresh(page, server) -> None:
    """A new session: the page loaded again, no image."""
    page.goto(server)
    page.wait_for_selector("#sca-input input[type=file]", state="attached")
    _wait_status(page, "Upload an image first.")


def _shown(page, expected: np.ndarray, timeout: float = 30.0) -> np.ndarray:
    """The pixels of the image the page shows for clicking, once they have the expected size."""
    deadline = time.monotonic() + timeout
    while True:
        src = page.locator("#sca-input img").first.get_attribute("src")
        shown = None
        if src:
            body = page.request.get(src).body()
            shown = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
            if shown.shape == expected.shape and np.array_equal(shown, expected):
                return shown
        if time.monotonic() > deadline:
            return shown
        time.sleep(0.25)


@pytest.mark.parametrize("name", ["deep16.png", "alpha.png"])
def test_16_bit_and_rgba_uploads_show_and_caption_as_the_api(name, page, server, uploads, captioner, tmp_path):
    _fresh(page, server)
    path = uploads / name
    page.set_input_files("#sca-input input[type=file]", str(path))
    assert f"Image {W}x{H} encoded" in _wait_status(page, "encoded")
    expected = captioner.encode(path).rgb
    assert not np.array_equal(expected, np.asarray(Image.open(path).convert("RGB")))  # what gradio would decode
    shown = _shown(page, expected)
    assert shown is not None and np.array_equal(shown, expected), "the page shows another decoding of the file"

    _click_image(page, 0.3, 0.45)
    _wait_status(page, "1 region(s) captioned.")
    [clicked] = _regions(page)
    api = captioner.caption(path, points=[clicked["points"]], num_beams=1, max_new_tokens=4)[0]
    assert clicked["caption"] == (api.caption or "(empty caption)")
    _shot(page, tmp_path, f"demo-{name}")


@pytest.mark.parametrize(("name", "message"), [
    ("broken.png", "Cannot use 'broken.png': it is not a readable image (UnidentifiedImageError"),
    ("truncated.png", "Cannot use 'truncated.png': it is not a readable image (OSError"),
    ("empty.png", "Cannot use 'empty.png': it is not a readable image (the file is empty (0 bytes))"),
])
def test_broken_uploads_show_a_message_and_the_page_keeps_working(name, message, page, server, uploads, picture,
                                                                   tmp_path):
    _fresh(page, server)
    page.set_input_files("#sca-input input[type=file]", str(uploads / name))
    status = _wait_status(page, "Cannot use", timeout=30_000)
    assert message in status and "upload an image file (PNG, JPEG" in status, status
    assert "/tmp/" not in status  # the server's temporary path is not shown
    page.wait_for_function("() => !document.body.innerText.includes('Uploading')", timeout=10_000)
    _shot(page, tmp_path, f"demo-{name}")
    # The same page takes a good image right after.
    page.wait_for_selector("#sca-input input[type=file]", state="attached")
    page.set_input_files("#sca-input input[type=file]", str(picture))
    assert f"Image {W}x{H} encoded" in _wait_status(page, "encoded")


def test_api_clients_see_only_the_public_endpoints(server):
    with urllib.request.urlopen(f"{server}/gradio_api/info", timeout=30) as response:
        info = json.load(response)
    assert sorted(info["named_endpoints"]) == ["/everything", "/upload"]
    assert not info.get("unnamed_endpoints")
