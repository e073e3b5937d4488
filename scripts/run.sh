#!/usr/bin/env bash
# The main job: set up the environment, then reproduce the embedded default pipeline with DVC
# (synthetic data -> tiny SAM -> small LM -> weak pretraining -> fine-tuning -> evaluation -> results/).
# A second run does nothing unless code, data or params.yaml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
SCA_SETUP_BROWSER=0 bash scripts/setup.sh   # the browser is for the tests only
export DVC_NO_ANALYTICS=1
export PATH="$PWD/.venv/bin:$PATH"   # the stages call papermill from the venv
[ -d .git ] || { echo "run.sh: not a git checkout (dvc needs one); clone the repository" >&2; exit 2; }
.venv/bin/dvc repro "$@"
.venv/bin/dvc metrics show runs/evaluate/metrics.json runs/segmenter/metrics.json
echo "run.sh: the tables and figures are in results/ (results.md, figures/); every figure in results/metrics.json"
