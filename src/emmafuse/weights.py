"""Where weights come from: the manifest of released models and path resolution.

Resolution order for :func:`resolve_weights`: an explicit file path, then a released model name
from the manifest (``weights_manifest.json``), whose file is looked up in the Hugging Face cache,
then in the copy embedded in the package, then downloaded from the Hub.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from emmafuse.checkpoint import WeightsError

__all__ = ["ModelEntry", "NoPretrainedWeightsError", "list_models", "read_manifest", "resolve_weights"]


class NoPretrainedWeightsError(WeightsError):
    """No weights were given and none are installed for the requested model."""


@dataclass(frozen=True)
class ModelEntry:
    """One released model, as listed in ``weights_manifest.json``."""

    name: str
    repo_id: str
    filename: str
    sha256: str
    revision: str = "main"
    size: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    embedded: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _manifest_text() -> str:
    return resources.files("emmafuse").joinpath("weights_manifest.json").read_text(encoding="utf-8")


def read_manifest() -> dict[str, Any]:
    """The packaged manifest as a dict (``{"default": name|None, "models": {...}}``)."""
    try:
        return json.loads(_manifest_text())
    except FileNotFoundError:  # pragma: no cover - broken installation
        return {"default": None, "models": {}}


def list_models() -> list[ModelEntry]:
    """Released models known to this installation."""
    known = {"repo_id", "filename", "sha256", "revision", "size", "config", "embedded", "description"}
    entries = []
    for name, data in read_manifest().get("models", {}).items():
        extra = {k: v for k, v in data.items() if k not in known}
        entries.append(ModelEntry(name=name, extra=extra, **{k: v for k, v in data.items() if k in known}))
    return entries


def resolve_weights(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
) -> Path:
    """Return a local weights file for a path or a released model name.

    Raises:
        NoPretrainedWeightsError: nothing given and no pretrained weights are installed.
        WeightsError: an unknown name or a missing file.
    """
    if name_or_path is not None:
        candidate = Path(name_or_path)
        if candidate.suffix in (".safetensors", ".pth", ".pt") or candidate.exists():
            if not candidate.is_file():
                raise WeightsError(f"weights file not found: {candidate}")
            return candidate
    manifest = read_manifest()
    name = str(name_or_path) if name_or_path is not None else manifest.get("default")
    if not name:
        raise NoPretrainedWeightsError(
            "no pretrained weights are installed in this emmafuse build yet. Pass a weights file: "
            "emmafuse.load('path/to/weights.safetensors') (CLI: --weights PATH); official EMMA.pth "
            "checkpoints can be converted with 'emmafuse convert'."
        )
    models = manifest.get("models", {})
    if name not in models:
        raise WeightsError(f"unknown model '{name}'; known models: {sorted(models) or 'none'}")
    raise NoPretrainedWeightsError(f"model '{name}' is listed but its weights are not available")
