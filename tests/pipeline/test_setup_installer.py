"""scripts/pip_config_for_uv.py: pip's configured package sources, handed on to uv by scripts/setup.sh."""

from __future__ import annotations

from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pip_config_for_uv.py"


def test_translates_sources_and_constraints_without_duplicates(load_file_module):
    listing = "\n".join([
        ":env:.find-links='/opt/wheels'",
        ":env:.cert='/etc/ssl/certs/ca.crt'",
        "global.constraint='/etc/xdg/pip/constraints.txt'",
        "global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'",
        "global.find-links='/opt/wheels'",
    ])
    assert load_file_module(SCRIPT).uv_arguments(listing) == [
        "--find-links", "/opt/wheels",
        "--constraint", "/etc/xdg/pip/constraints.txt",
        "--extra-index-url", "file:///opt/a/simple",
        "--extra-index-url", "file:///opt/b/simple",
    ]


def test_environment_index_url_overrides_the_files(load_file_module):
    listing = ":env:.index-url='https://mirror.example/simple'\nglobal.index-url='https://pypi.org/simple'"
    assert load_file_module(SCRIPT).uv_arguments(listing) == ["--index-url", "https://mirror.example/simple"]


def test_no_configuration_gives_no_arguments(load_file_module):
    assert load_file_module(SCRIPT).uv_arguments("") == []
    assert load_file_module(SCRIPT).uv_arguments("global.cert='/x'\nnot a config line") == []
