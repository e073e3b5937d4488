"""benchmarks/bench_api.py runs end to end on the tiny model and prints one row per region count."""

import re
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_api.py"


def test_bench_api_prints_three_contenders(photo, monkeypatch, capsys, load_file_module):
    bench = load_file_module(BENCH)
    monkeypatch.setattr(sys, "argv", ["bench_api.py", "--image-encoder", "tiny-sam", "--lm", "tiny-gpt2",
                                      "--mixer-layers", "1", "--image", str(photo), "--regions", "1", "3",
                                      "--baseline-regions", "2", "--num-beams", "1", "--max-new-tokens", "2"])
    bench.main()
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d+) \|\s+([\d.]+) r/s \|\s+([\d.]+) r/s(\*?)\s+\|\s+([\d.]+) r/s(\*?)\s+\|", out, re.M)
    assert [(r[0], r[3], r[5]) for r in rows] == [("1", "", ""), ("3", "*", "*")]
    assert all(float(v) > 0 for r in rows for v in (r[1], r[2], r[4]))
    assert "image 96x64 -> 64px" in out


def test_crop_to_mask_uses_the_mask_box_and_blanks_the_background(load_file_module):
    bench = load_file_module(BENCH)
    rgb = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    mask[4, 3] = False
    crop = bench.crop_to_mask(rgb, mask, [0, 0, 12, 10], "keep")
    assert np.array_equal(crop, rgb[2:5, 3:9])
    white = bench.crop_to_mask(rgb, mask, [0, 0, 12, 10], "white")
    assert white[2, 0].tolist() == [255, 255, 255] and np.array_equal(white[0], rgb[2, 3:9])
    empty = bench.crop_to_mask(rgb, np.zeros_like(mask), [1, 2, 4, 6], "keep")
    assert np.array_equal(empty, rgb[2:6, 1:4])
