"""Text pretraining of the embedded default's caption LM (``sca.models.caption_lm``) with the Trainer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from accelerate.utils import set_seed

from sca.models.caption_lm import (
    CaptionLMTrainee,
    TextBatch,
    TextCollator,
    build_word_tokenizer,
    new_caption_lm,
)
from sca.models.text import IGNORE_INDEX
from sca.training.config import TrainConfig
from sca.training.trainer import LossParts, Trainer

__all__ = ["caption_lm_loss", "pretrain_caption_lm"]


def caption_lm_loss(model, batch):
    """``(trainee, batch) -> LossParts``: next-token cross-entropy summed over trained tokens."""
    core = getattr(model, "module", model)
    device = next(core.parameters()).device
    ids, att, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    logits = core.model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    target = labels[:, 1:]
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    return LossParts(loss_sum, int((target != IGNORE_INDEX).sum()))


def pretrain_caption_lm(texts: Sequence[str], output_dir: str | os.PathLike, *, train: dict[str, Any],
                        hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4, max_tokens: int = 18,
                        dropout: float = 0.1, progress: bool = True):
    """Build the tokenizer from ``texts`` (corpus lines, see TextCollator), pretrain the LM on them with the Trainer (resumable,
    logged), write ``output_dir/model`` (a HF folder: model + tokenizer). Returns the TrainResult."""
    cfg = TrainConfig.from_dict(train)
    set_seed(cfg.seed)
    tokenizer = build_word_tokenizer(p for line in texts for p in line.split("\t"))
    model = new_caption_lm(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                           max_positions=96, dropout=dropout)
    trainee = CaptionLMTrainee(model, tokenizer).train()
    collate = TextCollator(tokenizer, max_tokens, max_length=96)
    trainer = Trainer(trainee, list(texts), collate_fn=lambda items: TextBatch(collate(items)),
                      loss_fn=caption_lm_loss, config=cfg, output_dir=output_dir, progress=progress)
    return trainer.fit()
