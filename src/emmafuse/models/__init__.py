"""Networks only (no I/O): the U-Fuser, its configuration and its size requirements."""

from emmafuse.models.size_req import SizeRequirements
from emmafuse.models.ufuser import MIN_SIDE, SIZE_MULTIPLE, UFUSER_SIZE, UFuser, UFuserConfig

__all__ = ["UFuser", "UFuserConfig", "SizeRequirements", "UFUSER_SIZE", "SIZE_MULTIPLE", "MIN_SIDE"]
