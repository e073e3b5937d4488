"""Find a dataset's files in a folder laid out by somebody else (``sca download NAME --from DIR``).

People keep datasets in many layouts: the official archives unpacked in place, the reference code's
``annotations/`` folders, mmdetection's ``data/<name>/`` trees, the refer toolkit's
``data/images/mscoco/images/train2014``. ``FolderIndex`` lists a folder once (files and folders up to
``depth`` levels, without descending into folders of more than ``max_entries`` entries: image
folders), and ``locate(rel)`` finds the file or folder a source expects at ``rel``:

1. at ``DIR/rel`` exactly;
2. else by its name anywhere in the index, among the matches whose parent folders include every
   folder of ``rel`` that tells datasets or splits apart (all but ``LAYOUT_FOLDERS``: ``refcoco/`` in
   ``refcoco/instances.json``, ``val/`` in ``val/images/v1/patch3``), preferring those that share the
   most folder names with ``rel`` (``val/images/v1/patch3`` takes ``val/patch3``, never ``train/patch3``);
3. a tie between several best matches is refused (``AmbiguousFileError`` lists them): the user
   points ``--from`` at a narrower folder.

Nothing is guessed from partial names; every miss reports where it looked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = ["LAYOUT_FOLDERS", "AmbiguousFileError", "FolderIndex"]

# Folder names that only say how a copy is arranged, not which dataset or split a file belongs to.
LAYOUT_FOLDERS = frozenset({"annotations", "images", "v1", "v2"})


class AmbiguousFileError(FileNotFoundError):
    """A name matches several places equally well; the message lists them."""


@dataclass
class FolderIndex:
    """Names under ``base`` -> their paths relative to ``base`` (POSIX strings).

    depth: how many folder levels below ``base`` are listed (``base``'s own entries are level 1).
    max_entries: folders with more entries than this are recorded but not descended into.
    """

    base: Path
    depth: int = 5
    max_entries: int = 2000
    names: dict[str, list[str]] = field(default_factory=dict, init=False)
    not_descended: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        if not self.base.is_dir():
            raise FileNotFoundError(f"--from {self.base}: no such folder")
        self._scan(self.base, "", 1, set())

    def _scan(self, folder: Path, rel: str, level: int, seen: set[tuple[int, int]]) -> None:
        try:
            st = folder.stat()
            entries = list(os.scandir(folder))
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            return
        seen = seen | {(st.st_dev, st.st_ino)}
        if rel and len(entries) > self.max_entries:
            self.not_descended.append(rel)
            return
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            self.names.setdefault(entry.name, []).append(child)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir and level < self.depth:
                self._scan(Path(entry.path), child, level + 1, seen)

    def locate(self, rel: str) -> Path | None:
        """The path under ``base`` that holds what a source keeps at ``rel`` (see the module docstring);
        None when there is none. Raises ``AmbiguousFileError`` when the best matches tie."""
        exact = self.base / rel
        if exact.exists():
            return exact
        want = PurePosixPath(rel)
        parents = set(want.parent.parts)
        required = parents - LAYOUT_FOLDERS
        matches = [m for m in self.names.get(want.name, []) if required <= set(PurePosixPath(m).parent.parts)]
        if not matches:
            return None

        def score(path: str) -> int:
            return len(parents & set(PurePosixPath(path).parent.parts))

        best = max(score(m) for m in matches)
        top = [m for m in matches if score(m) == best]
        if len(top) > 1:
            listed = ", ".join(str(self.base / m) for m in sorted(top)[:6])
            raise AmbiguousFileError(f"{want.name}: found in {len(top)} places under {self.base} ({listed}); "
                                     f"pass --from the folder that holds the one to use")
        return self.base / top[0]

    def where_looked(self, rel: str) -> str:
        """One sentence for an error message: the exact path tried and the by-name search."""
        skipped = f"; folders with more than {self.max_entries} entries were not searched inside" \
            if self.not_descended else ""
        required = sorted(set(PurePosixPath(rel).parent.parts) - LAYOUT_FOLDERS)
        inside = f" inside a folder named {' and '.join(required)}" if required else ""
        return (f"looked for {self.base / rel} and for the name {PurePosixPath(rel).name!r}{inside} anywhere "
                f"under {self.base} (up to {self.depth} levels deep{skipped})")
