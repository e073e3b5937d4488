"""Promptable segmenters (SAM and SAM-shaped models): the image-encoder registry's entries."""

from .base import Prompts, SamSegmenter, Segmenter, SegmenterOutput, check_segmenter

# Importing the entry modules registers them.
from . import sam  # noqa: F401  isort: skip
from . import backbones, mobile_sam, sam_hq, timm_sam  # noqa: F401  isort: skip

__all__ = ["Prompts", "SamSegmenter", "Segmenter", "SegmenterOutput", "check_segmenter"]
