"""Checkpoint integrity: weight files recorded (size + sha256) at save time and verified at load time,
every tensor finite, every unreadable or unsafe file refused with its name and what is wrong."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sca.models import load_registries
from sca.models.captioner import SCAModel
from sca.models.config import TINY_CONFIG
from sca.models.hub import unmap_reference_key
from sca.models.integrity import RECORD_KEY, CheckpointError, record_weight_files, sha256_file
from sca.models.segmenters import Prompts

BOXES = torch.tensor([[[1.0, 2, 30, 40], [10, 10, 60, 50]]])
NO_ADVICE = ("weights_only=False", "weights_only` set to `False", "add_safe_globals")


@pytest.fixture(scope="module")
def model():
    IMAGE_ENCODERS, LANGUAGE_MODELS = load_registries()
    assert TINY_CONFIG.image_encoder["name"] in IMAGE_ENCODERS and TINY_CONFIG.language_model["name"] in LANGUAGE_MODELS
    torch.manual_seed(0)
    return SCAModel(TINY_CONFIG).eval()  # tiny-sam + tiny-gpt2, random: both parts are saved in the folder


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "ckpt"
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def ckpt(saved, tmp_path):
    """A fresh copy of the saved checkpoint, for a test to damage."""
    return shutil.copytree(saved, tmp_path / "ckpt")


def _config(folder):
    return json.loads((folder / "config.json").read_text())


def _write_config(folder, config):
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def _drop_record(folder):
    """Make ``folder`` look like a checkpoint saved before weight files were recorded."""
    config = _config(folder)
    del config[RECORD_KEY]
    _write_config(folder, config)


def _outputs(m):
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return m.generate(pixel_values=pixels, prompts=Prompts(boxes=BOXES), max_new_tokens=5).token_ids


def _flip_middle(path, n=64):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def _write_nan(path, name=None):
    """Put a NaN into one floating tensor of safetensors file ``path``; re-save it (valid framing)."""
    state = load_file(str(path))
    name = name or next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[1] = float("nan")
    save_file(state, str(path), metadata={"format": "pt"})
    return name


def _assert_plain(msg):
    for advice in NO_ADVICE:
        assert advice not in msg, msg


def test_every_weight_file_is_recorded_and_a_good_checkpoint_loads_identically(model, saved):
    record = _config(saved)[RECORD_KEY]
    assert sorted(record) == ["image_encoder/model.safetensors", "language_model/model.safetensors",
                              "model.safetensors"]
    for rel, entry in record.items():
        assert entry == {"size": (saved / rel).stat().st_size, "sha256": sha256_file(saved / rel)}
    again = SCAModel.from_pretrained(saved).eval()
    assert _outputs(again) == _outputs(model)
    own = model.state_dict()
    assert set(again.state_dict()) == set(own)
    for name, tensor in again.state_dict().items():
        torch.testing.assert_close(tensor, own[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("rel", ["model.safetensors", "image_encoder/model.safetensors",
                                 "language_model/model.safetensors"])
def test_flipped_bytes_are_refused_naming_the_file_and_both_hashes(ckpt, rel):
    recorded = _config(ckpt)[RECORD_KEY][rel]["sha256"]
    _flip_middle(ckpt / rel)
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(ckpt)
    msg = str(err.value)
    assert repr(str(ckpt / rel)) in msg
    assert "corrupt or was changed after saving" in msg
    assert recorded in msg and sha256_file(ckpt / rel) in msg


def test_truncated_file_is_refused_naming_the_file(ckpt):
    path = ckpt / "model.safetensors"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(ckpt)
    msg = str(err.value)
    assert repr(str(path)) in msg and "corrupt or was changed" in msg
    assert f"{size // 2} bytes" in msg and f"{size} bytes" in msg
    # Without a record (saved before it existed): safetensors' own error, named and explained.
    _drop_record(ckpt)
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(ckpt)
    msg = str(err.value)
    assert repr(str(path)) in msg and "not a readable safetensors file" in msg and "truncated or corrupt" in msg


def test_nan_in_a_validly_framed_file(ckpt):
    path = ckpt / "model.safetensors"
    name = _write_nan(path)
    # The record catches the change ...
    with pytest.raises(CheckpointError, match="corrupt or was changed after saving"):
        SCAModel.from_pretrained(ckpt)
    # ... and a NaN that was saved as it is (e.g. training diverged) is caught by the finiteness check.
    config = _config(ckpt)
    config[RECORD_KEY] = record_weight_files(ckpt)
    _write_config(ckpt, config)
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(ckpt)
    msg = str(err.value)
    assert repr(str(path)) in msg and repr(name) in msg and "1 NaN" in msg


@pytest.mark.parametrize("rel", ["model.safetensors", "image_encoder/model.safetensors",
                                 "language_model/model.safetensors"])
def test_checkpoint_without_record_still_loads_and_is_checked_for_finiteness(model, ckpt, rel):
    _drop_record(ckpt)
    assert _outputs(SCAModel.from_pretrained(ckpt).eval()) == _outputs(model)
    name = _write_nan(ckpt / rel)
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(ckpt)
    msg = str(err.value)
    assert repr(str(ckpt / rel)) in msg and repr(name) in msg and "NaN" in msg


def test_missing_and_unrecorded_weight_files_are_refused(saved, tmp_path):
    ckpt = shutil.copytree(saved, tmp_path / "a")
    (ckpt / "language_model" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"language_model/model\.safetensors' is missing"):
        SCAModel.from_pretrained(ckpt)
    ckpt = shutil.copytree(saved, tmp_path / "b")
    shutil.copy(ckpt / "model.safetensors", ckpt / "image_encoder" / "extra.safetensors")
    with pytest.raises(CheckpointError, match=r"extra\.safetensors.*does not record"):
        SCAModel.from_pretrained(ckpt)
    ckpt = shutil.copytree(saved, tmp_path / "c")
    config = _config(ckpt)
    config[RECORD_KEY]["model.safetensors"] = {"size": 1, "sha256": "xyz"}
    _write_config(ckpt, config)
    with pytest.raises(CheckpointError, match="must map each weight file"):
        SCAModel.from_pretrained(ckpt)


# -- the reference code's checkpoints (no record): readable, safe, finite ------------------------------
def _reference_checkpoint(model, folder, fmt="bin"):
    """A checkpoint laid out as the reference code saves it (its parameter names, its config keys)."""
    state = {unmap_reference_key(k): v.clone().contiguous() for k, v in model.state_dict().items()}
    sam = model.segmenter.sam.config
    decoder = sam.mask_decoder_config.to_dict()
    decoder.update(additional_num_hidden_layers=model.config.num_mixer_layers, num_caption_tokens=8,
                   num_caption_heads=1)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["ScaMultitaskV2Model"], "model_type": "sca", "num_task_tokens": 6,
        "vision_config": sam.vision_config.to_dict(), "prompt_encoder_config": sam.prompt_encoder_config.to_dict(),
        "mask_caption_decoder_config": decoder, "text_config": model.lm.model.config.to_dict()}))
    model.lm.tokenizer.save_pretrained(folder)
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file(state, str(folder / "model.safetensors"))
    return state


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_reference_pickle_with_code_is_refused_without_running_it(model, tmp_path):
    folder = tmp_path / "ref"
    state = _reference_checkpoint(model, folder)
    marker = tmp_path / "code-ran"
    torch.save({**state, "extra": _RunsCode(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(folder)
    msg = str(err.value)
    assert not marker.exists()
    assert repr(str(folder / "pytorch_model.bin")) in msg
    assert "posix.mkdir" in msg or "os.mkdir" in msg  # what the pickle asked for
    assert "could run code" in msg and "safetensors" in msg
    _assert_plain(msg)


def test_reference_bin_truncated_or_not_a_state_dict(model, tmp_path):
    folder = tmp_path / "ref"
    _reference_checkpoint(model, folder)
    path = folder / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(folder)
    assert repr(str(path)) in str(err.value) and "not a readable PyTorch file" in str(err.value)
    _assert_plain(str(err.value))
    torch.save({"state_dict": {"a": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"entry 'state_dict' is a dict, not a tensor"):
        SCAModel.from_pretrained(folder)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_reference_checkpoint_with_nan_is_refused_and_a_good_one_loads(model, tmp_path, fmt):
    folder = tmp_path / "ref"
    state = _reference_checkpoint(model, folder, fmt)
    assert _outputs(SCAModel.from_pretrained(folder).eval()) == _outputs(model)
    name = "language_project.weight"
    state[name][0, 0] = float("inf")
    path = folder / ("pytorch_model.bin" if fmt == "bin" else "model.safetensors")
    torch.save(state, path) if fmt == "bin" else save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(folder)
    msg = str(err.value)
    assert repr(str(path)) in msg and repr(name) in msg and "1 infinite" in msg
