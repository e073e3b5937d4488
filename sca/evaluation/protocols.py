"""Evaluation protocols: named so that results of different protocols are never mixed (paper.md §5).

A protocol names the regions and references a figure is computed over. Its name is written into every
predictions record and every metrics JSON, and scoring or merging refuses files of another protocol.
Each protocol accepts region records of given ``ImageRecord.source`` values (the names the readers in
``sca.data.readers`` and ``sca.data.synthetic`` write):

    vg-full            source "vg" (DenseCap test split: all ~230K regions of 5K images; SCA, TAP)
    vg-sub             source "vg-glamm" (GLaMM's one region per image; GLaMM, ControlCap, DynRefer)
    vg-grit            source "vg-grit" (GRiT's preprocessed VG: long captions filtered, its own protocol)
    refcoco, refcoco-google, refcoco+, refcocog, refcocog-google   the refer splits (zero-shot REG):
                       RefCOCO unc / google, RefCOCO+ unc, RefCOCOg umd / google
    coco, o365, v3det  category names as references (weak supervision: recognition)
    synthetic-captions, synthetic-weak             the embedded synthetic splits
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PROTOCOLS", "Protocol", "ProtocolMismatchError", "check_same_protocol", "check_sources", "get_protocol",
           "protocol_for_source", "protocol_names"]


class ProtocolMismatchError(ValueError):
    """Predictions, references or metrics of one protocol were used as another's."""


@dataclass(frozen=True)
class Protocol:
    name: str
    sources: tuple[str, ...]  # ImageRecord.source values whose regions this protocol scores
    summary: str


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("vg-full", ("vg",), "Visual Genome, DenseCap test split, every ground-truth region (SCA, TAP)"),
    Protocol("vg-sub", ("vg-glamm",), "Visual Genome, GLaMM's one-region-per-image test split (GLaMM, DynRefer)"),
    Protocol("vg-grit", ("vg-grit",), "Visual Genome as preprocessed by GRiT (long captions filtered)"),
    Protocol("refcoco", ("refcoco",), "RefCOCO (unc) referring expressions, zero-shot REG"),
    Protocol("refcoco-google", ("refcoco-google",), "RefCOCO (google split) referring expressions, zero-shot REG"),
    Protocol("refcoco+", ("refcoco+",), "RefCOCO+ (unc) referring expressions, zero-shot REG"),
    Protocol("refcocog", ("refcocog",), "RefCOCOg (umd) referring expressions, zero-shot REG"),
    Protocol("refcocog-google", ("refcocog-google",), "RefCOCOg (google split) referring expressions, zero-shot REG"),
    Protocol("coco", ("coco",), "COCO instances, category names as references"),
    Protocol("o365", ("o365",), "Objects365 v2, category names as references"),
    Protocol("v3det", ("v3det",), "V3Det, category names as references"),
    Protocol("synthetic-captions", ("synthetic-captions",), "the embedded synthetic scenes, sentence captions"),
    Protocol("synthetic-weak", ("synthetic-weak",), "the embedded synthetic scenes, shape names"),
]}


def protocol_names() -> list[str]:
    return list(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; known protocols: {protocol_names()}")
    return PROTOCOLS[name]


def protocol_for_source(source: str) -> str:
    """The protocol that scores records of ``source`` ("vg" -> "vg-full", "vg-glamm" -> "vg-sub", ...)."""
    for p in PROTOCOLS.values():
        if source in p.sources:
            return p.name
    known = sorted(s for p in PROTOCOLS.values() for s in p.sources)
    raise ValueError(f"no evaluation protocol for record source {source!r}; known sources: {known}")


def check_sources(protocol: str, sources: Iterable[str]) -> None:
    """Raise ProtocolMismatchError if records of any of ``sources`` do not belong to ``protocol``
    (empty sources, from hand-made records, are accepted)."""
    p = get_protocol(protocol)
    bad = sorted({s for s in sources if s and s not in p.sources})
    if bad:
        raise ProtocolMismatchError(
            f"records of source(s) {bad} cannot be evaluated under protocol {protocol!r}, which takes sources "
            f"{list(p.sources)}; use protocol {protocol_for_source(bad[0])!r} for them")


def check_same_protocol(expected: str, found: str, what: str) -> None:
    """Raise ProtocolMismatchError unless ``found`` (the protocol of ``what``) is ``expected``."""
    get_protocol(expected)
    if found != expected:
        raise ProtocolMismatchError(
            f"{what} is protocol {found!r}, not {expected!r}: results of different protocols are never mixed "
            f"(known protocols: {protocol_names()})")
