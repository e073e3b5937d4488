"""Caption anything from Python: ``Captioner`` loads a model once and captions an image's regions.

    from sca.api import Captioner            # (the code: sca.app.api)
    cap = Captioner.from_pretrained("runs/vg")           # a checkpoint folder, a run folder or a hub id
    regions = cap.caption("photo.jpg", boxes=[[10, 20, 200, 240], [300, 40, 420, 200]])
    regions[0].caption, regions[0].mask, regions[0].iou_score   # text, [H, W] bool, float
    everything = cap.everything("photo.jpg")            # SAM's automatic masks, each captioned

The image is encoded once per call (or once for many calls: ``enc = cap.encode(image)``, then
``cap.caption(enc, ...)``); regions go through SAM's decoder, the mixer and the LM in batches.
Inputs are validated in ``sca.models.processor`` (its docstring lists the accepted images and prompt
conventions); every error names the offending value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from sca.app.arguments import TASKS, resolve_task
from sca.data.transforms import Geometry
from sca.models.captioner import LM_BATCH_SIZE, SCAModel, check_generation_options
from sca.models.masks import CompactMask
from sca.models.processor import RegionProcessor, RegionPrompts, check_region_prompts, to_rgb

if TYPE_CHECKING:
    from sca.app.anything import AnythingConfig, AnythingResult

__all__ = ["TASKS", "Captioner", "EncodedImage", "RegionCaption", "default_device", "default_dtype",
           "resolve_checkpoint"]



@dataclass(eq=False)
class RegionCaption:
    """One region's result, in original pixels.

    caption: generated text (a category name with the recognition task).
    mask: [H, W] bool, SAM's mask with the highest predicted IoU (threshold 0 on its logits). Stored
        compactly (``compact_mask``: column runs, ``sca.models.masks.CompactMask``); reading ``mask``
        makes the dense array (H x W bytes), so for large images use ``compact_mask``, ``area``,
        ``mask_box`` and ``to_dict`` (RLE), which never do. May be set to an array or a CompactMask.
    iou_score: that mask's predicted IoU; iou_scores: all M of SAM's masks' predicted IoU.
    box, points, point_labels: the prompt of the region (None where not given).
    mask_box: [x0, y0, x1, y1] pixel-edge box around the mask (None for an empty mask).
    stability_score: set by anything mode (IoU of the mask at logit +offset vs -offset).
    """

    caption: str
    mask: Any = field(repr=False)  # a property below: [H, W] bool
    iou_score: float
    iou_scores: list[float]
    mask_index: int
    task: str = "caption"
    box: list[float] | None = None
    points: list[list[float]] | None = None
    point_labels: list[int] | None = None
    stability_score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def area(self) -> int:
        return 0 if self.compact_mask is None else self.compact_mask.area

    @property
    def mask_box(self) -> list[float] | None:
        return None if self.compact_mask is None else self.compact_mask.box()

    def to_dict(self, mask: str = "rle") -> dict[str, Any]:
        """JSON-ready dict; ``mask``: "rle" (COCO compressed RLE), "none"."""
        if mask not in ("rle", "none"):
            raise ValueError(f"mask format must be 'rle' or 'none', got {mask!r}")
        out = {"caption": self.caption, "task": self.task, "iou_score": round(self.iou_score, 5),
               "iou_scores": [round(v, 5) for v in self.iou_scores], "mask_index": self.mask_index,
               "box": self.box, "points": self.points, "point_labels": self.point_labels,
               "mask_box": self.mask_box, "area": self.area}
        if self.stability_score is not None:
            out["stability_score"] = round(self.stability_score, 5)
        out.update(self.extra)
        if mask == "rle" and self.compact_mask is not None:
            out["mask"] = self.compact_mask.rle()
        return out


def _get_mask(self: RegionCaption) -> np.ndarray | None:
    return None if self.compact_mask is None else self.compact_mask.to_dense()


def _set_mask(self: RegionCaption, value: Any) -> None:
    if value is None or isinstance(value, CompactMask):
        self.compact_mask = value
    else:
        self.compact_mask = CompactMask.from_dense(value)


RegionCaption.mask = property(_get_mask, _set_mask, doc="[H, W] bool (made from ``compact_mask`` on access)")


@dataclass
class EncodedImage:
    """An image encoded once for many prompts. rgb: [H, W, 3] uint8; features: segmenter features
    {'image_embeddings': [1, C, h, w], ...} on the model's device; geometry: original -> S frame."""

    rgb: np.ndarray
    features: dict[str, Tensor]
    geometry: Geometry

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in original pixels."""
        return self.geometry.width, self.geometry.height


def default_device() -> torch.device:
    """CUDA when present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU and MPS (CPU half
    precision is slower than float32 on most machines)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_checkpoint(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A checkpoint folder (config.json), a run folder (model/config.json inside) or a hub id ->
    the local checkpoint folder. Raises FileNotFoundError naming what was looked for."""
    from sca.models.hub import CONFIG_NAME, resolve_checkpoint_dir

    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        for candidate in (path, path / "model"):
            if (candidate / CONFIG_NAME).is_file():
                return candidate
        raise FileNotFoundError(
            f"{str(path)!r} is neither a checkpoint folder (config.json + model.safetensors) nor a run "
            f"folder (model/config.json); it holds {sorted(p.name for p in path.iterdir())[:10]}")
    try:
        return resolve_checkpoint_dir(path_or_hub_id, revision)
    except Exception as err:  # huggingface_hub: offline, unknown repo, no access, ...
        if str(path_or_hub_id) in str(err):  # our own message already names it
            raise
        raise FileNotFoundError(
            f"checkpoint {str(path_or_hub_id)!r}: no such local folder, and fetching it as a hub id "
            f"failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


class Captioner:
    """An SCA model ready for users' images: preprocessing, batching, masks at full resolution.

    Args:
        model: an ``SCAModel``. device: default ``default_device()``. dtype: default
            ``default_dtype(device)``; the model is moved and cast once, here.
    """

    def __init__(self, model: SCAModel, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype if dtype is not None else default_dtype(self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = RegionProcessor.for_segmenter(model.segmenter)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, *, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, revision: str | None = None) -> Captioner:
        """Load from a checkpoint folder, a run folder (``model/`` inside) or a hub id."""
        root = resolve_checkpoint(path_or_hub_id, revision)
        return cls(SCAModel.from_pretrained(root), device=device, dtype=dtype)

    # -- encoding ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, image: Any) -> EncodedImage:
        """Run the image encoder once. ``image``: see ``sca.models.processor.to_rgb``."""
        if isinstance(image, EncodedImage):
            return image
        rgb = to_rgb(image)
        pixels, geom = self.processor.preprocess(rgb)
        features = self.model.encode_images(pixels.to(self.device, self.dtype))
        return EncodedImage(rgb, features, geom)

    # -- captioning -------------------------------------------------------------------------------
    @torch.inference_mode()
    def caption(self, image: Any, boxes=None, points=None, point_labels=None, masks=None, *,
                task: str | int = "caption", num_beams: int = 3, max_new_tokens: int = 20,
                region_chunk_size: int = 32, lm_batch_size: int = LM_BATCH_SIZE, progress: bool = False,
                **generate_kwargs) -> list[RegionCaption]:
        """Caption R regions of one image; returns R results in prompt order.

        boxes: [R, 4] x0 y0 x1 y1. points: [R, P, 2], [R, 2] or R lists of (x, y); point_labels:
        1 foreground / 0 background (default 1). masks: [R, H, W] bool or [0, 1]. All in original
        pixels; kinds given together prompt the same regions. Beam 3 and 20 new tokens are the
        paper's evaluation settings (paper.md §5). generate_kwargs go to the LM's ``generate``
        (e.g. ``min_new_tokens``, ``repetition_penalty``)."""
        resolve_task(task)
        check_generation_options(num_beams, max_new_tokens, region_chunk_size, generate_kwargs, lm_batch_size)
        enc = self.encode(image)
        width, height = enc.size
        prompts = check_region_prompts(width, height, boxes, points, point_labels, masks)
        return self.caption_prompts(enc, prompts, task=task, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                    region_chunk_size=region_chunk_size, lm_batch_size=lm_batch_size,
                                    progress=progress, **generate_kwargs)

    @torch.inference_mode()
    def caption_prompts(self, enc: EncodedImage, prompts: RegionPrompts, *, task: str | int = "caption",
                        num_beams: int = 3, max_new_tokens: int = 20, region_chunk_size: int = 32,
                        lm_batch_size: int = LM_BATCH_SIZE, progress: bool = False, with_masks: bool = True, **generate_kwargs) -> list[RegionCaption]:
        """``caption`` for prompts already validated by ``check_region_prompts``. with_masks=False skips
        the full-resolution masks (``mask`` is then None; anything mode brings its own)."""
        task, task_name = resolve_task(task)
        check_generation_options(num_beams, max_new_tokens, region_chunk_size, generate_kwargs, lm_batch_size)
        model_prompts = self.processor.to_model(prompts, enc.geometry).to(self.device, self.dtype)
        n = prompts.num_regions
        starts = range(0, n, lm_batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="captioning", unit="chunk", total=len(starts))
        results: list[RegionCaption] = []
        for start in starts:
            chunk = model_prompts.regions(start, min(n, start + lm_batch_size))
            out = self.model.generate(prompts=chunk, features=enc.features, task_ids=task,
                                      num_beams=num_beams, max_new_tokens=max_new_tokens,
                                      region_chunk_size=region_chunk_size, lm_batch_size=lm_batch_size,
                                      **generate_kwargs)
            results.extend(self._results(enc, out.masks, out.iou_scores, out.captions, task_name,
                                         prompts, start, with_masks))
        return results

    def _results(self, enc: EncodedImage, low_res: Tensor, ious: Tensor, captions: list[str], task: str,
                 prompts: RegionPrompts, start: int, with_masks: bool = True) -> list[RegionCaption]:
        """low_res: [n, M, 4h, 4w] logits; ious: [n, M] -> the best mask per region at full size,
        upsampled window by window into compact masks (bounded memory for any image size)."""
        best = ious.float().argmax(dim=1)  # [n]
        masks = [None] * len(captions)
        if with_masks:
            picked = low_res[torch.arange(low_res.shape[0]), best]  # [n, 4h, 4w]
            masks = self.processor.postprocess_compact(picked, enc.geometry)
        out = []
        for j, text in enumerate(captions):
            scores = ious[j].float().tolist()
            out.append(RegionCaption(caption=text, mask=masks[j], iou_score=scores[int(best[j])],
                                     iou_scores=scores, mask_index=int(best[j]), task=task,
                                     **prompts.region(start + j)))
        return out

    # -- anything mode ----------------------------------------------------------------------------
    def anything_config(self, **options) -> AnythingConfig:
        """The anything-mode settings ``everything(**options)`` would use: ``options`` over the
        checkpoint's (``model.config.anything``) over SAM's; ``.sources`` names where each came from
        (for a UI's initial values)."""
        from sca.app.anything import AnythingConfig

        return AnythingConfig(**options).resolve(self.model.config.anything)

    def everything(self, image: Any, *, task: str | int = "caption", num_beams: int = 3,
                   max_new_tokens: int = 20, progress: bool = False, **anything_options) -> AnythingResult:
        """Anything mode: SAM's automatic masks, each captioned (``sca.app.anything``). Options of
        ``AnythingConfig``: points_per_side, points_per_batch (64), pred_iou_thresh,
        stability_score_thresh, stability_score_offset, nms_iou, min_mask_area, max_regions (None);
        unset thresholds come from the checkpoint (``anything_config()``), else SAM's (32, 0.88,
        0.95, 1.0, 0.7, 0). Returns a list of ``RegionCaption`` with ``.report`` (an
        ``AnythingReport``: what each filter removed); an empty result warns with the report's summary."""
        from sca.app.anything import AnythingConfig, caption_everything

        config = AnythingConfig(**anything_options)
        return caption_everything(self, image, config, task=task, num_beams=num_beams,
                                  max_new_tokens=max_new_tokens, progress=progress)
