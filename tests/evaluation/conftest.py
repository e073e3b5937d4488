"""Shared fixtures of the evaluation tests: one tiny model, one small synthetic set, one predictions
file, and one METEOR process shared by every test that scores METEOR (started first, so its JVM
loads while the model generates)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from sca.data.synthetic import SyntheticConfig, generate_synthetic


@contextlib.contextmanager
def one_thread():
    """Tiny models on the project's 2 shared cores: intra-op threads only add synchronisation (2-3x
    slower when other jobs share the machine). Restored on exit, so other test folders keep theirs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session", autouse=True)
def meteors():
    """(ours: MeteorScorer, pycocoevalcap's Meteor): ONE METEOR process for the whole session (its JVM
    takes 6-30 s to start). METEOR's -stdio mode scores each SCORE line on its own, so sca's code and
    the direct pycocoevalcap calls can share it without influencing each other."""
    from pycocoevalcap.meteor.meteor import Meteor

    from sca.evaluation.metrics import MeteorScorer

    direct = Meteor()
    ours = MeteorScorer(direct)
    yield ours, direct
    ours.close()


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Synthetic captions: 12 train / 3 test images of 80-120 px (the tiny SAM resizes them to 64)."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, SyntheticConfig(splits={"train": 12, "test": 3}, image_size=(80, 120)))
    return root


@pytest.fixture(scope="session")
def tiny_model():
    from sca.models.captioner import SCAModel
    from sca.models.config import TINY_CONFIG

    torch.manual_seed(0)
    return SCAModel(TINY_CONFIG).eval()


@pytest.fixture(scope="session")
def eval_dataset(tiny_model, synthetic_root):
    from sca.evaluation.run import eval_dataset

    return eval_dataset(tiny_model, synthetic_root / "test.jsonl.gz", synthetic_root)


@pytest.fixture(scope="session")
def predictions_run(tiny_model, eval_dataset, tmp_path_factory):
    """(predictions path, PredictionStats) of the tiny model over the synthetic test split."""
    from sca.evaluation.predict import GenerationSettings, predict_to_file
    from sca.training.collate import RegionCollator, make_loader

    loader = make_loader(eval_dataset, RegionCollator(tiny_model.lm.require_tokenizer()), batch_size=2,
                         shuffle=False, num_workers=0)
    path = tmp_path_factory.mktemp("pred") / "predictions.jsonl"
    with one_thread():
        stats = predict_to_file(tiny_model, loader, path, protocol="synthetic-captions", split="test",
                                settings=GenerationSettings(num_beams=2, max_new_tokens=5, region_chunk_size=2),
                                progress=False)
    return path, stats
