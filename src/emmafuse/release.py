"""Maintainer side of the weights manifest: validating and writing ``weights_manifest.json``.

Used by ``scripts/register_weights.py``, ``scripts/publish.py`` and the tests; never imported
by :func:`emmafuse.load` (the runtime side, reading the manifest and locating weights, is
:mod:`emmafuse.weights`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from emmafuse._fs import atomic_write
from emmafuse.models import UFuserConfig
from emmafuse.weights import MANIFEST_SCHEMA

__all__ = ["validate_manifest", "write_manifest"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_STATUSES = ("released", "unreleased")


def validate_manifest(data: dict[str, Any]) -> list[str]:
    """Problems in a manifest (empty list: valid)."""
    problems: list[str] = []
    if data.get("schema") != MANIFEST_SCHEMA:
        problems.append(f"schema must be {MANIFEST_SCHEMA}, got {data.get('schema')!r}")
    models = data.get("models")
    if not isinstance(models, dict):
        return problems + ["'models' must be an object"]
    default = data.get("default")
    if default is not None and default not in models:
        problems.append(f"default {default!r} is not a listed model")
    for name, entry in models.items():
        problems += _entry_problems(f"models.{name}", entry)
    return problems


def _entry_problems(where: str, entry: Any) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where}: must be an object"]
    problems: list[str] = []
    for key in ("repo_id", "filename"):
        if not isinstance(entry.get(key), str) or not entry.get(key):
            problems.append(f"{where}.{key}: required string")
    if isinstance(entry.get("repo_id"), str) and entry["repo_id"].count("/") != 1:
        problems.append(f"{where}.repo_id: expected 'owner/name', got {entry['repo_id']!r}")
    status = entry.get("status", "unreleased")
    if status not in _STATUSES:
        problems.append(f"{where}.status: one of {_STATUSES}, got {status!r}")
    try:
        UFuserConfig.from_dict(dict(entry.get("config") or {}))
    except (ValueError, TypeError) as exc:
        problems.append(f"{where}.config: {exc}")
    embedded = entry.get("embedded")
    plain_name = isinstance(embedded, str) and "/" not in embedded and "\\" not in embedded
    if embedded is not None and not (plain_name and embedded.endswith(".safetensors")):
        problems.append(f"{where}.embedded: a plain '*.safetensors' file name, got {embedded!r}")
    revision = entry.get("revision")
    if revision is not None and not isinstance(revision, str):
        problems.append(f"{where}.revision: string or null")
    if status == "released":
        if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            problems.append(f"{where}.sha256: 64 lowercase hex digits required for a released model")
        if not isinstance(entry.get("size"), int) or entry["size"] <= 0:
            problems.append(f"{where}.size: positive integer required for a released model")
        if not entry.get("published") and not embedded:
            problems.append(f"{where}: a released model must be embedded and/or published")
    return problems


def write_manifest(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write a manifest atomically to the file ``path`` points to (symlinks kept, mode kept)."""
    target = Path(os.path.realpath(path))
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    target.chmod(mode)
    return target
