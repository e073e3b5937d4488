"""The prompt-shuffle test: a captioner that ignores its region shows no gap; one that reads it does."""

import copy

import pytest
import torch

from sca.evaluation.diagnostics import distinct_share, prompt_shuffle_gap
from sca.training.collate import RegionCollator, make_loader
from sca.training.sca_task import region_inputs


@pytest.fixture()
def loader(tiny_model, eval_dataset):
    return make_loader(eval_dataset, RegionCollator(tiny_model.lm.require_tokenizer()), batch_size=3,
                       shuffle=False, num_workers=0)


def test_true_loss_is_the_models_own_caption_loss(tiny_model, loader):
    model = copy.deepcopy(tiny_model)
    model.config.label_smoothing = 0.0
    out = prompt_shuffle_gap(model, loader)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            res = model(pixel_values=batch.pixel_values, **region_inputs(batch))
            total, tokens = total + float(res.loss_sum), tokens + res.num_tokens
    assert out["num_tokens"] == tokens
    assert out["loss_true"] == pytest.approx(total / tokens, rel=1e-5)


def test_a_region_blind_prefix_has_no_gap_and_a_region_reading_one_has(tiny_model, loader):
    reading = prompt_shuffle_gap(tiny_model, loader)  # random weights: the prefix depends on the region
    assert abs(reading["loss_gap"]) > 1e-4, reading
    blind = copy.deepcopy(tiny_model)
    with torch.no_grad():
        blind.projection.weight.zero_()  # prefix = task tokens + bias: the same for every region
        blind.projection.bias.normal_()
    out = prompt_shuffle_gap(blind, loader)
    assert out["loss_gap"] == pytest.approx(0.0, abs=1e-5), out
    assert out["num_regions"] == reading["num_regions"] > 2


def test_distinct_share():
    assert distinct_share(["a", "a", "a", "a"]) == 0.25
    assert distinct_share(["a", "b"]) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        distinct_share([])
