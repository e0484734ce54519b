"""A loopback stand-in for the Hugging Face Hub's file resolver, for download tests.

Implements only what ``huggingface_hub.hf_hub_download`` needs for a plain (non-Xet) file:

- ``HEAD /{repo_id}/resolve/{revision}/{filename}``: ``200`` with ``X-Repo-Commit``, ``ETag`` /
  ``X-Linked-Etag`` (the file's sha256, as the Hub reports for LFS files), ``X-Linked-Size`` and
  ``Content-Length``; or, with ``lfs_redirect=True``, a ``302`` to a "CDN" URL on another origin
  (``localhost`` instead of ``127.0.0.1``) carrying the same metadata, as the real Hub does.
- ``GET`` of the same path (or the CDN path): the bytes, honouring ``Range: bytes=N-`` with ``206``.
- Unknown repos / files: ``404`` with ``X-Error-Code`` ``RepoNotFound`` / ``EntryNotFound``.

Faults for tests: ``head_status`` / ``get_status`` (answer every HEAD / GET with that status),
``truncate_gets`` (this many GETs send only half the body and then close the connection; later
GETs answer ``after_truncate_status`` if set). Every request is recorded in ``requests``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["FakeHub", "DEFAULT_COMMIT", "tiny_weights", "manifest_entry"]

DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class _File:
    data: bytes
    commit: str


class FakeHub:
    """A threaded HTTP server on ``127.0.0.1`` (free port) serving registered files."""

    def __init__(self, *, lfs_redirect: bool = False) -> None:
        self.files: dict[tuple[str, str], _File] = {}
        self.lfs_redirect = lfs_redirect
        self.head_status: int | None = None
        self.get_status: int | None = None
        self.truncate_gets = 0
        self.after_truncate_status: int | None = None
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ content
    def add_file(self, repo_id: str, filename: str, data: bytes, commit: str = DEFAULT_COMMIT) -> str:
        """Serve ``data`` as ``repo_id/filename`` at ``commit`` (and at ``main``); returns its sha256."""
        self.files[(repo_id, filename)] = _File(bytes(data), commit)
        return hashlib.sha256(data).hexdigest()

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, _ in self.requests if method is None or m == method)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = 10  # a stuck client never blocks the server thread for long

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr logging
        pass

    # ------------------------------------------------------------------ routing
    def _lookup(self) -> tuple[_File | None, str, str, str]:
        """Parse ``/{org}/{name}/resolve/{rev}/{file}`` or ``/cdn/{org}/{name}/{file}``."""
        path = unquote(urlsplit(self.path).path)
        parts = path.strip("/").split("/")
        if parts[:1] == ["cdn"] and len(parts) >= 4:
            repo_id, rev, filename = "/".join(parts[1:3]), "cdn", "/".join(parts[3:])
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        else:
            return None, "", "", ""
        entry = self.fake.files.get((repo_id, filename))
        if entry is not None and rev not in ("main", "cdn", entry.commit):
            return None, repo_id, "revision", filename
        return entry, repo_id, rev, filename

    def _not_found(self, repo_id: str, rev: str, filename: str) -> None:
        known_repos = {r for r, _ in self.fake.files}
        if repo_id not in known_repos:
            code = "RepoNotFound"
        else:
            code = "RevisionNotFound" if rev == "revision" else "EntryNotFound"
        body = b'{"error": "not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", f"{code}: {repo_id}/{filename}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _status(self, status: int) -> None:
        body = f"fake hub error {status}".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _metadata_headers(self, entry: _File) -> None:
        sha = hashlib.sha256(entry.data).hexdigest()
        self.send_header("X-Repo-Commit", entry.commit)
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(entry.data)))
        self.send_header("ETag", f'"{sha}"')
        self.send_header("Accept-Ranges", "bytes")

    # ------------------------------------------------------------------ methods
    def do_HEAD(self) -> None:  # noqa: N802
        with self.fake._lock:
            self.fake.requests.append(("HEAD", self.path))
        if self.fake.head_status is not None:
            return self._status(self.fake.head_status)
        entry, repo_id, rev, filename = self._lookup()
        if entry is None:
            return self._not_found(repo_id, rev, filename)
        if self.fake.lfs_redirect and rev != "cdn":
            port = self.server.server_address[1]
            self.send_response(302)
            self._metadata_headers(entry)
            self.send_header("Location", f"http://localhost:{port}/cdn/{repo_id}/{filename}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._metadata_headers(entry)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(entry.data)))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        with self.fake._lock:
            self.fake.requests.append(("GET", self.path))
            truncate = self.fake.truncate_gets > 0
            if truncate:
                self.fake.truncate_gets -= 1
                fault = None
            else:
                fault = self.fake.get_status
                if fault is None and self.fake.after_truncate_status is not None:
                    fault = self.fake.after_truncate_status
        if fault is not None:
            return self._status(fault)
        entry, repo_id, rev, filename = self._lookup()
        if entry is None:
            return self._not_found(repo_id, rev, filename)
        data, start = entry.data, 0
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes=") and range_header.endswith("-"):
            start = int(range_header[len("bytes=") : -1] or 0)
        body = data[start:]
        self.send_response(206 if start else 200)
        self._metadata_headers(entry)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


# --------------------------------------------------------------------------- test content helpers
def tiny_weights(path: str | os.PathLike[str], seed: int = 0, dtype: Any = None) -> bytes:
    """Write a small valid U-Fuser weights file (channels 8,8,8,8: ~0.7 MB) and return its bytes."""
    import torch

    from emmafuse.checkpoint import save_ufuser
    from emmafuse.models import UFuser, UFuserConfig

    torch.manual_seed(seed)
    config = UFuserConfig(channels=(8, 8, 8, 8))
    save_ufuser(UFuser(config).state_dict(), path, config, metadata={"name": "tiny"}, dtype=dtype)
    return Path(path).read_bytes()


def manifest_entry(data: bytes, **fields: Any) -> dict[str, Any]:
    """A released manifest entry for ``data`` (override any field with keyword arguments)."""
    entry = {
        "status": "released",
        "description": "tiny test model",
        "repo_id": "org/tiny",
        "revision": None,
        "filename": "tiny.safetensors",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "embedded": None,
        "published": True,
        "config": {"channels": [8, 8, 8, 8], "num_heads": 8, "in_channels": 1},
        "training": {},
        "license": "mit",
        "evaluation": {},
    }
    entry.update(fields)
    return entry
