"""Saving and loading SCA models the Hugging Face way: ``config.json`` + safetensors.

A checkpoint folder holds:
- ``config.json``: the SCAConfig (parts by registry name and options) + ``model_type: "sca"``;
- ``model.safetensors``: the trained weights (mixer, queries, task tokens, projection, and any
  trainable segmenter module such as a neck);
- ``image_encoder/`` or ``language_model/``: a frozen part that does not come from a known source
  (random init, a local file, or tuned weights), saved as its own Hugging Face folder. A part that
  comes from a known source (a tag, a hub id, a PyPI package) is referenced by name, not copied.

``from_pretrained`` also reads the released checkpoints of the reference code
(``xk-huang/segment-caption-anything-*``) and maps their parameter names onto this model
(see ``load_reference_checkpoint``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel

from sca.models import integrity
from sca.models.integrity import RECORD_KEY, read_state_dict, weight_files

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LOCAL_PREFIX = "./"  # part weights relative to the checkpoint folder

logger = logging.getLogger(__name__)

__all__ = ["from_pretrained", "load_reference_checkpoint", "resolve_checkpoint_dir", "save_pretrained",
           "set_anything_defaults"]


def _known_source(weights: Any) -> bool:
    """A tag, hub id or package name that rebuilds the same weights anywhere; not a local path."""
    return isinstance(weights, str) and not Path(weights).expanduser().exists() and not weights.startswith(LOCAL_PREFIX)


def _atomic_dir(target: Path):
    """Context: write into a temp folder beside ``target``, then swap it in (old one removed)."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            yield tmp
            old = None
            if target.exists():
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    return cm()


def save_pretrained(model, directory: str | os.PathLike, *, embed_frozen: str = "auto") -> None:
    """Write ``model`` (an SCAModel) to ``directory`` atomically.

    embed_frozen: "auto" copies a frozen part only when it has no known source; "always" copies both.
    """
    if embed_frozen not in ("auto", "always"):
        raise ValueError(f"embed_frozen must be 'auto' or 'always', got {embed_frozen!r}")
    from sca.models.segmenters.base import DECODER_LAYER_NORM_EPS_OPTION, SamSegmenter

    config = model.config.to_dict()
    state = {k: v.contiguous() for k, v in model.trainable_state_dict().items() if not k.startswith("lm.")}
    with _atomic_dir(Path(directory)) as tmp:
        seg = model.segmenter
        if embed_frozen == "always" or not _known_source(seg.source.get("weights")):
            if isinstance(seg, SamSegmenter) and isinstance(seg.sam.vision_encoder, PreTrainedModel):
                # The folder's config sets the structure; the other options (e.g. hq_token_only) stay.
                seg.sam.save_pretrained(tmp / "image_encoder")
                config["image_encoder"] = {**config["image_encoder"], "weights": LOCAL_PREFIX + "image_encoder"}
            else:
                # A composed segmenter (e.g. TinyViT or a backbone in front of SAM's decoder): its
                # structure is set by its options; its weights go with the others.
                config["image_encoder"] = {**config["image_encoder"], "weights": None}
                state.update({f"segmenter.{k}": v.contiguous() for k, v in seg.state_dict().items()})
        eps = seg.decoder_layer_norm_eps  # e.g. 1e-5 after an original SAM file: rebuilt as it ran
        if eps is not None:
            config["image_encoder"][DECODER_LAYER_NORM_EPS_OPTION] = eps
        lm = model.lm
        if embed_frozen == "always" or not model.config.freeze_lm or not _known_source(lm.source.get("weights")):
            lm.model.save_pretrained(tmp / "language_model")
            lm.require_tokenizer().save_pretrained(tmp / "language_model")
            config["language_model"] = {"name": config["language_model"]["name"],
                                        "weights": LOCAL_PREFIX + "language_model"}
        save_file(_dedupe_shared(state), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        config = {"model_type": "sca", "sca_version": _version(), **config,
                  RECORD_KEY: integrity.record_weight_files(tmp)}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")


def set_anything_defaults(directory: str | os.PathLike, values: dict[str, Any] | None) -> dict[str, Any]:
    """Write a checkpoint's anything-mode defaults (``SCAConfig.anything``; None removes them) into
    its config.json, atomically, leaving its weights (and their recorded hashes) alone. Returns the
    new config."""
    from sca.models.config import check_anything_defaults

    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} is not a checkpoint folder: it has no {CONFIG_NAME}")
    config = json.loads(path.read_text())
    if config.get("model_type") != "sca":
        raise ValueError(f"{str(path)!r} is not an SCA config (model_type {config.get('model_type')!r})")
    if values is None:
        config.pop("anything", None)
    else:
        check_anything_defaults(values, "anything-mode defaults")
        config["anything"] = dict(values)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return config


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): clone the later ones."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def _version() -> str:
    from sca import __version__

    return __version__


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as is; anything else is a hub id, fetched with huggingface_hub (cached)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"checkpoint {str(path)!r} is a file; give the checkpoint folder (config.json + weights)")
    name = str(path_or_hub_id)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"checkpoint {name!r}: no such folder, and not a hub id of the form owner/name")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, revision=revision))


def _resolve_local(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    spec = dict(spec)
    weights = spec.get("weights")
    if isinstance(weights, str) and weights.startswith(LOCAL_PREFIX):
        spec["weights"] = str(root / weights[len(LOCAL_PREFIX):])
    return spec


def from_pretrained(
    path_or_hub_id: str | os.PathLike,
    *,
    model_class: type,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **config_overrides: Any,
):
    """Load an SCA checkpoint (this project's or the reference code's) from a folder or a hub id.

    dtype: every part's dtype (SCAConfig.dtype): None keeps the checkpoint's SCAConfig.dtype
        (float32 for the reference code's checkpoints, whatever their LM config's torch_dtype says).
    config_overrides: SCAConfig fields to change (e.g. ``language_model={...}`` to point at a local
    copy of the LM).
    model_class: the class to build (``SCAModel``; ``SCAModel.from_pretrained`` passes itself, so this
    module does not import the model it saves and loads)."""
    from sca.models.config import SCAConfig

    if dtype is not None:
        config_overrides["dtype"] = dtype
    root = resolve_checkpoint_dir(path_or_hub_id, revision)
    config_path = root / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"checkpoint folder {str(root)!r} has no {CONFIG_NAME}")
    raw = json.loads(config_path.read_text())
    if "mask_caption_decoder_config" in raw:
        model = load_reference_checkpoint(root, raw, model_class=model_class, **config_overrides)
        return model.to(device) if device is not None else model
    if raw.get("model_type") != "sca":
        raise ValueError(f"{str(config_path)!r} is not an SCA config (model_type {raw.get('model_type')!r})")
    weights_path = root / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"checkpoint folder {str(root)!r} has no {WEIGHTS_NAME}")
    if RECORD_KEY in raw:  # checkpoints saved before the record existed have none
        integrity.verify_weight_files(root, raw.pop(RECORD_KEY), config_path)
    state = integrity.read_weight_file(weights_path)
    for part in ("image_encoder", "language_model"):
        raw[part] = _resolve_local(raw[part], root)
        folder = raw[part].get("weights")
        if isinstance(folder, str) and folder.startswith(str(root)) and Path(folder).is_dir():
            integrity.check_weight_folder(Path(folder))  # readable and finite, named before transformers loads it
    raw.update(config_overrides)
    model = model_class(SCAConfig.from_dict(raw))
    _load_strict_subset(model, state, str(weights_path))
    return model.to(device) if device is not None else model


def _load_strict_subset(model, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``model``: every key must exist with its shape, and every trainable
    parameter must be given (frozen parts may come from elsewhere)."""
    own = model.state_dict()
    required = [k for k in model.trainable_state_dict() if not k.startswith("lm.")]
    check_keys(own, state, required, f"checkpoint {where!r}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


def _names(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def check_keys(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], required: Iterable[str], where: str,
               *, unmapped: Iterable[str] = (), rename=lambda k: k) -> None:
    """One ValueError naming every missing key (of ``required``), every unexpected key (in ``state``
    but not ``own``, plus ``unmapped`` names) and every shape mismatch, or nothing.

    rename: shows a key of ``own`` by its name in the file (e.g. the reference code's name)."""
    missing = [rename(k) for k in required if k not in state]
    unexpected = [rename(k) for k in state if k not in own] + list(unmapped)
    wrong = [f"{rename(k)}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in state.items() if k in own and v.shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatch(es): {'; '.join(wrong[:10])}" + (" ..." if len(wrong) > 10 else ""))
    if parts:
        raise ValueError(f"{where} does not fit the model it is loaded into: " + " | ".join(parts))


# ---------------------------------------------------------------------------------------------------
# The reference code's released checkpoints (xk-huang/segment-caption-anything)
# ---------------------------------------------------------------------------------------------------
# Facts read from the reference code (src/models/sca/modeling_sca_multitask_v2.py,
# configuration_sca.py): SAM submodules at top level with transformers' SAM names; the mixer is
# mask_decoder.additional_transformer (a SamTwoWayTransformer), the caption queries
# mask_decoder.caption_tokens (Embedding(num_caption_heads * num_caption_tokens, 256)), the
# projection language_project (Linear(256, H)), task tokens task_tokens (Embedding(2 * 6, H), row =
# task * 6 + i), the LM language_model (AutoModelForCausalLM). The whole model is saved.
REFERENCE_KEY_MAP = (
    ("mask_decoder.additional_transformer.", "mixer.transformer."),
    ("mask_decoder.caption_tokens.", "mixer.queries."),
    ("language_project.", "projection."),
    ("task_tokens.", "task_tokens."),
    ("language_model.", "lm.model."),
    ("vision_encoder.", "segmenter.sam.vision_encoder."),
    ("prompt_encoder.", "segmenter.sam.prompt_encoder."),
    ("mask_decoder.", "segmenter.sam.mask_decoder."),
    ("shared_image_embedding.", "segmenter.sam.shared_image_embedding."),
)


def map_reference_key(key: str) -> str | None:
    for old, new in REFERENCE_KEY_MAP:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def unmap_reference_key(key: str) -> str:
    """Our parameter name -> the reference code's (inverse of ``map_reference_key``)."""
    for old, new in REFERENCE_KEY_MAP:
        if key.startswith(new):
            return old + key[len(new):]
    return key


def reference_config(raw: dict[str, Any], root: Path):
    """SCAConfig equivalent of a reference config.json. The LM config's ``torch_dtype`` / ``dtype``
    (float16 in the released files) is dropped: SCAConfig.dtype (float32) builds every part."""
    from sca.models.config import SCAConfig

    dec = dict(raw["mask_caption_decoder_config"])
    heads = int(dec.get("num_caption_heads", 1) or 1)
    if heads != 1:
        raise ValueError(f"reference checkpoint uses num_caption_heads={heads}; only 1 (the released models) is supported")
    sam_decoder = {k: v for k, v in dec.items()
                   if k not in ("additional_num_hidden_layers", "num_caption_tokens", "num_caption_heads")}
    sam_config = {"vision_config": raw["vision_config"], "prompt_encoder_config": raw["prompt_encoder_config"],
                  "mask_decoder_config": sam_decoder}
    text = dict(raw["text_config"])
    tokenizer = str(root) if any((root / f).exists() for f in ("tokenizer.json", "vocab.json", "tokenizer.model")) else None
    if tokenizer is None and text.get("model_type") == "gpt2":
        from sca.models.lms import GPT2_TOKENIZER_DIR

        tokenizer = str(GPT2_TOKENIZER_DIR)
    lm_config = {k: v for k, v in text.items() if not k.startswith("_")
                 and k not in ("architectures", "transformers_version", "torch_dtype", "dtype")}
    return SCAConfig(
        image_encoder={"name": "sam", "sam_config": sam_config},
        language_model={"name": "causal-lm", "config": lm_config, "tokenizer": tokenizer},
        num_mixer_layers=int(dec["additional_num_hidden_layers"]),
        num_caption_queries=int(dec["num_caption_tokens"]),
        num_task_tokens=int(raw.get("num_task_tokens", 6)),
    )


def drop_recomputed_buffers(model, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Remove from ``state`` (in place) the tensors of buffers the current code recomputes instead of
    storing: keys ``model`` does not hold whose last two name parts are those of one of its
    non-persistent buffers (transformers 4.30's per-layer ``rotary_emb.inv_freq``; today one
    non-persistent ``model.rotary_emb.inv_freq``), or that match the LM's
    ``_keys_to_ignore_on_load_unexpected`` (GPT-2's old ``attn.bias`` masks). -> {pattern: keys}."""
    recomputed = {".".join(n.split(".")[-2:]) for n, _ in model.named_buffers() if n not in own}
    lm_patterns = sorted(getattr(model.lm.model, "_keys_to_ignore_on_load_unexpected", None) or ())
    dropped: dict[str, list[str]] = {}
    for key in [k for k in state if k not in own]:
        pattern = ".".join(key.split(".")[-2:])
        if pattern not in recomputed:
            rel = key.removeprefix("lm.model.")
            pattern = next((p for p in lm_patterns if rel != key and re.search(p, rel)), None)
        if pattern is not None:
            dropped.setdefault(pattern, []).append(key)
            del state[key]
    return dropped


def fill_tied(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str) -> list[str]:
    """Give every tied tensor of the model (names of one storage in ``own``, e.g. GPT-2's
    ``lm_head.weight`` = ``transformer.wte.weight``) the value the checkpoint stores under any of its
    names: safetensors files keep one name only. -> the names filled in."""
    groups: dict[tuple, list[str]] = {}
    for name, t in own.items():
        if t.numel() and t.device.type != "meta":
            groups.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), []).append(name)
    filled = []
    for names in groups.values():
        given = [n for n in names if n in state]
        if len(names) < 2 or not given:
            continue
        value = state[given[0]]
        for other in given[1:]:
            if state[other].shape != value.shape or not torch.equal(state[other], value):
                raise ValueError(f"{where}: {given[0]!r} and {other!r} are one tied tensor in the model, "
                                 "but the checkpoint gives them different values")
        for name in names:
            if name not in state:
                state[name] = value
                filled.append(name)
    return filled


def load_reference_checkpoint(root: Path, raw: dict[str, Any] | None = None, *, model_class: type,
                              **config_overrides: Any):
    """Load a checkpoint saved by the reference code into an SCAModel (all weights from the file).

    config_overrides: SCAConfig fields to change (e.g. ``dtype="bfloat16"``).
    Tensors of buffers today's transformers recomputes are dropped with a warning; tied weights
    stored once are tied; anything else that does not fit is one ValueError naming the file(s)."""
    from sca.models.config import SCAConfig

    root = Path(root)
    raw = raw if raw is not None else json.loads((root / CONFIG_NAME).read_text())
    config = reference_config(raw, root)
    if config_overrides:
        config = SCAConfig.from_dict({**config.to_dict(), **config_overrides})
    model = model_class(config)
    files = weight_files(root)
    where = "reference checkpoint " + ", ".join(repr(str(f)) for f in files)
    state: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in read_state_dict(root).items():
        new = map_reference_key(key)
        (unmapped.append(key) if new is None else state.__setitem__(new, value))
    own = model.state_dict()
    dropped = drop_recomputed_buffers(model, state, own)
    if dropped:
        import transformers

        logger.warning("%s: dropped %d tensor(s) of buffers that transformers %s recomputes and does not "
                       "load: %s", where, sum(map(len, dropped.values())), transformers.__version__,
                       "; ".join(f"{len(v)} x '*{p}' (e.g. {unmap_reference_key(v[0])})" for p, v in dropped.items()))
    fill_tied(own, state, where)
    check_keys(own, state, own, where, unmapped=unmapped, rename=unmap_reference_key)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model
