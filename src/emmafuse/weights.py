"""Where weights come from: path resolution and checksums (the manifest itself: :mod:`emmafuse.manifest`).

Resolution order of :func:`locate_weights` (used by :func:`emmafuse.load`):

1. an explicit file path (used as given; only ``.safetensors`` files, loading is pickle-free);
2. for a released model name (``None``: the manifest's default), with the sha256 and size
   recorded in ``weights_manifest.json``:

   a. the file in the Hugging Face cache (``huggingface_hub.try_to_load_from_cache``, no network),
   b. the copy embedded in the package (``emmafuse/weights/<embedded>``),
   c. a download with ``huggingface_hub.hf_hub_download`` (skipped when offline:
      ``local_files_only=True`` or ``HF_HUB_OFFLINE=1``).

Every file taken from 2a-2c is checked against the manifest's sha256 the first time a process
uses it (results are remembered by path, size and modification time, so it is hashed once).
A mismatching cached or downloaded file is deleted from the cache and never used; a
mismatching embedded copy is skipped. See ``docs/weights.md``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import emmafuse.hub as hub
from emmafuse.errors import ChecksumMismatchError, NoPretrainedWeightsError, WeightsError
from emmafuse.manifest import ModelEntry, get_model, read_manifest

__all__ = [
    "ChecksumMismatchError",
    "EMBEDDED_DIR",
    "NoPretrainedWeightsError",
    "ResolvedWeights",
    "file_sha256",
    "locate_weights",
    "verify_file",
    "weights_source",
]

#: Folder of the weights embedded in the package (package data ``weights/*.safetensors``).
EMBEDDED_DIR = Path(__file__).resolve().parent / "weights"


def weights_source(entry: ModelEntry, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Where :func:`locate_weights` would take the weights of ``entry`` from, found without the
    network and without hashing (the checksum is verified on loading):

    ``"cache"`` (the Hugging Face cache), ``"embedded"`` (inside the package), ``"hub (download)"``
    (published, not downloaded yet), or ``"none"`` (unreleased, or no copy reachable).
    """
    if not entry.available:
        return "none"
    if entry.published and hub.cached_file(entry.repo_id, entry.filename, entry.hub_revision, cache_dir) is not None:
        return "cache"
    if entry.embedded and (EMBEDDED_DIR / entry.embedded).is_file():
        return "embedded"
    return "hub (download)" if entry.published else "none"


# --------------------------------------------------------------------------- checksums
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, remembered per process by (real path, size, mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        known = _HASH_CACHE.get(key)
    if known is None:
        known = _hash_file(real)
        with _HASH_LOCK:
            _HASH_CACHE[key] = known
    return known


def verify_file(path: str | os.PathLike[str], sha256: str, size: int | None = None, *, what: str = "") -> str:
    """Check a file's size and sha256; returns the sha256.

    Raises:
        ChecksumMismatchError: size or sha256 differ.
    """
    label = what or str(path)
    actual_size = os.stat(path).st_size
    if size is not None and actual_size != size:
        raise ChecksumMismatchError(f"{label}: size {actual_size} bytes, expected {size} (truncated or wrong file)")
    actual = file_sha256(path)
    if actual != sha256.lower():
        raise ChecksumMismatchError(f"{label}: sha256 {actual}, expected {sha256.lower()} (corrupt or wrong file)")
    return actual


# --------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class ResolvedWeights:
    """A local weights file and where it came from.

    ``source``: ``"path"`` (given by the caller), ``"cache"`` (Hugging Face cache),
    ``"embedded"`` (package copy) or ``"download"``.
    """

    path: Path
    source: str
    sha256: str
    name: str | None = None
    revision: str | None = None


_NO_DEFAULT_MESSAGE = (
    "no pretrained weights are installed in this emmafuse build yet. Pass a weights file: "
    "emmafuse.load('path/to/weights.safetensors'); official EMMA.pth checkpoints can be "
    "converted with 'emmafuse convert'."
)


def _explicit_path(value: str | os.PathLike[str]) -> Path | None:
    candidate = Path(value)
    text = os.fspath(value)
    looks_like_path = (
        isinstance(value, os.PathLike)
        or candidate.suffix in (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
        or "/" in text
        or "\\" in text
        or candidate.exists()
    )
    return candidate if looks_like_path else None


def _resolve_path(path: Path) -> ResolvedWeights:
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f" (it holds {', '.join(found[:3])})" if found else ""
        raise WeightsError(f"weights path {path} is a folder, not a .safetensors file{hint}")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raise WeightsError(
            f"{path} looks like a PyTorch pickle checkpoint; emmafuse only loads .safetensors files "
            f"(no pickle). Convert it once: emmafuse convert {path} {path.with_suffix('.safetensors')}"
        )
    return ResolvedWeights(path=path, source="path", sha256=file_sha256(path))


def locate_weights(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
) -> ResolvedWeights:
    """Find a verified local weights file for a path or a released model name.

    Args:
        name_or_path: a ``.safetensors`` file, a model name from the manifest, or ``None`` for
            the manifest's default model.
        revision: Hub revision. The manifest's own revision (or ``None``) is pinned by its
            sha256; any other revision skips the embedded copy and is checked only against the
            sha256 the Hub reports for the file (with a warning).
        cache_dir: Hugging Face cache folder (default: the standard cache, ``HF_HOME``).
        local_files_only: never use the network (also implied by ``HF_HUB_OFFLINE=1``).

    Raises:
        NoPretrainedWeightsError: the model has no released weights in this build.
        ChecksumMismatchError: the only available copy failed its checksum.
        WeightsError: unknown name, missing file, offline and not cached, download failure.
    """
    if name_or_path is not None:
        if not os.fspath(name_or_path).strip():
            # Path("") is ".", the current folder: say what was really given
            raise WeightsError("the weights path is empty (''); give a .safetensors file or a model name")
        explicit = _explicit_path(name_or_path)
        if explicit is not None:
            return _resolve_path(explicit)
        name = os.fspath(name_or_path)
    else:
        default = read_manifest().get("default")
        if not default:
            raise NoPretrainedWeightsError(_NO_DEFAULT_MESSAGE, parameter="weights")
        name = str(default)
        if not get_model(name).available:
            raise NoPretrainedWeightsError(_NO_DEFAULT_MESSAGE, parameter="weights")
    entry = get_model(name)
    if not entry.available:
        raise NoPretrainedWeightsError(
            f"model '{name}' has no released weights in this emmafuse build yet. Pass a weights file: "
            "emmafuse.load('path/to/weights.safetensors'); official EMMA.pth checkpoints can be "
            "converted with 'emmafuse convert'.",
            parameter="weights",
        )
    return _locate_released(entry, revision, cache_dir, local_files_only)


@dataclass(frozen=True)
class _Request:
    """One look-up of a released model: which entry, which revision, where, whether online."""

    entry: ModelEntry
    revision: str  # the Hub revision asked for (the manifest's when none was given)
    pinned: bool  # the manifest's revision: files are checked against the manifest's sha256
    cache_dir: str | os.PathLike[str] | None
    offline: bool
    local_files_only: bool


@dataclass
class _Notes:
    """What the look-ups found wrong, reported by the final error (if no copy is usable)."""

    problems: list[str] = field(default_factory=list)
    mismatched: bool = False  # some copy failed its checksum: the error is a ChecksumMismatchError
    force_download: bool = False  # a bad cached copy could not be deleted: download over it

    def text(self) -> str:
        return "".join(f"\n  - {p}" for p in self.problems)

    def error(self) -> type[WeightsError]:
        return ChecksumMismatchError if self.mismatched else WeightsError


def _check(req: _Request, path: Path, what: str) -> str:
    """The sha256 of ``path`` after checking it (against the manifest, or what the Hub reported)."""
    if req.pinned:
        return verify_file(path, req.entry.sha256, req.entry.size, what=what)
    reported = hub.blob_sha256(path)
    if reported is None:
        warnings.warn(
            f"{what}: revision '{req.revision}' is not the one pinned by this emmafuse release and the Hub "
            "reported no sha256 for it; the file is used unverified",
            stacklevel=5,
        )
        return file_sha256(path)
    warnings.warn(
        f"revision '{req.revision}' of {req.entry.name} is not pinned by this emmafuse release; "
        "checking it only against the sha256 reported by the Hub",
        stacklevel=5,
    )
    return verify_file(path, reported, what=what)


def _from_cache(req: _Request, notes: _Notes) -> ResolvedWeights | None:
    """The file in the Hugging Face cache (no network), if there and intact.

    A cached copy that fails its checksum is deleted from the cache and noted.
    """
    entry = req.entry
    if not entry.published:
        return None
    cached = hub.cached_file(entry.repo_id, entry.filename, req.revision, req.cache_dir)
    if cached is None:
        return None
    try:
        digest = _check(req, cached, f"cached {entry.repo_id}/{entry.filename} ({cached})")
    except ChecksumMismatchError as exc:
        removed = hub.evict(cached)
        notes.force_download = not removed
        notes.mismatched = True
        notes.problems.append(f"{exc}; {'deleted from the cache' if removed else 'ignored'}")
        return None
    return ResolvedWeights(cached, "cache", digest, entry.name, req.revision)


def _from_embedded(req: _Request, notes: _Notes) -> ResolvedWeights | None:
    """The copy embedded in the package (it is the manifest's revision), if present and intact."""
    entry = req.entry
    if not (req.pinned and entry.embedded):
        return None
    embedded = EMBEDDED_DIR / entry.embedded
    if not embedded.is_file():
        notes.problems.append(f"embedded copy {embedded} is missing from this installation")
        return None
    try:
        digest = _check(req, embedded, f"embedded copy {embedded}")
    except ChecksumMismatchError as exc:
        notes.mismatched = True
        notes.problems.append(f"{exc}; skipped (damaged installation? reinstall emmafuse)")
        return None
    return ResolvedWeights(embedded, "embedded", digest, entry.name, entry.revision)


def _download(req: _Request, notes: _Notes) -> ResolvedWeights | None:
    """A verified download into the Hugging Face cache; ``None`` when not published or offline.

    Raises:
        WeightsError: the download failed (with the earlier notes).
        ChecksumMismatchError: the downloaded file differs (it is deleted from the cache).
    """
    entry = req.entry
    if not entry.published or req.offline:
        return None
    try:
        path = hub.download(entry.repo_id, entry.filename, req.revision, req.cache_dir, force=notes.force_download)
    except WeightsError as exc:
        if not notes.problems:
            raise
        raise notes.error()(f"{exc}{notes.text()}") from exc
    try:
        digest = _check(req, path, f"downloaded {entry.repo_id}/{entry.filename} (revision {req.revision})")
    except ChecksumMismatchError as exc:
        removed = hub.evict(path)
        raise ChecksumMismatchError(
            f"{exc}. The file was {'deleted from the cache' if removed else 'left in the cache but not used'}; "
            f"the Hub copy differs from the one this emmafuse release expects.{notes.text()}"
        ) from None
    return ResolvedWeights(path, "download", digest, entry.name, req.revision)


def _unavailable(req: _Request, notes: _Notes) -> WeightsError:
    """The error when no copy could be used (nothing on the Hub, or downloading disabled)."""
    entry = req.entry
    if not entry.published:
        return notes.error()(f"weights of '{entry.name}' are not available (they are not on the Hub):{notes.text()}")
    why = "local_files_only=True" if req.local_files_only else "HF_HUB_OFFLINE is set"
    return notes.error()(
        f"weights of '{entry.name}' ({entry.repo_id}/{entry.filename}, revision {req.revision}) are not in the "
        f"Hugging Face cache{' or the package' if req.pinned and entry.embedded else ''} and downloading is "
        f"disabled ({why}). Run once with network access, or pass a local .safetensors file.{notes.text()}"
    )


def _locate_released(
    entry: ModelEntry,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
) -> ResolvedWeights:
    """The Hugging Face cache, then the embedded copy, then a download (see the module doc)."""
    req = _Request(
        entry=entry,
        revision=revision or entry.hub_revision,
        pinned=revision is None or revision == entry.hub_revision,
        cache_dir=cache_dir,
        offline=local_files_only or hub.is_offline(),
        local_files_only=local_files_only,
    )
    notes = _Notes()
    found = _from_cache(req, notes) or _from_embedded(req, notes) or _download(req, notes)
    if found is None:
        raise _unavailable(req, notes)
    return found
