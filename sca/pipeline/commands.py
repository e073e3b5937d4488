"""``sca sweep NAME``: run one ablation sweep of ``params.yaml`` (``ablations.sweeps.NAME``).

Each variant runs the pretraining (shared between variants that agree on it), fine-tuning and
evaluation notebooks with papermill under ``runs/ablations/NAME/<variant>/``; finished variants are
skipped, so an interrupted sweep continues. Prints one JSON row per finished variant.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run an ablation sweep of params.yaml with papermill")
    p.add_argument("name", help="a sweep under ablations.sweeps in the params file")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--list", action="store_true", help="list the sweep's variants without running them")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from sca.pipeline.params import load_params
    from sca.pipeline.sweep import plan_sweep, run_sweep

    if not Path(args.params).is_file():
        print(f"sca sweep: params file {args.params!r} does not exist", file=sys.stderr)
        return 2
    params = load_params(args.params)
    sweeps = sorted(params.get("ablations", {}).get("sweeps", {}))
    if args.name not in sweeps:
        print(f"sca sweep: no sweep {args.name!r} in {args.params}; known: {', '.join(sweeps) or 'none'}",
              file=sys.stderr)
        return 2
    if args.list:
        for plan in plan_sweep(params, args.name):
            print(json.dumps({"name": plan["name"], "variant": plan["variant"], "folder": plan["folder"]}))
        return 0
    for row in run_sweep(args.params, args.name):
        print(json.dumps(row))
    return 0
