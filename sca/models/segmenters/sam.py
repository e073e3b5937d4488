"""SAM ViT-B / ViT-L / ViT-H through transformers' ``SamModel``, and a tiny SAM for tests.

Weights (option ``weights``):
- ``None``: random initialisation (tests, parameter counts on the meta device, or training the tiny
  SAM of the embedded default);
- a tag (``"sa1b"``): the released SAM weights of that size on the Hugging Face hub;
- a hub id or a local Hugging Face folder (``config.json`` + safetensors);
- a local original SAM checkpoint file (``sam_vit_h_4b8939.pth`` layout, or the same keys in a
  ``.safetensors`` file), converted on load by ``sca.models.segmenters.convert``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

from sca.registry import IMAGE_ENCODERS

from .base import SamSegmenter, recorded_decoder_eps, set_original_decoder_eps

# Facts from facebookresearch/segment-anything build_sam.py: (width, depth, heads, global attention).
SAM_SIZES = {
    "b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11]),
    "l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23]),
    "h": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]),
}
SAM_HUB_IDS = {"b": "facebook/sam-vit-base", "l": "facebook/sam-vit-large", "h": "facebook/sam-vit-huge"}
# The original checkpoints (segment-anything README); the hex suffix is part of the released name.
SAM_ORIGINAL_URLS = {
    "b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}


def sam_config(size: str, image_size: int = 1024) -> SamConfig:
    """The SamConfig of SAM ViT-{size}: patch 16, window 14, 256-channel neck, 2-layer decoder."""
    vision = SamVisionConfig(image_size=image_size, output_channels=256, num_pos_feats=128, **SAM_SIZES[size])
    prompt = SamPromptEncoderConfig(image_size=image_size, hidden_size=256, patch_size=16)
    decoder = SamMaskDecoderConfig(hidden_size=256, mlp_dim=2048, num_hidden_layers=2, num_attention_heads=8)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_sam_config(
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 32,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    vision_heads: int = 2,
    decoder_heads: int = 4,
    window_size: int = 4,
) -> SamConfig:
    """A SAM of the same design at toy size (transformers' own tests use hidden 36, image 24)."""
    vision = SamVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
        output_channels=hidden_size,
        num_pos_feats=hidden_size // 2,  # must be output_channels // 2
        window_size=window_size,
        global_attn_indexes=[vision_layers - 1],
        mlp_ratio=2.0,
    )
    prompt = SamPromptEncoderConfig(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                                    mask_input_channels=8)
    decoder = SamMaskDecoderConfig(
        hidden_size=hidden_size, mlp_dim=4 * hidden_size, num_hidden_layers=2, num_attention_heads=decoder_heads,
        iou_head_hidden_dim=hidden_size,
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def load_sam_model(
    config: SamConfig,
    weights: str | None,
    *,
    tags: dict[str, str] | None = None,
    dtype: torch.dtype | str | None = None,
    model_cls: type = SamModel,
):
    """Build ``model_cls`` from ``config`` (random init) or load ``weights`` (tag, hub id, folder, file)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if weights is None:
        model = model_cls(config)
        return model.to(dtype) if dtype is not None else model
    weights = (tags or {}).get(weights, weights)
    path = Path(weights).expanduser()
    if path.is_file():
        from .convert import load_original_sam_checkpoint

        model = model_cls(config)
        load_original_sam_checkpoint(model, path)
        return model.to(dtype) if dtype is not None else model
    if path.is_dir() or "/" in weights:
        # A local Hugging Face folder or a hub id (a folder saved after an original file records the
        # decoder's LayerNorm eps in its config).
        model = model_cls.from_pretrained(str(path) if path.is_dir() else weights, dtype=dtype)
        if (eps := recorded_decoder_eps(model)) is not None:
            set_original_decoder_eps(model, eps)
        return model
    raise FileNotFoundError(
        f"SAM weights {weights!r} are neither a file, a folder, a hub id (owner/name) nor a tag "
        f"({', '.join(sorted(tags or {})) or 'none'})"
    )


def without_vision_encoder(config: SamConfig) -> SamConfig:
    """A copy of ``config`` with a minimal ViT, for a SamModel whose image encoder is replaced by
    another module (MobileSAM, timm, a backbone + neck): the prompt encoder and mask decoder keep
    their sizes, and no full-size ViT is allocated only to be thrown away."""
    config = copy.deepcopy(config)
    v = config.vision_config
    config.vision_config = type(v)(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, mlp_dim=8, image_size=v.patch_size,
        patch_size=v.patch_size, window_size=0, global_attn_indexes=[0],
        output_channels=v.output_channels, num_pos_feats=v.num_pos_feats, scale=v.scale,
    )
    return config


def is_weights_file(weights: str | None) -> bool:
    return weights is not None and Path(weights).expanduser().is_file()


def fetch_weights_file(weights: str, urls: dict[str, str]) -> str:
    """``weights`` itself, or for a tag in ``urls`` the released file, downloaded once into torch's hub
    cache (``$TORCH_HOME/hub/checkpoints``). Users' machines only: tests never pass a tag here."""
    if weights not in urls:
        return weights
    url = urls[weights]
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=True)
    return str(target)


def load_sam_decoder(
    config: SamConfig,
    weights: str | None,
    *,
    tags: dict[str, str] | None = None,
    dtype: torch.dtype | str | None = None,
) -> SamModel:
    """A SamModel whose prompt encoder, mask decoder and image PE hold ``weights`` (None, a tag, a hub
    id, a local HF folder or an original SAM checkpoint file whose image encoder is ignored), for use
    with another image encoder. The returned vision encoder is a placeholder to be replaced."""
    if weights is not None and not is_weights_file((tags or {}).get(weights, weights)):
        return load_sam_model(config, weights, tags=tags, dtype=dtype)  # hub id or folder: whole model
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = SamModel(without_vision_encoder(config))
    if weights is not None:
        from .convert import load_original_sam_checkpoint

        load_original_sam_checkpoint(model, (tags or {}).get(weights, weights), image_encoder=None)
    return model.to(dtype) if dtype is not None else model


SAM_INITS = ("transformers", "sam")


@torch.no_grad()
def sam_reference_init(model: SamModel) -> SamModel:
    """Re-initialise ``model`` in place as facebookresearch/segment-anything's modules initialise
    themselves: every Linear, Conv, ConvTranspose, LayerNorm and Embedding with PyTorch's defaults
    (that code calls no init function; embeddings N(0, 1)), the random-Fourier PE's Gaussian matrix
    with std 1.0 (``PositionEmbeddingRandom``: scale None -> 1.0), the ViT's absolute and relative
    position embeddings at zero. Uses torch's global RNG."""
    for module in model.modules():
        if hasattr(module, "reset_parameters") and any(True for _ in module.parameters(recurse=False)):
            module.reset_parameters()
    model.shared_image_embedding.positional_embedding.normal_(0.0, 1.0)  # tied to the prompt encoder's
    for name, p in model.vision_encoder.named_parameters():
        if name == "pos_embed" or name.endswith(("rel_pos_h", "rel_pos_w")):
            p.zero_()
    return model


def _register_size(size: str) -> None:
    name = f"sam-vit-{size}"

    def factory(*, weights: str | None = None, dtype: str | None = None, image_size: int = 1024) -> SamSegmenter:
        config = sam_config(size, image_size)
        segmenter = SamSegmenter(load_sam_model(config, weights, tags={"sa1b": SAM_HUB_IDS[size]}, dtype=dtype))
        segmenter.source = {"weights": weights}
        return segmenter

    factory.__doc__ = (
        f"SAM ViT-{size.upper()} (transformers SamModel). weights: None (random), 'sa1b' "
        f"({SAM_HUB_IDS[size]}), a hub id, a local HF folder or an original checkpoint file "
        f"({Path(SAM_ORIGINAL_URLS[size]).name})."
    )
    factory.__name__ = name.replace("-", "_")
    IMAGE_ENCODERS.register(name, paper=True)(factory)


for _size in SAM_SIZES:
    _register_size(_size)


@IMAGE_ENCODERS.register("tiny-sam", tiny=True)
def tiny_sam(
    *,
    weights: str | None = None,
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 32,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    dtype: str | None = None,
    init: str = "transformers",
    decoder_heads: int = 4,
    vision_heads: int = 2,
    window_size: int = 4,
) -> SamSegmenter:
    """Tiny random SAM (transformers SamModel) for tests and the embedded default; same code paths as SAM.

    init: the random init when ``weights`` is None. "transformers" (default): SamModel's own, made
    for loading weights (its image encoder is all but zero, std 1e-10; tokens std 0.02; random-Fourier
    PE std vision_hidden_size // 2), so a SAM trained from it cannot see the image or tell where a
    prompt is. "sam": the original segment-anything code's init, to train from scratch (the
    embedded default's segmenter stage): see ``sam_reference_init``.
    decoder_heads: attention heads of the mask decoder's two-way transformer (SAM: 8 at width 256).
    vision_heads, window_size: the ViT's attention heads and the side of its windowed attention
        (every layer but the last, which attends globally, as in SAM).
    """
    if init not in SAM_INITS:
        raise ValueError(f"tiny-sam init {init!r} is not one of {SAM_INITS}")
    config = tiny_sam_config(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                             vision_hidden_size=vision_hidden_size, vision_layers=vision_layers,
                             decoder_heads=decoder_heads, vision_heads=vision_heads, window_size=window_size)
    model = load_sam_model(config, weights, dtype=dtype)
    if weights is None and init == "sam":
        sam_reference_init(model)
    segmenter = SamSegmenter(model)
    segmenter.source = {"weights": weights}
    return segmenter


@IMAGE_ENCODERS.register("sam")
def sam_any(*, sam_config: dict | None = None, weights: str | None = None, dtype: str | None = None) -> SamSegmenter:
    """SAM of any size: from a SamConfig dict (random init, or weights loaded into it) or from weights alone."""
    if sam_config is None and weights is None:
        raise ValueError("image encoder 'sam' needs sam_config (a SamConfig dict) or weights")
    if sam_config is None and Path(weights).expanduser().is_file():
        raise ValueError(
            f"image encoder 'sam' cannot tell the size of the original checkpoint {weights!r}: use "
            "sam-vit-b, sam-vit-l or sam-vit-h, or give sam_config"
        )
    config = SamConfig.from_dict(sam_config) if sam_config is not None else None
    model = load_sam_model(config, weights, dtype=dtype)
    segmenter = SamSegmenter(model)
    segmenter.source = {"weights": weights}
    return segmenter
