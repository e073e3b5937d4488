"""Checks of ``sca caption / everything / demo`` arguments that run before anything heavy is imported.

Every function raises ``ValueError`` (or ``FileNotFoundError``) with one line naming the flag, the bad
value and what is accepted; ``sca.cli.main`` prints it and exits with code 2. Only the standard
library, numpy and Pillow are used here, so a rejected call answers in well under a second. The
library validates again where it is authoritative (``sca.models.processor``, ``AnythingConfig``,
``Captioner``); these checks only make the command line fail early and clearly.

- devices: ``cpu``, ``cuda``, ``cuda:N``, ``mps``; CUDA is looked for through the driver library
  (``libcuda``) without torch, and confirmed with torch (``confirm_device``) before the model loads;
- output files: not a folder, in a folder that exists or can be made, writable, not the input image;
  pictures need an extension Pillow can write;
- the image: exists and its header decodes (``sca.data.images.image_size``);
- the checkpoint: a folder with ``config.json`` (or ``model/config.json``), or a hub id ``owner/name``;
- numbers in range, prompts inside the image (the same rules and wording as ``sca.models.processor``);
- the demo's address: the port is free on the host.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import re
import socket
import sys
from pathlib import Path

__all__ = ["DEVICES", "TASKS", "check_checkpoint", "check_device", "check_image", "check_output", "check_port",
           "check_prompts", "check_range", "confirm_device", "cuda_device_count", "resolve_task"]

DEVICES = "cpu, cuda, cuda:N (N = 0, 1, ...) or mps"
_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")
_TOLERANCE = 1e-3  # pixels, as sca.models.processor


def cuda_device_count() -> int:
    """CUDA devices the driver shows this process (CUDA_VISIBLE_DEVICES applies), without torch:
    0 when there is no driver library or it finds no device (torch cannot use CUDA then either)."""
    names = {"win32": ["nvcuda.dll"], "darwin": []}.get(sys.platform, ["libcuda.so.1", "libcuda.so"])
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def _parse_device(spec: str) -> tuple[str, int | None]:
    m = _DEVICE.fullmatch(spec.strip())
    if not m:
        raise ValueError(f"--device {spec!r} is not a device; use {DEVICES}")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def _cuda_message(spec: str, index: int | None, count: int) -> str | None:
    if count == 0:
        return f"--device {spec!r}: no CUDA device on this machine; use --device cpu (or leave --device out)"
    if index is not None and index >= count:
        return (f"--device {spec!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}")
    return None


def check_device(spec: str | None) -> None:
    """The device's name, and that it exists on this machine (None: the best available, always fine)."""
    if spec is None:
        return
    kind, index = _parse_device(spec)
    if kind == "cuda":
        message = _cuda_message(spec, index, cuda_device_count())
        if message:
            raise ValueError(message)
    elif kind == "mps" and sys.platform != "darwin":
        raise ValueError(f"--device {spec!r}: MPS (Apple GPUs) exists only on macOS; use --device cpu")
    elif kind == "cpu" and index not in (None, 0):
        raise ValueError(f"--device {spec!r}: there is one CPU device, cpu (or cpu:0)")


def confirm_device(spec: str | None) -> None:
    """``check_device`` with torch's own view (this torch build may lack CUDA or MPS support)."""
    if spec is None:
        return
    import torch

    kind, index = _parse_device(spec)
    if kind == "cuda":
        if torch.version.cuda is None:
            raise ValueError(f"--device {spec!r}: this torch build ({torch.__version__}) has no CUDA support; "
                             f"use --device cpu")
        message = _cuda_message(spec, index, torch.cuda.device_count() if torch.cuda.is_available() else 0)
        if message:
            raise ValueError(message)
    elif kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"--device {spec!r}: MPS is not available with this torch build and macOS; "
                             f"use --device cpu")


def _writable_folder(folder: Path, flag: str, value: str) -> None:
    """``folder`` exists as a writable folder, or its nearest existing ancestor is one (made later)."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag} {value!r}: {str(probe)!r} is a file, so it cannot hold the output")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {value!r}: the folder {str(probe)!r} is not writable")


def _picture_extensions() -> dict[str, str]:
    from PIL import Image

    Image.init()
    return {ext: fmt for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def check_output(value: str | None, flag: str, *, image: str | None = None, picture: bool = False,
                 other: tuple[str, str | None] | None = None) -> None:
    """An output file name: not a folder, writable, not the input ``image``, not the ``other``
    (flag, value) output; with ``picture``, an extension Pillow writes (.png, .jpg, ...)."""
    if value is None:
        return
    if value == "" or value.endswith(("/", os.sep)):
        raise ValueError(f"{flag} {value!r} is not a file name; give one such as out.{'png' if picture else 'json'}")
    path = Path(value).expanduser()
    if path.is_dir():
        raise ValueError(f"{flag} {value!r} is a folder; give a file name, e.g. "
                         f"{str(path / ('overlay.png' if picture else 'regions.json'))!r}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {value!r}: the file exists and is not writable")
    _writable_folder(path.parent, flag, value)
    resolved = path.resolve()
    if image is not None and resolved == Path(image).expanduser().resolve():
        raise ValueError(f"{flag} {value!r} is the input image; give another file name")
    if other is not None and other[1] is not None and resolved == Path(other[1]).expanduser().resolve():
        raise ValueError(f"{flag} and {other[0]} are the same file {value!r}; give two file names")
    if picture:
        extensions = _picture_extensions()
        if path.suffix.lower() not in extensions:
            common = [e for e in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif") if e in extensions]
            raise ValueError(f"{flag} {value!r}: cannot write a picture with extension {path.suffix!r}; "
                             f"use one of {', '.join(common)}")


def check_image(value: str) -> tuple[int, int]:
    """The input image exists and its header decodes -> (width, height) as the loader will see it
    (EXIF orientation applied). Raises ``sca.data.images.ImageError`` naming the file."""
    from sca.data.images import ImageError, image_size

    path = Path(value).expanduser()
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(value, "image_corrupt", "the file is empty (0 bytes); give an image file (PNG, JPEG, ...)")
    return image_size(path)


def check_checkpoint(value: str) -> None:
    """A local checkpoint or run folder, or something of the form of a hub id (fetched at load time)."""
    path = Path(value).expanduser()
    if path.is_dir():
        if not any((p / "config.json").is_file() for p in (path, path / "model")):
            raise FileNotFoundError(
                f"--checkpoint {value!r} is neither a checkpoint folder (config.json + model.safetensors) nor "
                f"a run folder (model/config.json); it holds {sorted(p.name for p in path.iterdir())[:10]}")
        return
    if path.exists():
        raise ValueError(f"--checkpoint {value!r} is a file; give the checkpoint folder (config.json + weights)")
    if value.count("/") != 1 or value.startswith((".", "/", "~")) or value.endswith("/"):
        raise FileNotFoundError(f"--checkpoint {value!r}: no such folder, and not a hub id of the form owner/name")


def check_range(value, flag: str, *, low: float | None = None, high: float | None = None,
                integer: bool = False) -> None:
    """``low <= value <= high`` (either bound optional), finite; ``integer``: a whole number."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{flag} must be a whole number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            what = f"in [{low:g}, {high:g}]"
        else:
            what = f">= {low:g}" if low is not None else f"<= {high:g}"
        raise ValueError(f"{flag} must be {what}, got {value!r}")


def check_prompts(width: int, height: int, boxes=(), points=()) -> None:
    """Boxes x0 y0 x1 y1 and points x y in original pixels lie inside the ``width`` x ``height`` image
    (the rules and wording of ``sca.models.processor.check_boxes`` / ``check_points``)."""
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise ValueError(f"boxes hold NaN or inf: {[x0, y0, x1, y1]}")
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box {i} {[x0, y0, x1, y1]} is inverted or empty: need x0 < x1 and y0 < y1 "
                             f"(boxes are x0 y0 x1 y1, not x y w h)")
        if x0 < -_TOLERANCE or y0 < -_TOLERANCE or x1 > width + _TOLERANCE or y1 > height + _TOLERANCE:
            raise ValueError(f"box {i} {[x0, y0, x1, y1]} lies outside the {width}x{height} image: "
                             f"need 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
    for region, group in enumerate(points):
        for x, y in ((float(a), float(b)) for a, b in group):
            if not (-_TOLERANCE <= x <= width + _TOLERANCE and -_TOLERANCE <= y <= height + _TOLERANCE):
                raise ValueError(f"point ({x}, {y}) of region {region} lies outside the {width}x{height} image: "
                                 f"need 0 <= x <= {width} and 0 <= y <= {height}")


def check_port(host: str, port: int) -> None:
    """``port`` is a TCP port number that can be served on ``host`` now (free, and host is local)."""
    check_range(port, "--port", low=1, high=65535, integer=True)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"--host {host!r} is not a known host name or address ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ValueError(f"--port {port}: the port is in use on {host}; give another --port") from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise ValueError(f"--host {host!r} is not an address of this machine") from None
            if err.errno == errno.EACCES:
                raise ValueError(f"--port {port}: not allowed to serve on it (ports below 1024 need root); "
                                 f"give a port from 1024 to 65535") from None
            raise ValueError(f"--host {host!r} --port {port}: cannot serve there ({err.strerror})") from None


TASKS = {"recognition": 0, "caption": 1}  # task token ids (paper.md §1.7)


def resolve_task(task: str | int) -> tuple[int, str]:
    """A task name or id -> (id, name); ValueError naming the accepted ones otherwise."""
    if isinstance(task, str) and task in TASKS:
        return TASKS[task], task
    names = {v: k for k, v in TASKS.items()}
    if isinstance(task, int) and not isinstance(task, bool) and task in names:
        return task, names[task]
    raise ValueError(f"unknown task {task!r}; use one of {list(TASKS)} (or their ids {list(names)})")
