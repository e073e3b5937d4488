"""Robust image loading: modes, EXIF orientation, JPEG draft, and errors that name the file."""

import io

import numpy as np
import pytest
from PIL import Image

from sca.data.images import ImageError, image_size, load_image


def _rgb(h=30, w=40):
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.arange(w)[None, :] * 6
    a[..., 1] = np.arange(h)[:, None] * 8
    a[5:10, 5:15, 2] = 200
    return a


def test_rgb_png_is_returned_unchanged(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.array.dtype == np.uint8 and out.size == (40, 30) and (out.array == a).all() and out.notes == []


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr"])
def test_other_modes_become_rgb_and_are_noted(tmp_path, mode):
    img = Image.fromarray(_rgb()).convert(mode)
    suffix = "jpg" if mode in ("CMYK", "YCbCr") else "png"
    img.save(tmp_path / f"x.{suffix}")
    out = load_image(tmp_path / f"x.{suffix}")
    assert out.array.shape == (30, 40, 3) and out.array.dtype == np.uint8
    if mode == "L":
        assert (out.array[..., 0] == np.asarray(img)).all() and (out.array[..., 0] == out.array[..., 2]).all()
    if mode != "YCbCr":  # Pillow writes YCbCr JPEGs as RGB JPEGs: nothing to convert then
        assert [k for k, _ in out.notes] == ["image_mode"]


def test_cmyk_colours_survive(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "red.jpg", quality=95)
    px = load_image(tmp_path / "red.jpg").array[4, 4].astype(int)
    assert px[0] > 200 and px[1] < 60 and px[2] < 60


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = 0          # fully transparent black ...
    rgba[2:5, 2:5] = (0, 0, 0, 255)  # ... except an opaque black square
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert (out.array[0, 0] == 255).all() and (out.array[3, 3] == 0).all()
    assert "transparency" in out.notes[0][1]
    # Grayscale + alpha, and a palette image with a transparent index
    Image.fromarray(rgba[..., [0, 3]], mode="LA").save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png").array[0, 0] == 255).all()
    p = Image.new("P", (6, 6), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.paste(1, (0, 0, 3, 6))
    p.save(tmp_path / "p.png", transparency=0)
    arr = load_image(tmp_path / "p.png").array
    assert (arr[0, 0] == (255, 0, 0)).all() and (arr[0, 5] == 255).all()


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    g16 = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)  # up to 59400
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    expect = np.clip(g16 * (255 / 65535) + 0.5, 0, 255).astype(np.uint8)
    assert (out.array[..., 1] == expect).all() and out.array.max() == expect.max() > 200
    assert "scaled" in out.notes[0][1]
    f = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tiff")
    out = load_image(tmp_path / "f.tiff")
    assert out.array[0, 0, 0] == 0 and out.array[9, 9, 0] == 255


@pytest.mark.parametrize("orientation, expect", [
    (1, lambda a: a), (3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),
])
def test_exif_orientation_is_applied(tmp_path, orientation, expect):
    a = _rgb()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "e.png", exif=exif.tobytes())
    out = load_image(tmp_path / "e.png")
    assert (out.array == expect(a)).all()
    assert out.size == out.array.shape[1::-1] == image_size(tmp_path / "e.png")
    assert any(k == "image_exif" for k, _ in out.notes) == (orientation != 1)
    raw = load_image(tmp_path / "e.png", exif=False)
    assert (raw.array == a).all() and raw.notes == []


def test_jpeg_draft_decodes_smaller_but_reports_full_size(tmp_path):
    Image.fromarray(np.zeros((400, 640, 3), np.uint8) + 90).save(tmp_path / "big.jpg")
    out = load_image(tmp_path / "big.jpg", min_size=(150, 90))
    assert out.size == (640, 400) and out.array.shape == (100, 160, 3)  # 1/4: smallest >= 150 x 90
    assert out.pixel_scale == (0.25, 0.25)
    full = load_image(tmp_path / "big.jpg", min_size=(640, 400))
    assert full.array.shape == (400, 640, 3) and full.pixel_scale == (1.0, 1.0)
    Image.fromarray(np.zeros((301, 427, 3), np.uint8)).save(tmp_path / "odd.jpg")
    odd = load_image(tmp_path / "odd.jpg", min_size=(50, 30))
    assert odd.array.shape == (38, 54, 3) and odd.pixel_scale == (0.125, 0.125)  # ceil(301/8), ceil(427/8)


def test_truncated_corrupt_and_missing_files_raise_naming_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(200, 200)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(_rgb(200, 200)).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    for name, kind in [("cut.jpg", "image_corrupt"), ("cut.png", "image_corrupt"), ("text.jpg", "image_corrupt"),
                       ("missing.jpg", "image_missing")]:
        with pytest.raises(ImageError, match=name) as err:
            load_image(tmp_path / name)
        assert err.value.kind == kind and err.value.path.endswith(name)
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="text.jpg"):
        image_size(tmp_path / "text.jpg")
