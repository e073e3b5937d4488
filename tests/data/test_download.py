"""Downloads against a local HTTP server on 127.0.0.1 (Range support, truncation, corruption, HTML
pages), safe archive extraction, ``fetch`` of a whole source, and the ``sca download`` command."""

import hashlib
import io
import os
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sca.data.download import (
    MANIFEST,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    extract_archive,
    fetch,
)
from sca.data.fixtures import write_vg, write_vg_glamm
from sca.data.readers import read_dataset
from sca.data.sources import RemoteFile, Source


class _State:
    def __init__(self):
        self.files, self.modes, self.requests, self.truncated = {}, {}, [], set()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        st = self.server.state
        rng = self.headers.get("Range")
        st.requests.append((self.path, rng))
        if self.path not in st.files:
            self.send_error(404, "Not Found")
            return
        data, mode = st.files[self.path], st.modes.get(self.path)
        if mode and mode.startswith("busy-") and len(st.requests) <= int(mode[5:]):
            self.send_error(503, "Service Unavailable")
            return
        if mode == "html":
            page = b"<html><body>Please confirm the download</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        start = 0
        if rng and mode != "no-range":
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate-once" and self.path not in st.truncated:
            st.truncated.add(self.path)
            self.wfile.write(body[: len(body) // 2])  # then the connection closes early
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _State()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


DATA = bytes(range(256)) * 1200  # 307,200 bytes
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


def test_download_verifies_and_renames(server, tmp_path):
    server.state.files["/f.bin"] = DATA
    dest = tmp_path / "sub" / "f.bin"
    stats = download_file(f"{server.base}/f.bin", dest, size=len(DATA), md5=MD5, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA and stats == {"size": len(DATA), "md5": MD5, "sha256": SHA}
    assert not (tmp_path / "sub" / "f.bin.part").exists()
    n = len(server.state.requests)
    download_file(f"{server.base}/f.bin", dest, sha256=SHA, progress=False)  # present and valid: no request
    assert len(server.state.requests) == n


def test_resume_from_a_partial_file(server, tmp_path):
    server.state.files["/f.bin"] = DATA
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(DATA[:100_000])
    download_file(f"{server.base}/f.bin", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/f.bin", "bytes=100000-")]


def test_cut_transfer_is_resumed_with_range(server, tmp_path):
    server.state.files["/f.bin"] = DATA
    server.state.modes["/f.bin"] = "truncate-once"
    dest = tmp_path / "f.bin"
    download_file(f"{server.base}/f.bin", dest, size=len(DATA), sha256=SHA, progress=False, backoff=0)
    assert dest.read_bytes() == DATA
    assert server.state.requests == [("/f.bin", None), ("/f.bin", f"bytes={len(DATA) // 2}-")]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.state.files["/f.bin"] = DATA
    server.state.modes["/f.bin"] = "no-range"
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 10)
    download_file(f"{server.base}/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_corrupted_file_names_both_hashes_and_leaves_nothing(server, tmp_path):
    bad = bytearray(DATA)
    bad[1234] ^= 0xFF
    server.state.files["/f.bin"] = bytes(bad)
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError) as err:
        download_file(f"{server.base}/f.bin", dest, sha256=SHA, progress=False)
    msg = str(err.value)
    assert "f.bin: sha256 mismatch" in msg and SHA in msg and hashlib.sha256(bad).hexdigest() in msg
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    with pytest.raises(ChecksumError, match=f"size mismatch: expected {len(DATA) + 1} bytes, got {len(DATA)}"):
        server.state.files["/g.bin"] = DATA
        download_file(f"{server.base}/g.bin", tmp_path / "g.bin", size=len(DATA) + 1, progress=False)
    assert not (tmp_path / "g.bin").exists()


def test_server_errors_are_retried_then_reported(server, tmp_path):
    server.state.files["/f.bin"] = DATA
    server.state.modes["/f.bin"] = "busy-2"  # two 503 answers, then the file
    download_file(f"{server.base}/f.bin", tmp_path / "f.bin", sha256=SHA, progress=False, backoff=0)
    assert (tmp_path / "f.bin").read_bytes() == DATA and len(server.state.requests) == 3
    server.state.modes["/g.bin"], server.state.files["/g.bin"] = "busy-99", DATA
    with pytest.raises(DownloadError, match=r"/g.bin: gave up after 3 attempts without progress \(HTTP 503"):
        download_file(f"{server.base}/g.bin", tmp_path / "g.bin", progress=False, retries=2, backoff=0)
    assert not (tmp_path / "g.bin").exists()


def test_http_errors_are_clear(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing.json: HTTP 404"):
        download_file(f"{server.base}/missing.json", tmp_path / "m.json", progress=False)
    server.state.files["/t.json"] = b"{}"
    server.state.modes["/t.json"] = "html"
    with pytest.raises(DownloadError, match="got an HTML page instead of t.json"):
        download_file(f"{server.base}/t.json", tmp_path / "t.json", progress=False)
    assert not (tmp_path / "t.json").exists()


# ---- archives ----------------------------------------------------------------------------------------------
def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _zip_symlink(path):
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)  # a symlink member, as `zip --symlinks` writes it
        zf.writestr(info, "/etc/passwd")
    return path


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("make, message", [
    (lambda p: _zip(p / "a.zip", {"ok.txt": b"1", "../evil.txt": b"x"}), "member '../evil.txt' has a '..'"),
    (lambda p: _zip(p / "a.zip", {"/tmp/sca_evil.txt": b"x"}), "member '/tmp/sca_evil.txt' has an absolute path"),
    (lambda p: _zip_symlink(p / "a.zip"), "member 'link' is a symlink (refused in zips)"),
    (lambda p: _tar(p / "a.tgz", [_file("ok.txt"), _link("etc", "/etc")]), "symlink 'etc' -> '/etc' points outside"),
    (lambda p: _tar(p / "a.tgz", [_link("d/up", "../../outside")]), "symlink 'd/up' -> '../../outside'"),
    (lambda p: _tar(p / "a.tgz", [_link("hl", "../secret", tarfile.LNKTYPE)]), "hard link 'hl'"),
    (lambda p: _tar(p / "a.tgz", [_file("a/../../evil.txt")]), "'..' component"),
])
def test_malicious_archives_are_refused_before_writing_anything(tmp_path, make, message):
    archive = make(tmp_path)
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=re.escape(message)):
        extract_archive(archive, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not os.path.exists("/tmp/sca_evil.txt")


def test_good_archives_extract_and_merge(tmp_path):
    target = tmp_path / "out"
    _zip(tmp_path / "a.zip", {"annotations/a.json": b"{}", "top.txt": b"t"})
    _tar(tmp_path / "b.tgz", [_file("annotations/b.json", b"[]"), _link("annotations/link.json", "b.json")])
    assert extract_archive(tmp_path / "a.zip", target) == ["annotations", "top.txt"]
    extract_archive(tmp_path / "b.tgz", target)
    assert sorted(p.name for p in (target / "annotations").iterdir()) == ["a.json", "b.json", "link.json"]
    assert (target / "annotations" / "link.json").read_bytes() == b"[]"
    assert not any(p.name.startswith(".extracting") for p in target.iterdir())
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(DownloadError, match="not a zip or tar archive"):
        extract_archive(tmp_path / "plain.txt", target)


# ---- fetch and the command line ------------------------------------------------------------------------------
def _vg_source(server, tmp_path):
    """A fake 'vg' source served by the local server: zipped fixture files, real checksums."""
    src_dir = write_vg(tmp_path / "upstream")
    zips = {}
    for name in ("region_descriptions.json", "image_data.json"):
        zips[name] = _zip(tmp_path / f"{name}.zip", {name: (src_dir / name).read_bytes()}).read_bytes()
        server.state.files[f"/{name}.zip"] = zips[name]
    server.state.files["/densecap_splits.json"] = (src_dir / "densecap_splits.json").read_bytes()
    img = io.BytesIO()
    with zipfile.ZipFile(img, "w") as zf:
        for p in sorted(src_dir.glob("VG_100K*/*.jpg")):
            zf.write(p, p.relative_to(src_dir).as_posix())
    server.state.files["/images.zip"] = img.getvalue()
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    files = [RemoteFile(f"{n}.zip", f"{server.base}/{n}.zip", sha256=sha(z), extract_to="", provides=(n,))
             for n, z in zips.items()]
    files.append(RemoteFile("densecap_splits.json", f"{server.base}/densecap_splits.json"))
    files.append(RemoteFile("images.zip", f"{server.base}/images.zip", "images", size=len(img.getvalue()),
                            extract_to="", provides=("VG_100K", "VG_100K_2")))
    return Source("vg-test", "fixture VG", tuple(files))


def test_fetch_a_source_then_read_it(server, tmp_path):
    source = _vg_source(server, tmp_path)
    root = tmp_path / "root"
    actions = fetch(source, root, progress=False, log=lambda m: None)
    assert set(actions.values()) == {"downloaded"}
    assert not list(root.glob("*.zip"))  # archives removed after unpacking
    recs = read_dataset("vg", root, "train")
    assert recs.num_regions == 7 and (root / recs[0].file_name).is_file()
    manifest = (root / MANIFEST).read_text()
    assert source.files[0].sha256 in manifest and '"extracted": true' in manifest
    n = len(server.state.requests)
    again = fetch(source, root, progress=False, log=lambda m: None)
    assert set(again.values()) == {"present"}  # unpacked content found; the plain json verified locally
    assert len(server.state.requests) == n


def test_fetch_from_a_local_copy(server, tmp_path):
    source = _vg_source(server, tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "region_descriptions.json.zip").write_bytes(server.state.files["/region_descriptions.json.zip"])
    (mine / "image_data.json").write_bytes((tmp_path / "upstream" / "image_data.json").read_bytes())  # unpacked
    (mine / "densecap_splits.json").write_bytes(server.state.files["/densecap_splits.json"])
    root = tmp_path / "root"
    actions = fetch(source, root, from_dir=mine, parts=("annotations",), log=lambda m: None)
    assert actions == {"region_descriptions.json.zip": "copied", "image_data.json.zip": "linked",
                       "densecap_splits.json": "copied"}
    assert server.state.requests == []
    assert (root / "image_data.json").is_symlink()
    assert read_dataset("vg", root, "val").num_regions == 1
    (mine / "region_descriptions.json.zip").write_bytes(b"not the right bytes")
    with pytest.raises(ChecksumError, match="--from copy of region_descriptions.json.zip"):
        fetch(source, tmp_path / "root2", from_dir=mine, parts=("annotations",), log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="neither images.zip nor its content \\['VG_100K', 'VG_100K_2'\\]"):
        fetch(source, tmp_path / "root3", from_dir=mine, parts=("images",), log=lambda m: None)
    with pytest.raises(ValueError, match="parts \\['masks'\\] are not among"):
        fetch(source, root, parts=("masks",))


def test_cli_download_with_mirror_list_and_dead_source(server, tmp_path, capsys):
    from sca.cli import main

    upstream = write_vg_glamm(tmp_path / "upstream")
    server.state.files["/test_caption.json"] = (upstream / "test_caption.json").read_bytes()
    root = tmp_path / "vg"
    assert main(["download", "vg-glamm", "--root", str(root), "--mirror", server.base + "/", "--no-progress"]) == 0
    assert (root / "test_caption.json").read_bytes() == server.state.files["/test_caption.json"]
    assert "downloaded test_caption.json" in capsys.readouterr().out
    assert main(["download", "vg-grit", "--root", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "train.json has no live download" in err and "--from DIR" in err
    assert main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    assert "md5:f4bbac642086de4f52a3fdda2de5fa2c" in out and "unpublished" in out and "dead" in out
