"""Shared fixtures: a small synthetic caption set and a tiny training config."""

import pytest
import yaml

from sca.data.synthetic import SyntheticConfig, generate_synthetic


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, SyntheticConfig(flavour="captions", seed=3, splits={"train": 16, "val": 4},
                                             image_size=(48, 64), objects=(2, 3)), workers=1)
    return root


def _tiny_run_config(root, **train):
    return {
        "model": {"image_encoder": {"name": "tiny-sam"},
                  "language_model": {"name": "tiny-gpt2", "dropout": 0.0},
                  "num_mixer_layers": 1},
        "data": {"train_records": str(root / "train.jsonl.gz"), "images": str(root)},
        "train": {"max_steps": 6, "images_per_step": 4, "regions_per_image": 3, "warmup_steps": 1, "lr": 1e-3,
                  "log_every": 1, "save_every": 2, "num_workers": 0, "seed": 7, **train},
    }


@pytest.fixture
def write_config(tmp_path):
    def write(config, name="run.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.fixture
def tiny_run_config():
    """(data root, **train overrides) -> a run config dict for a 1-layer-mixer tiny captioner."""
    return _tiny_run_config
