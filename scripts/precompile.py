"""Write the bytecode (.pyc) of every module a pipeline stage imports, once, at set-up.

Where ``PYTHONDONTWRITEBYTECODE`` is set (it is on the project's build machines) Python never caches
what it compiles, so every process that imports torch, transformers and the package compiles some
6,000 modules again: about 7 s of each notebook kernel, test subprocess and DataLoader worker that
does not fork (``python -c "import torch, transformers, sca.models.captioner"``: 13.2 s without the
cache, 6.2 s with site-packages compiled). Reading a cached .pyc is allowed under that setting; only
writing one on import is not. This imports what the stages import and compiles exactly the source
files that came in (compiling all 20,000 files of site-packages instead takes ~30 s on 2 cores).

    .venv/bin/python scripts/precompile.py          # scripts/setup.sh runs it
"""

from __future__ import annotations

import compileall
import importlib
import sys
import time

# What the stages' notebooks, the evaluation and the tests import (their heavy dependencies follow).
MODULES = (
    "torch", "torchvision", "transformers", "accelerate", "timm", "open_clip", "safetensors", "numpy", "PIL",
    "pycocoevalcap", "yaml", "dvclive", "papermill", "nbformat", "matplotlib.pyplot", "sklearn.linear_model",
    "sca.models.captioner", "sca.models.segmenters", "sca.models.lms", "sca.training.trainer", "sca.training.run",
    "sca.training.segmenter_stage", "sca.training.caption_lm", "sca.evaluation.run", "sca.evaluation.figures",
    "sca.pipeline.stages", "sca.pipeline.sweep", "sca.pipeline.results", "sca.data.synthetic", "sca.app.api",
    "sca.cli",
)


def main() -> int:
    start = time.perf_counter()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional extra that is not installed: nothing to cache
            print(f"precompile: skipped {name} ({type(exc).__name__}: {exc})", file=sys.stderr)
    done = failed = 0
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        # compile_file skips a file whose cached .pyc is up to date (a second set-up costs the imports only).
        if compileall.compile_file(path, quiet=2):
            done += 1
        else:
            failed += 1
    print(f"precompile: {done} modules cached ({failed} could not be) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
