"""SAM-HQ (Ke et al., "Segment Anything in High Quality", NeurIPS 2023) through transformers' ``SamHQModel``.

SAM-HQ keeps SAM's ViT, prompt encoder and two-way transformer, and adds to the mask decoder an HQ
output token, its MLP, and a fusion of the first global-attention ViT block's output with the final
image embedding. So besides the image embedding, ``encode`` keeps that early ViT feature
(``intermediate_embeddings``, [B, h, w, C_vit]) in the features dict; cached features stay complete.

``decode`` returns SAM-HQ's masks (multimask: SAM's three masks sorted by predicted IoU, each plus the
HQ mask, so the first is SAM-HQ's own output; ``hq_token_only=True``: the HQ mask alone) and IoU
scores. ``tokens`` are the two-way transformer's output tokens, [iou, mask x4, hq, prompt tokens]
(T = 8 for a box). The decoder runs transformers' SamHQ weights with SAM-HQ's data flow (see
``SamHQSegmenter._run_mask_decoder``: transformers' own forward mis-wires the upscaling input).

Weights (option ``weights``): None (random), the tag ``"hq44k"`` (the converted SAM-HQ weights on the
hub, ``sushmanth/sam_hq_vit_{b,l,h}``, the ids transformers' docs and conversion script use), a hub
id, a local HF folder, or an original SAM-HQ checkpoint file (``sam_hq_vit_h.pth`` layout, from
github.com/SysCV/sam-hq / hub ``lkeab/hq-sam``), converted on load.
"""

from __future__ import annotations

from typing import Any

import torch
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
        """SAM-HQ's mask decoder on [N, C, h, w] embeddings (N = images x regions, one region each);
        sparse: [N, 1, P, C] prompt tokens or None (mask-only prompt), dense: [N, C, h, w].

        Runs the weights of transformers' ``SamHQMaskDecoder`` with SAM-HQ's data flow (SysCV/sam-hq
        ``mask_decoder_hq.py``): transformers 5.x's own ``forward`` upsamples the two-way
        transformer's INPUT (image embedding + dense prompt, H and W swapped) instead of its updated
        image tokens, so its masks are not SAM-HQ's."""
        if "intermediate_embeddings" not in extra:
            raise KeyError(
                "SAM-HQ decoding needs features['intermediate_embeddings'] (the early ViT feature that "
                f"SamHQSegmenter.encode returns); got features {sorted(extra) + ['image_embeddings']}"
            )
        dec = self.sam.mask_decoder
        act = dec.activation
        n, c, h, w = embeddings.shape
        # HQ features: the final image embedding and the early ViT feature, both upsampled x4.
        vit = extra["intermediate_embeddings"].permute(0, 3, 1, 2)  # [N, C_vit, h, w]
        hq_features = dec.encoder_conv2(act(dec.encoder_norm(dec.encoder_conv1(embeddings)))) + dec.compress_vit_conv2(
            act(dec.compress_vit_norm(dec.compress_vit_conv1(vit)))
        )  # [N, C/8, 4h, 4w]
        # Two-way transformer on [iou, mask x4, hq, prompt tokens] against the prompted image. A
        # mask-only prompt has no prompt tokens (sparse is None; segment-anything's are [N, 0, C]).
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hq_token.weight], dim=0)
        tokens = output_tokens.expand(n, 1, -1, -1)  # [N, 1, 6, C]
        if sparse is not None:
            tokens = torch.cat([tokens, sparse.to(output_tokens.dtype)], dim=2)  # [N, 1, 6 + P, C]
        queries, keys = dec.transformer(
            point_embeddings=tokens, image_embeddings=embeddings + dense,
            image_positional_embeddings=image_pe, attention_similarity=None,
        )  # [N, 1, T, C], [N, 1, h*w, C]
        src = keys[:, 0].transpose(1, 2).reshape(n, c, h, w)
        upscaled = act(dec.upscale_conv2(act(dec.upscale_layer_norm(dec.upscale_conv1(src)))))  # [N, C/8, 4h, 4w]
        upscaled_hq = dec.mask_conv2(act(dec.mask_norm(dec.mask_conv1(upscaled)))) + hq_features
        k = dec.num_mask_tokens  # SAM's 4 mask tokens + the HQ token
        mask_tokens = queries[:, 0, 1:1 + k]  # [N, 5, C]
        hyper = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)]
            + [dec.hq_mask_mlp(mask_tokens[:, k - 1])], dim=1,
        )  # [N, 5, C/8]
        size = upscaled.shape[-2:]
        masks_sam = (hyper[:, : k - 1] @ upscaled.flatten(2)).view(n, k - 1, *size)
        mask_hq = (hyper[:, k - 1:] @ upscaled_hq.flatten(2)).view(n, 1, *size)
        iou = dec.iou_prediction_head(queries[:, 0, 0])  # [N, 4]
        if multimask_output:
            # SAM's three masks by descending predicted IoU (SAM-HQ itself keeps only the first).
            iou, order = iou[:, 1:].sort(dim=1, descending=True)
            masks_sam = masks_sam[:, 1:].gather(1, order[:, :, None, None].expand(-1, -1, *size))
        else:
            iou, masks_sam = iou[:, :1], masks_sam[:, :1]
        if self.hq_token_only:
            masks, iou = mask_hq, iou[:, :1]  # the HQ mask, scored with SAM's best IoU (as SAM-HQ)
        else:
            masks = masks_sam + mask_hq
        return masks[:, None], iou[:, None]  # [N, 1, M, 4h, 4w], [N, 1, M]


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

