"""Caption metrics with the COCO caption scorers (pycocoevalcap), as the paper reports them (paper.md §5).

``score_captions(candidates, references)`` scores one system; ``score_systems`` scores several against
the same references in one go (the references are tokenised once and one METEOR JVM serves every
system). Inputs are ``{key: candidate}`` and ``{key: [reference, ...]}`` over the same keys; the
references are the raw, untruncated ground-truth phrases.

Pipeline (the same as ``pycocoevalcap.eval.COCOEvalCap``): PTB tokenisation (Stanford CoreNLP's
PTBTokenizer, lower-cased, punctuation dropped; Java) of references and candidates, then
BLEU-1..4, METEOR 1.5 (Java), ROUGE-L, CIDEr-D (coco-caption's ``Cider`` is CIDEr-D: clipped n-gram
counts, Gaussian length penalty sigma 6, x10) and SPICE 1.0 (Java) when its Stanford CoreNLP 3.6.0
jars are present. SPICE's own set-up downloads those jars from nlp.stanford.edu on first use; this
module never calls it: when the jars are missing SPICE is reported as skipped, with the reason.

Result of one system::

    {"scores": {"BLEU-1": 60.0, ..., "CIDEr-D": 132.5},   # x100, as papers print them
     "raw": {"BLEU-1": 0.6, ..., "CIDEr-D": 1.325},         # what the scorers return
     "skipped": {"SPICE": "skipped: ..."},                   # metrics asked for but not computed
     "num_regions": N, "tokenizer": "ptb", "comparable": True,
     "per_region": {key: {"CIDEr-D": ..., ...}}}             # only with per_region=True (x100)

Without Java the PTB tokenizer is replaced by a pure-Python approximation and METEOR/SPICE are
skipped; the result then says ``"tokenizer": "simple", "comparable": False`` with a ``note``: such
figures are not comparable with published ones.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_METRICS", "METRICS", "MeteorScorer", "java_available", "pycocoevalcap_dir", "score_captions",
           "score_systems", "simple_tokenize", "spice_status"]

METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")  # what can be asked for
DEFAULT_METRICS = METRICS
_ALIASES = {"BLEU": "BLEU", "METEOR": "METEOR", "ROUGEL": "ROUGE-L", "ROUGE": "ROUGE-L", "CIDERD": "CIDEr-D",
            "CIDER": "CIDEr-D", "SPICE": "SPICE"}
# The punctuation tokens pycocoevalcap's PTBTokenizer drops (copied from tokenizer/ptbtokenizer.py).
PTB_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":",
                             "-", "--", "...", ";"])
# Characters Java's PTB lexer takes as line ends; a caption holding one would shift every later line.
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x85\u2028\u2029]")
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
NOT_COMPARABLE = ("computed without Java: a pure-Python tokenizer replaced the PTB tokenizer and METEOR/SPICE "
                  "were skipped; these figures are NOT comparable with published numbers (install Java: "
                  "apt-get install -y default-jre-headless)")


# ---------------------------------------------------------------------------------------------------
# Environment checks (no side effects, no network)
# ---------------------------------------------------------------------------------------------------
def pycocoevalcap_dir() -> Path:
    """The installed pycocoevalcap package folder (a namespace package: no ``__file__``)."""
    try:
        import pycocoevalcap
    except ImportError as err:  # pragma: no cover - it is a pipeline dependency
        raise ImportError("caption metrics need pycocoevalcap: pip install 'pycocoevalcap>=1.2'") from err
    return Path(next(iter(pycocoevalcap.__path__)))


@functools.lru_cache(maxsize=1)
def java_available() -> tuple[bool, str]:
    """(True, version line) when ``java -version`` runs, else (False, why)."""
    java = shutil.which("java")
    if java is None:
        return False, "no `java` on PATH"
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"`java -version` failed: {err}"
    if proc.returncode != 0:
        return False, f"`java -version` exited with {proc.returncode}: {proc.stderr.strip()[:200]}"
    return True, (proc.stderr or proc.stdout).strip().splitlines()[0]


def spice_status(spice_dir: str | os.PathLike | None = None) -> tuple[bool, str]:
    """(True, "") when SPICE can run offline, else (False, "skipped: <reason>").

    Looks for ``spice-1.0.jar`` and the Stanford CoreNLP 3.6.0 jars in ``spice_dir/lib`` (default:
    pycocoevalcap's ``spice`` folder) without calling ``get_stanford_models`` (which downloads)."""
    folder = Path(spice_dir) if spice_dir is not None else pycocoevalcap_dir() / "spice"
    ok, why = java_available()
    if not ok:
        return False, f"skipped: SPICE needs Java ({why})"
    if not (folder / "spice-1.0.jar").is_file():
        return False, f"skipped: spice-1.0.jar not found in {folder}"
    missing = [j for j in SPICE_JARS if not (folder / "lib" / j).is_file()]
    if missing:
        return False, (f"skipped: SPICE needs Stanford CoreNLP 3.6.0 ({', '.join(missing)}) in {folder / 'lib'}; "
                       "pycocoevalcap would download it from nlp.stanford.edu on first use, which sca never does. "
                       "On a machine with network run `python -m pycocoevalcap.spice.get_stanford_models` "
                       "(or copy the two jars there), then re-score.")
    return True, ""


# ---------------------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------------------
def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """Stanford PTBTokenizer exactly as pycocoevalcap's ``PTBTokenizer.tokenize`` runs it (same jar,
    ``-preserveLines -lowerCase``, same punctuation dropped), one output per input sentence. The
    input file goes to the system temp folder (pycocoevalcap writes it into its package folder)."""
    jar = pycocoevalcap_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    text = "\n".join(_LINE_BREAKS.sub(" ", s) for s in sentences)
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as fh:
        fh.write(text.encode())
    try:
        out = subprocess.run(["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                              "-lowerCase", fh.name], capture_output=True, check=True).stdout.decode()
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"PTB tokenizer failed ({err.returncode}): {err.stderr.decode()[-500:]}") from None
    finally:
        os.unlink(fh.name)
    lines = out.split("\n")
    if len(lines) < len(sentences):
        raise RuntimeError(f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATION) for line in lines[: len(sentences)]]


_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}  # PTB's names
_SIMPLE_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,]\d+)*|\w+(?:-\w+)*|[^\w\s]", re.UNICODE)


def simple_tokenize(sentences: Sequence[str]) -> list[str]:
    """A pure-Python stand-in for the PTB tokenizer (lower-case, clitics split, punctuation dropped).
    Close to PTB on plain phrases but not identical: only for machines without Java, flagged."""
    out = []
    for s in sentences:
        s = s.lower().replace("n't", " n't")
        tokens = (_BRACKETS.get(t, t) for t in _SIMPLE_TOKEN.findall(s))
        out.append(" ".join(t for t in tokens if t not in PTB_PUNCTUATION and t not in ('"', "'")))
    return out


# ---------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------
def _canonical(metrics: Iterable[str]) -> list[str]:
    out = []
    for m in metrics:
        key = _ALIASES.get(str(m).upper().replace("-", "").replace("_", ""))
        if key is None:
            raise ValueError(f"unknown metric {m!r}; accepted: {list(METRICS)}")
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError(f"no metric asked for; accepted: {list(METRICS)}")
    return out


def _check_inputs(name: str, candidates: Mapping[Any, str], references: Mapping[Any, Sequence[str]]) -> None:
    if not references:
        raise ValueError("no regions to score: references is empty")
    missing = [k for k in references if k not in candidates]
    extra = [k for k in candidates if k not in references]
    if missing or extra:
        raise ValueError(f"system {name!r}: candidates and references must have the same keys; "
                         f"{len(missing)} without candidate (e.g. {missing[:3]}), {len(extra)} without references "
                         f"(e.g. {extra[:3]})")
    for k, c in candidates.items():
        if not isinstance(c, str):
            raise TypeError(f"system {name!r}: candidate of {k!r} is {type(c).__name__}, not str: {c!r}")


def _check_references(references: Mapping[Any, Sequence[str]]) -> None:
    for k, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence) or not refs:
            raise ValueError(f"references of {k!r} must be a non-empty list of str, got {refs!r}")
        if not all(isinstance(r, str) for r in refs):
            raise TypeError(f"references of {k!r} must all be str, got {refs!r}")


class MeteorScorer:
    """pycocoevalcap's METEOR 1.5 process. Its JVM takes 6-30 s to load the paraphrase tables, so it
    starts at construction (while the caller tokenises) and can serve several ``score_systems`` calls:
    ``with MeteorScorer() as m: score_systems(..., meteor=m)``. ``close()`` ends the process.
    scorer: an already running ``pycocoevalcap.meteor.meteor.Meteor`` to wrap (METEOR's ``-stdio``
    mode scores every SCORE line on its own, so one process can serve any number of callers)."""

    def __init__(self, scorer=None):
        if scorer is None:
            from pycocoevalcap.meteor.meteor import Meteor

            scorer = Meteor()  # Popen: the JVM starts loading now
        self.scorer = scorer

    def compute_score(self, gts, res):
        if self.scorer.meteor_p.poll() is not None:
            raise RuntimeError(f"the METEOR process has exited (code {self.scorer.meteor_p.returncode})")
        return self.scorer.compute_score(gts, res)

    def close(self) -> None:
        p = self.scorer.meteor_p
        if p.poll() is None:
            p.stdin.close()
            p.kill()
            p.wait()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def score_systems(systems: Mapping[str, Mapping[Any, str]], references: Mapping[Any, Sequence[str]], *,
                  metrics: Iterable[str] = DEFAULT_METRICS, per_region: bool = False,
                  tokenizer: str = "auto", spice_dir: str | os.PathLike | None = None,
                  meteor: MeteorScorer | None = None) -> dict[str, dict[str, Any]]:
    """Score every system ``{name: {key: candidate}}`` against ``references`` ``{key: [phrases]}``.

    metrics: any of ``METRICS`` ("BLEU" gives BLEU-1..4). tokenizer: "auto" (PTB when Java runs, else
    the flagged fallback), "ptb" (error without Java) or "simple". Keys keep the references' order.
    meteor: a running ``MeteorScorer`` to use (else one is started and closed here).
    Returns ``{name: result}`` (layout in the module docstring)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    wanted = _canonical(metrics)
    _check_references(references)
    for name, cands in systems.items():
        _check_inputs(name, cands, references)
    java, why = java_available()
    if tokenizer not in ("auto", "ptb", "simple"):
        raise ValueError(f"tokenizer {tokenizer!r} is not one of ('auto', 'ptb', 'simple')")
    if tokenizer == "ptb" and not java:
        raise RuntimeError(f"the PTB tokenizer needs Java: {why}; install default-jre-headless or use tokenizer='auto'")
    use_ptb = java and tokenizer != "simple"
    skipped: dict[str, str] = {}
    if "METEOR" in wanted and not java:
        skipped["METEOR"] = f"skipped: METEOR needs Java ({why})"
    if "SPICE" in wanted:
        ok, reason = spice_status(spice_dir)
        if not ok:
            skipped["SPICE"] = reason
    own_meteor = meteor is None and "METEOR" in wanted and "METEOR" not in skipped
    if own_meteor:
        meteor = MeteorScorer()
    elif "METEOR" not in wanted or "METEOR" in skipped:
        meteor = None
    try:
        keys = list(references)
        tok = ptb_tokenize if use_ptb else simple_tokenize
        # pycocoevalcap tokenises references and candidates in separate calls; so do we, to match it.
        flat = tok([r for k in keys for r in references[k]])
        gts: dict[int, list[str]] = {}
        it = iter(flat)
        for i, k in enumerate(keys):
            gts[i] = [next(it) for _ in references[k]]
        results = {}
        for name, cands in systems.items():
            res = {i: [c] for i, c in enumerate(tok([cands[k] for k in keys]))}
            raw, regional = {}, {}
            if "BLEU" in wanted:
                score, scores = Bleu(4).compute_score(gts, res, verbose=0)
                for n in range(4):
                    raw[f"BLEU-{n + 1}"], regional[f"BLEU-{n + 1}"] = score[n], scores[n]
            if meteor is not None:
                raw["METEOR"], regional["METEOR"] = meteor.compute_score(gts, res)
            if "ROUGE-L" in wanted:
                raw["ROUGE-L"], regional["ROUGE-L"] = Rouge().compute_score(gts, res)
            if "CIDEr-D" in wanted:
                raw["CIDEr-D"], regional["CIDEr-D"] = Cider().compute_score(gts, res)
            if "SPICE" in wanted and "SPICE" not in skipped:
                _run_spice(gts, res, raw, regional, skipped)
            results[name] = _result(raw, regional, skipped, keys, use_ptb, per_region)
        return results
    finally:
        if own_meteor:
            meteor.close()


def _run_spice(gts, res, raw, regional, skipped) -> None:
    from pycocoevalcap.spice.spice import Spice

    try:
        score, scores = Spice().compute_score(gts, res)  # jars checked present: no download happens
    except (subprocess.CalledProcessError, OSError) as err:
        skipped["SPICE"] = f"skipped: SPICE failed to run ({err})"
        return
    raw["SPICE"], regional["SPICE"] = score, [s["All"]["f"] for s in scores]


def _result(raw, regional, skipped, keys, use_ptb, per_region) -> dict[str, Any]:
    raw = {k: float(v) for k, v in raw.items()}
    out: dict[str, Any] = {
        "scores": {k: 100.0 * v for k, v in raw.items()},
        "raw": raw,
        "skipped": dict(skipped),
        "num_regions": len(keys),
        "tokenizer": "ptb" if use_ptb else "simple",
        "comparable": bool(use_ptb),
    }
    if not use_ptb:
        out["note"] = NOT_COMPARABLE
    if per_region:
        out["per_region"] = {k: {m: 100.0 * float(v[i]) for m, v in regional.items()} for i, k in enumerate(keys)}
    return out


def score_captions(candidates: Mapping[Any, str], references: Mapping[Any, Sequence[str]], *,
                   metrics: Iterable[str] = DEFAULT_METRICS, per_region: bool = False, tokenizer: str = "auto",
                   spice_dir: str | os.PathLike | None = None, meteor: MeteorScorer | None = None) -> dict[str, Any]:
    """Score one system: ``{key: candidate}`` against ``{key: [raw reference phrases]}``.
    See ``score_systems`` for the options and the module docstring for the result."""
    return score_systems({"model": candidates}, references, metrics=metrics, per_region=per_region,
                         tokenizer=tokenizer, spice_dir=spice_dir, meteor=meteor)["model"]
