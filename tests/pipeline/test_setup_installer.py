"""scripts/pip_config_for_uv.py: pip's configured package sources, handed on to uv by scripts/setup.sh."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pip_config_for_uv.py"


def _module():
    spec = importlib.util.spec_from_file_location("pip_config_for_uv", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_translates_sources_and_constraints_without_duplicates():
    listing = "\n".join([
        ":env:.find-links='/opt/wheels'",
        ":env:.cert='/etc/ssl/certs/ca.crt'",
        "global.constraint='/etc/xdg/pip/constraints.txt'",
        "global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'",
        "global.find-links='/opt/wheels'",
    ])
    assert _module().uv_arguments(listing) == [
        "--find-links", "/opt/wheels",
        "--constraint", "/etc/xdg/pip/constraints.txt",
        "--extra-index-url", "file:///opt/a/simple",
        "--extra-index-url", "file:///opt/b/simple",
    ]


def test_environment_index_url_overrides_the_files():
    listing = ":env:.index-url='https://mirror.example/simple'\nglobal.index-url='https://pypi.org/simple'"
    assert _module().uv_arguments(listing) == ["--index-url", "https://mirror.example/simple"]


def test_no_configuration_gives_no_arguments():
    assert _module().uv_arguments("") == []
    assert _module().uv_arguments("global.cert='/x'\nnot a config line") == []
