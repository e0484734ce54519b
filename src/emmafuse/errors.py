"""The library's error families, importable by every layer (no emmafuse imports).

Every exception the library raises derives from :class:`EmmafuseError` (a test scans the source
for ``raise ValueError(...)`` and friends). Each family also derives from the built-in it
resembles, so ``except ValueError`` keeps working: :class:`InputError` (an argument, array or
option the caller passed cannot be used), :class:`InputTypeError` (the same, of the wrong type),
:class:`WeightsError`, :class:`VideoError`, :class:`FusionError` (a run that failed although
its inputs were fine, e.g. out of memory at the smallest tile) and :class:`MissingExtraError`
(an ``ImportError`` naming the optional extra to install). Modules with their own concerns
define subclasses beside their code (``ImageReadError``, ``OutputError``, ``EvalError``,
``PairingError`` and the training errors).

Messages name the *parameter* (``tile_overlap``), never a command-line flag: the command line
catches ``EmmafuseError``, prints one line and adds the flag from ``parameter`` where it knows
one (``--tile-overlap``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "EmmafuseError",
    "InputError",
    "InputTypeError",
    "FusionError",
    "WeightsError",
    "NoPretrainedWeightsError",
    "ChecksumMismatchError",
    "VideoError",
    "VideoReadError",
    "MissingExtraError",
    "import_extra",
]


class EmmafuseError(Exception):
    """Base of every error class the library defines (catch this to catch them all).

    Each subclass also derives from the built-in it resembles (``ValueError`` for bad input,
    ``ImportError`` for a missing extra), so existing ``except ValueError`` code keeps working.

    ``parameter`` (optional) names the argument of the library call at fault (``"tile_overlap"``,
    ``"weights"``); the command line turns it into its flag.
    """

    def __init__(self, *args: object, parameter: str | None = None) -> None:
        super().__init__(*args)
        self.parameter = parameter


class InputError(EmmafuseError, ValueError):
    """An argument the caller passed cannot be used: an image of the wrong shape, range or
    size, an option out of range, a pair that does not match."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (a list where an array is expected, a float tile side)."""


class FusionError(EmmafuseError, RuntimeError):
    """A run that failed although its inputs were fine (e.g. out of memory at the smallest tile)."""


class WeightsError(EmmafuseError, ValueError):
    """A weights file is missing, corrupt, of the wrong format or fails its checksum."""


class NoPretrainedWeightsError(WeightsError):
    """No weights were given and none are installed for the requested model."""


class ChecksumMismatchError(WeightsError):
    """A weights file's sha256 or size differs from the one recorded in the manifest."""


class VideoError(EmmafuseError, ValueError):
    """Two videos that cannot be fused together (sizes, frame rates) or a video option that
    cannot work (``output_range="minmax"``, a start past the end); the message names the files."""


class VideoReadError(VideoError):
    """A video file that cannot be opened or decoded: missing, not a video, corrupt or truncated.

    ``path`` is the file and ``frame`` the index of the frame that failed (counted from the
    start of the stream; ``None`` when the file cannot be opened at all).
    """

    def __init__(self, message: str, *, path: str, frame: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.frame = frame


class MissingExtraError(EmmafuseError, ImportError):
    """An optional dependency is not installed; ``extra`` names what to install
    (``pip install 'emmafuse[<extra>]'``, which the message says too)."""

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


def import_extra(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingExtraError` saying what needs it
    (``purpose``) and what to install (``pip install 'emmafuse[<extra>]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs {module}, which is not installed: pip install 'emmafuse[{extra}]' ({exc})", extra=extra
        ) from exc
