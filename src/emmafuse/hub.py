"""Hugging Face Hub access for released weights: cache look-up, download, eviction.

Only :mod:`emmafuse.weights` calls this module. Every function takes the repository, file and
revision explicitly and never decides *whether* to go online: that policy (offline mode,
checksum checks, fallbacks) lives in :func:`emmafuse.weights.locate_weights`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from emmafuse._version import __version__
from emmafuse.errors import WeightsError

__all__ = ["is_offline", "hub_endpoint", "cached_file", "download", "evict", "blob_sha256"]

_TRUE = {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, read at call time.

    ``huggingface_hub`` reads the variable once, at import; reading it here as well means
    setting it later in the process still keeps emmafuse off the network.
    """
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None:
        return value.strip().upper() in _TRUE
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` read at call time (``None``: the huggingface_hub default)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def cached_file(
    repo_id: str, filename: str, revision: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The file in the Hugging Face cache for ``revision`` (branch, tag or commit), or ``None``.

    Never touches the network.
    """
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo_id, filename, cache_dir=None if cache_dir is None else str(cache_dir), revision=revision
    )
    return Path(found) if isinstance(found, str) else None


def _download_errors() -> tuple[type[BaseException], ...]:
    """What ``hf_hub_download`` raises when a download fails, by huggingface_hub's own types.

    Its HTTP errors (``HfHubHTTPError``: repository, revision or file not found, server errors)
    and ``LocalEntryNotFoundError`` (unreachable) are ``OSError`` s; ``EntryNotFoundError``,
    ``HFValidationError`` (a malformed repository id) and the HTTP client's transport errors,
    which huggingface_hub exports as ``errors.HTTPError``, are not.
    """
    try:
        errors = importlib.import_module("huggingface_hub.errors")
    except ImportError:  # pragma: no cover - huggingface_hub < 0.24 keeps them in utils
        errors = importlib.import_module("huggingface_hub.utils")
    names = ("HfHubHTTPError", "LocalEntryNotFoundError", "EntryNotFoundError", "HFValidationError", "HTTPError")
    found = (getattr(errors, name, None) for name in names)
    return (OSError, *(t for t in found if isinstance(t, type) and issubclass(t, BaseException)))


def _describe(exc: BaseException) -> str:
    """One or two lines: the error and its cause (huggingface_hub wraps the HTTP error)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}"
    cause = exc.__cause__ or exc.__context__
    cause_line = (str(cause).strip().splitlines() or [""])[0] if cause is not None else ""
    if cause_line and cause_line not in first:
        text += f"; caused by {type(cause).__name__}: {cause_line}"
    return text


def download(
    repo_id: str,
    filename: str,
    revision: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
) -> Path:
    """Download one file into the Hugging Face cache with ``hf_hub_download``; returns its path.

    Raises:
        WeightsError: any failure (no connection, HTTP error, interrupted transfer), naming
            the repository, revision and file. huggingface_hub writes to a temporary file and
            moves it into the cache only when complete, so a failed transfer leaves nothing
            that a later call could pick up.
    """
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=None if cache_dir is None else str(cache_dir),
            endpoint=hub_endpoint(),
            force_download=force,
            library_name="emmafuse",
            library_version=__version__,
        )
    except _download_errors() as exc:
        raise WeightsError(
            f"could not download '{filename}' from the Hugging Face Hub repository '{repo_id}' "
            f"(revision {revision}): {_describe(exc)}"
        ) from exc
    return Path(str(path))


def blob_sha256(path: str | os.PathLike[str]) -> str | None:
    """The sha256 the Hub reported for a cached file, when its cache blob is named by it.

    The cache names a blob after the file's ETag, which for LFS files (all weights) is the
    sha256 of the content. ``None`` for anything else (non-LFS files, copies without symlinks).
    """
    target = Path(os.path.realpath(path))
    name = target.name
    if target.parent.name == "blobs" and len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name
    return None


def evict(path: str | os.PathLike[str]) -> bool:
    """Remove a cached file (its snapshot entry and the blob it points to).

    Only acts on paths inside a Hugging Face cache snapshot. Returns ``False`` when nothing
    could be removed (e.g. a read-only cache); callers must then not use the file anyway.
    """
    pointer = Path(path)
    if "snapshots" not in pointer.parts:
        return False
    try:
        if pointer.is_symlink():
            blob = Path(os.path.realpath(pointer))
            if blob.parent.name == "blobs":
                blob.unlink(missing_ok=True)
        pointer.unlink(missing_ok=True)
    except OSError:
        return False
    return True
