"""SAM-HQ (Ke et al., "Segment Anything in High Quality", NeurIPS 2023) through transformers' ``SamHQModel``.

SAM-HQ keeps SAM's ViT, prompt encoder and two-way transformer, and adds to the mask decoder an HQ
output token, its MLP, and a fusion of the first global-attention ViT block's output with the final
image embedding. So besides the image embedding, ``encode`` keeps that early ViT feature
(``intermediate_embeddings``, [B, h, w, C_vit]) in the features dict; cached features stay complete.

``decode`` returns SAM-HQ's masks (multimask: SAM's three masks sorted by predicted IoU, each plus the
HQ mask; ``hq_token_only=True``: the HQ mask alone) and its IoU scores. ``tokens`` are the two-way
transformer's output tokens, [iou, mask x4, hq, prompt tokens] (T = 8 for a box).

Weights (option ``weights``): None (random), the tag ``"hq44k"`` (the converted SAM-HQ weights on the
hub, ``sushmanth/sam_hq_vit_{b,l,h}``, the ids transformers' docs and conversion script use), a hub
id, a local HF folder, or an original SAM-HQ checkpoint file (``sam_hq_vit_h.pth`` layout, from
github.com/SysCV/sam-hq / hub ``lkeab/hq-sam``), converted on load.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers import (
    SamConfig,
    SamHQConfig,
    SamHQMaskDecoderConfig,
    SamHQModel,
    SamHQPromptEncoderConfig,
    SamHQVisionConfig,
)

from sca.registry import IMAGE_ENCODERS

from .base import SamSegmenter
from .sam import SAM_SIZES, load_sam_model, sam_config, tiny_sam_config

__all__ = ["SAM_HQ_HUB_IDS", "SamHQSegmenter", "sam_hq_config"]

SAM_HQ_HUB_IDS = {"b": "sushmanth/sam_hq_vit_b", "l": "sushmanth/sam_hq_vit_l", "h": "sushmanth/sam_hq_vit_h"}
SAM_HQ_ORIGINAL_FILES = {s: f"sam_hq_vit_{s}.pth" for s in SAM_SIZES}  # hub repo lkeab/hq-sam


def hq_config_from_sam(config: SamConfig) -> SamHQConfig:
    """The SamHQConfig of the same sizes as a SamConfig; the HQ fusion reads ViT width channels."""

    def plain(sub) -> dict[str, Any]:
        d = sub.to_dict()
        for key in ("model_type", "transformers_version", "architectures"):
            d.pop(key, None)
        return d

    decoder = plain(config.mask_decoder_config)
    decoder["vit_dim"] = config.vision_config.hidden_size
    return SamHQConfig(
        vision_config=SamHQVisionConfig(**plain(config.vision_config)),
        prompt_encoder_config=SamHQPromptEncoderConfig(**plain(config.prompt_encoder_config)),
        mask_decoder_config=SamHQMaskDecoderConfig(**decoder),
    )


def sam_hq_config(size: str, image_size: int = 1024) -> SamHQConfig:
    """SAM-HQ ViT-{size}: SAM ViT-{size} plus the HQ decoder (vit_dim = the ViT width)."""
    return hq_config_from_sam(sam_config(size, image_size))


class SamHQSegmenter(SamSegmenter):
    """A transformers ``SamHQModel`` as a Segmenter (see the module docstring).

    Args:
        sam: the SamHQModel.
        hq_token_only: return the HQ mask only (one mask per region) instead of SAM's masks + HQ mask.
    """

    def __init__(self, sam: SamHQModel, hq_token_only: bool = False):
        super().__init__(sam)
        self.hq_token_only = hq_token_only

    def encode(self, pixel_values: Tensor) -> dict[str, Tensor]:
        out = self.sam.vision_encoder(pixel_values)
        # The HQ decoder reads only the first global-attention block's output (SAM-HQ's
        # "early-layer ViT feature"), so only that one is kept: [B, h, w, C_vit].
        return {"image_embeddings": out.last_hidden_state, "intermediate_embeddings": out.intermediate_embeddings[0]}

    def _run_mask_decoder(self, embeddings, image_pe, sparse, dense, multimask_output, extra):
        if "intermediate_embeddings" not in extra:
            raise KeyError(
                "SAM-HQ decoding needs features['intermediate_embeddings'] (the early ViT feature that "
                f"SamHQSegmenter.encode returns); got features {sorted(extra) + ['image_embeddings']}"
            )
        return self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            hq_token_only=self.hq_token_only,
            intermediate_embeddings=[extra["intermediate_embeddings"]],
        )


def _register_size(size: str) -> None:
    name = f"sam-hq-vit-{size}"

    def factory(
        *, weights: str | None = None, dtype: str | None = None, image_size: int = 1024, hq_token_only: bool = False
    ) -> SamHQSegmenter:
        sam = load_sam_model(
            sam_hq_config(size, image_size), weights, tags={"hq44k": SAM_HQ_HUB_IDS[size]}, dtype=dtype,
            model_cls=SamHQModel,
        )
        segmenter = SamHQSegmenter(sam, hq_token_only=hq_token_only)
        segmenter.source = {"weights": weights}
        return segmenter

    factory.__doc__ = (
        f"SAM-HQ ViT-{size.upper()} (transformers SamHQModel). weights: None (random), 'hq44k' "
        f"({SAM_HQ_HUB_IDS[size]}), a hub id, a local HF folder or an original checkpoint file "
        f"({SAM_HQ_ORIGINAL_FILES[size]})."
    )
    factory.__name__ = name.replace("-", "_")
    IMAGE_ENCODERS.register(name, tags=("sam-hq",))(factory)


for _size in SAM_SIZES:
    _register_size(_size)


@IMAGE_ENCODERS.register("tiny-sam-hq", tiny=True, tags=("sam-hq",))
def tiny_sam_hq(
    *,
    weights: str | None = None,
    image_size: int = 64,
    hidden_size: int = 32,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    hq_token_only: bool = False,
    dtype: str | None = None,
) -> SamHQSegmenter:
    """Tiny random SAM-HQ (transformers SamHQModel) for tests; same code paths as SAM-HQ."""
    config = hq_config_from_sam(tiny_sam_config(
        image_size=image_size, hidden_size=hidden_size, vision_hidden_size=vision_hidden_size,
        vision_layers=vision_layers,
    ))
    segmenter = SamHQSegmenter(load_sam_model(config, weights, dtype=dtype, model_cls=SamHQModel),
                               hq_token_only=hq_token_only)
    segmenter.source = {"weights": weights}
    return segmenter

