"""glibc allocator settings for processes that emmafuse owns (the ``emmafuse`` command).

PyTorch allocates CPU tensors with ``malloc``. glibc serves blocks above its mmap threshold
with ``mmap`` and gives them back to the kernel on ``free``, so every large layer output of a
forward is page-faulted in afresh; on the 2-core measurement VM that was 82 s of system time in
a 103 s 8K fusion (docs/performance.md). Turning ``mmap`` off for ``malloc`` and not trimming
the heap keeps freed memory for the next layer.

:func:`tune_for_fusion` does that with ``mallopt`` (through ctypes) in the *current* process. The
command line calls it at start-up unless ``EMMAFUSE_ALLOCATOR=system`` (or ``--system-allocator``);
the library never calls it on import: a process that imports emmafuse keeps its allocator.
No emmafuse or torch imports here, so the command line can call it before importing torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["ALLOCATOR_ENV", "tune_for_fusion", "wanted"]

#: ``system`` (or ``0``/``off``) keeps glibc's defaults in the ``emmafuse`` command.
ALLOCATOR_ENV = "EMMAFUSE_ALLOCATOR"

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: The largest trim threshold mallopt takes (an int): the heap is trimmed only past 2 GiB free at its top.
_TRIM_THRESHOLD = 2**31 - 1


def wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether the command line should tune the allocator (not when ``EMMAFUSE_ALLOCATOR`` says
    ``system``, ``0``, ``off`` or ``false``, nor when the user set glibc's own variables)."""
    env = os.environ if environ is None else environ
    if env.get(ALLOCATOR_ENV, "").strip().lower() in {"system", "0", "off", "false", "no"}:
        return False
    return not any(k in env for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"))


def tune_for_fusion() -> bool:
    """Keep freed memory in this process's heap (glibc only); returns whether it was applied.

    ``mallopt(M_MMAP_MAX, 0)`` serves every block from the heap and
    ``mallopt(M_TRIM_THRESHOLD, 2 GiB)`` stops returning its top after each layer. Peak memory
    stays about the same (freed layer outputs are reused instead of mapped again). On other C
    libraries (musl, macOS, Windows) nothing happens.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
