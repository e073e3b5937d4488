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
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sca.data.transforms import Geometry
from sca.models.captioner import SCAModel
from sca.models.processor import RegionProcessor, RegionPrompts, check_region_prompts, to_rgb

__all__ = ["TASKS", "Captioner", "EncodedImage", "RegionCaption", "default_device", "default_dtype",
           "resolve_checkpoint"]

TASKS = {"recognition": 0, "caption": 1}  # task token ids (paper.md §1.7)


@dataclass
class RegionCaption:
    """One region's result, in original pixels.

    caption: generated text (a category name with the recognition task).
    mask: [H, W] bool, SAM's mask with the highest predicted IoU (threshold 0 on its logits).
    iou_score: that mask's predicted IoU; iou_scores: all M of SAM's masks' predicted IoU.
    box, points, point_labels: the prompt of the region (None where not given).
    mask_box: [x0, y0, x1, y1] pixel-edge box around the mask (None for an empty mask).
    stability_score: set by anything mode (IoU of the mask at logit +offset vs -offset).
    """

    caption: str
    mask: np.ndarray | None
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
        return 0 if self.mask is None else int(self.mask.sum())

    @property
    def mask_box(self) -> list[float] | None:
        if self.mask is None:
            return None
        ys, xs = np.nonzero(self.mask.any(axis=1))[0], np.nonzero(self.mask.any(axis=0))[0]
        if ys.size == 0:
            return None
        return [float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)]

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
        if mask == "rle" and self.mask is not None:
            from sca.data.masks import rle_encode

            out["mask"] = rle_encode(self.mask)
        return out


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


def _task_id(task: str | int) -> tuple[int, str]:
    if isinstance(task, str) and task in TASKS:
        return TASKS[task], task
    names = {v: k for k, v in TASKS.items()}
    if isinstance(task, int) and not isinstance(task, bool) and task in names:
        return task, names[task]
    raise ValueError(f"unknown task {task!r}; use one of {list(TASKS)} (or their ids {list(names)})")


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
                region_chunk_size: int = 32, progress: bool = False, **generate_kwargs) -> list[RegionCaption]:
        """Caption R regions of one image; returns R results in prompt order.

        boxes: [R, 4] x0 y0 x1 y1. points: [R, P, 2], [R, 2] or R lists of (x, y); point_labels:
        1 foreground / 0 background (default 1). masks: [R, H, W] bool or [0, 1]. All in original
        pixels; kinds given together prompt the same regions. Beam 3 and 20 new tokens are the
        paper's evaluation settings (paper.md §5). generate_kwargs go to the LM's ``generate``
        (e.g. ``min_new_tokens``, ``repetition_penalty``)."""
        enc = self.encode(image)
        width, height = enc.size
        prompts = check_region_prompts(width, height, boxes, points, point_labels, masks)
        return self.caption_prompts(enc, prompts, task=task, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                    region_chunk_size=region_chunk_size, progress=progress, **generate_kwargs)

    @torch.inference_mode()
    def caption_prompts(self, enc: EncodedImage, prompts: RegionPrompts, *, task: str | int = "caption",
                        num_beams: int = 3, max_new_tokens: int = 20, region_chunk_size: int = 32,
                        progress: bool = False, with_masks: bool = True, **generate_kwargs) -> list[RegionCaption]:
        """``caption`` for prompts already validated by ``check_region_prompts``. with_masks=False skips
        the full-resolution masks (``mask`` is then None; anything mode brings its own)."""
        task_id, task_name = _task_id(task)
        if num_beams < 1 or max_new_tokens < 1 or region_chunk_size < 1:
            raise ValueError(f"num_beams, max_new_tokens and region_chunk_size must be >= 1; got "
                             f"{num_beams}, {max_new_tokens}, {region_chunk_size}")
        model_prompts = self.processor.to_model(prompts, enc.geometry).to(self.device, self.dtype)
        n = prompts.num_regions
        starts = range(0, n, region_chunk_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="captioning", unit="chunk", total=len(starts))
        results: list[RegionCaption] = []
        for start in starts:
            chunk = model_prompts.regions(start, min(n, start + region_chunk_size))
            out = self.model.generate(prompts=chunk, features=enc.features, task_ids=task_id,
                                      num_beams=num_beams, max_new_tokens=max_new_tokens,
                                      region_chunk_size=region_chunk_size, **generate_kwargs)
            results.extend(self._results(enc, out.masks, out.iou_scores, out.captions, task_name,
                                         prompts, start, with_masks))
        return results

    def _results(self, enc: EncodedImage, low_res: Tensor, ious: Tensor, captions: list[str], task: str,
                 prompts: RegionPrompts, start: int, with_masks: bool = True) -> list[RegionCaption]:
        """low_res: [n, M, 4h, 4w] logits; ious: [n, M] -> the best mask per region at full size."""
        best = ious.float().argmax(dim=1)  # [n]
        full = None
        if with_masks:
            picked = low_res[torch.arange(low_res.shape[0]), best][:, None]  # [n, 1, 4h, 4w]
            # A few at a time: float masks of a 12-megapixel photo take 48 MB each.
            full = np.concatenate([(self.processor.postprocess_masks(picked[i: i + 4], enc.geometry)[:, 0] > 0)
                                   .cpu().numpy() for i in range(0, picked.shape[0], 4)])  # [n, H, W] bool
        out = []
        for j, text in enumerate(captions):
            scores = ious[j].float().tolist()
            out.append(RegionCaption(caption=text, mask=None if full is None else full[j],
                                     iou_score=scores[int(best[j])],
                                     iou_scores=scores, mask_index=int(best[j]), task=task,
                                     **prompts.region(start + j)))
        return out

    # -- anything mode ----------------------------------------------------------------------------
    def everything(self, image: Any, *, task: str | int = "caption", num_beams: int = 3,
                   max_new_tokens: int = 20, progress: bool = False, **anything_options) -> list[RegionCaption]:
        """Anything mode: SAM's automatic masks, each captioned (``sca.app.anything``). Options of
        ``AnythingConfig``: points_per_side (32), points_per_batch (64), pred_iou_thresh (0.88),
        stability_score_thresh (0.95), stability_score_offset (1.0), nms_iou (0.7), min_mask_area
        (0), max_regions (None)."""
        from sca.app.anything import AnythingConfig, caption_everything

        config = AnythingConfig(**anything_options)
        return caption_everything(self, image, config, task=task, num_beams=num_beams,
                                  max_new_tokens=max_new_tokens, progress=progress)
