"""The qualitative figure renders, and SAM's low-res masks map back onto the original image."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sca.data.transforms import resize_geometry
from sca.evaluation.figures import mask_to_original, save_predictions_figure
from sca.evaluation.predict import read_predictions


def test_mask_maps_back_to_the_original_frame():
    g = resize_geometry(120, 60, 64)  # content 64 x 32 in the 64 frame
    logits = torch.full((1, 16, 16), -5.0)
    logits[0, 0:8, 8:16] = 5.0  # the right half of the content rows (content covers rows 0-7 of 16)
    mask = mask_to_original(logits, g)
    assert mask.shape == (1, 60, 120)
    assert mask[0, :, 70:].mean() > 0.9 and mask[0, :, :50].mean() < 0.05


def test_figure_renders(predictions_run, eval_dataset, tiny_model, tmp_path):
    pred = read_predictions(predictions_run[0])
    path = save_predictions_figure(tmp_path / "figure.png", pred, eval_dataset, model=tiny_model, num_images=2)
    image = np.asarray(Image.open(path))
    assert image.shape[0] > 400 and image.shape[1] > 800 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 20  # not blank
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
