"""A small registry of named factories, and the project's named registries.

A registry maps a name to a factory (a function returning a built part). Parts are built from plain
config: ``REGISTRY.build("name", **options)``. Options that are ``None`` are dropped, so a config can
leave an option unset and get the factory's default. What a factory returns is checked against the
registry's written contract before it is handed out, so a new entry that breaks the contract fails
where it is built, not deep inside training.

Pattern after fvcore/detectron2's ``Registry`` and timm's ``register_model``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = [
    "IMAGE_ENCODERS",
    "LANGUAGE_MODELS",
    "ContractError",
    "Entry",
    "Registry",
    "UnknownNameError",
]


class UnknownNameError(KeyError):
    """Raised for a name a registry does not hold. Its message names the registry and the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ContractError(TypeError):
    """Raised when a factory returns something that breaks its registry's contract."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered factory.

    name: the registry key.
    factory: callable returning the part; keyword options only.
    tiny: a small random-weight variant for tests and the embedded default.
    paper: used in the paper's experiments (paper.md).
    summary: first line of the factory's docstring.
    """

    name: str
    factory: Callable[..., T]
    tiny: bool = False
    paper: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.splitlines()[0] if doc else ""

    def options(self) -> dict[str, Any]:
        """The factory's keyword options with their defaults (``inspect.Parameter.empty`` when required)."""
        sig = inspect.signature(self.factory)
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }


class Registry(Generic[T]):
    """Named factories of one kind of part.

    Args:
        name: used in error messages ("image encoder", "language model").
        contract: what every factory must return, in words (shown by ``sca models``).
        check: called on every built part; raises ``ContractError`` if the part breaks the contract.
            The project's registries get theirs from the module that defines the part's type
            (``set_check``), so this module imports nothing of the parts it holds.
    """

    def __init__(self, name: str, contract: str = "", check: Callable[[Any, str], None] | None = None):
        self.name = name
        self.contract = contract
        self._check = check
        self._entries: dict[str, Entry[T]] = {}

    def set_check(self, check: Callable[[Any, str], None]) -> None:
        """Install the contract check run on every built part."""
        self._check = check

    # -- registration -------------------------------------------------------------------------
    def register(
        self, name: str | None = None, *, tiny: bool = False, paper: bool = False, tags: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@REGISTRY.register("name")`` over a factory function."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__
            if key in self._entries:
                raise ValueError(f"{self.name} registry already holds {key!r}")
            self._entries[key] = Entry(key, factory, tiny=tiny, paper=paper, tags=tuple(tags))
            return factory

        return deco

    # -- lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._entries), n=4, cutoff=0.4)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise UnknownNameError(
                f"Unknown {self.name} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}."
            ) from None

    def build(self, name: str, **options: Any) -> T:
        """Build the part ``name`` with ``options`` (``None`` values dropped) and check the contract."""
        entry = self.get(name)
        options = {k: v for k, v in options.items() if v is not None}
        accepted = entry.options()
        takes_kwargs = any(
            p.kind == p.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values()
        )
        unknown = sorted(set(options) - set(accepted))
        if unknown and not takes_kwargs:
            raise TypeError(
                f"{self.name} {name!r} got unknown option(s) {unknown}; it accepts {sorted(accepted)}"
            )
        part = entry.factory(**options)
        if self._check is not None:
            self._check(part, name)
        return part

    def names(self, *, tiny: bool | None = None) -> list[str]:
        """Registered names, sorted; ``tiny=True/False`` filters on the tiny flag."""
        return sorted(n for n, e in self._entries.items() if tiny is None or e.tiny == tiny)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self)} entries)"


IMAGE_ENCODERS: Registry = Registry(
    "image encoder",
    contract=(
        "a sca.models.segmenters.Segmenter: a promptable segmenter (image encoder + SAM prompt encoder + "
        "mask decoder) with image_size, embedding_size, hidden_size, pixel_mean/std; encode(pixels "
        "[B,3,S,S]) -> features {'image_embeddings': [B,C,S/16,S/16], ...}; decode(features, prompts) -> "
        "SegmenterOutput(masks [B,R,M,4h,4w], iou_scores [B,R,M], tokens [B,R,T,C], image_tokens "
        "[B,R,h*w,C]) and image_positional_embeddings() -> [1,C,h,w]"
    ),
)

LANGUAGE_MODELS: Registry = Registry(
    "language model",
    contract=(
        "a sca.models.lms.LanguageModel: a decoder-only causal LM (transformers PreTrainedModel with "
        "get_input_embeddings and generate) with its tokenizer, hidden_size, eos/pad token ids and "
        "whether the tokenizer adds a BOS token"
    ),
)
