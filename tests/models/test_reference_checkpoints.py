"""The reference code's released checkpoints (xk-huang/segment-caption-anything-*), written here at toy
size in their real format: a ``config.json`` with ``vision_config`` / ``prompt_encoder_config`` /
``mask_caption_decoder_config`` / ``text_config`` (as transformers 4.30 wrote it: ``torch_dtype``
float16, ``transformers_version``), weights under the reference module names, as ``pytorch_model.bin``
(every tensor, tied ones under both names, as ``torch.save(state_dict)``) or ``model.safetensors``
(tied duplicates removed, as transformers' safetensors saving does)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, GPT2TokenizerFast

from sca.models.captioner import SCAModel
from sca.models.config import SCAConfig
from sca.models.hub import REFERENCE_KEY_MAP, unmap_reference_key
from sca.models.lms import GPT2_TOKENIZER_DIR, gpt2_tokenizer
from sca.models.segmenters import Prompts
from sca.models.text import encode_captions

BOXES = torch.tensor([[[1.0, 2, 30, 40], [10, 10, 60, 50]]])
CAPTIONS = ["a red circle", "two cats on a mat"]

# A GPT-2 / an OpenLLaMA text_config as transformers 4.30 wrote them (the released files' keys),
# at toy size.
GPT2_TEXT_CONFIG = {
    "_name_or_path": "gpt2-large", "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
    "activation_function": "gelu_new", "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1,
    "eos_token_id": 50256, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "n_ctx": 128, "n_embd": 32,
    "n_head": 2, "n_inner": None, "n_layer": 2, "n_positions": 128, "resid_pdrop": 0.1, "scale_attn_weights": True,
    "use_cache": True, "vocab_size": 50257, "torch_dtype": "float16", "transformers_version": "4.30.2",
}
LLAMA_TEXT_CONFIG = {
    "_name_or_path": "openlm-research/open_llama_3b_v2", "architectures": ["LlamaForCausalLM"],
    "model_type": "llama", "bos_token_id": 50257, "eos_token_id": 50256, "pad_token_id": 0, "hidden_act": "silu",
    "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 128,
    "num_attention_heads": 2, "num_hidden_layers": 3, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "tie_word_embeddings": False, "use_cache": True, "vocab_size": 50258, "torch_dtype": "float16",
    "transformers_version": "4.30.2",
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Toy-size models run faster on one thread (as in test_segmenters.py); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def llama_tokenizer():
    """GPT-2's BPE with a LLaMA-style ``<s>`` in front (the tiny-llama tokenizer)."""
    return GPT2TokenizerFast.from_pretrained(str(GPT2_TOKENIZER_DIR), add_bos_token=True, bos_token="<s>")


def build_original(text_config: dict) -> SCAModel:
    """The model the checkpoint is written from: tiny SAM + the LM of ``text_config``; the LM's
    weights rounded to float16 (they are stored so), so that loading must give them back exactly."""
    torch.manual_seed(0)
    lm_config = {k: v for k, v in text_config.items() if not k.startswith("_")
                 and k not in ("architectures", "transformers_version", "torch_dtype")}
    tokenizer = str(GPT2_TOKENIZER_DIR) if text_config["model_type"] == "gpt2" else None
    model = SCAModel(SCAConfig(image_encoder={"name": "tiny-sam"}, num_mixer_layers=2,
                               language_model={"name": "causal-lm", "config": lm_config, "tokenizer": tokenizer}))
    if tokenizer is None:
        from sca.models.lms import LanguageModel

        model.lm = LanguageModel(model.lm.model, llama_tokenizer(), model.lm.source)
    with torch.no_grad():
        for p in model.lm.parameters():
            p.copy_(p.half().float())
    return model.eval()


def reference_state(model: SCAModel) -> dict[str, torch.Tensor]:
    """The model's state_dict under the reference code's names; LM tensors in float16."""
    inverse = [(new, old) for old, new in REFERENCE_KEY_MAP]
    state = {}
    for key, value in model.state_dict().items():
        for new, old in inverse:
            if key.startswith(new):
                name = old + key[len(new):]
                state[name] = value.half() if name.startswith("language_model.") else value.clone()
                break
        else:
            raise AssertionError(key)
    return state


def write_reference_checkpoint(model: SCAModel, folder: Path, text_config: dict, fmt: str, *,
                               tokenizer=None, edit=None) -> Path:
    """Write ``model`` as the reference code saved it; ``edit(state)`` changes the tensors first.
    -> the weights file."""
    state = reference_state(model)
    if edit is not None:
        edit(state)
    sam = model.segmenter.sam.config
    decoder = sam.mask_decoder_config.to_dict()
    decoder.update(additional_num_hidden_layers=model.config.num_mixer_layers, num_caption_tokens=8,
                   num_caption_heads=1)
    config = {
        "architectures": ["ScaMultitaskV2Model"], "model_type": "sca", "num_task_tokens": 6,
        "torch_dtype": "float32", "transformers_version": "4.30.2", "_name_or_path": "facebook/sam-vit-huge",
        "vision_config": sam.vision_config.to_dict(), "prompt_encoder_config": sam.prompt_encoder_config.to_dict(),
        "mask_caption_decoder_config": decoder, "text_config": text_config,
    }
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if fmt == "bin":
        path = folder / "pytorch_model.bin"
        torch.save(state, path)
    else:
        # transformers' safetensors saving keeps one name per shared tensor: the tied lm_head goes.
        if text_config.get("tie_word_embeddings", True):
            state.pop("language_model.lm_head.weight")
        path = folder / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return path


def outputs(model: SCAModel):
    """Generated ids, and masks / IoU scores / caption logits of one forward pass."""
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    prompts = Prompts(boxes=BOXES)
    with torch.no_grad():
        ids = model.generate(pixel_values=pixels, prompts=prompts, max_new_tokens=5).token_ids
        caps = encode_captions(model.lm.tokenizer, CAPTIONS)
        out = model(pixel_values=pixels, prompts=prompts, captions=caps, return_logits=True)
    return ids, out.masks, out.iou_scores, out.logits


def assert_same_outputs(a: SCAModel, b: SCAModel) -> None:
    ids_a, *tensors_a = outputs(a)
    ids_b, *tensors_b = outputs(b)
    assert ids_a == ids_b
    for name, x, y in zip(("masks", "iou_scores", "logits"), tensors_a, tensors_b, strict=True):
        assert torch.equal(x, y), name


# ---------------------------------------------------------------------------------------------------
# 1. OpenLLaMA saved with transformers 4.30: per-layer rotary_emb.inv_freq buffers
# ---------------------------------------------------------------------------------------------------
def add_inv_freq_buffers(state: dict[str, torch.Tensor]) -> None:
    """transformers 4.30's LlamaRotaryEmbedding: a persistent inv_freq buffer in every attention layer."""
    head_dim = LLAMA_TEXT_CONFIG["hidden_size"] // LLAMA_TEXT_CONFIG["num_attention_heads"]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for i in range(LLAMA_TEXT_CONFIG["num_hidden_layers"]):
        state[f"language_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_openllama_checkpoint_with_rotary_inv_freq_buffers_loads(tmp_path, caplog, fmt):
    original = build_original(LLAMA_TEXT_CONFIG)
    write_reference_checkpoint(original, tmp_path / "ref", LLAMA_TEXT_CONFIG, fmt, tokenizer=llama_tokenizer(),
                               edit=add_inv_freq_buffers)
    with caplog.at_level(logging.WARNING, logger="sca.models.hub"):
        loaded = SCAModel.from_pretrained(tmp_path / "ref").eval()
    notes = [r.getMessage() for r in caplog.records if "recomputes" in r.getMessage()]
    assert len(notes) == 1
    assert "dropped 3 tensor(s)" in notes[0] and "3 x '*rotary_emb.inv_freq'" in notes[0]
    assert "language_model.model.layers.0.self_attn.rotary_emb.inv_freq" in notes[0]
    assert type(loaded.lm.model).__name__ == "LlamaForCausalLM" and loaded.lm.adds_bos
    assert_same_outputs(original, loaded)


# ---------------------------------------------------------------------------------------------------
# 2. One dtype for every part, whatever text_config.torch_dtype says
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype_key", ["torch_dtype", "dtype"])
def test_every_part_is_float32_by_default_and_bfloat16_on_request(tmp_path, dtype_key):
    text_config = dict(GPT2_TEXT_CONFIG)
    text_config[dtype_key] = text_config.pop("torch_dtype")  # transformers 4.x / 5.x spelling
    original = build_original(GPT2_TEXT_CONFIG)
    write_reference_checkpoint(original, tmp_path / "ref", text_config, "bin")
    loaded = SCAModel.from_pretrained(tmp_path / "ref")
    dtypes = {name: p.dtype for name, p in loaded.named_parameters()}
    assert set(dtypes.values()) == {torch.float32}, {n: d for n, d in dtypes.items() if d != torch.float32}
    assert any(n.startswith("lm.") for n in dtypes) and any(n.startswith("segmenter.") for n in dtypes)
    assert loaded.config.dtype == "float32"
    assert_same_outputs(original, loaded.eval())

    for asked in (torch.bfloat16, "bfloat16"):
        half = SCAModel.from_pretrained(tmp_path / "ref", dtype=asked)
        assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
        assert half.config.dtype == "bfloat16"
        lm_head = half.lm.model.get_output_embeddings().weight
        assert torch.equal(lm_head, original.lm.model.get_output_embeddings().weight.to(torch.bfloat16))
    with torch.no_grad():  # and it runs in that dtype
        pixels = torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)
        out = half.eval()(pixel_values=pixels, prompts=Prompts(boxes=BOXES),
                          captions=encode_captions(half.lm.tokenizer, CAPTIONS), return_logits=True)
    assert torch.isfinite(out.loss) and out.masks.dtype == torch.bfloat16


def test_own_checkpoint_reloads_in_another_dtype(tmp_path):
    torch.manual_seed(0)
    model = SCAModel(SCAConfig(num_mixer_layers=2, dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["dtype"] == "bfloat16"
    again = SCAModel.from_pretrained(tmp_path / "ckpt")
    assert {p.dtype for p in again.parameters()} == {torch.bfloat16}
    wide = SCAModel.from_pretrained(tmp_path / "ckpt", dtype="float32")
    assert {p.dtype for p in wide.parameters()} == {torch.float32}
    assert torch.equal(wide.projection.weight, model.projection.weight.float())


def test_a_part_dtype_that_contradicts_the_config_is_refused():
    with pytest.raises(ValueError, match=r"'tiny-gpt2' has dtype 'float16' but SCAConfig.dtype is 'float32'"):
        SCAModel(SCAConfig(num_mixer_layers=2, language_model={"name": "tiny-gpt2", "dtype": "float16"}))
    with pytest.raises(ValueError, match=r"SCAConfig.dtype must be one of \['float32', 'bfloat16', 'float16'\]"):
        SCAConfig(dtype="float64")


# ---------------------------------------------------------------------------------------------------
# 3. Safetensors files without the tied lm_head
# ---------------------------------------------------------------------------------------------------
def test_safetensors_without_the_tied_lm_head_loads_tied(tmp_path):
    original = build_original(GPT2_TEXT_CONFIG)
    path = write_reference_checkpoint(original, tmp_path / "ref", GPT2_TEXT_CONFIG, "safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert "language_model.transformer.wte.weight" in keys and "language_model.lm_head.weight" not in keys
    loaded = SCAModel.from_pretrained(tmp_path / "ref").eval()
    head, wte = loaded.lm.model.lm_head.weight, loaded.lm.model.transformer.wte.weight
    assert head.data_ptr() == wte.data_ptr()  # still one tensor
    assert torch.equal(wte, original.lm.model.transformer.wte.weight)
    assert_same_outputs(original, loaded)


def test_an_untied_lm_head_must_be_in_the_file(tmp_path):
    """OpenLLaMA's lm_head is its own tensor: without it the checkpoint does not fit."""
    original = build_original(LLAMA_TEXT_CONFIG)
    write_reference_checkpoint(original, tmp_path / "ref", LLAMA_TEXT_CONFIG, "safetensors",
                               edit=lambda s: s.pop("language_model.lm_head.weight"))
    with pytest.raises(ValueError, match=r"1 missing key\(s\): language_model\.lm_head\.weight"):
        SCAModel.from_pretrained(tmp_path / "ref")


# ---------------------------------------------------------------------------------------------------
# 4. What does not fit: one error naming the file and every key
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_missing_and_unexpected_keys_are_one_error_naming_the_file(tmp_path, fmt):
    original = build_original(GPT2_TEXT_CONFIG)

    def edit(state):
        state["mask_decoder.something_new"] = torch.zeros(3)  # under a known prefix
        state["box_head.weight"] = torch.zeros(2)  # under no known prefix
        state.pop("mask_decoder.iou_token.weight")
        state["language_project.bias"] = torch.zeros(5)  # wrong shape

    path = write_reference_checkpoint(original, tmp_path / "ref", GPT2_TEXT_CONFIG, fmt, edit=edit)
    with pytest.raises(ValueError) as err:
        SCAModel.from_pretrained(tmp_path / "ref")
    msg = str(err.value)
    assert repr(str(path)) in msg
    assert "1 missing key(s): mask_decoder.iou_token.weight" in msg
    assert "2 unexpected key(s): " in msg and "mask_decoder.something_new" in msg and "box_head.weight" in msg
    assert "language_project.bias: file (5,) vs model (32,)" in msg


def test_unmap_reference_key_inverts_the_map():
    for old, new in REFERENCE_KEY_MAP:
        assert unmap_reference_key(new + "x.weight") == old + "x.weight"


# ---------------------------------------------------------------------------------------------------
# 5. The bundled GPT-2 tokenizer through AutoTokenizer
# ---------------------------------------------------------------------------------------------------
def test_bundled_gpt2_tokenizer_loads_with_autotokenizer():
    auto = AutoTokenizer.from_pretrained(GPT2_TOKENIZER_DIR)
    exact = gpt2_tokenizer()
    assert auto("a red circle")["input_ids"] == exact("a red circle")["input_ids"] == [64, 2266, 9197]
    assert auto("Hello world")["input_ids"] == [15496, 995]  # GPT-2's own ids
    assert auto.eos_token_id == exact.eos_token_id == 50256 and len(auto) == 50257
    assert auto("a", add_special_tokens=True)["input_ids"] == [64]  # no BOS for GPT-2


def test_reference_gpt2_checkpoint_without_tokenizer_files_uses_the_bundled_one(tmp_path):
    original = build_original(GPT2_TEXT_CONFIG)
    write_reference_checkpoint(original, tmp_path / "ref", GPT2_TEXT_CONFIG, "bin")
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == ["config.json", "pytorch_model.bin"]
    loaded = SCAModel.from_pretrained(tmp_path / "ref").eval()
    assert loaded.lm.tokenizer("a red circle")["input_ids"] == [64, 2266, 9197]
    assert loaded.lm.adds_bos is False and loaded.lm.pad_token_id == 50256
    assert_same_outputs(original, loaded)
