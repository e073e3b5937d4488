"""``sca download``: fetch a dataset's files into a root folder, verified; ``--list`` shows the table.

    sca download --list
    sca download vg --root data/vg                   # annotations + images
    sca download coco --only annotations             # just the annotation zip
    sca download vg-grit --from ~/my_copies          # files you already have (or their unpacked content)
    sca download coco --split val --from ~/coco      # only what the val split needs
    sca download vg --mirror http://host/vg/         # <mirror>/<filename> instead of each URL
"""

from __future__ import annotations

import sys

from sca.data.sources import PARTS, SOURCES


def register(sub) -> None:
    p = sub.add_parser("download", help="download a dataset (verified, resumable) into a root folder",
                       description="Download a dataset's annotation and image files, verify them (size, md5, "
                                   "sha256 where known), unpack archives safely, record sha256 in "
                                   "<root>/.sca-download.json.")
    p.add_argument("name", nargs="?", choices=list(SOURCES), metavar="NAME",
                   help=f"what to download: {', '.join(SOURCES)}")
    p.add_argument("--root", help="dataset root (default: the reader table's root, e.g. data/vg)")
    p.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="use files you already have in DIR (archives, or their unpacked content) instead of downloading")
    p.add_argument("--only", choices=PARTS, help="only the annotations or only the images")
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="only the files this split needs (repeat for several; coco, o365, v3det: train, val; "
                        "vg-grit: train, test); files that serve every split are always fetched")
    p.add_argument("--mirror", metavar="URL", help="download <URL>/<filename> instead of each file's own URL")
    p.add_argument("--keep-archives", action="store_true", help="keep zip/tar files after unpacking them")
    p.add_argument("--no-verify", action="store_true", help="skip size and checksum checks (not recommended)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="print the sources table (URLs, sizes, checksums) and exit")
    p.set_defaults(func=run)


def _default_root(name: str) -> str:
    from sca.data.readers import DATASETS

    roots = [spec.default_root for spec in DATASETS.values() if spec.download == name]
    return roots[0] if roots else f"data/{name}"


def print_table(out=None) -> None:
    out = out or sys.stdout  # bound at call time: a test capturing stdout may have replaced it
    for src in SOURCES.values():
        print(f"{src.name}: {src.summary}", file=out)
        for f in src.files:
            size = f"{f.size:,} B" if f.size else "size ?"
            print(f"  {f.filename:<40} {f.part:<11} {f.status:<10} {size:>20}  {f.checksum}", file=out)
            print(f"      {f.url}", file=out)
            print(f"      ({f.provenance})", file=out)
        if src.notes:
            print(f"  note: {src.notes}", file=out)
        for layout in src.layouts:
            print(f"  --from layout: {layout}", file=out)
        print(file=out)


def run(args) -> int:
    from sca.data.download import DownloadError, fetch

    if args.list:
        print_table()
        return 0
    if not args.name:
        print(f"sca download: error: give a NAME ({', '.join(SOURCES)}) or --list", file=sys.stderr)
        return 2
    root = args.root or _default_root(args.name)
    parts = (args.only,) if args.only else PARTS
    if args.splits:
        from sca.data.sources import get_source, source_splits

        known = source_splits(get_source(args.name))
        bad = [s for s in args.splits if s not in known]
        if bad:
            print(f"sca download: error: {args.name} has no split-specific files for {bad}; "
                  + (f"its splits: {known}" if known else "every one of its files serves all splits (omit --split)"),
                  file=sys.stderr)
            return 2
    try:
        actions = fetch(args.name, root, from_dir=args.from_dir, parts=parts, splits=args.splits, mirror=args.mirror,
                        verify=not args.no_verify, progress=not args.no_progress,
                        keep_archives=args.keep_archives, log=lambda msg: print(msg, file=sys.stderr))
    except (DownloadError, FileNotFoundError) as err:
        print(f"sca download: error: {err}", file=sys.stderr)
        return 1
    for filename, action in actions.items():
        print(f"{action:<10} {filename}")
    print(f"{args.name}: {len(actions)} file(s) ready in {root}")
    return 0
