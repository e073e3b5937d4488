"""Non-SAM image backbones in front of SAM's prompt encoder and mask decoder (paper.md §6, "other image
encoders replacing SAM's": CLIP ViT-L, DataComp CLIP, EVA02-CLIP, DINOv2-L, MAE-L).

    SAM pixels [B,3,1024,1024] -> undo SAM's normalisation -> resize to the backbone's input size ->
    the backbone's own mean/std -> frozen backbone -> patch features [B,C,h',w'] -> trainable neck
    [B,256,h',w'] -> resize to SAM's embedding size [B,256,64,64] -> SAM prompt encoder + mask decoder.

The neck is SAM's (conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d), as in the reference code's
timm variant, which also resizes the neck output to the mask decoder's 64 x 64 (it used nearest
neighbour; bilinear here) and fed the backbone the last block's final-normed patch tokens. Only the
neck trains (``trainable_module_names``); the backbone is frozen and kept in eval mode.

Backbones: timm (``timm-backbone``, option ``model_name`` e.g. ``vit_large_patch14_clip_224.openai``,
``vit_large_patch14_dinov2.lvd142m``, ``vit_large_patch16_224.mae``) and open_clip image towers
(``open-clip-backbone``, ``model_name`` e.g. ``ViT-L-14``). The SAM prompt encoder and mask decoder
come from ``sam_weights`` (None, a tag, a hub id, a local HF folder or an original SAM checkpoint
file; the reference code used ``facebook/sam-vit-huge``'s, tag ``"sa1b"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionNeck

from sca.registry import IMAGE_ENCODERS

from .base import SamSegmenter, Segmenter
from .sam import SAM_HUB_IDS, load_sam_decoder, sam_config, tiny_sam_config

__all__ = ["BackboneNeckEncoder", "OpenClipFeatures", "TimmFeatures"]

SAM_DECODER_TAGS = {"sa1b": SAM_HUB_IDS["h"], **{f"sa1b-{s}": hub for s, hub in SAM_HUB_IDS.items()}}


# ---------------------------------------------------------------------------------------------------
# Backbone adapters: pixels at the backbone's size and stats -> [B, C, h', w']
# ---------------------------------------------------------------------------------------------------
class TimmFeatures(nn.Module):
    """A timm model's last-stage features, final norm applied, as a [B, C, h', w'] map."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "forward_intermediates"):
            raise TypeError(f"timm model {type(model).__name__} has no forward_intermediates; pick another backbone")
        self.model = model
        cfg = model.pretrained_cfg
        size = getattr(getattr(model, "patch_embed", None), "img_size", None)  # ViTs: as built (img_size=...)
        self.input_size = tuple(int(s) for s in (size if size is not None else cfg["input_size"][-2:]))
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.num_channels = int(model.feature_info[-1]["num_chs"])

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.forward_intermediates(
            pixel_values, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
        )[-1]


class OpenClipFeatures(nn.Module):
    """An open_clip image tower's last-block patch tokens (after its final LayerNorm) as [B, C, h', w']."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        self.visual = visual
        size = visual.image_size
        self.input_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = tuple(getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN)
        self.std = tuple(getattr(visual, "image_std", None) or OPENAI_DATASET_STD)
        if hasattr(visual, "transformer"):  # open_clip VisionTransformer
            self.num_channels = int(visual.transformer.width)
        elif hasattr(visual, "trunk"):  # open_clip TimmModel
            self.num_channels = int(visual.trunk.feature_info[-1]["num_chs"])
        else:
            raise TypeError(f"open_clip image tower {type(visual).__name__} is not supported (ViT or timm towers)")

    def forward(self, pixel_values: Tensor) -> Tensor:
        out = self.visual.forward_intermediates(
            pixel_values, indices=1, normalize_intermediates=True, intermediates_only=True, output_fmt="NCHW"
        )
        return out["image_intermediates"][-1]


# ---------------------------------------------------------------------------------------------------
# Backbone + neck as a SAM image encoder
# ---------------------------------------------------------------------------------------------------
class BackboneNeckEncoder(nn.Module):
    """[B, 3, S, S] SAM-normalised pixels -> [B, out_channels, E, E] (see the module docstring).

    Args:
        features: a backbone adapter (``TimmFeatures``, ``OpenClipFeatures``) with ``input_size``,
            ``mean``, ``std`` and ``num_channels``; frozen here.
        out_channels: SAM's embedding channels (256).
        embedding_size: SAM's embedding side E (64 at 1024 px).
        pixel_mean, pixel_std: the normalisation the input pixels carry (SAM's: ImageNet's).
    """

    def __init__(
        self,
        features: nn.Module,
        *,
        out_channels: int,
        embedding_size: int,
        pixel_mean: Sequence[float] = Segmenter.pixel_mean,
        pixel_std: Sequence[float] = Segmenter.pixel_std,
    ):
        super().__init__()
        self.backbone = features
        self.backbone.requires_grad_(False)
        self.neck = SamVisionNeck(SamVisionConfig(hidden_size=features.num_channels, output_channels=out_channels))
        self.embedding_size = embedding_size
        self.input_size = tuple(features.input_size)

        def buffer(values: Sequence[float]) -> Tensor:
            return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)

        self.register_buffer("in_mean", buffer(pixel_mean), persistent=False)
        self.register_buffer("in_std", buffer(pixel_std), persistent=False)
        self.register_buffer("backbone_mean", buffer(features.mean), persistent=False)
        self.register_buffer("backbone_std", buffer(features.std), persistent=False)
        self.train(False)

    def train(self, mode: bool = True) -> BackboneNeckEncoder:
        super().train(mode)
        self.backbone.train(False)  # frozen: no dropout / drop-path, whatever the captioner does
        return self

    def prepare(self, pixel_values: Tensor) -> Tensor:
        """SAM-normalised pixels -> the backbone's input (size and normalisation)."""
        x = pixel_values * self.in_std.to(pixel_values.dtype) + self.in_mean.to(pixel_values.dtype)  # 0-1 RGB
        if tuple(x.shape[-2:]) != self.input_size:
            # Resizing before the per-channel affine maps is the same as after (interpolation weights sum to 1).
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.backbone_mean.to(x.dtype)) / self.backbone_std.to(x.dtype)

    def forward(self, pixel_values: Tensor) -> Tensor:
        feats = self.backbone(self.prepare(pixel_values))  # [B, C, h', w']
        x = self.neck(feats.permute(0, 2, 3, 1))  # SamVisionNeck takes channels-last -> [B, 256, h', w']
        if x.shape[-1] != self.embedding_size or x.shape[-2] != self.embedding_size:
            x = F.interpolate(x, size=(self.embedding_size, self.embedding_size), mode="bilinear", align_corners=False)
        return x


def build_backbone_segmenter(
    features: nn.Module, config, *, sam_weights: str | None, dtype: str | None, source: dict[str, Any]
) -> SamSegmenter:
    sam = load_sam_decoder(config, sam_weights, tags=SAM_DECODER_TAGS)
    encoder = BackboneNeckEncoder(
        features,
        out_channels=int(config.mask_decoder_config.hidden_size),
        embedding_size=int(config.prompt_encoder_config.image_embedding_size),
    )
    segmenter = SamSegmenter(sam, image_encoder=encoder, trainable=["sam.vision_encoder.neck"])
    if dtype is not None:
        segmenter.to(getattr(torch, dtype))
    segmenter.source = {**source, "sam_weights": sam_weights}
    return segmenter


# ---------------------------------------------------------------------------------------------------
# timm backbones
# ---------------------------------------------------------------------------------------------------
def create_timm_backbone(model_name: str, pretrained: bool | str | None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with ``pretrained``: None/False (random), True (the weights named by
    ``model_name``'s tag, from timm's hub), a tag (appended to an untagged ``model_name``) or a local
    weights file (loaded by timm, ``weights_only``, through the model's own checkpoint filter)."""
    import timm

    kwargs = {"num_classes": 0, **kwargs}
    if pretrained is None or pretrained is False:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    if pretrained is True:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    path = Path(str(pretrained)).expanduser()
    if path.is_file():
        return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    if "/" in str(pretrained) or path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        raise FileNotFoundError(f"timm backbone weights file {str(pretrained)!r} does not exist")
    if "." in model_name:
        raise ValueError(
            f"model_name {model_name!r} already carries a pretrained tag; pretrained={pretrained!r} must then be "
            "True, False/None or a local file"
        )
    return timm.create_model(f"{model_name}.{pretrained}", pretrained=True, **kwargs)


@IMAGE_ENCODERS.register("timm-backbone", paper=True, tags=("backbone",))
def timm_backbone(
    *,
    model_name: str = "vit_large_patch14_clip_224.openai",
    pretrained: bool | str | None = None,
    backbone_image_size: int | None = None,
    sam_weights: str | None = None,
    image_size: int = 1024,
    dtype: str | None = None,
) -> SamSegmenter:
    """A frozen timm backbone + trainable SAM-style neck in front of SAM's prompt encoder/mask decoder."""
    kwargs = {"img_size": backbone_image_size} if backbone_image_size else {}
    model = create_timm_backbone(model_name, pretrained, **kwargs)
    return build_backbone_segmenter(
        TimmFeatures(model), sam_config("b", image_size), sam_weights=sam_weights, dtype=dtype,
        source={"model_name": model_name, "pretrained": pretrained},
    )


@IMAGE_ENCODERS.register("tiny-timm-backbone", tiny=True, tags=("backbone",))
def tiny_timm_backbone(
    *,
    model_name: str = "test_vit",
    pretrained: bool | str | None = None,
    backbone_image_size: int | None = 32,
    sam_weights: str | None = None,
    image_size: int = 64,
    dtype: str | None = None,
) -> SamSegmenter:
    """Tiny timm backbone (timm's registered test_vit) + neck + tiny SAM decoder, for tests."""
    kwargs = {"img_size": backbone_image_size} if backbone_image_size else {}
    model = create_timm_backbone(model_name, pretrained, **kwargs)
    return build_backbone_segmenter(
        TimmFeatures(model), tiny_sam_config(image_size=image_size), sam_weights=sam_weights, dtype=dtype,
        source={"model_name": model_name, "pretrained": pretrained},
    )


# ---------------------------------------------------------------------------------------------------
# open_clip image towers
# ---------------------------------------------------------------------------------------------------
# A small ViT tower (and a token text tower open_clip insists on building) for tests, offline.
TINY_OPEN_CLIP = dict(
    embed_dim=16,
    vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16, mlp_ratio=2.0),
    text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1),
)


def create_open_clip_visual(model_name: str, pretrained: str | None, **model_kwargs: Any) -> nn.Module:
    """The image tower of ``open_clip.create_model(model_name, pretrained)``: ``pretrained`` is an
    open_clip tag (``"openai"``, ``"laion2b_s32b_b82k"``...) or a local checkpoint file (read
    ``weights_only``); ``model_name`` may also be ``hf-hub:org/repo`` or ``local-dir:/path``."""
    import open_clip

    if pretrained is not None and ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
        if not Path(pretrained).expanduser().is_file():
            raise FileNotFoundError(f"open_clip weights file {pretrained!r} does not exist")
        pretrained = str(Path(pretrained).expanduser())
    device = torch.empty(0).device  # honours an enclosing `with torch.device("meta")`
    model = open_clip.create_model(model_name, pretrained=pretrained, device=device, require_pretrained=pretrained is not None,
                                   **model_kwargs)
    return model.visual


@IMAGE_ENCODERS.register("open-clip-backbone", tags=("backbone",))
def open_clip_backbone(
    *,
    model_name: str = "ViT-L-14",
    pretrained: str | None = None,
    sam_weights: str | None = None,
    image_size: int = 1024,
    dtype: str | None = None,
) -> SamSegmenter:
    """A frozen open_clip image tower + trainable SAM-style neck in front of SAM's prompt encoder/mask decoder."""
    visual = create_open_clip_visual(model_name, pretrained)
    return build_backbone_segmenter(
        OpenClipFeatures(visual), sam_config("b", image_size), sam_weights=sam_weights, dtype=dtype,
        source={"model_name": model_name, "pretrained": pretrained},
    )


@IMAGE_ENCODERS.register("tiny-open-clip-backbone", tiny=True, tags=("backbone",))
def tiny_open_clip_backbone(
    *, pretrained: str | None = None, sam_weights: str | None = None, image_size: int = 64, dtype: str | None = None
) -> SamSegmenter:
    """Tiny open_clip ViT tower (a small custom config, offline) + neck + tiny SAM decoder, for tests."""
    visual = create_open_clip_visual("ViT-B-32", pretrained, **TINY_OPEN_CLIP)
    return build_backbone_segmenter(
        OpenClipFeatures(visual), tiny_sam_config(image_size=image_size), sam_weights=sam_weights, dtype=dtype,
        source={"model_name": "ViT-B-32 (tiny config)", "pretrained": pretrained},
    )
