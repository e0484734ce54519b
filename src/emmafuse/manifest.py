"""The weights manifest (``weights_manifest.json``): its schema, reading it and checking it.

The schema has one home, :class:`ModelEntry`: each field's name, JSON type and default are the
dataclass field's, and its rule (required, required once released, a format check) is in the
field's metadata. The reader (:meth:`ModelEntry.from_dict`), the validator
(:func:`validate_manifest`) and the writer (:meth:`ModelEntry.to_dict`, used by
:mod:`emmafuse.release` and ``scripts/register_weights.py``) are built on it. Keys the schema does
not know are kept in ``extra`` and written back unchanged.

Manifest file::

    {"schema": 1, "default": "<model name>" | null, "models": {"<name>": {<ModelEntry fields>}}}
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emmafuse.errors import WeightsError

__all__ = [
    "MANIFEST_ENV",
    "MANIFEST_SCHEMA",
    "STATUSES",
    "ModelEntry",
    "entry_problems",
    "field_problem",
    "get_model",
    "list_models",
    "manifest_path",
    "read_manifest",
    "validate_manifest",
]

#: Schema version of ``weights_manifest.json`` understood by this code.
MANIFEST_SCHEMA = 1
#: Environment variable naming another manifest file (maintainers and tests).
MANIFEST_ENV = "EMMAFUSE_MANIFEST"
#: The values of ``status``.
STATUSES = ("released", "unreleased")

_SHA256 = re.compile(r"[0-9a-f]{64}")
Check = Callable[[Any], str | None]  # a field's format rule: what is wrong, or None


def _owner_name(value: str) -> str | None:
    return None if value.count("/") == 1 else f"expected 'owner/name', got {value!r}"


def _plain_safetensors(value: str) -> str | None:
    plain = "/" not in value and "\\" not in value and value.endswith(".safetensors")
    return None if plain else f"a plain '*.safetensors' file name, got {value!r}"


def _sha256(value: str) -> str | None:
    return None if _SHA256.fullmatch(value) else "64 lowercase hex digits"


def _positive(value: int) -> str | None:
    return None if value > 0 else "a positive integer"


def _status(value: str) -> str | None:
    return None if value in STATUSES else f"one of {STATUSES}, got {value!r}"


def _ufuser_config(value: dict[str, Any]) -> str | None:
    from emmafuse.models import UFuserConfig  # networks: imported only when a manifest is checked

    try:
        UFuserConfig.from_dict(dict(value))
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def _rule(doc: str, *, check: Check | None = None, required: bool = False, released: bool = False) -> Any:
    """A field's metadata: ``required`` always, or once ``released`` (and non-empty), ``check``."""
    return {"doc": doc, "check": check, "required": required, "released": released}


@dataclass(frozen=True)
class ModelEntry:
    """One model listed in ``weights_manifest.json`` (``name`` is its key under ``models``).

    ``available`` tells whether this build can obtain its weights (released, with a checksum,
    and embedded in the package and/or published on the Hub).
    """

    name: str
    status: str = field(default="unreleased", metadata=_rule("released or unreleased", check=_status))
    description: str = field(default="", metadata=_rule("one line for users"))
    task: str = field(default="", metadata=_rule("free text, e.g. 'infrared-visible fusion' (the Hub tag)"))
    repo_id: str = field(default="", metadata=_rule("Hub repository", check=_owner_name, required=True))
    revision: str | None = field(default=None, metadata=_rule("Hub commit pinned by this release"))
    filename: str = field(default="", metadata=_rule("file name on the Hub", check=_plain_safetensors, required=True))
    sha256: str = field(default="", metadata=_rule("of the file served", check=_sha256, released=True))
    size: int | None = field(default=None, metadata=_rule("bytes of the file served", check=_positive, released=True))
    embedded: str | None = field(default=None, metadata=_rule("file in emmafuse/weights/", check=_plain_safetensors))
    published: bool = field(default=False, metadata=_rule("whether the file is on the Hub"))
    config: dict[str, Any] = field(default_factory=dict, metadata=_rule("UFuserConfig", check=_ufuser_config))
    training: dict[str, Any] = field(default_factory=dict, metadata=_rule("data, recipe, code_commit, ..."))
    license: str | None = field(default=None, metadata=_rule("Hub licence identifier"))
    evaluation: dict[str, Any] = field(default_factory=dict, metadata=_rule("protocol, results"))
    extra: dict[str, Any] = field(default_factory=dict)  # keys the schema does not know, kept as they are

    @property
    def available(self) -> bool:
        """Released with a checksum, and embedded and/or published."""
        return self.status == "released" and bool(self.sha256) and (self.published or bool(self.embedded))

    @property
    def hub_revision(self) -> str:
        """The revision to fetch from the Hub (the manifest's commit, else ``main``)."""
        return self.revision or "main"

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> ModelEntry:
        """The entry of ``name`` read leniently (``null`` strings and objects become empty)."""
        known = _schema_fields()
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("sha256", "description", "task"):
            kwargs[key] = kwargs.get(key) or ""
        for key in ("config", "training", "evaluation"):
            kwargs[key] = dict(kwargs.get(key) or {})
        kwargs["published"] = bool(kwargs.get("published", False))
        return cls(name=name, extra={k: v for k, v in data.items() if k not in known}, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this entry (schema fields in schema order, then ``extra``)."""
        data = {name: getattr(self, name) for name in _schema_fields()}
        return {**data, **self.extra}


def _schema_fields() -> dict[str, dataclasses.Field[Any]]:
    """The fields of a manifest entry (all of :class:`ModelEntry` but ``name`` and ``extra``)."""
    return {f.name: f for f in dataclasses.fields(ModelEntry) if f.name not in ("name", "extra")}


def _json_types(annotation: Any) -> tuple[type, ...]:
    """The Python types of the JSON values a field's annotation allows (``None`` as ``NoneType``)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for arg in typing.get_args(annotation) for t in _json_types(arg))
    origin = typing.get_origin(annotation)
    return (origin if isinstance(origin, type) else annotation,)


def _field_problem(value: Any, annotation: Any, check: Check | None) -> str | None:
    allowed = _json_types(annotation)
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        return f"expected {names}, got {type(value).__name__}"
    return check(value) if check is not None and value is not None else None


def field_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` as the entry field ``name`` (``None``: nothing)."""
    spec = _schema_fields()[name]
    return _field_problem(value, typing.get_type_hints(ModelEntry)[name], spec.metadata["check"])


def entry_problems(where: str, entry: Any) -> list[str]:
    """Problems of one manifest entry (``where`` prefixes each, e.g. ``models.emma-ivf``)."""
    if not isinstance(entry, dict):
        return [f"{where}: must be an object"]
    hints = typing.get_type_hints(ModelEntry)
    released = entry.get("status") == "released"
    problems: list[str] = []
    for name, spec in _schema_fields().items():
        rule = spec.metadata
        if name not in entry or entry[name] in ("", None):
            if rule["required"] or (released and rule["released"]):
                problems.append(f"{where}.{name}: required{' for a released model' if not rule['required'] else ''}"
                                f" ({rule['doc']})")
            continue
        problem = _field_problem(entry[name], hints[name], rule["check"])
        if problem:
            problems.append(f"{where}.{name}: {problem}")
    if released and not entry.get("published") and not entry.get("embedded"):
        problems.append(f"{where}: a released model must be embedded and/or published")
    return problems


def validate_manifest(data: dict[str, Any]) -> list[str]:
    """Problems in a whole manifest (empty list: valid)."""
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
        problems += entry_problems(f"models.{name}", entry)
    return problems


def manifest_path() -> Path:
    """The manifest in use: ``$EMMAFUSE_MANIFEST`` if set, else the packaged one."""
    override = os.environ.get(MANIFEST_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "weights_manifest.json"


def read_manifest() -> dict[str, Any]:
    """The manifest as a dict (``{"schema": 1, "default": name|None, "models": {...}}``).

    Raises:
        WeightsError: the manifest is not readable JSON (a broken installation).
    """
    path = manifest_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if os.environ.get(MANIFEST_ENV):
            raise WeightsError(f"{MANIFEST_ENV}={path}: no such file") from None
        return {"schema": MANIFEST_SCHEMA, "default": None, "models": {}}  # pragma: no cover - broken install
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"weights manifest {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        raise WeightsError(f"weights manifest {path}: expected an object with a 'models' object")
    return data


def _entries(manifest: dict[str, Any]) -> list[ModelEntry]:
    return [ModelEntry.from_dict(name, data) for name, data in manifest.get("models", {}).items()]


def list_models(*, include_unreleased: bool = False) -> list[ModelEntry]:
    """Models whose weights this installation can provide (all listed ones with ``include_unreleased``)."""
    return [e for e in _entries(read_manifest()) if include_unreleased or e.available]


def get_model(name: str) -> ModelEntry:
    """The manifest entry of ``name``.

    Raises:
        WeightsError: unknown name.
    """
    entries = _entries(read_manifest())
    for entry in entries:
        if entry.name == name:
            return entry
    known = sorted(e.name for e in entries)
    raise WeightsError(f"unknown model '{name}' (and no such file); known models: {', '.join(known) or 'none'}")
