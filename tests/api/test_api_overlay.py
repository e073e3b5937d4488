"""Result pictures (sca.app.overlay): every caption label stays inside the picture, whatever its size."""

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sca.app.overlay import _font, layout_labels, region_color, render_overlay


@dataclass
class Region:
    caption: str
    mask: np.ndarray
    box: list[float] | None = None
    points: list | None = None
    point_labels: list | None = None

    @property
    def mask_box(self):
        ys, xs = np.nonzero(self.mask)
        return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)] if xs.size else None


def _region(w, h, x0, y0, x1, y1, caption):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return Region(caption, mask, box=[x0, y0, x1, y1])


LONG = "a large red rectangle in the top right corner of the picture beside a blue one"


@pytest.mark.parametrize(("w", "h"), [(48, 32), (96, 64), (30, 200), (320, 24), (640, 480)])
def test_every_label_lies_inside_the_picture(w, h):
    regions = [_region(w, h, w - 6, 2, w, h // 2, LONG),  # at the right edge
               _region(w, h, 0, h - 4, 5, h, LONG),  # at the bottom-left corner
               _region(w, h, w // 2, h // 2, w // 2 + 3, h // 2 + 3, "dot"),
               _region(w, h, w // 2, h // 2, w // 2 + 4, h // 2 + 4, "same corner")]
    font = _font((w, h))
    labels = layout_labels((w, h), regions, font=font)
    assert len(labels) == len(regions)
    draw = ImageDraw.Draw(Image.new("RGB", (w, h)))
    for k, label in enumerate(labels):
        x0, y0, x1, y1 = label.box
        assert 0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1, (k, label)
        tx0, ty0, tx1, ty1 = draw.textbbox(label.xy, label.text, font=font)
        assert x0 <= tx0 and tx1 <= x1 and y0 <= ty0 and ty1 <= y1, (k, label)
        assert label.text.startswith(f"{k + 1}:")
    assert labels[2].text == ("3: dot" if w >= 48 else "3:…")  # short captions are kept where they fit
    # Long captions: cut at 60 characters, and further only where the picture is too narrow.
    sixty = f"1: {LONG}"[:59] + "…"
    fits = draw.textlength(sixty, font=font) <= w - 5
    assert labels[0].text == sixty if fits else len(labels[0].text) < 60 and labels[0].text.endswith("…")


def test_labels_of_masks_sharing_a_corner_are_stacked():
    w, h = 200, 120
    regions = [_region(w, h, 50, 40, 90, 80, "first"), _region(w, h, 50, 40, 70, 60, "second")]
    a, b = layout_labels((w, h), regions)
    assert a.box[3] < b.box[1] and a.box[0] == b.box[0]


def test_render_draws_the_labels_inside_a_small_picture():
    w, h = 48, 32
    rgb = np.full((h, w, 3), 255, np.uint8)
    regions = [_region(w, h, 40, 0, 48, 20, LONG)]
    out = np.asarray(render_overlay(rgb, regions, prompts=False))
    [label] = layout_labels((w, h), regions)
    x0, y0, x1, y1 = (int(v) for v in label.box)
    assert out[y0, x0].tolist() == list(region_color(0))  # the label's background starts inside
    assert x0 < 40  # moved left from the mask's corner so that it fits


def test_pictures_too_small_for_text_get_no_labels():
    rgb = np.zeros((6, 8, 3), np.uint8)
    regions = [_region(8, 6, 1, 1, 4, 4, "tiny")]
    assert layout_labels((8, 6), regions) == []
    assert render_overlay(rgb, regions).size == (8, 6)
