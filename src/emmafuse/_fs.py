"""File-system helpers shared by every writer (images, weights, configs, caches): no emmafuse imports."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "cache_root"]


def cache_root() -> Path:
    """emmafuse's cache folder: ``$EMMAFUSE_CACHE``, else ``~/.cache/emmafuse`` (pseudo-GT, ONNX graphs)."""
    return Path(os.environ.get("EMMAFUSE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "emmafuse"))


def _create_temporary(folder: Path, name: str) -> str:
    """Create an empty, new temporary file in ``folder`` with the mode a plain ``open()`` gives.

    Created like ``open()`` creates files (mode 0o666, which the process umask narrows), so the
    umask is applied by the system: reading it would mean setting it (``os.umask``), a change
    of process-wide state that races with other threads.
    """
    tmp = folder / f".{name}.{secrets.token_hex(8)}.part"  # O_EXCL: never an existing file
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return str(tmp)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` then rename the result to ``path`` (same folder, atomic).

    A crash or an exception in ``write`` never leaves a half-written ``path`` behind; the
    temporary file is removed. The result gets the permissions a plain ``open()`` would give.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target.parent, target.name)
    try:
        mode = os.stat(tmp).st_mode & 0o777
        write(tmp)
        os.chmod(tmp, mode)  # in case ``write`` replaced the file instead of writing into it
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
