"""SAM's ViT image encoder as implemented by timm (``samvit_{base,large,huge}_patch16``), in front of
transformers' SAM prompt encoder and mask decoder: an alternative implementation of the same model.

timm's ``VisionTransformerSAM`` includes SAM's neck, so ``forward_features`` already gives the
[B, 256, 64, 64] image embedding. Two settings make it compute exactly as segment-anything:
``num_classes=0`` (no classifier) and LayerNorm eps 1e-6 in the blocks (timm's samvit entries use
nn.LayerNorm's 1e-5; segment-anything's ``build_sam.py`` uses 1e-6).

Weights (option ``weights``):
- None: random;
- an original SAM checkpoint file (``sam_vit_b_01ec64.pth`` layout): the image encoder through timm's
  own SAM ``checkpoint_filter_fn``, the prompt encoder and mask decoder through convert.py;
- a timm pretrained tag of the model (``"sa1b"``): the image encoder from timm's hub weights
  (``timm/samvit_base_patch16.sa1b``); the prompt encoder and mask decoder then come from
  ``sam_weights`` (any form sam.py accepts; for ``"sa1b"`` it defaults to the matching
  ``facebook/sam-vit-*`` hub id).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import timm
import torch
from torch import Tensor, nn

from sca.registry import IMAGE_ENCODERS

from .base import SamSegmenter
from .sam import (
    SAM_HUB_IDS,
    SAM_SIZES,
    is_weights_file,
    load_sam_decoder,
    sam_config,
    tiny_sam_config,
)

__all__ = ["TIMM_SAMVIT_NAMES", "TimmSamImageEncoder", "create_timm_samvit"]

TIMM_SAMVIT_NAMES = {"b": "samvit_base_patch16", "l": "samvit_large_patch16", "h": "samvit_huge_patch16"}
# The tiny variant has the dims of sam.tiny_sam_config() so the two can share weights.
TINY_TIMM_SAMVIT = dict(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=[1],
                        window_size=4, mlp_ratio=2.0, neck_chans=32)


class TimmSamImageEncoder(nn.Module):
    """[B, 3, S, S] -> [B, 256, S/16, S/16] with a timm ``VisionTransformerSAM`` (neck included)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.forward_features(pixel_values)


def create_timm_samvit(name: str, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, ...)`` set to compute as segment-anything (see the module docstring)."""
    return timm.create_model(
        name, pretrained=pretrained, num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs
    )


def build_timm_sam(
    name: str,
    config,
    *,
    weights: str | None,
    sam_weights: str | None,
    sam_tags: dict[str, str],
    dtype: str | None,
    **timm_kwargs: Any,
) -> SamSegmenter:
    from .convert import load_original_sam_checkpoint

    file = is_weights_file(weights)
    if file and sam_weights is not None:
        raise ValueError(
            f"weights {weights!r} is an original SAM checkpoint that holds the prompt encoder and mask decoder "
            f"too; sam_weights={sam_weights!r} would be ignored: leave it unset"
        )
    if weights is not None and not file:  # a timm pretrained tag
        if "/" in weights or weights.endswith((".pth", ".pt", ".safetensors")):
            raise FileNotFoundError(f"timm SAM weights {weights!r} look like a path but no such file exists")
        encoder = create_timm_samvit(f"{name}.{weights}", pretrained=True, **timm_kwargs)
        sam_weights = sam_weights if sam_weights is not None else sam_tags.get(weights)
    else:
        encoder = create_timm_samvit(name, **timm_kwargs)
    # For a file, the prompt encoder and mask decoder are loaded below from the same file.
    sam = load_sam_decoder(config, None if file else sam_weights)
    segmenter = SamSegmenter(sam, image_encoder=TimmSamImageEncoder(encoder))
    if file:
        load_original_sam_checkpoint(segmenter.sam, weights, image_encoder="timm_samvit")
    if dtype is not None:
        segmenter.to(getattr(torch, dtype))
    segmenter.source = {"weights": weights, "sam_weights": sam_weights}
    return segmenter


def _register_size(size: str) -> None:
    name = f"timm-samvit-{size}"

    def factory(
        *, weights: str | None = None, sam_weights: str | None = None, dtype: str | None = None
    ) -> SamSegmenter:
        return build_timm_sam(
            TIMM_SAMVIT_NAMES[size], sam_config(size), weights=weights, sam_weights=sam_weights,
            sam_tags={"sa1b": SAM_HUB_IDS[size]}, dtype=dtype,
        )

    factory.__doc__ = (
        f"SAM ViT-{size.upper()} image encoder from timm ({TIMM_SAMVIT_NAMES[size]}) + transformers SAM "
        "prompt encoder/mask decoder. weights: None, an original SAM checkpoint file, or a timm tag ('sa1b')."
    )
    factory.__name__ = name.replace("-", "_")
    IMAGE_ENCODERS.register(name, tags=("timm",))(factory)


for _size in SAM_SIZES:
    _register_size(_size)


@IMAGE_ENCODERS.register("tiny-timm-samvit", tiny=True, tags=("timm",))
def tiny_timm_samvit(*, weights: str | None = None, dtype: str | None = None) -> SamSegmenter:
    """Tiny random timm SAM ViT (same dims as tiny-sam) + tiny SAM decoder, for tests."""
    if weights is not None and not is_weights_file(weights):
        raise FileNotFoundError(f"tiny-timm-samvit weights {weights!r} is not a file")
    return build_timm_sam(
        TIMM_SAMVIT_NAMES["b"], tiny_sam_config(), weights=weights, sam_weights=None, sam_tags={}, dtype=dtype,
        **TINY_TIMM_SAMVIT,
    )
