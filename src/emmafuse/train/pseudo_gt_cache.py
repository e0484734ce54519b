"""The pseudo-GT disk cache: deterministic rules' results, keyed by the rule, its parameters
and the pairs' paths, sizes and modification times (:func:`emmafuse.train.pseudo_gt.fill_pseudo_gt`)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emmafuse._fs import cache_root
from emmafuse.train.patches import PairStore

__all__ = ["default_cache_dir", "cache_dir_setting", "cache_file", "read_cache", "write_cache"]


def default_cache_dir() -> Path:
    """``$EMMAFUSE_CACHE/pseudo_gt`` or ``~/.cache/emmafuse/pseudo_gt``."""
    return cache_root() / "pseudo_gt"


def cache_dir_setting(raw: str) -> Path | None:
    """The cache folder ``data.cache_dir`` names: ``""`` the default, ``"none"`` no cache (None)."""
    if raw.lower() == "none":
        return None
    return Path(raw) if raw else default_cache_dir()


def cache_file(cache_dir: Path, key: str | None, store: PairStore) -> Path | None:
    """Where the results of the rule ``key`` (a source's ``cache_key()``; None: never cached) for
    exactly these pairs (paths, sizes, mtimes) are cached."""
    if key is None:
        return None
    h = hashlib.sha256(key.encode())
    for pair in store.pairs:
        for path in (pair.ir_path, pair.vis_path):
            st = os.stat(path)
            h.update(f"{pair.stem}\0{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return cache_dir / f"{key}-{h.hexdigest()[:16]}.npz"


def read_cache(path: Path, store: PairStore) -> list[np.ndarray] | None:
    try:
        with np.load(path) as data:
            images = [data[f"a{i}"] for i in range(len(store))]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # missing, partial or foreign: recompute
        return None
    if any(img.shape != a.shape for img, a in zip(images, store.ir)):
        return None
    return images


def write_cache(path: Path, images: Sequence[np.ndarray]) -> None:
    from emmafuse._fs import atomic_write

    # Any: numpy's stub would match the **arrays against savez's allow_pickle flag
    arrays: dict[str, Any] = {f"a{i}": np.asarray(img, dtype=np.float16) for i, img in enumerate(images)}

    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    try:
        atomic_write(path, save)
    except OSError:  # a read-only cache only costs the recomputation next time
        pass
