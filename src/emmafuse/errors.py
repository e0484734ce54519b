"""The library's error families, importable by every layer (no emmafuse imports).

``WeightsError`` and ``VideoError`` are ``ValueError`` s: the command line reports them as
one-line usage errors. ``MissingExtraError`` is an ``ImportError`` naming the optional extra to
install.
"""

from __future__ import annotations

__all__ = [
    "EmmafuseError",
    "WeightsError",
    "NoPretrainedWeightsError",
    "ChecksumMismatchError",
    "VideoError",
    "VideoReadError",
    "MissingExtraError",
]


class EmmafuseError(Exception):
    """Base of every error class the library defines (catch this to catch them all).

    Each subclass also derives from the built-in it resembles (``ValueError`` for bad input,
    ``ImportError`` for a missing extra), so existing ``except ValueError`` code keeps working.
    """


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
