"""Verified, resumable, atomic downloads and safe archive extraction.

- ``download_file``: streams into ``<dest>.part`` (resumed with an HTTP Range request when a partial
  file exists or a transfer is cut), shows a tqdm bar, checks size / md5 / sha256 where known, and
  only then renames the part file to ``dest``. A mismatch deletes the part file and raises
  ``ChecksumError`` naming the file and both values: nothing is ever left at ``dest`` unverified.
- ``extract_archive``: zip and tar (gz/bz2/xz). Every member is checked before anything is written:
  absolute paths, ``..`` components, links pointing outside the target and device files are refused
  (``UnsafeArchiveError``). Members are unpacked into a temporary folder, then moved into place.
- ``fetch``: one source of ``sca.data.sources`` into a dataset root: download (or take the user's
  copies with ``from_dir``), verify, unpack, record sha256 in ``<root>/.sca-download.json``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm import tqdm

from sca.data.locate import AmbiguousFileError, FolderIndex
from sca.data.sources import PARTS, RemoteFile, Source, get_source

__all__ = ["ChecksumError", "DownloadError", "UnsafeArchiveError", "download_file", "extract_archive",
           "fetch", "file_digests", "verify_file"]

MANIFEST = ".sca-download.json"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class DownloadError(RuntimeError):
    """A download could not be completed (names the URL and what went wrong)."""


class ChecksumError(DownloadError):
    """A file's size or checksum differs from the expected value (names the file and both values)."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the target folder, or is a link/device file that is refused."""


def file_digests(path: Path, chunk: int = 1 << 22) -> dict[str, str]:
    """md5 and sha256 of a file in one read."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            md5.update(block)
            sha.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def verify_file(path: Path, *, name: str | None = None, size: int | None = None, md5: str | None = None,
                sha256: str | None = None) -> dict[str, str | int]:
    """Check size, then md5/sha256; return ``{"size", "md5", "sha256"}``. Raises ``ChecksumError``."""
    name = name or Path(path).name
    actual = Path(path).stat().st_size
    if size is not None and actual != size:
        raise ChecksumError(f"{name}: size mismatch: expected {size} bytes, got {actual} bytes")
    digests = file_digests(Path(path))
    for algo, expected in (("sha256", sha256), ("md5", md5)):
        if expected and digests[algo] != expected.lower():
            raise ChecksumError(f"{name}: {algo} mismatch: expected {expected.lower()}, got {digests[algo]}")
    return {"size": actual, **digests}


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urlsplit(url).hostname or ""
    if host in _LOOPBACK:  # never route loopback through a proxy from the environment
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _transfer(url: str, part: Path, *, size: int | None, timeout: float, chunk: int, progress: bool,
              desc: str) -> bool:
    """One HTTP request appending to ``part`` (Range from its current size). True when complete."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": "sca-download/0.1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = _opener(url).open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset and (size is None or offset == size):
            return True  # the part file already holds every byte
        if err.code == 416:
            part.unlink()
            return False
        if err.code >= 500 or err.code == 429:  # the server's trouble: worth another attempt
            raise ConnectionError(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    with resp:
        content_type = resp.headers.get("Content-Type", "")
        if content_type.startswith("text/html") and not desc.endswith((".html", ".htm")):
            raise DownloadError(f"{url}: got an HTML page instead of {desc} (a login or confirmation page?); "
                                f"download it in a browser and pass --from DIR")
        if offset and resp.status != 206:  # the server ignored the Range: start again
            offset = 0
        elif offset and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise DownloadError(f"{url}: asked for bytes {offset}- but got Content-Range "
                                f"{resp.headers.get('Content-Range')!r}")
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else size
        with open(part, "ab" if offset else "wb") as fh, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not progress, leave=False) as bar:
            while True:
                try:
                    block = resp.read(chunk)
                except (http.client.IncompleteRead, OSError):
                    break  # cut off: the caller resumes from what was written
                if not block:
                    break
                fh.write(block)
                bar.update(len(block))
            fh.flush()
            os.fsync(fh.fileno())
    got = part.stat().st_size
    return total is None or got >= total


def download_file(url: str, dest: str | Path, *, size: int | None = None, md5: str | None = None,
                  sha256: str | None = None, verify: bool = True, progress: bool = True, retries: int = 5,
                  backoff: float = 2.0, timeout: float = 60.0, chunk: int = 1 << 20) -> dict[str, str | int]:
    """Download ``url`` to ``dest`` (resumable, verified, atomic); returns ``{"size", "md5", "sha256"}``.

    An existing ``dest`` is verified and kept (``ChecksumError`` if it does not match: delete it to
    download again). ``retries`` counts consecutive attempts that made no progress.
    """
    dest = Path(dest)
    check = {"size": size, "md5": md5, "sha256": sha256} if verify else {}
    if dest.exists():
        try:
            return verify_file(dest, **check)
        except ChecksumError as err:
            raise ChecksumError(f"{err} (existing file {dest}; delete it to download again)") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            if _transfer(url, part, size=size, timeout=timeout, chunk=chunk, progress=progress, desc=dest.name):
                break
            error: Exception | None = None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            error = err
        progressed = part.exists() and part.stat().st_size > before
        failures = 0 if progressed else failures + 1
        if failures > retries:
            raise DownloadError(f"{url}: gave up after {retries + 1} attempts without progress"
                                + (f" ({error})" if error else "; the server keeps closing the connection"))
        if not progressed:
            time.sleep(backoff * failures)
    try:
        stats = verify_file(part, name=dest.name, **check)
    except ChecksumError as err:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{err} (downloaded from {url}); the file was deleted, nothing was written to "
                            f"{dest}") from None
    os.replace(part, dest)  # atomic on one filesystem
    return stats


# ---- archives --------------------------------------------------------------------------------------------
def _check_member(archive: Path, base: Path, name: str) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} has an absolute path")
    if ".." in posix.parts:
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} has a '..' component")
    if not (base / posix).resolve().is_relative_to(base):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} would be written outside {base}")


def _check_archive(archive: Path, base: Path) -> str:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_member(archive, base, info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is a symlink (refused in zips)")
        return "zip"
    if not tarfile.is_tarfile(archive):
        raise DownloadError(f"{archive}: not a zip or tar archive")
    with tarfile.open(archive) as tf:
        for m in tf.getmembers():
            _check_member(archive, base, m.name)
            if m.isdev():
                raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} is a device file or fifo")
            if m.issym() or m.islnk():
                link = PurePosixPath(m.linkname)
                target = base / link if m.islnk() else base / PurePosixPath(m.name).parent / link
                if link.is_absolute() or not Path(os.path.normpath(target)).is_relative_to(base):
                    kind = "hard link" if m.islnk() else "symlink"
                    raise UnsafeArchiveError(f"{archive.name}: {kind} {m.name!r} -> {m.linkname!r} points outside "
                                             f"the target folder")
    return "tar"


def _move_into(src: Path, dst: Path) -> None:
    """Move src into dst, merging folders that exist already."""
    if dst.is_dir() and src.is_dir() and not dst.is_symlink():
        for child in src.iterdir():
            _move_into(child, dst / child.name)
        src.rmdir()
    else:
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        os.replace(src, dst)


def extract_archive(archive: str | Path, target: str | Path) -> list[str]:
    """Unpack a zip or tar archive into ``target`` after checking every member; returns top-level names."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    base = target.resolve()
    kind = _check_archive(archive, base)
    tmp = base / f".extracting-{archive.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        for name in names:
            _move_into(tmp / name, base / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


# ---- one source into a dataset root ----------------------------------------------------------------------
def _load_manifest(root: Path) -> dict:
    path = root / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_manifest(root: Path, manifest: dict) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, root / MANIFEST)


def _present_layout(root: Path, f: RemoteFile, splits: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The first accepted layout of ``f``'s content that is complete in ``root``, if any."""
    for layout in f.layouts(splits):
        if layout and all((root / p).exists() for p in layout):
            return layout
    return None


def _link(target: Path, link: Path) -> None:
    if link.exists() or link.is_symlink():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def _copy_verified(cand: Path, dest: Path, f: RemoteFile, verify: bool) -> dict:
    """Hard-link (or copy) the user's file to ``dest`` through a part file, verified before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    try:
        os.link(cand, part)
    except OSError:
        shutil.copyfile(cand, part)
    check = {"size": f.size, "md5": f.md5, "sha256": f.sha256} if verify else {}
    try:
        stats = verify_file(part, name=f"{cand} (--from copy of {f.filename})", **check)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return stats


def _take_copy(index: FolderIndex, root: Path, src: Source, f: RemoteFile, splits: tuple[str, ...] | None,
               verify: bool, log: Callable[[str], None]) -> tuple[str, dict]:
    """Use the user's copy: the unpacked content in any accepted layout (linked), or the file itself
    (hard-linked or copied, then verified). Files are found by name when not where a layout puts them."""
    found_some: dict[str, Path] = {}
    if f.extract_to is None:  # a plain file: the file itself, wherever a layout keeps it, verified
        for rel in dict.fromkeys(p for layout in f.layouts(splits) for p in layout):
            path = index.locate(rel)
            if path is not None and path.is_file():
                return "copied", _copy_verified(path, root / f.filename, f, verify)
    for layout in f.layouts(splits) if f.extract_to is not None else ():
        located = {rel: index.locate(rel) for rel in layout}
        if layout and all(located.values()):
            for rel, path in located.items():
                _link(path, root / rel)
            for rel in f.optional if layout == f.layouts(splits)[0] else ():
                path = index.locate(rel)
                if path is not None:
                    _link(path, root / rel)
                else:
                    log(f"{f.filename}: {rel} is not in your copy ({index.where_looked(rel)}); what needs it will say so")
            return "linked", {"linked": {rel: str(p) for rel, p in located.items()}}
        found_some.update({rel: p for rel, p in located.items() if p is not None})
    cand = index.locate(f.filename)
    if cand is not None and cand.is_file():
        return "copied", _copy_verified(cand, root / f.filename, f, verify)
    layouts = f.layouts(splits)
    missing = [rel for rel in layouts[0] if rel not in found_some]
    have = f" (found: {', '.join(sorted(found_some))})" if found_some else ""
    accepted = "; ".join(src.layouts) if src.layouts else "the files as the source lists them"
    raise FileNotFoundError(
        f"{src.name} --from {index.base}: neither {f.filename} nor its content {list(layouts[0])} is there"
        f"{have}; missing {missing or list(layouts[0])}: {index.where_looked(missing[0] if missing else f.filename)}. "
        f"Accepted layouts: {accepted}")


def _settle(root: Path, f: RemoteFile, members: list[str], extract_to: Path) -> None:
    """After unpacking: a provided path the archive put one or more folders deeper (e.g. a patch tarball
    holding images/v1/patchN/) is moved to where the source expects it, when its name is unambiguous."""
    for rel in f.provides:
        want = root / rel
        if want.exists():
            continue
        hits = [p for m in members for p in [extract_to / m, *(extract_to / m).rglob(Path(rel).name)]
                if p.name == Path(rel).name and p != want]
        if len(hits) == 1:
            want.parent.mkdir(parents=True, exist_ok=True)
            os.replace(hits[0], want)
            parent = hits[0].parent
            while parent != extract_to and parent.is_relative_to(extract_to) and not any(parent.iterdir()):
                parent.rmdir()  # the folders the archive nested it in, now empty
                parent = parent.parent


def fetch(source: str | Source, root: str | Path, *, from_dir: str | Path | None = None,
          parts: tuple[str, ...] = PARTS, splits: tuple[str, ...] | list[str] | None = None, mirror: str | None = None,
          verify: bool = True, progress: bool = True, keep_archives: bool = False,
          log: Callable[[str], None] = print, **download_kw) -> dict[str, str]:
    """Fetch every file of ``source`` (a name in ``SOURCES`` or a ``Source``) whose part is in ``parts``
    and that one of ``splits`` needs (None: every split; files serving every split always count).

    from_dir: take the files (or their unpacked content, in any layout the source accepts, found by
        name where unambiguous) from this folder instead of the network.
    mirror: download ``<mirror>/<filename>`` instead of each file's URL.
    A file whose content is complete in root in any accepted layout is skipped, dead URL or not; a plain
    file already in root is verified. Archives are unpacked and then deleted unless ``keep_archives``.
    Returns ``{filename: "present" | "linked" | "copied" | "downloaded"}``.
    """
    src = get_source(source) if isinstance(source, str) else source
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"parts {sorted(unknown)} are not among {PARTS}")
    splits = tuple(splits) if splits is not None else None
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(root)
    index = FolderIndex(Path(from_dir)) if from_dir is not None else None
    actions: dict[str, str] = {}
    missing: list[tuple[str, str]] = []  # (filename, message) of files the --from copy lacks
    for f in src.files:
        if f.part not in parts or (splits is not None and f.split is not None and f.split not in splits):
            continue
        dest = root / f.filename
        layout = _present_layout(root, f, splits)
        done = manifest.get(f.filename, {}).get("extracted") and not f.provides
        if done or (layout is not None and (f.extract_to is not None or layout != (f.filename,))):
            actions[f.filename] = "present"
            continue
        if index is not None and not dest.is_file():
            try:
                action, stats = _take_copy(index, root, src, f, splits, verify, log)
            except AmbiguousFileError:
                raise
            except FileNotFoundError as err:
                missing.append((f.filename, str(err)))
                continue
            origin = str(from_dir)
            if action == "linked":
                actions[f.filename] = action
                log(f"{f.filename}: linked its content from {from_dir}")
                continue
        elif dest.is_file() and (f.status == "dead" or mirror is None and index is not None):
            log(f"{f.filename}: verifying the copy in {root}")
            check = {"size": f.size, "md5": f.md5, "sha256": f.sha256} if verify else {}
            stats, action, origin = verify_file(dest, **check), "present", str(dest)
        else:
            if f.status == "dead" and mirror is None:
                raise DownloadError(f"{src.name}: {f.filename} has no live download ({f.url} is dead: "
                                    f"{f.provenance}), and {dest} is not there. {src.notes}")
            origin = f"{mirror.rstrip('/')}/{f.filename}" if mirror else f.url
            action = "present" if dest.exists() else "downloaded"  # a present file is verified, not fetched
            log(f"{f.filename}: {'verifying' if dest.exists() else 'downloading'} {origin}")
            stats = download_file(origin, dest, size=f.size, md5=f.md5, sha256=f.sha256, verify=verify,
                                  progress=progress, **download_kw)
        entry = {"from": origin, **stats}
        if f.extract_to is not None:
            log(f"{f.filename}: unpacking into {root / f.extract_to}")
            entry["members"] = extract_archive(dest, root / f.extract_to)
            _settle(root, f, entry["members"], root / f.extract_to)
            entry["extracted"] = True
            if not keep_archives:
                dest.unlink()
        manifest[f.filename] = entry
        _save_manifest(root, manifest)
        actions[f.filename] = action
    if missing:
        more = f" ({len(missing)} files missing in all: {', '.join(n for n, _ in missing[:12])}" \
               f"{', ...' if len(missing) > 12 else ''})" if len(missing) > 1 else ""
        raise FileNotFoundError(missing[0][1] + more + ". What was found is in place: the same command without "
                                "--from downloads only what is missing")
    return actions
