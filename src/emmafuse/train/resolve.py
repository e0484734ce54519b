"""One precedence chain for a training configuration.

``defaults < recipe < config file < overrides`` (the CLI passes its flags, then its ``--set``
items, as overrides, in that order). A config file may be partial: it is laid over the recipe
key by key, never instead of it. ``resume_from`` (a run's saved ``config.json``) makes the saved
configuration the base: a resumed run continues with exactly what it started with, and a
requested setting that differs from it is refused with the list of differences, except the
few that do not change what is trained (:data:`RESUMABLE_CHANGES`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emmafuse.train.config import ConfigError, TrainConfig
from emmafuse.train.recipes import load_recipe

__all__ = ["resolve_config", "RESUMABLE_CHANGES"]

#: Settings a resumed run may change: they affect logging and hardware, not the result.
RESUMABLE_CHANGES = frozenset({"progress", "device", "log_every", "val_every", "ckpt_every", "keep_checkpoints", "data.workers"})


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a JSON object at the top level")
    return data


def _value(cfg: TrainConfig, dotted: str) -> Any:
    node: Any = cfg.to_dict()
    for part in dotted.split("."):
        node = node[part]
    return node


def resolve_config(
    recipe: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[tuple[str, Any]] = (),
    *,
    resume_from: str | os.PathLike[str] | None = None,
) -> TrainConfig:
    """The configuration of a run: defaults < ``recipe`` < ``config_file`` < ``overrides``.

    Args:
        recipe: a shipped recipe name or a recipe ``.json`` path.
        config_file: a (possibly partial) TrainConfig JSON file.
        overrides: ``(dotted key, value)`` pairs applied in order (later wins).
        resume_from: a run's saved ``config.json``; when it exists it is the result, and any
            requested setting that differs from it raises.

    Raises:
        ConfigError: unknown recipe or key, an invalid value, or a conflict with the saved run.
    """
    requested: list[tuple[str, Any]] = []
    recipe_name = ""
    if recipe:
        loaded = load_recipe(recipe)
        recipe_name = loaded.name
        requested += list(_flatten(loaded.settings).items())
    if config_file is not None:
        file_data = _read_file(config_file)
        file_data.pop("recipe", None)
        requested += list(_flatten(file_data).items())
    requested += [(key.strip(), value) for key, value in overrides]

    saved = Path(resume_from) if resume_from is not None else None
    if saved is not None and saved.is_file():
        base = TrainConfig.load(saved)
        wanted = copy.deepcopy(base)
        for key, value in requested:
            wanted.override(key, value)
        conflicts = [
            f"{key} (run: {_value(base, key)!r}, asked: {_value(wanted, key)!r})"
            for key in dict.fromkeys(k for k, _ in requested)
            if key not in RESUMABLE_CHANGES and _value(base, key) != _value(wanted, key)
        ]
        if conflicts:
            raise ConfigError(
                f"a resumed run keeps the configuration it started with ({saved}); these settings differ: "
                + "; ".join(conflicts[:6]) + ("; ..." if len(conflicts) > 6 else "")
                + ". Drop them, or start a new run."
            )
        wanted.validate()
        return wanted

    cfg = TrainConfig()
    for key, value in requested:
        cfg.override(key, value)
    cfg.recipe = recipe_name
    cfg.validate()
    return cfg
