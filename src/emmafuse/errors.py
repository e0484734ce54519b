"""The weights error family, importable by every layer (no emmafuse imports).

``WeightsError`` is a ``ValueError``: the command line reports it as a one-line usage error.
"""

from __future__ import annotations

__all__ = ["WeightsError", "NoPretrainedWeightsError", "ChecksumMismatchError"]


class WeightsError(ValueError):
    """A weights file is missing, corrupt, of the wrong format or fails its checksum."""


class NoPretrainedWeightsError(WeightsError):
    """No weights were given and none are installed for the requested model."""


class ChecksumMismatchError(WeightsError):
    """A weights file's sha256 or size differs from the one recorded in the manifest."""
