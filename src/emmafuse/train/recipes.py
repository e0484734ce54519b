"""Named training recipes: JSON files shipped in ``emmafuse/train/recipes/``.

A recipe is ``{"description": "...", "settings": {<partial TrainConfig>}}``; its settings are
laid over the defaults, then ``--config``/flags/``--set`` override them
(:func:`emmafuse.train.resolve.resolve_config`, the one precedence chain). ``emmafuse train
recipes`` lists them. A path to a JSON file of the same form works wherever a name does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from emmafuse.train.config import ConfigError

__all__ = ["Recipe", "list_recipes", "load_recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    settings: dict[str, Any]


def _parse(name: str, text: str, where: str) -> Recipe:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"recipe {where} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise ConfigError(f"recipe {where} needs an object with a 'settings' object")
    return Recipe(name, str(data.get("description", "")), data["settings"])


def _shipped() -> dict[str, Any]:
    folder = resources.files("emmafuse.train") / "recipes"
    return {p.name[: -len(".json")]: p for p in folder.iterdir() if p.name.endswith(".json")}


def list_recipes() -> list[Recipe]:
    """The recipes shipped with emmafuse, by name."""
    return [_parse(name, path.read_text(encoding="utf-8"), name) for name, path in sorted(_shipped().items())]


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name, or a recipe JSON file by path."""
    shipped = _shipped()
    if name_or_path in shipped:
        return _parse(name_or_path, shipped[name_or_path].read_text(encoding="utf-8"), name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return _parse(path.stem, path.read_text(encoding="utf-8"), str(path))
    raise ConfigError(f"unknown recipe {name_or_path!r}; shipped: {', '.join(sorted(shipped)) or 'none'} (or a .json path)")
