#!/usr/bin/env bash
# Refresh the environment lock that scripts/setup.sh installs from:
#   requirements/lock.txt         every package of sca[dev] with its version and sha256 hashes
#                                 (CPython 3.11, Linux x86_64, manylinux_2_28: the CI machines)
#   requirements/lock-nodeps.txt  packages installed without their declared dependencies
#   environment.yml               the conda equivalent, pinned to the same versions
#   bash scripts/lock.sh            keep the locked versions; add or drop what pyproject.toml changed
#   bash scripts/lock.sh --upgrade  take the newest versions pyproject.toml and constraints allow
# Needs the set-up's .venv (for uv). The package sources pip is configured with are used, as in set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || { echo "lock.sh: no .venv/bin/uv: run scripts/setup.sh first" >&2; exit 2; }
mapfile -t SOURCES < <(.venv/bin/python scripts/pip_config_for_uv.py)
COMMON=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --index-strategy unsafe-best-match --custom-compile-command "bash scripts/lock.sh" --quiet "$@")
.venv/bin/uv pip compile pyproject.toml --extra dev -c requirements/constraints.txt "${COMMON[@]}" \
  "${SOURCES[@]}" -o requirements/lock.txt
.venv/bin/uv pip compile requirements/nodeps.in --no-deps "${COMMON[@]}" "${SOURCES[@]}" -o requirements/lock-nodeps.txt
.venv/bin/python scripts/environment_yml.py > environment.yml.tmp && mv environment.yml.tmp environment.yml
echo "lock.sh: $(grep -c '^[A-Za-z0-9].*==' requirements/lock.txt) packages locked in requirements/lock.txt"
