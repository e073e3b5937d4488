"""Shared helpers for the oracle tests: reference SAM-family models at toy size, the same pixels in both
input conventions, and per-image decoding with segment-anything's own modules."""

from __future__ import annotations

import contextlib
import copy
import warnings
from functools import partial

import torch
from torch import nn

from sca.models.segmenters.base import Prompts

ATOL = 1e-5  # measured max abs differences are 1e-6 .. 4e-6 (float32, CPU)

# tiny-sam's dims (sca.models.segmenters.sam.tiny_sam_config), written in segment-anything's terms.
TINY = dict(img=64, patch=8, width=32, depth=2, heads=2, window=4, global_idx=(1,), mlp_ratio=2, dim=32,
            mask_chans=8, dec_mlp=128, dec_heads=4, iou_hidden=32)


@contextlib.contextmanager
def preserved_timm_registry():
    """The oracle packages register their own ``tiny_vit_*`` models into timm's registry on import,
    replacing timm's; undo that so the rest of the session sees timm's registry unchanged."""
    from timm.models import _registry as reg

    names = ["_model_entrypoints", "_model_to_module", "_module_to_models", "_model_pretrained_cfgs",
             "_model_default_cfgs", "_model_with_tags", "_model_has_pretrained"]
    saved = {n: copy.deepcopy(getattr(reg, n)) for n in names}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, value in saved.items():
            current = getattr(reg, n)
            current.clear()
            current.update(value)


def randomize_(module: nn.Module, scale: float = 0.1) -> nn.Module:
    """Perturb every weight (zero/one inits would hide mapping mistakes), keep BN variances positive."""
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            else:
                t.add_(torch.randn_like(t) * scale)
    return module


def build_original_sam(pkg: str = "segment_anything", **overrides):
    """segment-anything's (or SAM-HQ's) Sam at toy size, random weights."""
    d = {**TINY, **overrides}
    with preserved_timm_registry():
        modeling = __import__(f"{pkg}.modeling", fromlist=["Sam"])
    grid = d["img"] // d["patch"]
    decoder_cls = modeling.MaskDecoderHQ if pkg == "segment_anything_hq" else modeling.MaskDecoder
    decoder_extra = {"vit_dim": d["width"]} if pkg == "segment_anything_hq" else {}
    sam = modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=d["depth"], embed_dim=d["width"], img_size=d["img"], mlp_ratio=d["mlp_ratio"],
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=d["heads"], patch_size=d["patch"], qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=d["global_idx"], window_size=d["window"], out_chans=d["dim"],
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=d["dim"], image_embedding_size=(grid, grid), input_image_size=(d["img"], d["img"]),
            mask_in_chans=d["mask_chans"],
        ),
        mask_decoder=decoder_cls(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=d["dim"], mlp_dim=d["dec_mlp"],
                                                   num_heads=d["dec_heads"]),
            transformer_dim=d["dim"], iou_head_depth=3, iou_head_hidden_dim=d["iou_hidden"], **decoder_extra,
        ),
    )
    return randomize_(sam).eval()


def sam_pixels(images_255: torch.Tensor) -> torch.Tensor:
    """Our input frame: 0-1 scale, ImageNet mean/std (= segment-anything's 0-255 mean/std)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (images_255 / 255.0 - mean) / std


def record_transformer(transformer: nn.Module):
    """Capture segment-anything's TwoWayTransformer outputs (tokens, updated image tokens)."""
    rec = {}
    handle = transformer.register_forward_hook(lambda m, a, out: rec.update(tokens=out[0], keys=out[1]))
    return rec, handle


def prompt_sets(img: int, batch: int, regions: int):
    g = torch.Generator().manual_seed(3)
    xy0 = torch.rand(batch, regions, 2, generator=g) * img * 0.5
    boxes = torch.cat([xy0, xy0 + 4 + torch.rand(batch, regions, 2, generator=g) * img * 0.45], -1)
    points = torch.rand(batch, regions, 3, 2, generator=g) * (img - 1)
    labels = torch.tensor([1, 0, 1]).expand(batch, regions, 3).clone()
    masks = torch.randn(batch, regions, 1, img // 2, img // 2, generator=g) * 3  # 4h x 4w at h = img/8
    return {
        "box": Prompts(boxes=boxes),
        "points": Prompts(points=points, point_labels=labels),
        "box+points": Prompts(boxes=boxes, points=points[:, :, :1], point_labels=labels[:, :, :1]),
        "mask": Prompts(masks=masks),  # no prompt tokens at all (segment-anything: sparse [B, 0, C])
        "box+mask": Prompts(boxes=boxes, masks=masks),
    }


def original_decode(sam, embeddings, prompts: Prompts, b: int, multimask: bool, **extra):
    """segment-anything on image b: all its regions as one batch of prompts."""
    points = None if prompts.points is None else (prompts.points[b], prompts.point_labels[b])
    sparse, dense = sam.prompt_encoder(
        points=points,
        boxes=None if prompts.boxes is None else prompts.boxes[b],
        masks=None if prompts.masks is None else prompts.masks[b],
    )
    rec, handle = record_transformer(sam.mask_decoder.transformer)
    try:
        masks, iou = sam.mask_decoder(
            image_embeddings=embeddings[b:b + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask, **extra,
        )
    finally:
        handle.remove()
    return masks, iou, rec
