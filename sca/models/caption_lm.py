"""A small causal LM the embedded default builds for itself (a documented deviation).

The paper's LM is a public pretrained model (GPT2-large) kept frozen. No such model can be had on
these machines except SmolLM2-135M, whose training step takes ~20 s on 2 cores (README, "Embedded
default") — too slow for a pipeline that must run in minutes. So the embedded default pretrains a
small GPT-2 on TEXT ONLY (captions of synthetic scenes that are not among the captioner's training
images, plus category names), and SCA then learns to steer it through its visual prefix. The paper
finds that a small LM gains from tuning at a small learning rate (paper.md §6); frozen, this one
left the captioner nearly region-blind, so the embedded default tunes it during caption
fine-tuning (``model.freeze_lm: false``, ``train.lm_lr``) and keeps it frozen in weak pretraining.

The tokenizer is word-level, built from the corpus (a few hundred words), which keeps the softmax
cheap; words it has not seen map to [UNK]. Model and tokenizer are saved as a normal Hugging Face
folder, which the ``causal-lm`` registry entry loads (``weights=<folder>``). Its text pretraining with the
project's Trainer is ``sca.training.caption_lm.pretrain_caption_lm``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from sca.models.text import IGNORE_INDEX

EOS = "<|endoftext|>"
UNK = "[UNK]"

__all__ = ["CaptionLMTrainee", "TextBatch", "TextCollator", "build_word_tokenizer", "context_gain", "corpus_from_records",
           "new_caption_lm", "saved_lm_summary"]


def build_word_tokenizer(texts: Iterable[str], *, min_count: int = 1) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer (words and punctuation) over ``texts``; EOS doubles as pad."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    pre = pre_tokenizers.Whitespace()
    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    words = sorted(w for w, c in counts.items() if c >= min_count)
    if not words:
        raise ValueError("build_word_tokenizer got no words: the corpus is empty")
    vocab = {EOS: 0, UNK: 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies punctuation
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   unk_token=UNK, padding_side="right", model_max_length=64)


def new_caption_lm(tokenizer, *, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                   max_positions: int = 64, dropout: float = 0.1) -> GPT2LMHeadModel:
    """A GPT-2 shaped LM sized for ``tokenizer``; random weights. Its activation is GPT-2's tanh
    approximation of GELU computed by PyTorch's fused kernel ("gelu_pytorch_tanh"), the same function
    as GPT-2's "gelu_new", which transformers computes in five elementwise passes (on 2 CPU cores the
    LM's forward spent ~15 % of its time there)."""
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                        activation_function="gelu_pytorch_tanh",
                        n_positions=max_positions, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


class CaptionLMTrainee(nn.Module):
    """The LM and its tokenizer as one module for the Trainer; ``save_pretrained`` writes both."""

    def __init__(self, model: GPT2LMHeadModel, tokenizer):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


class TextCollator:
    """Corpus lines -> {input_ids, attention_mask, labels} [N, L], right-padded.

    A line holds the phrases of ONE region separated by tabs; it becomes ``EOS p1 EOS p2 EOS ...``
    (each phrase cut to ``max_tokens``). Everything after the leading EOS is trained, so the LM
    learns to predict a phrase from the phrases before it — to read context at earlier positions,
    which is what SCA's visual prefix asks of it — and sees positions as far as SCA's captions go.
    """

    def __init__(self, tokenizer, max_tokens: int = 18, max_length: int = 64):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.max_length = max_length

    def __call__(self, lines: Sequence[str]) -> dict[str, Any]:
        eos = self.tokenizer.eos_token_id
        seqs = []
        for line in lines:
            phrases = [p for p in line.split("\t") if p.strip()]
            ids = self.tokenizer(phrases, add_special_tokens=False)["input_ids"] if phrases else []
            seq = [eos]
            for s in ids:
                seq += [*s[: self.max_tokens], eos]
            seqs.append(seq[: self.max_length])
        length = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), length), eos, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = torch.tensor(s)
            attention[i, : len(s)] = 1
        labels = input_ids.masked_fill(attention == 0, IGNORE_INDEX)
        labels[:, 0] = IGNORE_INDEX
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "num_regions": len(lines)}


class TextBatch(dict):
    """A dict batch with the ``num_regions`` attribute the Trainer logs."""

    @property
    def num_regions(self) -> int:
        return int(self["num_regions"])


def corpus_from_records(records: Iterable[Any]) -> list[str]:
    """The LM's corpus: one line per region, its phrases (captions or category names) tab-separated."""
    out = []
    for rec in records:
        for region in rec.regions:
            phrases = [p.replace("\t", " ").strip() for p in region.phrases if p.strip()]
            if phrases:
                out.append("\t".join(phrases))
    return out


def saved_lm_summary(folder: str | os.PathLike) -> dict[str, Any]:
    """Vocabulary size and parameter count of a saved caption LM (for reports)."""
    folder = Path(folder)
    model = GPT2LMHeadModel.from_pretrained(folder)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    return {"vocab": len(tok), "parameters": sum(p.numel() for p in model.parameters()),
            "hidden_size": model.config.n_embd, "layers": model.config.n_layer}


@torch.no_grad()
def context_gain(model, tokenizer, lines: Sequence[str], *, max_tokens: int = 18, seed: int = 0) -> dict[str, float]:
    """Does the LM read earlier context? SCA steers a frozen LM only through the prefix before the
    caption, so the embedded LM must use what comes before a phrase.

    For corpus lines with two or more phrases (one region each), the per-token loss of the second
    phrase after ``EOS p1 EOS`` with p1 of the SAME region (``loss_same``) versus p1 of another
    line's region (``loss_other``, a seeded derangement). ``gain`` = loss_other - loss_same: ~0 for
    an LM that ignores context. Measured on the synthetic test phrases: 0.46 nats for the embedded
    LM after 300 pretraining steps, 1.75 after 500, 2.40 after 700."""
    import random

    import torch.nn.functional as F

    pairs = [p.split("\t")[:2] for p in lines if len([q for q in p.split("\t") if q.strip()]) >= 2]
    if len(pairs) < 2:
        raise ValueError("context_gain needs at least two corpus lines with two or more phrases")
    order = list(range(len(pairs)))
    rng = random.Random(seed)
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token_id
    device = next(model.parameters()).device
    out = {}
    for name, firsts in (("same", [a for a, _ in pairs]), ("other", [pairs[j][0] for j in order])):
        total, count = 0.0, 0
        for start in range(0, len(pairs), 64):
            seqs, targets = [], []
            for first, (_, second) in zip(firsts[start:start + 64], pairs[start:start + 64], strict=True):
                a = tokenizer(first, add_special_tokens=False)["input_ids"][:max_tokens]
                b = tokenizer(second, add_special_tokens=False)["input_ids"][:max_tokens] + [eos]
                seqs.append([eos, *a, eos, *b])
                targets.append([IGNORE_INDEX] * (len(a) + 1) + b)
            length = max(map(len, seqs))
            ids = torch.tensor([q + [eos] * (length - len(q)) for q in seqs], device=device)
            att = torch.tensor([[1] * len(q) + [0] * (length - len(q)) for q in seqs], device=device)
            lab = torch.tensor([t + [IGNORE_INDEX] * (length - 1 - len(t)) for t in targets], device=device)
            logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1),
                                           ignore_index=IGNORE_INDEX, reduction="sum"))
            count += int((lab != IGNORE_INDEX).sum())
        out[f"loss_{name}"] = total / count
    model.train(was_training)
    return {**out, "gain": out["loss_other"] - out["loss_same"], "lines": len(pairs)}
