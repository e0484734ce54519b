"""Downloads through huggingface_hub against a loopback stand-in of the Hub (no internet).

The client is pointed at tests/hub_server.py with ``HF_ENDPOINT`` (emmafuse reads it at call
time and passes it as ``endpoint=``); every test uses its own cache folder and manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
from hub_server import DEFAULT_COMMIT, FakeHub, manifest_entry, tiny_weights

import emmafuse
from emmafuse import weights
from emmafuse.checkpoint import WeightsError
from emmafuse.manifest import MANIFEST_ENV
from emmafuse.weights import ChecksumMismatchError

TEST_TIME_LIMIT_S = 30


@pytest.fixture(autouse=True)
def time_limit():
    """Fail (instead of hanging) if a test runs longer than TEST_TIME_LIMIT_S."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test exceeded {TEST_TIME_LIMIT_S} s")

    if not hasattr(signal, "setitimer"):  # Windows: no SIGALRM; the HTTP timeouts still apply
        yield
        return
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIME_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_weights(tmp_path_factory.mktemp("w") / "good.safetensors", seed=1)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_weights(tmp_path_factory.mktemp("w") / "other.safetensors", seed=2)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good: bytes):
    """A started FakeHub serving org/tiny/tiny.safetensors; manifest and cache isolated."""
    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_ETAG_TIMEOUT", 5)
    monkeypatch.setattr(hf_constants, "HF_HUB_DOWNLOAD_TIMEOUT", 5)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "default_cache"))
    monkeypatch.setattr(weights, "EMBEDDED_DIR", tmp_path / "no_embedded")
    server.add_file("org/tiny", "tiny.safetensors", good)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema": 1, "default": "tiny", "models": {"tiny": manifest_entry(good)}}))
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    try:
        yield server
    finally:
        server.stop()


def cache_files(cache: Path) -> list[Path]:
    """Regular files (and live symlinks) under the cache, except lock and tag files."""
    return sorted(
        p for p in cache.rglob("*")
        if p.is_file() and p.suffix not in (".lock",) and p.name != "CACHEDIR.TAG" and "refs" not in p.parts
    )


def test_download_then_cached_without_network(hub: FakeHub, tmp_path: Path, good: bytes) -> None:
    cache = tmp_path / "cache"
    fuser = emmafuse.load(cache_dir=cache, device="cpu")
    assert fuser.info["source"] == "download" and fuser.info["name"] == "tiny"
    assert fuser.info["sha256"] == hashlib.sha256(good).hexdigest()
    assert Path(fuser.info["path"]).read_bytes() == good
    assert hub.count("GET") == 1
    hub.stop()  # second use: no server at all
    again = emmafuse.load("tiny", cache_dir=cache, device="cpu")
    assert again.info["source"] == "cache" and again.info["path"] == fuser.info["path"]


def test_default_cache_dir_and_lfs_redirect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: FakeHub, good: bytes
) -> None:
    if "127.0.0.1" not in {info[4][0] for info in socket.getaddrinfo("localhost", None)}:
        pytest.skip("'localhost' does not resolve to 127.0.0.1 here (needed as the fake CDN origin)")
    cdn = FakeHub(lfs_redirect=True).start()
    try:
        cdn.add_file("org/tiny", "tiny.safetensors", good)
        monkeypatch.setenv("HF_ENDPOINT", cdn.url)
        found = weights.locate_weights("tiny")
        assert found.source == "download"
        assert str(found.path).startswith(str(tmp_path / "default_cache"))
        assert [m for m, p in cdn.requests] == ["HEAD", "GET"] and cdn.requests[1][1].startswith("/cdn/")
    finally:
        cdn.stop()


def test_offline_mode_never_touches_network(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE") as info:
        emmafuse.load("tiny", cache_dir=cache)
    assert "Run once with network access" in str(info.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(WeightsError, match="local_files_only"):
        emmafuse.load("tiny", cache_dir=cache, local_files_only=True)
    assert hub.requests == []
    assert emmafuse.load("tiny", cache_dir=cache, device="cpu").info["source"] == "download"  # online again
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert emmafuse.load("tiny", cache_dir=cache, device="cpu").info["source"] == "cache"
    assert emmafuse.load("tiny", cache_dir=cache, local_files_only=True, device="cpu").info["source"] == "cache"
    assert len(hub.requests) == n


def test_checksum_mismatch_is_refused_and_evicted(hub: FakeHub, tmp_path: Path, good: bytes, other: bytes) -> None:
    cache = tmp_path / "cache"
    hub.add_file("org/tiny", "tiny.safetensors", other)  # the Hub serves different bytes than the manifest pins
    with pytest.raises(ChecksumMismatchError, match="sha256") as info:
        emmafuse.load("tiny", cache_dir=cache)
    assert "deleted from the cache" in str(info.value)
    assert cache_files(cache) == [], "the mismatching download must not stay in the cache"
    hub.add_file("org/tiny", "tiny.safetensors", good)  # fixed upstream: a later call downloads again
    assert emmafuse.load("tiny", cache_dir=cache, device="cpu").info["source"] == "download"


def test_corrupted_cache_file_is_replaced(hub: FakeHub, tmp_path: Path, good: bytes) -> None:
    cache = tmp_path / "cache"
    first = weights.locate_weights("tiny", cache_dir=cache)
    blob = Path(os.path.realpath(first.path))
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))  # bit rot in the cache
    os.utime(blob, ns=(1, 1))
    second = weights.locate_weights("tiny", cache_dir=cache)
    assert second.source == "download" and second.path.read_bytes() == good
    assert hub.count("GET") == 2


def test_server_error_on_download_is_clear(hub: FakeHub, tmp_path: Path) -> None:
    hub.get_status = 500
    started = time.monotonic()
    with pytest.raises(WeightsError) as info:
        emmafuse.load("tiny", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "org/tiny" in message and "tiny.safetensors" in message and "500" in message
    assert time.monotonic() - started < 10
    assert cache_files(tmp_path / "cache") == []


class _NoSleep:
    """Stands in for the ``time`` module inside huggingface_hub's HTTP helpers: no back-off waits."""

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


def test_server_down_everywhere_is_clear(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http, "time", _NoSleep())  # HEAD 5xx is retried with back-off (~25 s otherwise)
    hub.head_status = 503
    hub.get_status = 503
    with pytest.raises(WeightsError, match="could not download 'tiny.safetensors' .*'org/tiny'") as info:
        emmafuse.load("tiny", cache_dir=tmp_path / "cache")
    assert "503" in str(info.value)


def test_missing_repo_is_clear(hub: FakeHub, tmp_path: Path, good: bytes) -> None:
    hub.files.clear()
    hub.add_file("org/other", "x.safetensors", good)
    with pytest.raises(WeightsError, match="'org/tiny'") as info:
        emmafuse.load("tiny", cache_dir=tmp_path / "cache")
    assert "RepositoryNotFound" in str(info.value) or "404" in str(info.value)


def test_partial_transfer_leaves_nothing_usable(hub: FakeHub, tmp_path: Path, good: bytes) -> None:
    cache = tmp_path / "cache"
    hub.truncate_gets = 1  # half the body, then the connection drops ...
    hub.after_truncate_status = 503  # ... and the resume request fails
    with pytest.raises(WeightsError, match="org/tiny") as info:
        emmafuse.load("tiny", cache_dir=cache)
    assert "503" in str(info.value)
    assert cache_files(cache) == [], "no partial file may remain where a later call could find it"
    hub.after_truncate_status = None
    assert emmafuse.load("tiny", cache_dir=cache, device="cpu").info["source"] == "download"


def test_resumed_transfer_is_verified(hub: FakeHub, tmp_path: Path, good: bytes) -> None:
    hub.truncate_gets = 1  # the client resumes with a Range request; the result must still hash right
    found = weights.locate_weights("tiny", cache_dir=tmp_path / "cache")
    assert found.source == "download" and found.path.read_bytes() == good
    assert hub.count("GET") == 2


def test_pinned_commit_revision(hub: FakeHub, tmp_path: Path) -> None:
    manifest = Path(os.environ[MANIFEST_ENV])
    data = json.loads(manifest.read_text())
    data["models"]["tiny"]["revision"] = DEFAULT_COMMIT
    manifest.write_text(json.dumps(data))
    found = weights.locate_weights("tiny", cache_dir=tmp_path / "cache")
    assert found.revision == DEFAULT_COMMIT and DEFAULT_COMMIT in str(found.path)
    assert any(DEFAULT_COMMIT in path for _, path in hub.requests)
    hub.stop()
    assert weights.locate_weights("tiny", cache_dir=tmp_path / "cache").source == "cache"
