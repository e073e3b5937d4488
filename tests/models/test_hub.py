"""Saving and loading: config + safetensors round trips, parts referenced by name, reference checkpoints."""

import dataclasses
import json

import pytest
import torch

from sca.models.captioner import SCAModel
from sca.models.config import TINY_CONFIG
from sca.models.hub import REFERENCE_KEY_MAP
from sca.models.integrity import RECORD_KEY, CheckpointError, record_weight_files
from sca.models.segmenters import Prompts

BOXES = torch.tensor([[[1.0, 2, 30, 40], [10, 10, 60, 50]]])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SCAModel(TINY_CONFIG).eval()


def _resave(folder, state):
    """Rewrite ``folder``'s model.safetensors with ``state`` and record its new hash, as a save would."""
    from safetensors.torch import save_file

    save_file(state, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config[RECORD_KEY] = record_weight_files(folder)
    (folder / "config.json").write_text(json.dumps(config))


def _captions(m):
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = m.generate(pixel_values=pixels, prompts=Prompts(boxes=BOXES), max_new_tokens=5)
        loss_inputs = m(pixel_values=pixels, prompts=Prompts(boxes=BOXES))
    return out.token_ids, loss_inputs.masks


def test_round_trip_gives_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    again = SCAModel.from_pretrained(tmp_path / "ckpt").eval()
    ids, masks = _captions(model)
    ids2, masks2 = _captions(again)
    assert ids == ids2
    torch.testing.assert_close(masks, masks2)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, msg=name)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "sca" and config["num_mixer_layers"] == 2
    # Random-init parts have no known source: they are stored in the checkpoint.
    assert config["image_encoder"]["weights"] == "./image_encoder"
    assert (tmp_path / "ckpt" / "language_model" / "config.json").is_file()


def test_known_sources_are_referenced_not_copied(model, tmp_path, monkeypatch):
    monkeypatch.setitem(model.segmenter.source, "weights", "owner/some-sam")
    monkeypatch.setitem(model.lm.source, "weights", "owner/some-lm")
    model.save_pretrained(tmp_path / "ckpt")
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["config.json", "model.safetensors"]
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "ckpt" / "model.safetensors")).keys()
    assert {k.split(".")[0] for k in keys} == {"mixer", "projection", "task_tokens"}


def test_tuned_lm_is_saved(tmp_path):
    torch.manual_seed(0)
    m = SCAModel(dataclasses.replace(TINY_CONFIG, freeze_lm=False)).eval()
    m.lm.source["weights"] = "owner/some-lm"  # known source, but tuned: must be saved anyway
    with torch.no_grad():
        m.lm.model.get_input_embeddings().weight.add_(1.0)
    m.save_pretrained(tmp_path / "ckpt")
    again = SCAModel.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(again.lm.model.get_input_embeddings().weight, m.lm.model.get_input_embeddings().weight)


def test_save_is_atomic_over_an_existing_checkpoint(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path / "ckpt")
    import sca.models.hub as hub

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(hub, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()  # the old one is intact
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folder left behind


def test_missing_and_bad_checkpoints(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="not a hub id"):
        SCAModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        SCAModel.from_pretrained(tmp_path / "empty")
    model.save_pretrained(tmp_path / "ckpt")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    state["mixer.bogus"] = torch.zeros(1)
    _resave(tmp_path / "ckpt", state)
    with pytest.raises(ValueError, match="unexpected key"):
        SCAModel.from_pretrained(tmp_path / "ckpt")


def test_own_checkpoint_misfit_is_one_error_with_every_key(model, tmp_path):
    from safetensors.torch import load_file

    model.save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(str(path))
    state.pop("mixer.queries.weight")
    state["mixer.bogus"] = torch.zeros(1)
    state["projection.bias"] = torch.zeros(3)
    _resave(tmp_path / "ckpt", state)
    with pytest.raises(ValueError) as err:
        SCAModel.from_pretrained(tmp_path / "ckpt")
    msg = str(err.value)
    assert repr(str(path)) in msg
    assert "1 missing key(s): mixer.queries.weight" in msg
    assert "1 unexpected key(s): mixer.bogus" in msg
    assert "projection.bias: file (3,) vs model (32,)" in msg


def test_image_encoder_options_survive_the_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SCAModel(dataclasses.replace(TINY_CONFIG, image_encoder={"name": "tiny-sam-hq", "hq_token_only": True}))
    m.save_pretrained(tmp_path / "ckpt")
    spec = json.loads((tmp_path / "ckpt" / "config.json").read_text())["image_encoder"]
    assert spec == {"name": "tiny-sam-hq", "hq_token_only": True, "weights": "./image_encoder"}
    assert SCAModel.from_pretrained(tmp_path / "ckpt").segmenter.hq_token_only is True


def _write_reference_checkpoint(model, folder, fmt):
    """A checkpoint laid out as the reference code saves it (names from its modeling file)."""
    inverse = [(new, old) for old, new in REFERENCE_KEY_MAP]
    state = {}
    for key, value in model.state_dict().items():
        for new, old in inverse:
            if key.startswith(new):
                state[old + key[len(new):]] = value.clone()
                break
        else:
            raise AssertionError(key)
    sam = model.segmenter.sam.config
    decoder = sam.mask_decoder_config.to_dict()
    decoder.update(additional_num_hidden_layers=model.config.num_mixer_layers, num_caption_tokens=8, num_caption_heads=1)
    config = {
        "architectures": ["ScaMultitaskV2Model"], "model_type": "sca", "num_task_tokens": 6,
        "vision_config": sam.vision_config.to_dict(), "prompt_encoder_config": sam.prompt_encoder_config.to_dict(),
        "mask_caption_decoder_config": decoder, "text_config": model.lm.model.config.to_dict(),
        "_name_or_path": "facebook/sam-vit-huge",
    }
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    model.lm.tokenizer.save_pretrained(folder)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_reference_checkpoint_layout_loads(model, tmp_path, fmt):
    _write_reference_checkpoint(model, tmp_path / "ref", fmt)
    loaded = SCAModel.from_pretrained(tmp_path / "ref").eval()
    assert loaded.config.num_mixer_layers == 2 and loaded.config.num_caption_queries == 8
    assert _captions(loaded)[0] == _captions(model)[0]


def test_reference_pickle_with_code_is_refused(model, tmp_path):
    _write_reference_checkpoint(model, tmp_path / "ref", "bin")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "ref" / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        SCAModel.from_pretrained(tmp_path / "ref")
    msg = str(err.value)
    assert repr(str(tmp_path / "ref" / "pytorch_model.bin")) in msg and "print" in msg
    assert "weights_only" not in msg
