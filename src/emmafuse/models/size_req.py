"""What input sizes a network accepts, and what it says about tiling (spandrel's ``SizeRequirements`` idea).

A network carries one :class:`SizeRequirements` (``UFuser.size_requirements``); padding
(:mod:`emmafuse.padding`), tiling (:mod:`emmafuse.tiling`) and every caller that feeds the
network directly (the pseudo-GT fuser of training) read it instead of their own constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from emmafuse.errors import InputError

__all__ = ["SizeRequirements"]


@dataclass(frozen=True)
class SizeRequirements:
    """Input-size rules of a network.

    Attributes:
        multiple: every side must be a multiple of this (tile sides and offsets too, so that a
            tile sees the same sampling grid as the whole image).
        minimum: smallest side the network accepts (after padding).
        min_tile: tiling advice: the smallest tile side worth picking automatically (tiles must
            see enough of the image for its global statistics); 0: no advice.
        exact_tiling: tiling advice: whether tiled output equals whole-image output. A network
            with global attention (the U-Fuser) only approximates it, so it is tiled only when
            an image does not fit in memory.
    """

    multiple: int = 1
    minimum: int = 1
    min_tile: int = 0
    exact_tiling: bool = True

    def __post_init__(self) -> None:
        if self.multiple < 1 or self.minimum < 1 or self.min_tile < 0:
            raise InputError(f"invalid size requirements {self}")

    def padded(self, side: int) -> int:
        """Smallest side >= ``max(side, minimum)`` that is a multiple of ``multiple``."""
        target = max(side, self.minimum)
        return -(-target // self.multiple) * self.multiple

    def round_down(self, side: int) -> int:
        """``side`` rounded down to a multiple of ``multiple`` (a tile side)."""
        return side // self.multiple * self.multiple
