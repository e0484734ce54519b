"""emmafuse: multi-modality image fusion with EMMA's U-Fuser.

>>> import emmafuse
>>> fuser = emmafuse.load()                # default pretrained weights (or a path)
>>> fused = fuser.fuse(ir_image, vis_image)  # numpy / PIL / torch in, same kind out

This module only re-exports the public names; no module of the package imports it back
(see ``docs/architecture.md``).
"""

from __future__ import annotations

from emmafuse._version import __version__
from emmafuse.errors import (
    EmmafuseError,
    MissingExtraError,
    NoPretrainedWeightsError,
    VideoError,
    VideoReadError,
    WeightsError,
)
from emmafuse.fuser import Fuser
from emmafuse.loading import load
from emmafuse.weights import ModelEntry, list_models

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
