"""emmafuse: multi-modality image fusion with EMMA's U-Fuser.

>>> import emmafuse
>>> fuser = emmafuse.load()                # default pretrained weights (or a path)
>>> fused = fuser.fuse(ir_image, vis_image)  # numpy / PIL / torch in, same kind out

This module only re-exports the public names; no module of the package imports it back
(see ``docs/architecture.md``). The names that need torch (``load``, ``Fuser``) and the
manifest's (``list_models``, ``ModelEntry``) are imported on first use (PEP 562), so
``import emmafuse`` and ``emmafuse --version`` stay light; the errors are imported at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from emmafuse._version import __version__
from emmafuse.errors import (
    EmmafuseError,
    MissingExtraError,
    NoPretrainedWeightsError,
    VideoError,
    VideoReadError,
    WeightsError,
)

if TYPE_CHECKING:
    from emmafuse.fuser import Fuser
    from emmafuse.loading import load
    from emmafuse.manifest import ModelEntry, list_models

__all__ = [
    "load",
    "Fuser",
    "list_models",
    "ModelEntry",
    "EmmafuseError",
    "WeightsError",
    "NoPretrainedWeightsError",
    "VideoError",
    "VideoReadError",
    "MissingExtraError",
    "__version__",
]

#: Public name -> the module that defines it (imported when the name is first used).
_LAZY = {
    "load": "emmafuse.loading",
    "Fuser": "emmafuse.fuser",
    "list_models": "emmafuse.manifest",
    "ModelEntry": "emmafuse.manifest",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'emmafuse' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
