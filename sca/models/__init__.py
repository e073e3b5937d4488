"""SCA models: promptable segmenters, language models, the text feature mixer and the captioner."""

from __future__ import annotations


def load_registries():
    """Import every module that registers entries; return (IMAGE_ENCODERS, LANGUAGE_MODELS)."""
    from sca.models import lms, segmenters  # noqa: F401  (registration side effects)
    from sca.registry import IMAGE_ENCODERS, LANGUAGE_MODELS

    return IMAGE_ENCODERS, LANGUAGE_MODELS
