"""Helpers shared by the data tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from sca.data.records import ImageRecord, Region

TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "sca" / "assets" / "gpt2_tokenizer"


@cache
def tokenizer():
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(TOKENIZER_DIR))


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def scene(width: int = 80, height: int = 60) -> np.ndarray:
    """[H, W, 3] uint8: dark background, a white block at x 10..30, y 20..40, a red block at 50..70, 5..25."""
    img = np.full((height, width, 3), 20, dtype=np.uint8)
    img[20:40, 10:30] = 255
    img[5:25, 50:70] = (255, 0, 0)
    return img


def scene_record(image_id="img", file_name="img.png", width=80, height=60, **region_overrides) -> ImageRecord:
    regions = [
        Region(box=(10, 20, 30, 40), phrases=["a white square", "white block"], category="square", region_id=1),
        Region(box=(50, 5, 70, 25), phrases=["a red square"], category="square", task="recognition", region_id=2),
    ]
    return ImageRecord(image_id=image_id, file_name=file_name, width=width, height=height, regions=regions,
                       source="test", split="train")
