"""The `sca` command line."""

import json
import subprocess
import sys

import pytest

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


# ---------------------------------------------------------------------------------------------------
# Start-up: help and rejected arguments answer without the heavy libraries.
# ---------------------------------------------------------------------------------------------------
HEAVY = ("torch", "transformers", "gradio", "timm", "open_clip", "matplotlib")


def _run_importtime(argv: list[str], cwd) -> tuple[int, list[str], set[str]]:
    """``python -X importtime -m sca.cli ARGV`` -> (exit code, stderr lines without the import
    timings, top-level packages imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "sca.cli", *argv], capture_output=True,
                          text=True, cwd=cwd, timeout=120)
    lines, imported = [], set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[1].strip().split(".")[0])
        elif line.strip():
            lines.append(line)
    return done.returncode, lines, imported


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("cli-startup")
    Image.new("RGB", (40, 30), (10, 200, 30)).save(root / "picture.png")
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image\n")
    (root / "out").mkdir()
    ckpt = root / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")  # looks like a checkpoint; never loaded by these calls
    return root


@pytest.mark.parametrize("argv", [["--help"], ["caption", "--help"], ["everything", "--help"], ["demo", "--help"]])
def test_help_imports_no_heavy_library(argv, files):
    code, _, imported = _run_importtime(argv, files)
    assert code == 0
    assert not imported & set(HEAVY), f"sca {' '.join(argv)} imported {sorted(imported & set(HEAVY))}"


@pytest.mark.parametrize(("argv", "message"), [
    (["caption", "empty.png", "--box", "0", "0", "5", "5"], "empty.png: the file is empty (0 bytes)"),
    (["caption", "text.png", "--box", "0", "0", "5", "5"], "image_corrupt: text.png: UnidentifiedImageError"),
    (["caption", "missing.png", "--box", "0", "0", "5", "5"], "image_missing: missing.png: no such file"),
    (["caption", "picture.png", "--box", "0", "0", "5", "5", "--device", "cuda:99"], "--device 'cuda:99': "),
    (["caption", "picture.png", "--box", "0", "0", "5", "5", "--device", "gpu"], "--device 'gpu' is not a device"),
    (["caption", "picture.png", "--box", "0", "0", "5", "5", "--output", "out"], "--output 'out' is a folder"),
    (["caption", "picture.png", "--box", "0", "0", "5", "5", "--overlay", "o.txt"], "extension '.txt'"),
    (["caption", "picture.png", "--box", "0", "0", "41", "5"], "lies outside the 40x30 image"),
    (["caption", "picture.png", "--box", "0", "0", "5", "5", "--num-beams", "0"], "--num-beams must be >= 1, got 0"),
    (["everything", "picture.png", "--nms-iou", "2"], "--nms-iou must be in [-1, 1], got 2.0"),
    (["demo", "--port", "0"], "--port must be in [1, 65535], got 0"),
    (["demo", "--points-per-side", "65"], "--points-per-side must be in [1, 64], got 65"),
])
def test_rejected_arguments_answer_without_heavy_libraries(argv, message, files):
    code, err, imported = _run_importtime([*argv, "--checkpoint", "ckpt"], files)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"sca {argv[0]}: error: ") and message in err[0], err
    assert not imported & set(HEAVY), f"{argv} imported {sorted(imported & set(HEAVY))}"


def test_argparse_errors_are_one_line_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", "x.png", "--checkpoint", "c", "--box", "1", "2", "three", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sca caption: error: argument --box: invalid float value: 'three' (see `sca caption --help`)"]
