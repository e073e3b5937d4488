"""``sca models``: list what the registries hold."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered image encoders and language models")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--tiny", choices=["only", "hide"], help="show only / hide the tiny test entries")
    p.set_defaults(func=run)


def _rows(registry, tiny: str | None):
    for entry in registry.entries():
        if (tiny == "only" and not entry.tiny) or (tiny == "hide" and entry.tiny):
            continue
        kind = "tiny" if entry.tiny else ("paper" if entry.paper else "")
        yield {"registry": registry.name, "name": entry.name, "kind": kind, "summary": entry.summary}


def run(args) -> int:
    from sca.models import load_registries

    registries = load_registries()
    rows = [row for reg in registries for row in _rows(reg, args.tiny)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for reg in registries:
        print(f"{reg.name}s ({len(reg)}): {reg.contract}")
        for row in rows:
            if row["registry"] == reg.name:
                print(f"  {row['name']:<28} {row['kind']:<6} {row['summary']}")
        print()
    return 0
