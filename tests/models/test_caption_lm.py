"""The embedded default's own caption LM: tokenizer, text pretraining, loading as a frozen LM."""

import torch

from sca.models import load_registries
from sca.models.caption_lm import TextCollator, build_word_tokenizer
from sca.training.caption_lm import pretrain_caption_lm

TEXTS = ["a small red circle", "a large blue square on the left", "a green triangle above a red circle",
         "square", "circle", "the blue square to the right of the small red circle"] * 20


def test_word_tokenizer_round_trips_and_maps_unknown_words():
    tok = build_word_tokenizer(TEXTS)
    assert len(tok) == 2 + len({w for t in TEXTS for w in t.split()})
    ids = tok("A small red circle")["input_ids"]
    assert tok.decode(ids) == "a small red circle"  # lower-cased, words joined with spaces
    assert tok("a purple circle")["input_ids"][1] == tok.unk_token_id
    assert tok.eos_token_id == tok.pad_token_id == 0


def test_text_collator_trains_text_and_final_eos_only():
    tok = build_word_tokenizer(TEXTS)
    batch = TextCollator(tok)(["a red circle", "square"])
    assert batch["input_ids"][0].tolist() == [0, *tok("a red circle")["input_ids"], 0]
    assert batch["labels"][0, 0].item() == -100  # the leading EOS is context only
    assert batch["labels"][1].tolist()[2] == 0 and batch["labels"][1].tolist()[3:] == [-100, -100]


def test_pretraining_learns_the_text_and_loads_as_a_causal_lm(tmp_path):
    result = pretrain_caption_lm(TEXTS, tmp_path, hidden_size=32, num_layers=1, num_heads=2, progress=False,
                                 train={"max_steps": 60, "images_per_step": 16, "lr": 1e-2, "warmup_steps": 5,
                                        "log_every": 10, "num_workers": 0})
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    _, lms = load_registries()
    lm = lms.build("causal-lm", weights=str(tmp_path / "model"))
    assert lm.adds_bos is False and lm.tokenizer.eos_token_id == 0
    prompt = torch.tensor([[0] + lm.tokenizer("a green triangle above a")["input_ids"]])
    out = lm.model.eval().generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert lm.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True).startswith("red circle")


def test_context_gain_tells_a_context_reader_from_an_lm_that_ignores_context(tmp_path):
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    from sca.models.caption_lm import context_gain, new_caption_lm

    words = ["red", "blue", "green", "white", "black", "pink"]
    lines = [f"{w}\t{w}" for w in words] * 16  # phrase 2 repeats phrase 1: only context tells it
    tok = build_word_tokenizer(p for line in lines for p in line.split("\t"))
    blind = context_gain(new_caption_lm(tok, hidden_size=32, num_layers=1, num_heads=2), tok, lines[:12])
    assert abs(blind["gain"]) < 0.1 and blind["lines"] == 12  # random weights: context changes nothing
    pretrain_caption_lm(lines, tmp_path, hidden_size=32, num_layers=1, num_heads=2, progress=False, dropout=0.0,
                        train={"max_steps": 200, "images_per_step": 32, "lr": 3e-3, "warmup_steps": 5,
                               "log_every": 50, "num_workers": 0})
    folder = tmp_path / "model"
    reader = context_gain(GPT2LMHeadModel.from_pretrained(folder), PreTrainedTokenizerFast.from_pretrained(folder),
                          lines[:12])
    assert reader["gain"] > 0.3, reader  # it starts to copy the word (seen: 0.67 nats)


def test_context_gain_needs_lines_with_two_phrases():
    import pytest

    from sca.models.caption_lm import context_gain, new_caption_lm

    tok = build_word_tokenizer(TEXTS)
    with pytest.raises(ValueError, match="two or more phrases"):
        context_gain(new_caption_lm(tok, hidden_size=32, num_layers=1, num_heads=2), tok, TEXTS)
