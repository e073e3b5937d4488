"""sca.evaluation.metrics agrees exactly with pycocoevalcap called directly; SPICE is skipped without
its jars and never reaches the network; the no-Java fallback is flagged."""

from __future__ import annotations

import socket

import pytest

from sca.evaluation import metrics as M

# Region captions with what trips tokenisers: case, punctuation, quotes, clitics, brackets, non-ASCII,
# several references, an empty candidate and a punctuation-only one.
REFERENCES = {
    "img1#1": ["A red circle on the left.", "the red ball, left side", "red round shape"],
    "img1#2": ["man's blue hat (worn)", "a blue hat"],
    "img2#7": ['sign saying "STOP"', "a red stop sign", "stop sign on a pole"],
    "img2#8": ["white clouds in blue sky"],
    "img3#1": ["a café with tables outside", "cafe tables", "outdoor seating"],
    "img3#2": ["a dog that isn't sleeping", "brown dog"],
    "img4#5": ["green tree", "tree with green leaves", "a leafy tree"],
}
SYSTEMS = {
    "good": {"img1#1": "a red circle on the left", "img1#2": "a blue hat", "img2#7": "a red stop sign",
             "img2#8": "white clouds in the blue sky", "img3#1": "café tables outside", "img3#2": "a brown dog",
             "img4#5": "a green tree"},
    "poor": {"img1#1": "the", "img1#2": "", "img2#7": "sign sign sign", "img2#8": "...", "img3#1": "a dog",
             "img3#2": "tree", "img4#5": "blue sky!"},
}


def _direct(system: dict[str, str], meteor) -> dict[str, float]:
    """pycocoevalcap the way COCOEvalCap runs it (its PTBTokenizer, then each scorer)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": r} for r in refs] for k, refs in REFERENCES.items()})
    res = tok.tokenize({k: [{"caption": system[k]}] for k in REFERENCES})
    out = {}
    bleu, bleus = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"BLEU-{n + 1}"] = bleu[n]
    out["BLEU-4 per region"] = list(bleus[3])
    out["METEOR"], _ = meteor.compute_score(gts, res)
    out["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    out["CIDEr-D"], ciders = Cider().compute_score(gts, res)
    out["CIDEr-D per region"] = list(ciders)
    return out


@pytest.fixture(scope="module")
def scored(meteors):
    ours_meteor, direct_meteor = meteors
    ours = M.score_systems(SYSTEMS, REFERENCES, metrics=("BLEU", "METEOR", "ROUGE-L", "CIDEr-D"), per_region=True,
                           meteor=ours_meteor)
    direct = {name: _direct(system, direct_meteor) for name, system in SYSTEMS.items()}
    return ours, direct


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_every_figure_equals_pycocoevalcap(scored, system):
    ours, direct = scored
    raw = ours[system]["raw"]
    assert set(raw) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
    for name, value in raw.items():
        assert value == direct[system][name], name  # exact: same tokens, same scorers, same order
        assert ours[system]["scores"][name] == 100.0 * value
    per_region = ours[system]["per_region"]
    assert list(per_region) == list(REFERENCES)
    assert [per_region[k]["CIDEr-D"] for k in REFERENCES] == [100.0 * v for v in direct[system]["CIDEr-D per region"]]
    assert [per_region[k]["BLEU-4"] for k in REFERENCES] == [100.0 * v for v in direct[system]["BLEU-4 per region"]]
    assert ours[system]["tokenizer"] == "ptb" and ours[system]["comparable"] is True
    assert ours[system]["num_regions"] == len(REFERENCES)


def test_figures_are_informative(scored):
    ours, _ = scored
    good, poor = ours["good"]["scores"], ours["poor"]["scores"]
    for name in ("BLEU-1", "METEOR", "ROUGE-L", "CIDEr-D"):
        assert good[name] > poor[name] >= 0.0, name
    assert good["CIDEr-D"] > 100.0  # near-copies of the references
    assert "SPICE" not in ours["good"]["raw"] and ours["good"]["skipped"] == {}  # not asked for


def test_ptb_tokenizer_matches_and_survives_line_breaks():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = [r for refs in REFERENCES.values() for r in refs]
    direct = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    assert M.ptb_tokenize(sentences) == [direct[i][0] for i in range(len(sentences))]
    # A caption holding a line break must not shift every later caption (pycocoevalcap only handles \n).
    assert M.ptb_tokenize(["a red\rcircle", "two\u2028lines", "Last one."]) == ["a red circle", "two lines", "last one"]


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import pycocoevalcap.spice.spice as spice

    monkeypatch.setattr(spice, "get_stanford_models", refuse)  # the downloader must never be called


def test_spice_without_jars_is_skipped_offline(monkeypatch, tmp_path):
    _no_network(monkeypatch)
    (tmp_path / "spice-1.0.jar").write_bytes(b"")
    (tmp_path / "lib").mkdir()
    result = M.score_captions(SYSTEMS["good"], REFERENCES, metrics=("BLEU", "SPICE"), spice_dir=tmp_path)
    why = result["skipped"]["SPICE"]
    assert why.startswith("skipped: ") and "stanford-corenlp-3.6.0.jar" in why and str(tmp_path / "lib") in why
    assert "SPICE" not in result["scores"] and result["scores"]["BLEU-4"] > 0


def test_spice_status_looks_for_the_jars(tmp_path):
    ok, why = M.spice_status(tmp_path)
    assert not ok and "spice-1.0.jar" in why
    (tmp_path / "spice-1.0.jar").write_bytes(b"")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / M.SPICE_JARS[0]).write_bytes(b"")
    ok, why = M.spice_status(tmp_path)
    assert not ok and M.SPICE_JARS[1] in why and M.SPICE_JARS[0] not in why.split("(")[1].split(")")[0]
    (tmp_path / "lib" / M.SPICE_JARS[1]).write_bytes(b"")
    assert M.spice_status(tmp_path) == (True, "")


def test_without_java_falls_back_and_says_so(monkeypatch):
    monkeypatch.setattr(M, "java_available", lambda: (False, "no `java` on PATH"))
    result = M.score_captions(SYSTEMS["good"], REFERENCES)
    assert result["tokenizer"] == "simple" and result["comparable"] is False
    assert "NOT comparable" in result["note"]
    assert result["skipped"]["METEOR"] == "skipped: METEOR needs Java (no `java` on PATH)"
    assert "Java" in result["skipped"]["SPICE"]
    assert result["scores"]["CIDEr-D"] > 100.0
    with pytest.raises(RuntimeError, match="needs Java"):
        M.score_captions(SYSTEMS["good"], REFERENCES, tokenizer="ptb")


def test_simple_tokenizer_is_close_to_ptb_on_plain_phrases():
    sentences = [r for refs in REFERENCES.values() for r in refs]
    assert M.simple_tokenize(sentences) == M.ptb_tokenize(sentences)


def test_bad_inputs_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"unknown metric 'BLEURT'.*accepted"):
        M.score_captions(SYSTEMS["good"], REFERENCES, metrics=("BLEURT",))
    cands = dict(SYSTEMS["good"])
    del cands["img4#5"]
    cands["img9#9"] = "x"
    with pytest.raises(ValueError, match=r"same keys.*img4#5.*img9#9"):
        M.score_captions(cands, REFERENCES, metrics=("BLEU",))
    with pytest.raises(ValueError, match="non-empty list"):
        M.score_captions({"a": "x"}, {"a": []}, metrics=("BLEU",))
    with pytest.raises(TypeError, match="not str"):
        M.score_captions({"a": None}, {"a": ["x"]}, metrics=("BLEU",))
    assert M.score_captions({"a": "x y"}, {"a": ["x y"]}, metrics=("cider", "rouge_l"), tokenizer="simple")["raw"].keys() \
        == {"CIDEr-D", "ROUGE-L"}
