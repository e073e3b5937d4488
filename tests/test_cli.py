"""The `sca` command line."""

import json
import subprocess
import sys

from sca.cli import main


def test_sca_models_lists_registries(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "image encoders" in out and "language models" in out
    for name in ("sam-vit-h", "tiny-sam", "gpt2-large", "smollm2-135m", "tiny-gpt2"):
        assert name in out


def test_sca_models_json_and_tiny_filter(capsys):
    assert main(["models", "--json", "--tiny", "only"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["kind"] == "tiny" for r in rows)
    assert {r["registry"] for r in rows} == {"image encoder", "language model"}


def test_entry_point_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "sca.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("sca ")
