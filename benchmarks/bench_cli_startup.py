"""Start-up time of the ``sca`` command: each command run N times in a fresh interpreter.

    .venv/bin/python benchmarks/bench_cli_startup.py                 # 5 runs of each command
    .venv/bin/python benchmarks/bench_cli_startup.py --runs 10 --checkpoint runs/finetune

Commands: ``sca --help``, ``sca caption --help``, three rejected calls of ``sca caption`` (an empty
image file, ``--device cuda:99``, ``--output`` that is a folder) and ``import sca.api``; with
``--checkpoint``, also a whole ``sca caption`` of a small picture (load + encode + caption). Prints
min / median wall seconds per command, its exit code, and whether torch / transformers were imported
(read from ``-X importtime``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "gradio", "timm", "open_clip", "matplotlib")


def _picture(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (96, 64), (120, 30, 200)).save(path)


def commands(folder: Path, checkpoint: str | None) -> dict[str, list[str]]:
    empty, picture, out_dir = folder / "empty.png", folder / "picture.png", folder / "out"
    empty.write_bytes(b"")
    _picture(picture)
    out_dir.mkdir(exist_ok=True)
    ckpt = checkpoint or str(folder / "no-checkpoint")
    cli = [sys.executable, "-m", "sca.cli"]
    box = ["--box", "0", "0", "10", "10"]
    runs = {
        "sca --help": [*cli, "--help"],
        "sca caption --help": [*cli, "caption", "--help"],
        "sca caption EMPTY-FILE (rejected)": [*cli, "caption", str(empty), "--checkpoint", ckpt, *box],
        "sca caption --device cuda:99 (rejected)": [*cli, "caption", str(picture), "--checkpoint", ckpt,
                                                    "--device", "cuda:99", *box],
        "sca caption --output FOLDER (rejected)": [*cli, "caption", str(picture), "--checkpoint", ckpt,
                                                   "--output", str(out_dir), *box],
        "python -c 'import sca.api'": [sys.executable, "-c", "import sca.api"],
    }
    if checkpoint:
        runs["sca caption (whole run)"] = [*cli, "caption", str(picture), "--checkpoint", checkpoint, *box,
                                           "--num-beams", "1", "--max-new-tokens", "3", "--no-progress",
                                           "--device", "cpu"]
    return runs


def imported(stderr: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` lines."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--checkpoint", help="also time a whole `sca caption` with this checkpoint")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'command':<42} {'min s':>7} {'median s':>9} {'exit':>5}  heavy imports")
        for name, argv in commands(Path(tmp), args.checkpoint).items():
            times, code, heavy = [], None, set()
            for _ in range(args.runs):
                t0 = time.perf_counter()
                done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                code, heavy = done.returncode, imported(done.stderr) & set(HEAVY)
            print(f"{name:<42} {min(times):>7.2f} {statistics.median(times):>9.2f} {code:>5}  "
                  f"{', '.join(sorted(heavy)) or '-'}")


if __name__ == "__main__":
    main()
