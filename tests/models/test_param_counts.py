"""Parameter counts at paper sizes (paper.md §1.9), built without weights on the meta device."""

import dataclasses

import pytest
import torch

from sca.models.captioner import SCAModel
from sca.models.config import SCAConfig
from sca.models.mixer import TextFeatureMixer


def _count(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@pytest.mark.parametrize("layers, expected, paper_millions", [
    (2, 3_291_264, 3.29), (4, 6_450_304, 6.45), (8, 12_768_384, 12.77), (12, 19_086_464, None), (24, 38_040_704, 38.04),
])
def test_mixer_rows(layers, expected, paper_millions):
    with torch.device("meta"):
        mixer = TextFeatureMixer(num_layers=layers)
    n = _count(mixer.transformer)
    assert n == expected == 1_579_520 * layers + 132_224
    if paper_millions is not None:
        assert round(n / 1e6, 2) == paper_millions
    assert mixer.queries.weight.numel() == 2_048


@pytest.mark.parametrize("lm, hidden, trainable", [
    ("gpt2-large", 1280, 19_432_832),
    ("open-llama-3b-v2", 3200, 19_949_312),
])
def test_trainable_totals_at_paper_size(lm, hidden, trainable):
    config = SCAConfig(image_encoder={"name": "sam-vit-h"}, language_model={"name": lm})
    with torch.device("meta"):
        model = SCAModel(config)
    assert model.lm.hidden_size == hidden
    assert _count(model, trainable_only=True) == trainable
    assert _count(model.task_tokens) == 12 * hidden and _count(model.projection) == 257 * hidden


def test_frozen_parts_at_paper_size():
    with torch.device("meta"):
        model = SCAModel(SCAConfig(image_encoder={"name": "sam-vit-h"}, language_model={"name": "gpt2-large"}))
    assert _count(model.lm) == 774_030_080  # GPT2-large, "774M"
    # SAM's image encoders (paper: 86M / 307M / 632M, the nominal ViT-B/L/H sizes). Ours count the
    # whole encoder (absolute position embedding and neck included), hence a little more.
    from sca.models import load_registries

    encoders, _ = load_registries()
    exact = {"b": 89_670_912, "l": 308_278_272, "h": 637_026_048}
    nominal = {"b": 86e6, "l": 307e6, "h": 632e6}
    for size in "blh":
        with torch.device("meta"):
            seg = encoders.build(f"sam-vit-{size}")
        n = _count(seg.sam.vision_encoder)
        assert n == exact[size]
        assert abs(n - nominal[size]) / nominal[size] < 0.05
        assert _count(seg, trainable_only=False) > n  # + prompt encoder and mask decoder


def test_mixer_depth_is_a_config_option():
    config = SCAConfig(image_encoder={"name": "sam-vit-b"}, language_model={"name": "gpt2"}, num_mixer_layers=2)
    with torch.device("meta"):
        model = SCAModel(config)
    assert _count(model, trainable_only=True) == 3_291_264 + 2_048 + (12 + 257) * 768
    no_sam_tokens = dataclasses.replace(config, use_sam_tokens=False)
    with torch.device("meta"):
        assert _count(SCAModel(no_sam_tokens), trainable_only=True) == _count(model, trainable_only=True)
