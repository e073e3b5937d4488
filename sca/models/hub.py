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
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LOCAL_PREFIX = "./"  # part weights relative to the checkpoint folder

__all__ = ["from_pretrained", "load_reference_checkpoint", "resolve_checkpoint_dir", "save_pretrained"]


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
    from sca.models.segmenters.base import SamSegmenter

    config = model.config.to_dict()
    state = {k: v.contiguous() for k, v in model.trainable_state_dict().items() if not k.startswith("lm.")}
    with _atomic_dir(Path(directory)) as tmp:
        seg = model.segmenter
        if embed_frozen == "always" or not _known_source(seg.source.get("weights")):
            name = config["image_encoder"]["name"]
            if isinstance(seg, SamSegmenter) and isinstance(seg.sam.vision_encoder, PreTrainedModel):
                seg.sam.save_pretrained(tmp / "image_encoder")
                config["image_encoder"] = {"name": name, "weights": LOCAL_PREFIX + "image_encoder"}
            else:
                # A composed segmenter (e.g. TinyViT or a backbone in front of SAM's decoder): its
                # structure is set by its options; its weights go with the others.
                config["image_encoder"] = {**config["image_encoder"], "weights": None}
                state.update({f"segmenter.{k}": v.contiguous() for k, v in seg.state_dict().items()})
        lm = model.lm
        if embed_frozen == "always" or not model.config.freeze_lm or not _known_source(lm.source.get("weights")):
            lm.model.save_pretrained(tmp / "language_model")
            lm.require_tokenizer().save_pretrained(tmp / "language_model")
            config["language_model"] = {"name": config["language_model"]["name"],
                                        "weights": LOCAL_PREFIX + "language_model"}
        config = {"model_type": "sca", "sca_version": _version(), **config}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        save_file(_dedupe_shared(state), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})


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
    revision: str | None = None,
    device: str | torch.device | None = None,
    **config_overrides: Any,
):
    """Load an SCA checkpoint (this project's or the reference code's) from a folder or a hub id.

    config_overrides: SCAConfig fields to change (e.g. ``language_model={...}`` to point at a local
    copy of the LM)."""
    from sca.models.captioner import SCAModel
    from sca.models.config import SCAConfig

    root = resolve_checkpoint_dir(path_or_hub_id, revision)
    config_path = root / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"checkpoint folder {str(root)!r} has no {CONFIG_NAME}")
    raw = json.loads(config_path.read_text())
    if "mask_caption_decoder_config" in raw:
        model = load_reference_checkpoint(root, raw)
        return model.to(device) if device is not None else model
    if raw.get("model_type") != "sca":
        raise ValueError(f"{str(config_path)!r} is not an SCA config (model_type {raw.get('model_type')!r})")
    raw["image_encoder"] = _resolve_local(raw["image_encoder"], root)
    raw["language_model"] = _resolve_local(raw["language_model"], root)
    raw.update(config_overrides)
    model = SCAModel(SCAConfig.from_dict(raw))
    weights_path = root / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"checkpoint folder {str(root)!r} has no {WEIGHTS_NAME}")
    _load_strict_subset(model, load_file(str(weights_path)), str(weights_path))
    return model.to(device) if device is not None else model


def _load_strict_subset(model, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``model``: every key must exist with its shape, and every trainable
    parameter must be given (frozen parts may come from elsewhere)."""
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        raise ValueError(f"{where}: {len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{where}: shape mismatch (key, file, model): {wrong[:5]}")
    missing = sorted(k for k in model.trainable_state_dict() if k not in state and not k.startswith("lm."))
    if missing:
        raise ValueError(f"{where}: {len(missing)} trained parameter(s) missing, e.g. {missing[:5]}")
    model.load_state_dict(state, strict=False)


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


def read_state_dict(root: Path) -> dict[str, torch.Tensor]:
    """The weights of a transformers checkpoint folder: safetensors (single or sharded) or
    pytorch_model.bin (single or sharded), the latter read with weights_only=True (no code runs)."""
    for index_name, loader in (("model.safetensors.index.json", load_file),
                               ("pytorch_model.bin.index.json", _torch_load_safe)):
        index = root / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(loader(str(root / shard)))
            return state
    if (root / "model.safetensors").is_file():
        return load_file(str(root / "model.safetensors"))
    if (root / "pytorch_model.bin").is_file():
        return _torch_load_safe(str(root / "pytorch_model.bin"))
    raise FileNotFoundError(f"{str(root)!r} holds no model.safetensors or pytorch_model.bin (sharded or not)")


def _torch_load_safe(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def reference_config(raw: dict[str, Any], root: Path):
    """SCAConfig equivalent of a reference config.json."""
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
    lm_config = {k: v for k, v in text.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
    return SCAConfig(
        image_encoder={"name": "sam", "sam_config": sam_config},
        language_model={"name": "causal-lm", "config": lm_config, "tokenizer": tokenizer},
        num_mixer_layers=int(dec["additional_num_hidden_layers"]),
        num_caption_queries=int(dec["num_caption_tokens"]),
        num_task_tokens=int(raw.get("num_task_tokens", 6)),
    )


def load_reference_checkpoint(root: Path, raw: dict[str, Any] | None = None):
    """Load a checkpoint saved by the reference code into an SCAModel (all weights from the file)."""
    from sca.models.captioner import SCAModel

    raw = raw if raw is not None else json.loads((root / CONFIG_NAME).read_text())
    model = SCAModel(reference_config(raw, root))
    state = {}
    unmapped = []
    for key, value in read_state_dict(root).items():
        new = map_reference_key(key)
        (unmapped.append(key) if new is None else state.__setitem__(new, value))
    if unmapped:
        raise ValueError(f"reference checkpoint {str(root)!r}: unknown parameter names {unmapped[:5]}")
    own = model.state_dict()
    # SAM's tied positional embedding may be stored under one name only.
    tied = "segmenter.sam.prompt_encoder.shared_embedding.positional_embedding"
    if tied not in state and "segmenter.sam.shared_image_embedding.positional_embedding" in state:
        state[tied] = state["segmenter.sam.shared_image_embedding.positional_embedding"]
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"reference checkpoint {str(root)!r}: {len(missing)} missing parameter(s), e.g. {missing[:5]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model
