"""Optimizer groups, schedule, and atomic checkpoints."""

import math

import pytest
import torch

from sca.training.config import TrainConfig
from sca.training.optim import build_optimizer, parameter_groups, warmup_cosine
from sca.training.state import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mixer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        self.queries = torch.nn.Embedding(3, 4)
        self.lm = torch.nn.Linear(4, 4)


def test_no_decay_for_bias_and_layernorm_and_lm_learning_rate():
    groups = {g["group"]: g for g in parameter_groups(Toy(), lr=1e-4, weight_decay=0.1, lm_lr=1e-5)}
    assert set(groups["new-decay"]["param_names"]) == {"mixer.0.weight", "queries.weight"}
    assert set(groups["new-no_decay"]["param_names"]) == {"mixer.0.bias", "mixer.1.weight", "mixer.1.bias"}
    assert groups["new-no_decay"]["weight_decay"] == 0.0 and groups["new-decay"]["weight_decay"] == 0.1
    assert groups["lm-decay"]["lr"] == 1e-5 and groups["new-decay"]["lr"] == 1e-4


def test_frozen_parameters_are_left_out():
    toy = Toy()
    toy.lm.requires_grad_(False)
    names = [n for g in parameter_groups(toy, lr=1, weight_decay=0) for n in g["param_names"]]
    assert not any(n.startswith("lm.") for n in names)
    toy.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(toy, lr=1, weight_decay=0)


def test_warmup_then_cosine_to_zero():
    assert warmup_cosine(0, 200, 1000) == pytest.approx(1 / 200)
    assert warmup_cosine(199, 200, 1000) == pytest.approx(1.0)
    assert warmup_cosine(600, 200, 1000) == pytest.approx(0.5)
    assert warmup_cosine(1000, 200, 1000) == pytest.approx(0.0, abs=1e-12)
    assert all(warmup_cosine(s, 200, 1000) >= warmup_cosine(s + 1, 200, 1000) for s in range(200, 1000))


def test_train_config_errors_name_the_value():
    with pytest.raises(ValueError, match="images_per_step 6 is not divisible by gradient_accumulation 4"):
        TrainConfig(images_per_step=6, gradient_accumulation=4)
    with pytest.raises(ValueError, match="mixed_precision 'fp8'"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lr_max'\]"):
        TrainConfig.from_dict({"lr_max": 1})


def _step(model, opt):
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()


def test_checkpoint_round_trip_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = Toy().mixer
    cfg = TrainConfig(max_steps=10, warmup_steps=2)
    opt = build_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 2, 10))
    for _ in range(3):
        _step(model, opt)
        sched.step()
    trainable = dict(model.named_parameters())
    folder = save_checkpoint(tmp_path, trainable=trainable, optimizer=opt, scheduler=sched,
                             state=TrainState(step=3, epoch=1, batches_in_epoch=2), config=cfg.to_dict())
    expected_next = torch.rand(4)
    opt2 = build_optimizer(model, cfg)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: warmup_cosine(s, 2, 10))
    weights, state, config = load_checkpoint(folder, optimizer=opt2, scheduler=sched2)
    assert torch.equal(torch.rand(4), expected_next)  # RNG restored to the saved point
    assert (state.step, state.epoch, state.batches_in_epoch) == (3, 1, 2)
    assert sched2.last_epoch == 3 and math.isclose(sched2.get_last_lr()[0], sched.get_last_lr()[0])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert set(weights) == set(trainable) and config["max_steps"] == 10


def test_latest_pointer_pruning_and_half_written_checkpoints(tmp_path):
    model = Toy().mixer
    cfg = TrainConfig()
    opt = build_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, trainable=dict(model.named_parameters()), optimizer=opt, scheduler=sched,
                        state=TrainState(step=step), config={}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000004", "step-00000006"]
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    # A run killed while writing step 8 leaves a temp folder and the pointer on step 6.
    (tmp_path / ".step-00000008.tmp-abc").mkdir()
    (tmp_path / "step-00000008").mkdir()  # incomplete: no state.json
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    (tmp_path / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step-00000006"
