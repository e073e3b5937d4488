"""``sca sweep NAME`` and ``sca results``.

``sca sweep NAME``: run one ablation sweep of ``params.yaml`` (``ablations.sweeps.NAME``).

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
    register_results(sub)


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


# ---- sca results ---------------------------------------------------------------------------------------
def register_results(sub) -> None:
    p = sub.add_parser("results", help="write results/ (tables, figures, metrics) from a finished dvc repro",
                       description="Gather the pipeline's metrics into results/metrics.json, render results/results.md "
                                   "and the figures; --check compares a fresh run with the committed figures; "
                                   "--readme copies the tables into README.md's RESULTS block.")
    p.add_argument("--root", default=".", help="the repository (runs/ inside; default: .)")
    p.add_argument("--out", default="results", help="where to write (default: results)")
    p.add_argument("--check", metavar="COMMITTED",
                   help="a folder holding the committed metrics.json and results.md (e.g. from `git show "
                        "HEAD:results/...`): compare this run with them instead of writing; exit 1 naming every "
                        "figure not reproduced")
    p.add_argument("--readme", metavar="README", help="also fill this README's RESULTS block")
    p.set_defaults(func=run_results)


def run_results(args) -> int:
    import sys

    from sca.pipeline.results import check_results, gather, render, same_kernels, sync_readme, write_results

    if not Path(args.root, "runs").is_dir():
        print(f"sca results: {Path(args.root, 'runs')} does not exist: run `dvc repro` first", file=sys.stderr)
        return 2
    if args.check:
        committed = Path(args.check) / "metrics.json"
        if not committed.is_file():
            print(f"sca results: --check {args.check}: no metrics.json there", file=sys.stderr)
            return 2
        actual = gather(args.root)
        problems = check_results(json.loads(committed.read_text()), actual)
        table = Path(args.check) / "results.md"
        if not problems and table.is_file() and same_kernels(json.loads(committed.read_text()), actual) \
                and table.read_text() != render(actual):
            problems.append(f"results.md: the tables rendered from this run differ from {table}")
        for line in problems:
            print(f"NOT REPRODUCED {line}")
        print(f"sca results: {len(problems)} figure(s) differ from {committed}" if problems else
              f"sca results: every committed figure of {committed} reproduced")
        return 1 if problems else 0
    write_results(args.root, args.out)
    if args.readme:
        changed = sync_readme(args.readme, (Path(args.out) / "results.md").read_text())
        print(f"{args.readme}: RESULTS block {'updated' if changed else 'already current'}")
    print(f"wrote {args.out}/metrics.json, results.md, figures/")
    return 0
