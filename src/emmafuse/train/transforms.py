"""The transformation group G of the equivariance loss: shifts, rotations, reflections.

Every element is an affine map from output pixel coordinates to source coordinates
(x right, y down, pixel centres at integers). Shifts wrap around (``torch.roll``
semantics), flips and quarter turns are exact permutations, arbitrary rotations are
bilinear about the image centre with zero fill and a *validity mask* marking the output
pixels whose four bilinear neighbours all lie inside the image.

A whole batch with a different element per sample costs one ``gather`` (+ one
``grid_sample`` when the batch holds arbitrary rotations): the training step is bound by
kernel-launch overhead, so per-sample Python loops over tensors are avoided.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emmafuse.errors import InputError

__all__ = ["Transform", "TransformGroup", "apply_transforms", "official_transforms"]

_KINDS = ("identity", "shift", "flip", "rot90", "rotate")


@dataclass(frozen=True)
class Transform:
    """One group element.

    - ``shift``: ``torch.roll`` by ``(dy, dx)`` (circular).
    - ``flip``: ``flip`` = 1 horizontal, 2 vertical, 3 both.
    - ``rot90``: ``k`` quarter turns counter-clockwise (``torch.rot90(x, k, (-2, -1))``).
    - ``rotate``: ``angle`` degrees counter-clockwise about the centre (bilinear, masked).
    """

    kind: str = "identity"
    dy: int = 0
    dx: int = 0
    flip: int = 0
    k: int = 0
    angle: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(f"unknown transform kind {self.kind!r}", parameter="kind")

    @property
    def exact(self) -> bool:
        """True when the transform permutes pixels (no interpolation, no invalid pixels)."""
        return self.kind != "rotate"

    def inverse(self) -> "Transform":
        if self.kind == "shift":
            return Transform("shift", dy=-self.dy, dx=-self.dx)
        if self.kind == "rot90":
            return Transform("rot90", k=(-self.k) % 4)
        if self.kind == "rotate":
            return Transform("rotate", angle=-self.angle)
        return self

    def matrix(self, h: int, w: int) -> list[list[float]]:
        """2x3 map ``[sx, sy] = M @ [x, y, 1]`` from output to source pixel coordinates."""
        if self.kind == "identity":
            return [[1, 0, 0], [0, 1, 0]]
        if self.kind == "shift":
            return [[1, 0, -self.dx], [0, 1, -self.dy]]
        if self.kind == "flip":
            sx, tx = (-1, w - 1) if self.flip & 1 else (1, 0)
            sy, ty = (-1, h - 1) if self.flip & 2 else (1, 0)
            return [[sx, 0, tx], [0, sy, ty]]
        c: float
        s: float
        if self.kind == "rot90":
            k = self.k % 4
            if k % 2 and h != w:
                raise InputError(f"quarter turns need square images, got {h}x{w}", parameter="images")
            c, s = ((1, 0), (0, 1), (-1, 0), (0, -1))[k]
        else:
            rad = math.radians(self.angle)
            c, s = math.cos(rad), math.sin(rad)
        # source = R (p - centre) + centre, R = [[c, -s], [s, c]] (visual counter-clockwise turn)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        return [[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]]


def apply_transforms(x: torch.Tensor, transforms: Sequence[Transform]) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``transforms[i]`` to ``x[i]``.

    Args:
        x: ``(N, C, H, W)``.
        transforms: ``N`` elements.

    Returns:
        ``(y, mask)``: the transformed batch and a ``(N, 1, H, W)`` float mask, 1 where the
        output pixel is valid (everywhere for exact transforms).
    """
    n, c, h, w = x.shape
    if len(transforms) != n:
        raise InputError(f"{len(transforms)} transforms for a batch of {n}", parameter="transforms")
    dev = x.device
    mats = torch.tensor([t.matrix(h, w) for t in transforms], dtype=torch.float64).to(dev)  # (N, 2, 3)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=dev, dtype=torch.float64), torch.arange(w, device=dev, dtype=torch.float64), indexing="ij"
    )
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, device=dev, dtype=torch.float64)])
    src = mats @ pts  # (N, 2, HW): source x, y
    # exact elements: integer coordinates, wrapped (only shifts ever leave the image)
    sx = torch.remainder(torch.round(src[:, 0]), w).long()
    sy = torch.remainder(torch.round(src[:, 1]), h).long()
    idx = (sy * w + sx)[:, None, :].expand(n, c, h * w)
    y = x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)
    mask = torch.ones(n, 1, h, w, device=dev, dtype=x.dtype)
    rot = [i for i, t in enumerate(transforms) if not t.exact]
    if rot:
        sel = torch.tensor(rot, device=dev)
        s = src.index_select(0, sel)
        gx = s[:, 0] * (2 / max(w - 1, 1)) - 1
        gy = s[:, 1] * (2 / max(h - 1, 1)) - 1
        # float32 sampling: bf16 grid coordinates would be off by a quarter pixel
        grid = torch.stack([gx, gy], -1).view(len(rot), h, w, 2).float()
        rotated = F.grid_sample(x.index_select(0, sel).float(), grid, "bilinear", "zeros", align_corners=True)
        y = y.index_copy(0, sel, rotated.to(y.dtype))
        tol = 1e-6
        valid = (s[:, 0] >= -tol) & (s[:, 0] <= w - 1 + tol) & (s[:, 1] >= -tol) & (s[:, 1] <= h - 1 + tol)
        mask = mask.index_copy(0, sel, valid.view(len(rot), 1, h, w).to(x.dtype))
    return y, mask


class TransformGroup:
    """Samples group elements with the official recipe's expected proportions.

    The official step applies identity + 3 shifts + 3 rotations + 3 flips to every fused
    image; drawing one element per sample with probabilities 0.1 / 0.3 / 0.3 / 0.3 gives
    the same expected loss (an unbiased estimate of the expectation over g) at a tenth of
    the cost.
    """

    def __init__(self, rotation: str = "arbitrary", probs: Sequence[float] = (0.1, 0.3, 0.3, 0.3)) -> None:
        if rotation not in ("arbitrary", "rot90"):
            raise InputError("rotation must be 'arbitrary' or 'rot90'", parameter="rotation")
        if len(probs) != 4 or min(probs) < 0 or sum(probs) <= 0:
            raise InputError("probs: four non-negative weights (identity, shift, rotation, flip)", parameter="probs")
        self.rotation = rotation
        self.probs = torch.tensor(probs, dtype=torch.float64) / sum(probs)

    def sample(self, n: int, h: int, w: int, generator: torch.Generator) -> list[Transform]:
        """``n`` independent elements for ``h x w`` images (CPU generator: savable state)."""
        kinds = torch.multinomial(self.probs, n, replacement=True, generator=generator).tolist()
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64).tolist()
        out: list[Transform] = []
        for kind, (u1, u2) in zip(kinds, u):
            if kind == 0:
                out.append(Transform())
            elif kind == 1:  # any non-zero circular offset on each axis
                out.append(Transform("shift", dy=1 + int(u1 * (h - 1)), dx=1 + int(u2 * (w - 1))))
            elif kind == 2:
                if self.rotation == "rot90":
                    # odd quarter turns would change the shape of non-square images
                    out.append(Transform("rot90", k=1 + int(u1 * 3) if h == w else 2))
                else:
                    out.append(Transform("rotate", angle=u1 * 360.0))
            else:
                out.append(Transform("flip", flip=1 + int(u1 * 3)))
        return out


def official_transforms(h: int, w: int, generator: torch.Generator) -> list[Transform]:
    """The official step's nine elements: 3 random shifts, rotations 10/130/250 deg, 3 flips."""
    shifts = [
        Transform("shift", dy=int(a), dx=int(b))
        for a, b in zip(
            1 + torch.randperm(h - 1, generator=generator)[:3], 1 + torch.randperm(w - 1, generator=generator)[:3]
        )
    ]
    rotations = [Transform("rotate", angle=a) for a in (10.0, 130.0, 250.0)]
    flips = [Transform("flip", flip=f) for f in (1, 2, 3)]
    return shifts + rotations + flips
