"""The Trainer's data loader: one set of workers for the whole run, and every sample loaded with the
epoch it belongs to (a sample's randomness comes from (seed, epoch, index))."""

import os

import pytest
import torch
from torch.utils.data import Dataset

from sca.training.config import TrainConfig
from sca.training.trainer import LossParts, StepBatchSampler, Trainer


class EpochEcho(Dataset):
    """Item i of epoch e -> (e, i, the loading process's id)."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return self.epoch, index, os.getpid()


class Recorder:
    def __init__(self):
        self.batches = []

    def __call__(self, model, batch) -> LossParts:
        self.batches.append(batch)
        return LossParts(loss_sum=(model.weight ** 2).sum(), count=1)


@pytest.mark.parametrize("workers", [0, 1])
def test_every_sample_carries_its_epoch_and_workers_persist(tmp_path, workers):
    n, per_step, steps = 6, 2, 7  # 3 steps an epoch: epochs 0, 1 and the first step of 2
    recorder = Recorder()
    config = TrainConfig(max_steps=steps, images_per_step=per_step, lr=1e-3, warmup_steps=0, log_every=100,
                         save_every=0, num_workers=workers, seed=5)
    trainer = Trainer(torch.nn.Linear(2, 1), EpochEcho(n), collate_fn=list, loss_fn=recorder, config=config,
                      output_dir=tmp_path, use_live=False, progress=False,
                      save_fn=lambda model, folder: None)
    trainer.fit(resume=False)

    assert len(recorder.batches) == steps
    for step, batch in enumerate(recorder.batches):
        epoch = step // (n // per_step)
        order = StepBatchSampler(n, images_per_step=per_step, accumulation=1, seed=5, epoch=epoch).order
        first = (step % (n // per_step)) * per_step
        assert [(e, i) for e, i, _ in batch] == [(epoch, i) for i in order[first:first + per_step]]
    pids = {pid for batch in recorder.batches for _, _, pid in batch}
    if workers:
        assert len(pids) == 1 and os.getpid() not in pids  # one worker served all three epochs
    else:
        assert pids == {os.getpid()}
