"""Hand freed heap memory back to the operating system between the chunks of a long loop.

glibc's allocator serves blocks under its mmap threshold from the heap arenas; the threshold rises
(up to 32 MiB on 64-bit) each time a larger mmapped block is freed, so after a few megabyte-sized
tensors are freed, later tensors of the same size come from the arenas, and freed arena memory is
returned to the system only from the top of the heap. A loop that allocates and frees a few such
tensors per step (anything mode's candidate logits, ~4 MB each at 1 megapixel) then grows its
resident size step after step although its live memory stays flat (glibc manual, "Memory
Allocation Tunables": M_MMAP_THRESHOLD, M_TRIM_THRESHOLD; malloc_trim(3)).

``release_free_memory()`` calls ``malloc_trim(0)``, which releases the free memory of every arena,
where the C library has it (glibc); elsewhere it does nothing. ``memory_mb`` and ``reset_peak_memory``
read and reset the process's resident size and its peak (Linux), for the memory benchmarks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

__all__ = ["memory_mb", "release_free_memory", "reset_peak_memory"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return freed heap memory to the system; True when the C library could (glibc) and did."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


def memory_mb(field: str = "VmRSS") -> float | None:
    """VmRSS (resident now) or VmHWM (peak since start or the last ``reset_peak_memory``) from
    /proc/self/status, in MB; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_memory() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0: write 5 to /proc/self/clear_refs);
    False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
