"""The registry type and the named registries: lookups, errors, contracts."""

import pytest

from sca.models import load_registries
from sca.registry import ContractError, Registry, UnknownNameError


def test_register_build_and_drop_none_options():
    reg = Registry("widget")

    @reg.register("box")
    def box(*, size: int = 3, colour: str = "red"):
        """A box."""
        return (size, colour)

    assert reg.build("box") == (3, "red")
    assert reg.build("box", size=5, colour=None) == (5, "red")
    assert reg.names() == ["box"] and "box" in reg
    assert reg.get("box").summary == "A box."
    with pytest.raises(TypeError, match=r"widget 'box' got unknown option\(s\) \['shape'\]"):
        reg.build("box", shape="round")
    with pytest.raises(ValueError, match="already holds 'box'"):
        reg.register("box")(box)


def test_unknown_name_names_registry_and_closest_entries():
    encoders, lms = load_registries()
    with pytest.raises(UnknownNameError) as err:
        encoders.build("sam-vit-hh")
    msg = str(err.value)
    assert "Unknown image encoder 'sam-vit-hh'" in msg
    assert "Closest: sam-vit-h" in msg
    with pytest.raises(UnknownNameError, match="Unknown language model 'gpt-2-large'.*Closest: gpt2-large"):
        lms.build("gpt-2-large")


def test_contract_is_checked():
    reg = Registry("image encoder", check=lambda part, name: __import__(
        "sca.models.segmenters.base", fromlist=["check_segmenter"]).check_segmenter(part, name))

    @reg.register("bogus")
    def bogus():
        return object()

    with pytest.raises(ContractError, match="image encoder 'bogus' returned object, not a Segmenter"):
        reg.build("bogus")


def test_every_registry_has_tiny_entries():
    for reg in load_registries():
        assert reg.names(tiny=True), f"{reg.name} registry has no tiny entry"


def test_paper_entries_are_registered():
    encoders, lms = load_registries()
    for name in ("sam-vit-b", "sam-vit-l", "sam-vit-h"):
        assert name in encoders
    for name in ("gpt2", "gpt2-large", "open-llama-3b-v2", "smollm2-135m", "causal-lm"):
        assert name in lms
