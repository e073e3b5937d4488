"""Shared fixtures of the user-facing API tests: one tiny checkpoint and one Captioner per session."""

import numpy as np
import pytest
import torch
from PIL import Image

from sca.app.api import Captioner
from sca.models.captioner import SCAModel
from sca.models.config import TINY_CONFIG


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine OpenMP's waiting threads
    make small ops many times slower (GPT-2 generation here: 40 s with 2 threads, 7 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved tiny SCA checkpoint folder (tiny SAM 64 px + tiny GPT-2 with GPT-2's tokenizer)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("api") / "tiny-sca"
    SCAModel(TINY_CONFIG).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def captioner(tiny_checkpoint):
    return Captioner.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def photo(tmp_path_factory):
    """A 96x64 (W x H) RGB picture with structure (a gradient and two rectangles), as a PNG file."""
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2, y * 3, (x + y) % 256], axis=-1).astype(np.uint8)
    rgb[10:30, 12:40] = (250, 20, 20)
    rgb[35:60, 50:90] = (20, 20, 240)
    path = tmp_path_factory.mktemp("images") / "photo.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="session")
def photo_rgb(photo):
    return np.asarray(Image.open(photo).convert("RGB"))
