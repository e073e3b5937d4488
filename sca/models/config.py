"""SCAConfig: the plain config a captioner is built from, and which a checkpoint records.

Parts are named, not pickled: ``image_encoder`` and ``language_model`` are registry specs
``{"name": <registry name>, **options}`` (options such as ``weights``), so a checkpoint rebuilds
itself from its ``config.json``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

__all__ = ["ANYTHING_KEYS", "DTYPES", "SCAConfig", "PAPER_CONFIG", "TINY_CONFIG", "check_anything_defaults",
           "dtype_name"]

# The anything-mode settings a checkpoint may carry (sca.app.anything.AnythingConfig validates values).
ANYTHING_KEYS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                 "nms_iou", "min_mask_area")


def check_anything_defaults(values: Any, what: str) -> None:
    """Raise ValueError unless ``values`` is a dict of known anything-mode keys with number values."""
    if not isinstance(values, dict):
        raise ValueError(f"{what} must be a dict with keys among {list(ANYTHING_KEYS)}, got {values!r}")
    unknown = sorted(set(values) - set(ANYTHING_KEYS))
    if unknown:
        raise ValueError(f"{what} has unknown key(s) {unknown}; known: {list(ANYTHING_KEYS)}")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{what}[{key!r}] must be a number, got {value!r}")


@dataclass
class SCAConfig:
    """
    image_encoder: registry spec of the promptable segmenter (SAM ViT-H in the paper).
    language_model: registry spec of the causal LM (GPT2-large in the paper).
    num_mixer_layers: text feature mixer depth N (12 in every reported model).
    num_caption_queries: learned caption queries (8).
    num_task_tokens: task tokens per task (6); tasks: recognition=0, caption=1.
    num_tasks: 2.
    max_caption_tokens: captions are truncated to this many tokens before EOS (18).
    label_smoothing: of the caption cross-entropy (0.1).
    freeze_lm: the LM is frozen by default; False tunes it (give it its own learning rate).
    use_sam_tokens: mixer queries include SAM's output tokens (the paper's final design).
    multimask_output: SAM returns 3 masks per region (its masks are an output, never supervised).
    box_loss_weight: weight of a training-only auxiliary loss (0: off, the paper): a linear head
        regresses the region's box (centre and size, as fractions of the image) from the mixer's
        caption queries. Weak pretraining on bare category names teaches the queries to drop where
        a region is; this term keeps it (docs/ablations.md "Keeping place"). Captioning never reads
        the head. Omitted from ``to_dict`` when 0.
    box_frame_pe: add to the mixer's key positional encoding (SAM's image PE) the same PE function
        evaluated at each image token's place in the region's own box frame (the box spans [0, 1];
        the box prompt, or the box of SAM's chosen mask for a region prompted without one). False:
        the paper's mixer. With the image PE alone a query that should read, say, the top-left of the
        region must learn a box-relative place from the PE of the box's corners, which a small mixer
        learns slowly; in the box frame one learned query reads the same relative place of every
        region (docs/ablations.md "Shape"). Omitted from ``to_dict`` when False.
    mask_token: give the mixer one more token beside SAM's: a learned linear embedding of SAM's chosen
        mask (highest predicted IoU) resampled to a 16 x 16 grid over the region's frame (the frame of
        ``box_frame_pe``), as +1 inside and -1 outside. False: the paper's mixer. The mask is what SAM
        says the region is; its outline is finer than the image tokens' grid (a small object covers a
        few tokens), and from the tokens alone a small mixer learns a region's outline slowly
        (docs/ablations.md "The mask as a token"). Omitted from ``to_dict`` when False.
    dtype: the one floating dtype every part is built in (segmenter, mixer, projection, task
        tokens, LM): "float32" (default), "bfloat16" or "float16"; a torch.dtype is accepted and
        stored by name. A checkpoint's own dtype (e.g. a ``torch_dtype`` in an LM config) does not
        decide it.
    anything: the anything mode's defaults for this model, a dict with keys of ``ANYTHING_KEYS``
        (e.g. ``{"pred_iou_thresh": 0.62, "stability_score_thresh": 0.4}``), or None: SAM's
        (``sca.app.anything``). SAM's thresholds suit SAM's own score scale; a segmenter trained
        elsewhere predicts on its own scale, so its checkpoint carries thresholds calibrated on its
        validation data (``sca.app.calibrate.calibrate_anything``). Omitted from ``to_dict`` when None.
    """

    image_encoder: dict[str, Any] = field(default_factory=lambda: {"name": "tiny-sam"})
    language_model: dict[str, Any] = field(default_factory=lambda: {"name": "tiny-gpt2"})
    num_mixer_layers: int = 12
    num_caption_queries: int = 8
    num_task_tokens: int = 6
    num_tasks: int = 2
    max_caption_tokens: int = 18
    label_smoothing: float = 0.1
    freeze_lm: bool = True
    use_sam_tokens: bool = True
    multimask_output: bool = True
    box_loss_weight: float = 0.0
    box_frame_pe: bool = False
    mask_token: bool = False
    dtype: str = "float32"
    anything: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for part in ("image_encoder", "language_model"):
            spec = getattr(self, part)
            if isinstance(spec, str):
                setattr(self, part, {"name": spec})
            elif not isinstance(spec, dict) or "name" not in spec:
                raise ValueError(f"SCAConfig.{part} must be a name or a dict with a 'name', got {spec!r}")
        for name in ("num_mixer_layers", "num_caption_queries", "num_task_tokens", "num_tasks", "max_caption_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SCAConfig.{name} must be a positive int, got {value!r}")
        self.dtype = dtype_name(self.dtype)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"SCAConfig.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if isinstance(self.box_loss_weight, bool) or not isinstance(self.box_loss_weight, (int, float)) \
                or not 0.0 <= self.box_loss_weight < float("inf"):
            raise ValueError(f"SCAConfig.box_loss_weight must be a finite number >= 0 (0: off), got {self.box_loss_weight!r}")
        self.box_loss_weight = float(self.box_loss_weight)
        if not isinstance(self.box_frame_pe, bool):
            raise ValueError(f"SCAConfig.box_frame_pe must be true or false, got {self.box_frame_pe!r}")
        if not isinstance(self.mask_token, bool):
            raise ValueError(f"SCAConfig.mask_token must be true or false, got {self.mask_token!r}")
        if self.anything is not None:
            check_anything_defaults(self.anything, "SCAConfig.anything")

    def to_dict(self) -> dict[str, Any]:
        d = copy.deepcopy(asdict(self))
        if d["anything"] is None:  # configs (and run fingerprints) of models without it stay as they were
            del d["anything"]
        if d["box_loss_weight"] == 0.0:  # likewise
            del d["box_loss_weight"]
        if not d["box_frame_pe"]:  # likewise
            del d["box_frame_pe"]
        if not d["mask_token"]:  # likewise
            del d["mask_token"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SCAConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"model_type", "sca_version", "embedded_parts"})
        if unknown:
            raise ValueError(f"SCAConfig got unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: copy.deepcopy(v) for k, v in d.items() if k in known})

    def part_options(self, part: str) -> tuple[str, dict[str, Any]]:
        spec = dict(getattr(self, part))
        return spec.pop("name"), spec

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


DTYPES = ("float32", "bfloat16", "float16")


def dtype_name(dtype: str | torch.dtype) -> str:
    """``torch.bfloat16`` / ``"bfloat16"`` / ``"torch.bfloat16"`` -> ``"bfloat16"``; one of ``DTYPES``."""
    name = str(dtype).removeprefix("torch.") if isinstance(dtype, (str, torch.dtype)) else None
    if name not in DTYPES:
        raise ValueError(f"SCAConfig.dtype must be one of {list(DTYPES)} (or the torch dtype), got {dtype!r}")
    return name


# The paper's headline model (paper.md §1): SAM ViT-H + GPT2-large, 12-layer mixer.
PAPER_CONFIG = SCAConfig(
    image_encoder={"name": "sam-vit-h", "weights": "sa1b"},
    language_model={"name": "gpt2-large", "weights": "openai"},
)

# The tiny model of the tests.
TINY_CONFIG = SCAConfig(
    image_encoder={"name": "tiny-sam"},
    language_model={"name": "tiny-gpt2"},
    num_mixer_layers=2,
)
