"""Training-only heads of the embedded default's segmenter stage: they train with the tiny SAM and
are not saved (SCA sees only the SAM). Each stands in for something the real SAM has from its own
pretraining, which a tiny SAM trained on synthetic masks alone lacks (sca.training.segmenter_stage).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PixelDecoder", "TokenMaskDecoder", "box_crops"]


class PixelDecoder(nn.Module):
    """Image embedding [B, C, h, w] -> pixels [B, 3, S, S]: every embedding cell predicts its own
    (S/h)x(S/h) patch of normalised pixels through a per-cell MLP (1x1 convolutions + pixel shuffle).

    Why: SAM's image encoder starts from an MAE-pretrained ViT (Kirillov et al. 2023, §3), so its
    embedding still describes what a region looks like, which SCA's captions need. A tiny SAM trained
    only for masks keeps little but edges. Reconstructing every patch from its cell, as an MAE decoder
    does but without masking, keeps more of the look in the embedding. Measured with
    scripts/probe_segmenter.py (linear probes, synthetic test split): colour from SAM's output tokens
    0.17 -> 0.75 (width 32 without / width 64 with it); shape and texture stay near chance.
    """

    def __init__(self, channels: int, grid: int, image_size: int, hidden: int = 128):
        super().__init__()
        if image_size % grid:
            raise ValueError(f"image size {image_size} is not a multiple of the embedding grid {grid}")
        patch = image_size // grid
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(),
                                 nn.Conv2d(hidden, 3 * patch * patch, 1), nn.PixelShuffle(patch))

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.net(embeddings)


class TokenMaskDecoder(nn.Module):
    """SAM's output tokens of a region [N, T, C] -> the region's mask inside its box [N, G, G] logits,
    from the IoU and mask tokens alone (the first 1 + 4 tokens, present for every prompt kind).

    Why: SCA's mixer reads SAM's output tokens, and a caption names the region's shape. SAM's mask
    tokens make masks only through a dot product with the upscaled image embedding, so a token may
    carry where the mask is without saying what shape it has; a linear probe found the tiny SAM's
    tokens at chance for shape. Decoding the box-normalised mask from the tokens alone asks them to
    carry the shape itself (a small autoencoder on SAM's own output, no labels).
    """

    def __init__(self, channels: int, tokens: int = 5, grid: int = 16, hidden: int = 256):
        super().__init__()
        self.tokens, self.grid = tokens, grid
        self.net = nn.Sequential(nn.Linear(tokens * channels, hidden), nn.GELU(), nn.Linear(hidden, grid * grid))

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[0]
        return self.net(tokens[:, : self.tokens].reshape(n, -1)).reshape(n, self.grid, self.grid)


def box_crops(masks: Tensor, boxes: Tensor, grid: int) -> Tensor:
    """GT masks [N, S, S] bool and their boxes [N, 4] (x0 y0 x1 y1, S frame) -> [N, G, G] float in
    [0, 1]: each mask resampled inside its own box (torchvision's RoIAlign), so the target says the
    shape whatever the region's size and place."""
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(len(boxes), dtype=boxes.dtype)[:, None], boxes.float()], dim=1)
    return roi_align(masks[:, None].float(), rois, output_size=grid, aligned=True)[:, 0].clamp(0, 1)
