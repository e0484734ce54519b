"""Networks only (no I/O): the U-Fuser and its configuration."""

from emmafuse.models.ufuser import MIN_SIDE, SIZE_MULTIPLE, UFuser, UFuserConfig

__all__ = ["UFuser", "UFuserConfig", "SIZE_MULTIPLE", "MIN_SIDE"]
