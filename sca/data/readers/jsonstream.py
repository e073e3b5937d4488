"""Streaming JSON: walk a huge top-level array or object one element at a time.

Visual Genome's ``region_descriptions.json`` is ~700 MB and Objects365's train file several GB; a
plain ``json.load`` builds every dict at once (tens of GB of Python objects). Here the file is
decoded in chunks and each array element is parsed on its own by the C scanner behind
``json.JSONDecoder.raw_decode``, so memory stays at one chunk plus one element, whatever the key
order or whitespace of the file. Elements are plain ``dict``/``list`` values, as ``json.load``
would give.

When orjson is installed, ``iter_array`` takes a faster path for arrays of objects/arrays: a
vectorised scan of each chunk (numpy: unescaped quotes, brackets outside strings, nesting depth)
finds where whole top-level elements end, and orjson parses them in batches (~2x faster than the C
scanner of the json module, same bounded memory).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

try:
    import orjson
except ImportError:  # pragma: no cover - optional speed-up
    orjson = None

__all__ = ["JSONStreamError", "iter_array", "walk_object"]

_DECODER = json.JSONDecoder()
_NON_WS = re.compile(r"[^ \t\n\r]")
DEFAULT_CHUNK = 1 << 22  # bytes read at a time (4 MiB; the orjson path holds one chunk of parsed elements)


class JSONStreamError(ValueError):
    """The file is not the JSON shape the reader expects (names the file and the character offset)."""


class _Stream:
    """A text buffer over a binary file: ``buf[pos:]`` is what is not consumed yet."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path = path
        self._fh = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.chunk = max(int(chunk), 16)
        self.buf = ""
        self.pos = 0
        self.dropped = 0  # characters dropped from the front of buf, for error offsets
        self.eof = False

    def close(self) -> None:
        self._fh.close()

    def offset(self) -> int:
        return self.dropped + self.pos

    def error(self, what: str) -> JSONStreamError:
        return JSONStreamError(f"{self.path}: {what} at character {self.offset()}")

    def fill(self, size: int | None = None) -> bool:
        """Append the next chunk to the buffer; False at end of file."""
        if self.eof:
            return False
        data = self._fh.read(size or self.chunk)
        text = self._decoder.decode(data, final=not data)
        self.eof = not data
        if self.pos:  # drop the consumed prefix, so the buffer never outgrows chunk + one element
            self.dropped += self.pos
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += text
        return bool(data) or bool(text)

    def peek(self) -> str:
        """The next non-whitespace character ('' at end of file), without consuming it."""
        while True:
            m = _NON_WS.search(self.buf, self.pos)
            if m:
                self.pos = m.start()
                return self.buf[self.pos]
            self.pos = len(self.buf)
            if not self.fill():
                return ""

    def expect(self, chars: str) -> str:
        ch = self.peek()
        if not ch or ch not in chars:
            found = repr(ch) if ch else "end of file"
            raise self.error(f"expected one of {chars!r}, found {found}")
        self.pos += 1
        return ch

    def value(self) -> Any:
        """Parse one JSON value at the cursor, reading more of the file as long as it is cut."""
        self.peek()
        grow = self.chunk
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                if self.fill(grow):
                    grow *= 2  # a value longer than a chunk: read geometrically more each retry
                    continue
                raise self.error(f"invalid JSON ({err.msg})") from None
            # A number or literal that ends exactly at the buffer end may continue in the next chunk.
            if end == len(self.buf) and not self.eof and self.fill(grow):
                continue
            self.pos = end
            return obj


def _items(stream: _Stream) -> Iterator[Any]:
    """Yield the elements of the array whose '[' was just consumed; consumes the ']'."""
    if stream.peek() == "]":
        stream.pos += 1
        return
    while True:
        yield stream.value()
        if stream.expect(",]") == "]":
            return


def _element_ends(buf: bytes) -> tuple[np.ndarray, int]:
    """Where top-level elements end in ``buf`` (which starts inside the top-level array, between
    elements, outside any string): indices of their closing brackets, and the index of the array's
    own closing ']' (-1 if not in buf)."""
    arr = np.frombuffer(buf, np.uint8)
    quotes = np.flatnonzero(arr == 34)
    escaped = quotes[(quotes > 0) & (arr[np.maximum(quotes - 1, 0)] == 92)]
    if len(escaped):  # a quote is escaped when an odd number of backslashes precede it
        drop = []
        for qpos in escaped.tolist():
            k = qpos - 1
            while k >= 0 and buf[k] == 92:
                k -= 1
            if (qpos - 1 - k) % 2:
                drop.append(qpos)
        quotes = np.setdiff1d(quotes, np.asarray(drop, np.int64), assume_unique=True)
    folded = arr | 0x20  # '[' (0x5B) -> '{' (0x7B), ']' (0x5D) -> '}' (0x7D); nothing else maps there
    pos = np.flatnonzero((folded == 0x7B) | (folded == 0x7D))
    pos = pos[np.searchsorted(quotes, pos) % 2 == 0]  # brackets outside strings
    step = np.where(folded[pos] == 0x7B, 1, -1)
    depth = 1 + np.cumsum(step, dtype=np.int64)
    closed = np.flatnonzero(depth <= 0)
    end_of_array = int(pos[closed[0]]) if len(closed) else -1
    ends = pos[(step < 0) & (depth == 1)]
    if end_of_array >= 0:
        ends = ends[ends < end_of_array]
    return ends, end_of_array


def _iter_array_orjson(path: Path, chunk: int) -> Iterator[Any]:
    with open(path, "rb") as fh:
        raw = fh.read(chunk)
        head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")  # a UTF-8 byte order mark, whitespace
        if not head.startswith(b"["):
            found = repr(head[:1].decode("latin-1")) if head else "end of file"
            raise JSONStreamError(f"{path}: expected one of '[' at byte {len(raw) - len(head)}, found {found}")
        offset = len(raw) - len(head) + 1  # file offset of buf[0]
        buf, eof = head[1:], False
        while True:
            ends, end_of_array = _element_ends(buf)
            last = int(ends[-1]) if len(ends) else -1
            stop = end_of_array if end_of_array >= 0 else last + 1
            if stop > 0:
                body = buf[:stop].strip(b" \t\r\n")
                body = body[1:] if body.startswith(b",") else body
                if body:
                    try:
                        items = orjson.loads(b"[" + body + b"]")
                    except orjson.JSONDecodeError as err:
                        raise JSONStreamError(f"{path}: invalid JSON ({err}) in the elements at byte "
                                              f"{offset}-{offset + stop}") from None
                    yield from items
                    del items
            if end_of_array >= 0:
                if buf[end_of_array + 1 :].strip() or fh.read(1 << 16).strip():
                    raise JSONStreamError(f"{path}: unexpected data after the top-level array at byte "
                                          f"{offset + end_of_array + 1}")
                return
            if eof:
                raise JSONStreamError(f"{path}: invalid JSON (the top-level array is not closed) at byte "
                                      f"{offset + len(buf)}")
            offset += max(stop, 0)
            buf = buf[max(stop, 0) :]
            more = fh.read(chunk if len(buf) < chunk else len(buf))  # grow for elements longer than a chunk
            eof = not more
            buf += more


def iter_array(path: str | Path, *, chunk: int = DEFAULT_CHUNK, fast: bool = True) -> Iterator[Any]:
    """Yield the elements of a file whose top level is a JSON array, one parsed element at a time.

    fast: use the orjson path when orjson is installed (elements are parsed in batches of a chunk).
    """
    if fast and orjson is not None:
        yield from _iter_array_orjson(Path(path), max(int(chunk), 16))
        return
    stream = _Stream(Path(path), chunk)
    try:
        stream.expect("[")
        yield from _items(stream)
        if stream.peek():
            raise stream.error("unexpected data after the top-level array")
    finally:
        stream.close()


def walk_object(
    path: str | Path, stream_keys: set[str] | frozenset[str] = frozenset(), *, chunk: int = DEFAULT_CHUNK
) -> Iterator[tuple[str, Any, bool]]:
    """Walk a file whose top level is a JSON object, member by member.

    Yields ``(key, value, False)`` for each member, except that a member whose key is in
    ``stream_keys`` and whose value is an array yields ``(key, element, True)`` once per element
    (nothing for an empty array). Members come in file order.
    """
    stream = _Stream(Path(path), chunk)
    try:
        stream.expect("{")
        if stream.peek() == "}":
            stream.pos += 1
            return
        while True:
            if stream.peek() != '"':
                raise stream.error("expected an object key")
            key = stream.value()
            stream.expect(":")
            if key in stream_keys and stream.peek() == "[":
                stream.pos += 1
                for item in _items(stream):
                    yield key, item, True
            else:
                yield key, stream.value(), False
            if stream.expect(",}") == "}":
                break
        if stream.peek():
            raise stream.error("unexpected data after the top-level object")
    finally:
        stream.close()
