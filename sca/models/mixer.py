"""The text feature mixer (paper.md §1.5): SCA's one new vision module.

A two-way transformer of the same block type as SAM's mask decoder (transformers'
``SamTwoWayTransformer``, reused rather than copied) with N layers (12 in every reported model):

- queries: [8 learned caption queries] + the OUTPUT tokens of SAM's two-way transformer for
  [iou, 4 mask, prompt tokens] -> 15 tokens for a box prompt (+ ``extra_tokens`` after them: the
  embedded default's mask token, ``SCAConfig.mask_token``, not in the paper);
- keys: SAM's UPDATED image tokens for the region; key PE: the image PE;
- query PE: the mixer's own input tokens (SAM's convention: the first layer skips PE in
  self-attention; PE is re-added before every cross-attention and the final attention).

Output: the first 8 tokens (the caption queries), [N, 8, C].

Parameter count (transformers' block, C=256, 8 heads, MLP 2048, downsample 2):
``1,579,520 * N + 132,224`` -> 19,086,464 for N=12 (paper.md §1.9).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import SamMaskDecoderConfig
from transformers.models.sam.modeling_sam import SamTwoWayTransformer

__all__ = ["TextFeatureMixer", "init_new_module"]


def init_new_module(module: nn.Module, std: float = 0.02) -> None:
    """paper.md §1.9: new modules' Linear/Embedding weights ~ N(0, 0.02), biases 0; LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class TextFeatureMixer(nn.Module):
    """Caption queries mixed with SAM's tokens against SAM's updated image tokens.

    Args:
        hidden_size: C, SAM's decoder width (256).
        num_layers: N two-way blocks (12).
        num_queries: caption query tokens (8).
        num_attention_heads, mlp_dim, attention_downsample_rate, hidden_act, layer_norm_eps: the
            block's hyper-parameters, taken from the segmenter's mask decoder.
        use_sam_tokens: False gives the ablation "text queries without SAM tokens" (paper.md §6).
        attn_implementation: transformers attention backend ("sdpa" or "eager").
    """

    def __init__(
        self,
        *,
        hidden_size: int = 256,
        num_layers: int = 12,
        num_queries: int = 8,
        num_attention_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        hidden_act: str = "relu",
        layer_norm_eps: float = 1e-6,
        use_sam_tokens: bool = True,
        attn_implementation: str = "sdpa",
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"mixer num_layers must be >= 1, got {num_layers}")
        if num_queries < 1:
            raise ValueError(f"mixer num_queries must be >= 1, got {num_queries}")
        config = SamMaskDecoderConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_attention_heads,
            mlp_dim=mlp_dim,
            attention_downsample_rate=attention_downsample_rate,
            hidden_act=hidden_act,
            layer_norm_eps=layer_norm_eps,
        )
        config._attn_implementation = attn_implementation
        self.num_queries = num_queries
        self.use_sam_tokens = use_sam_tokens
        self.queries = nn.Embedding(num_queries, hidden_size)
        self.transformer = SamTwoWayTransformer(config)
        # Recompute each block in the backward pass instead of keeping its activations, which hold
        # [h*w, C] image tokens per region (4096 x 256 at 1024 px): with the LM's layers recomputed too, a
        # ViT-B + GPT-2 step of 16 regions needs 99 MB a region instead of 347 (bench_train_memory.py).
        self.gradient_checkpointing = False
        init_new_module(self)

    def forward(self, sam_tokens: Tensor, image_tokens: Tensor, image_pe: Tensor,
                extra_tokens: Tensor | None = None) -> Tensor:
        """
        Args:
            sam_tokens: [N, T, C] output tokens of SAM's two-way transformer, per region.
            image_tokens: [N, h*w, C] SAM's updated image tokens, per region.
            image_pe: [1, C, h, w] image positional encoding, or [N, C, h, w], one per region.
            extra_tokens: [N, E, C] more tokens mixed with the queries (the embedded mask of
                ``SCAConfig.mask_token``), after SAM's; kept with ``use_sam_tokens`` False.
        Returns:
            [N, Q, C] mixed caption queries.
        """
        n = sam_tokens.shape[0]
        queries = self.queries.weight.to(sam_tokens.dtype).unsqueeze(0).expand(n, -1, -1)
        parts = [queries, sam_tokens] if self.use_sam_tokens else [queries]
        if extra_tokens is not None:
            parts.append(extra_tokens.to(sam_tokens.dtype))
        tokens = torch.cat(parts, dim=1) if len(parts) > 1 else queries
        # SamTwoWayTransformer takes images as [N, C, H, W] and flattens them to [N, 1, H*W, C];
        # [N, C, h*w, 1] flattens to the same tokens without a copy of the tokens here.
        keys = image_tokens.transpose(1, 2).unsqueeze(-1)
        pe = image_pe.flatten(2).unsqueeze(-1).to(image_tokens.dtype).expand(n, -1, -1, -1)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            out = self._checkpointed(tokens.unsqueeze(1), keys, pe)
        else:
            out, _ = self.transformer(
                point_embeddings=tokens.unsqueeze(1),  # [N, 1, Q+T, C]
                image_embeddings=keys,
                image_positional_embeddings=pe,
                attention_similarity=None,
            )
        return out[:, 0, : self.num_queries]

    def _checkpointed(self, tokens: Tensor, keys: Tensor, pe: Tensor) -> Tensor:
        """``SamTwoWayTransformer.forward`` (transformers 5.x: blocks, then the final token-to-image
        attention and its LayerNorm) with each block under ``torch.utils.checkpoint``."""
        from torch.utils.checkpoint import checkpoint

        t = self.transformer
        keys = keys.flatten(2).transpose(1, 2).unsqueeze(1)  # [N, 1, h*w, C], as the transformer does
        key_pe = pe.flatten(2).transpose(1, 2).unsqueeze(1)
        queries = tokens
        for layer in t.layers:
            queries, keys, _ = checkpoint(layer, queries=queries, keys=keys, query_point_embedding=tokens,
                                          key_point_embedding=key_pe, attention_similarity=None, use_reentrant=False)
        attn_out, _ = t.final_attn_token_to_image(query=queries + tokens, key=keys + key_pe, value=keys)
        return t.layer_norm_final_attn(queries + attn_out)

