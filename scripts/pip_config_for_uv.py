"""Print, one per line, the uv arguments that reproduce pip's configured package sources.

uv ignores pip.conf and PIP_* variables. On machines whose packages come from local mirrors and
find-links directories (as on the project's build machines) uv would otherwise go to PyPI alone,
download several GB of CUDA wheels and miss pip's constraint files. `pip config list` reports
both the files and the environment (":env:." keys); each value is a Python string literal holding
one or more whitespace-separated entries. Used by scripts/setup.sh.
"""

from __future__ import annotations

import ast
import subprocess
import sys

# pip option -> uv option (uv pip install accepts each of these, repeated)
OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def uv_arguments(config_listing: str) -> list[str]:
    """Translate the output of `pip config list` into uv arguments, without duplicates."""
    pairs: list[tuple[str, str]] = []
    index_urls: list[tuple[bool, str]] = []  # (from the environment, url)
    for line in config_listing.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        option = OPTIONS.get(key.rsplit(".", 1)[-1].strip())
        if option is None:
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip().strip("'\"")
        entries = str(value).split()
        if option == "--index-url":
            index_urls += [(key.startswith(":env:"), entry) for entry in entries[:1]]
            continue
        for entry in entries:
            if (option, entry) not in pairs:
                pairs.append((option, entry))
    # One index URL: as in pip, PIP_INDEX_URL overrides the configuration files.
    if index_urls:
        pairs.append(("--index-url", sorted(index_urls, key=lambda item: item[0])[-1][1]))
    return [part for pair in pairs for part in pair]


def main() -> int:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    arguments = uv_arguments(listing)
    if arguments:  # nothing at all when pip has no configuration (an empty line would be an argument)
        print("\n".join(arguments))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
