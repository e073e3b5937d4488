"""MobileSAM (Zhang et al., "Faster Segment Anything", 2023): a TinyViT-5M image encoder distilled from
SAM ViT-H, in front of SAM's prompt encoder and mask decoder (transformers).

The image encoder is timm's ``TinyVit`` with MobileSAM's settings plus SAM's neck. Facts from
MobileSAM's ``build_sam.py`` / ``tiny_vit_sam.py`` (github.com/ChaoningZhang/MobileSAM):
- 1024 px input; embed dims (64, 128, 160, 320), depths (2, 2, 6, 2), heads (2, 4, 5, 10), windows
  (7, 7, 14, 7), MLP ratio 4, MBConv expand 4, local conv 3, no drop path;
- stride 4 patch embedding, then stride-2 downsampling before stages 1 and 2, but the LAST
  downsampling (160 -> 320 channels) has stride 1, so the output is 64 x 64 at 1024 px (stride 16,
  SAM's embedding size). timm's TinyVit always downsamples by 2, so that one depthwise conv's stride
  is set to 1 after construction (``MobileSamImageEncoder``);
- SAM's neck on the 320-channel map: conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d, 256 channels.
- the checkpoint also holds TinyViT's unused classifier (``norm_head``, ``head``): it is skipped.

TinyViT has BatchNorm: the encoder is frozen and stays in eval mode (running statistics) even when
the segmenter is put in train mode.

Weights (option ``weights``): None (random), the tag ``"mobile_sam"`` (the released ``mobile_sam.pt``,
downloaded once into torch's hub cache), or a local ``mobile_sam.pt``-layout file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.tiny_vit import TinyVit
from torch import Tensor, nn
from transformers import SamModel, SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionNeck

from sca.registry import IMAGE_ENCODERS

from .base import SamSegmenter
from .sam import fetch_weights_file, is_weights_file, sam_config, tiny_sam_config, without_vision_encoder

__all__ = ["MOBILE_SAM", "MobileSamImageEncoder", "TinyVitSpec"]

MOBILE_SAM_URLS = {"mobile_sam": "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"}


@dataclass(frozen=True)
class TinyVitSpec:
    """A TinyViT image encoder for SAM: stages of a hierarchical ViT, then SAM's neck."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    out_channels: int = 256  # SAM's embedding channels


MOBILE_SAM = TinyVitSpec()
TINY_MOBILE_SAM = TinyVitSpec(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                              window_sizes=(2, 2, 4, 2), mlp_ratio=2.0, mbconv_expand_ratio=2.0, out_channels=32)


class MobileSamImageEncoder(nn.Module):
    """[B, 3, S, S] -> [B, out_channels, S/16, S/16]: timm TinyVit trunk (stride 16) + SAM's neck."""

    def __init__(self, spec: TinyVitSpec = MOBILE_SAM):
        super().__init__()
        self.trunk = TinyVit(
            num_classes=0, embed_dims=spec.embed_dims, depths=spec.depths, num_heads=spec.num_heads,
            window_sizes=spec.window_sizes, mlp_ratio=spec.mlp_ratio, drop_path_rate=0.0,
            mbconv_expand_ratio=spec.mbconv_expand_ratio, local_conv_size=spec.local_conv_size,
        )
        self.trunk.head = nn.Identity()  # the classifier is not used (and not loaded)
        # MobileSAM: the last downsampling keeps the resolution (stride 1): total stride 4*2*2 = 16.
        self.trunk.stages[-1].downsample.conv2.conv.stride = (1, 1)
        neck_config = SamVisionConfig(hidden_size=spec.embed_dims[-1], output_channels=spec.out_channels)
        self.neck = SamVisionNeck(neck_config)
        self.train(False)

    def train(self, mode: bool = True) -> MobileSamImageEncoder:
        # Frozen BatchNorm encoder: always use the running statistics.
        return super().train(False)

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = self.trunk.forward_features(pixel_values)  # [B, C, S/16, S/16]
        return self.neck(x.permute(0, 2, 3, 1))  # SamVisionNeck takes channels-last


def build_mobile_sam(
    spec: TinyVitSpec, sam_config_, weights: str | None, dtype: str | None
) -> SamSegmenter:
    """A MobileSAM-shaped SamSegmenter; ``weights`` None or a ``mobile_sam.pt``-layout file."""
    from .convert import load_original_sam_checkpoint

    segmenter = SamSegmenter(SamModel(without_vision_encoder(sam_config_)), image_encoder=MobileSamImageEncoder(spec))
    if weights is not None:
        load_original_sam_checkpoint(segmenter.sam, weights, image_encoder="tiny_vit")
    if dtype is not None:
        segmenter.to(getattr(torch, dtype))
    return segmenter


@IMAGE_ENCODERS.register("mobile-sam", tags=("lightweight",))
def mobile_sam(*, weights: str | None = None, dtype: str | None = None) -> SamSegmenter:
    """MobileSAM: TinyViT-5M image encoder + SAM prompt encoder/mask decoder. weights: None, 'mobile_sam' or a mobile_sam.pt file."""
    path = None
    if weights is not None:
        path = fetch_weights_file(weights, MOBILE_SAM_URLS)
        if not is_weights_file(path):
            raise FileNotFoundError(
                f"MobileSAM weights {weights!r} are neither a file nor a tag ({', '.join(MOBILE_SAM_URLS)})"
            )
    segmenter = build_mobile_sam(MOBILE_SAM, sam_config("b"), path, dtype)
    segmenter.source = {"weights": weights}  # the tag as given, not the cache path it resolved to
    return segmenter


@IMAGE_ENCODERS.register("tiny-mobile-sam", tiny=True, tags=("lightweight",))
def tiny_mobile_sam(*, weights: str | None = None, image_size: int = 128, dtype: str | None = None) -> SamSegmenter:
    """Tiny random MobileSAM (timm TinyVit trunk + SAM neck, tiny SAM decoder) for tests."""
    if weights is not None and not is_weights_file(weights):
        raise FileNotFoundError(f"tiny-mobile-sam weights {weights!r} is not a file")
    config = tiny_sam_config(image_size=image_size, patch_size=16, hidden_size=TINY_MOBILE_SAM.out_channels)
    segmenter = build_mobile_sam(TINY_MOBILE_SAM, config, weights, dtype)
    segmenter.source = {"weights": weights}
    return segmenter
