"""Maintainer side of the weights manifest: registering a weights file and writing the manifest.

``scripts/register_weights.py`` and ``scripts/publish.py`` are thin wrappers over this module;
:func:`emmafuse.load` never imports it. The schema of an entry, its reader and its validator are
in :mod:`emmafuse.manifest`; :func:`registered_entry` builds entries with that schema and
:func:`register` refuses a manifest that :func:`~emmafuse.manifest.validate_manifest` finds fault with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emmafuse._fs import atomic_write
from emmafuse.checkpoint import build_ufuser, load_ufuser_file, save_ufuser
from emmafuse.errors import WeightsError
from emmafuse.manifest import ModelEntry, validate_manifest
from emmafuse.models import UFuserConfig
from emmafuse.weights import file_sha256

__all__ = [
    "FP16_DRIFT_LIMIT",
    "Registration",
    "ReleaseError",
    "embed_weights",
    "fp16_output_drift",
    "register",
    "registered_entry",
    "validate_manifest",
    "write_manifest",
]

#: Largest change of a fused output, in 8-bit gray levels, that float16 storage may cause.
FP16_DRIFT_LIMIT = 1.0
#: Facts of a weights file's metadata copied into the entry's ``training`` when it has none.
_TRAINING_METADATA = ("git_commit", "training_data", "steps")


class ReleaseError(WeightsError):
    """A registration that cannot be made: the updated manifest would be invalid, or a
    float16 copy would change outputs too much."""


@dataclass(frozen=True)
class Registration:
    """A weights file to register as the released model ``name``, and the facts to record.

    ``file`` is the file the manifest will describe (the embedded copy when ``embedded``);
    ``metadata`` the weights file's own metadata. ``None`` and empty values keep what the
    manifest already says.
    """

    name: str
    file: Path
    config: UFuserConfig
    filename: str
    embedded: bool
    metadata: Mapping[str, str] = field(default_factory=dict)
    repo_id: str | None = None
    published: bool = False
    revision: str | None = None
    description: str | None = None
    license: str | None = None
    training: Mapping[str, Any] = field(default_factory=dict)  # merged into the entry's
    evaluation: Mapping[str, Any] | None = None  # replaces the entry's


def registered_entry(previous: ModelEntry | None, reg: Registration) -> ModelEntry:
    """The manifest entry after registering ``reg`` over ``previous`` (``None``: a new model).

    The sha256 and size are those of ``reg.file``. The entry stays ``published`` (with its
    revision) only when the Hub already serves these very bytes.
    """
    was = previous or ModelEntry(name=reg.name)
    training = {**was.training, **reg.training}
    for key in _TRAINING_METADATA:
        if key in reg.metadata and key not in training:
            training[key] = reg.metadata[key]
    sha256 = file_sha256(reg.file)
    published = reg.published or (was.published and was.sha256 == sha256)
    return dataclasses.replace(
        was,
        status="released",
        repo_id=reg.repo_id or was.repo_id,
        revision=reg.revision or (was.revision if published else None),
        filename=reg.filename,
        sha256=sha256,
        size=reg.file.stat().st_size,
        embedded=reg.filename if reg.embedded else None,
        published=published,
        config=reg.config.to_dict(),
        training=training,
        description=reg.description or was.description,
        license=reg.license or was.license,
        evaluation=dict(reg.evaluation) if reg.evaluation is not None else was.evaluation,
    )


def register(manifest: dict[str, Any], reg: Registration, *, default: bool = False) -> ModelEntry:
    """Record ``reg`` in ``manifest`` (in place; ``default``: make it what ``load()`` picks).

    Raises:
        ReleaseError: the model is new and ``reg.repo_id`` is missing, or the updated manifest
            would be invalid (the manifest is then left as it was).
    """
    models = manifest.setdefault("models", {})
    raw = models.get(reg.name)
    if not raw and not reg.repo_id:
        raise ReleaseError(f"'{reg.name}' is not in the manifest yet; give its Hub repository", parameter="repo_id")
    previous = ModelEntry.from_dict(reg.name, raw) if raw else None
    entry = registered_entry(previous, reg)
    updated = {**manifest, "models": {**models, reg.name: entry.to_dict()}}
    if default:
        updated["default"] = reg.name
    problems = validate_manifest(updated)
    if problems:
        raise ReleaseError("the updated manifest would be invalid:\n  " + "\n  ".join(problems))
    manifest.update(updated)
    return entry


def write_manifest(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write a manifest atomically to the file ``path`` points to (symlinks kept, mode kept)."""
    target = Path(os.path.realpath(path))
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    target.chmod(mode)
    return target


def _same_content(a: Path, b: Path) -> bool:
    """Two safetensors files with equal tensors and equal metadata (byte order of the header aside)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        if fa.metadata() != fb.metadata():
            return False
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)


def embed_weights(source: Path, target: Path, *, fp16: bool = False) -> float:
    """Copy validated U-Fuser weights to ``target`` (the package copy); returns the largest
    absolute weight change (0 unless ``fp16``).

    ``fp16``: floating tensors stored as float16 (metadata ``storage_dtype``). When ``target``
    already holds the same tensors and metadata its bytes are kept (safetensors may order the
    header differently each time, which would change the sha256). The copy is world-readable.

    Raises:
        WeightsError: ``source`` or the float16 copy is not valid U-Fuser weights (float16
            overflow shows up as Inf).
    """
    state, config, meta = load_ufuser_file(source)
    build_ufuser(state, config, source=str(source))
    change = 0.0
    if fp16:
        extra = {k: v for k, v in meta.items() if k not in ("format", "config")}
        extra["storage_dtype"] = "float16"
        fresh = target.with_name(target.name + ".new")
        save_ufuser(state, fresh, config, metadata=extra, dtype=torch.float16)
        if target.is_file() and _same_content(target, fresh):
            fresh.unlink()
        else:
            os.replace(fresh, target)
        half, _, _ = load_ufuser_file(target)
        build_ufuser(half, config, source=str(target))
        change = max(float((half[k] - state[k]).abs().max()) for k in state if state[k].is_floating_point())
    elif target.resolve() != source.resolve():
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    target.chmod(0o644)  # shipped in the package: world-readable like the other files
    return change


def fp16_output_drift(full: Path, half: Path, pairs: Sequence[tuple[str, str]] = ()) -> float:
    """Largest |fused(``half``) - fused(``full``)| in 8-bit gray levels (float32 compute).

    Measured on two built-in synthetic scenes and on the given (infrared, visible) image files:
    float16 *storage* is acceptable only if outputs stay within :data:`FP16_DRIFT_LIMIT`.
    """
    from emmafuse.image_io import read_image
    from emmafuse.loading import load
    from emmafuse.samples import synthetic_pair

    images = [synthetic_pair(480, 640, seed=s) for s in (0, 1)]
    images += [(read_image(a), read_image(b)) for a, b in pairs]
    f32, f16 = load(str(full), device="cpu"), load(str(half), device="cpu")
    worst = 0.0
    for ir, vis in images:
        # float inputs give float outputs: the drift is measured before any rounding
        ir_f, vis_f = (np.asarray(x, np.float32) / (65535.0 if x.dtype == np.uint16 else 255.0) for x in (ir, vis))
        a = np.asarray(f32.fuse(ir_f, vis_f, output_range="clamp"), dtype=np.float64)
        b = np.asarray(f16.fuse(ir_f, vis_f, output_range="clamp"), dtype=np.float64)
        worst = max(worst, float(np.abs(a - b).max()) * 255.0)
    return worst
