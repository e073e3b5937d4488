"""Caption tokenisation and label alignment (paper.md §2).

The LM input of one region is ``[task tokens (6) ; caption queries (8) ; caption word embeddings]``.
With GPT-2 (no BOS) the LAST caption-query position predicts the first word, word k predicts word
k+1 and the last word predicts EOS. The standard causal-LM shift does exactly that when the caption
ids are ``[w1 .. wn, EOS]`` and the labels of the prefix are ignored: position ``prefix-1`` (the last
query) predicts label ``prefix`` (= w1). Captions are truncated to ``max_tokens`` tokens as the
tokenizer gives them (a LLaMA-style tokenizer's ``<s>`` included, which then is the first target),
EOS is appended, padding is EOS on the right, and labels are ``-100`` wherever the attention mask is
0, so the appended EOS is trained and padding is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE_INDEX = -100

__all__ = ["IGNORE_INDEX", "CaptionBatch", "encode_captions"]


@dataclass
class CaptionBatch:
    """Tokenised captions, right-padded.

    input_ids: [N, L] long, caption ids then EOS, padded with the pad id (= EOS by default).
    attention_mask: [N, L] long, 1 on caption ids and the appended EOS.
    labels: [N, L] long, = input_ids where attention_mask is 1, else -100.
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor

    def to(self, device) -> CaptionBatch:
        return CaptionBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def encode_captions(tokenizer, captions: list[str], max_tokens: int = 18) -> CaptionBatch:
    """Tokenise ``captions`` for training (paper.md §2): truncate to ``max_tokens``, append EOS,
    right-pad with the pad id (EOS when the tokenizer has none), labels masked by attention.

    Raises ValueError for an empty caption list or a non-string caption, naming it.
    """
    if len(captions) == 0:
        raise ValueError("encode_captions got an empty caption list")
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise ValueError(f"caption {i} is {type(c).__name__} {c!r}, expected str")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; SCA needs one to end captions")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = tokenizer(list(captions), add_special_tokens=True, truncation=False)["input_ids"]
    # A tokenizer that appends EOS itself gets no second one.
    seqs = [list(s[:-1] if s and s[-1] == eos else s)[:max_tokens] + [eos] for s in ids]
    length = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    attention = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention[i, : len(s)] = 1
    labels = input_ids.masked_fill(attention == 0, IGNORE_INDEX)
    return CaptionBatch(input_ids, attention, labels)
