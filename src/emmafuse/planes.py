"""Colour planes of decoded images, beside :mod:`emmafuse.color`: what the network fuses and
what is put back around its result.

The network fuses luminance only. :func:`prepare_pair` decodes an input pair into the two
luma planes plus the chroma and alpha to keep; :func:`finish` puts them back around the fused
luma and encodes the result like the visible input.

Layout (a function of the input layouts only, never of pixel values): the result has colour
channels when either input has them (RGB/RGBA), an alpha channel when either has one, and the
container, dtype and layout style of ``vis``; a PIL ``vis`` in a 16-bit or float mode gets the
fused luminance only.

Values (RGB images whose channels are equal count as gray, :func:`emmafuse.color.is_gray_rgb`):
the visible image's chroma wins; a colour IR slot (PET/SPECT) gives it otherwise; with no
chroma at all a colour-layout result has R = G = B.

Very large images are converted in row strips, so float temporaries stay small; the values
are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emmafuse.color import is_gray_rgb, rgb_to_ycbcr, ycbcr_to_rgb
from emmafuse.errors import InputError
from emmafuse.inputs import ImageSpec, decode_image, encode_image

__all__ = ["Pair", "finish", "finish_planes", "prepare_pair", "row_strips", "split_planes"]

#: Colour conversion and output encoding run in strips of this many rows, so that the float
#: temporaries of a very large image (8K and up) stay small; the result is identical.
_STRIP_ROWS = 256
_STRIP_MIN_PIXELS = 1 << 22


@dataclass
class Pair:
    """One decoded input pair, ready for the network."""

    ir_y: torch.Tensor  # (1, H, W)
    vis_y: torch.Tensor  # (1, H, W)
    chroma: torch.Tensor | None  # (2, H, W) Cb, Cr of the colour input
    alpha: torch.Tensor | None  # (1, H, W)
    out_spec: ImageSpec
    rgb_out: bool = False  # colour layout without chroma: the gray result written as R = G = B
    notes: tuple[str, ...] = ()  # warnings about the inputs, raised by Fuser.fuse


def row_strips(height: int, width: int) -> list[tuple[int, int]]:
    """Row ranges an image of this size is converted in (one range below 4 MP)."""
    if height * width < _STRIP_MIN_PIXELS:
        return [(0, height)]
    return [(r, min(r + _STRIP_ROWS, height)) for r in range(0, height, _STRIP_ROWS)]


def split_planes(chw: torch.Tensor, spec: ImageSpec) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(luma, chroma or None, alpha or None) of a decoded image.

    An RGB(A) image whose channels are equal is gray: its luma is its first channel (exactly
    what the gray image would give) and it has no chroma to offer.
    """
    alpha = chw[-1:].clone() if spec.has_alpha else None
    if spec.has_color and not is_gray_rgb(chw[:3]):
        h, w = chw.shape[-2:]
        ycc = torch.empty(3, h, w, dtype=chw.dtype)
        for r0, r1 in row_strips(h, w):
            ycc[:, r0:r1] = rgb_to_ycbcr(chw[None, :3, r0:r1])[0]
        return ycc[:1], ycc[1:], alpha
    return chw[:1], None, alpha


def prepare_pair(ir: object, vis: object, index: int | None) -> Pair:
    """Decode and check one input pair (``index``: its position in a list or batch, for messages)."""
    suffix = "" if index is None else f"[{index}]"
    ir_chw, ir_spec = decode_image(ir, f"ir{suffix}")
    vis_chw, vis_spec = decode_image(vis, f"vis{suffix}")
    if (ir_spec.height, ir_spec.width) != (vis_spec.height, vis_spec.width):
        raise InputError(
            f"ir{suffix} and vis{suffix} must have the same height and width (registered pair): "
            f"ir is {ir_spec.height}x{ir_spec.width}, vis is {vis_spec.height}x{vis_spec.width}"
        )
    ir_y, ir_chroma, ir_alpha = split_planes(ir_chw, ir_spec)
    vis_y, vis_chroma, vis_alpha = split_planes(vis_chw, vis_spec)
    # The visible image's colour wins; a colour IR slot (PET/SPECT in medical pairs) is used otherwise.
    # Gray-as-RGB images have no chroma here, so a real colour image in either slot keeps its colour.
    chroma = vis_chroma if vis_chroma is not None else ir_chroma
    alpha = vis_alpha if vis_alpha is not None else ir_alpha
    # The layout depends on the inputs' layouts alone: a colour-layout input gives a colour-layout
    # result even when neither image carries real colour (then R = G = B).
    rgb_out = ir_spec.has_color or vis_spec.has_color
    if vis_spec.gray_only:  # the output is the fused luminance, not the red channel of a colour result
        chroma = alpha = None
        rgb_out = False
    notes = tuple(n for n in (ir_spec.note, vis_spec.note) if n)
    return Pair(ir_y, vis_y, chroma, alpha, vis_spec, rgb_out=rgb_out, notes=notes)


def finish_planes(
    fused_y: torch.Tensor, chroma: torch.Tensor | None, alpha: torch.Tensor | None, rgb_out: bool = False
) -> torch.Tensor:
    """The output planes: fused luma with the kept chroma (as RGB) and alpha."""
    planes = fused_y
    if chroma is not None:
        rgb = ycbcr_to_rgb(torch.cat((fused_y, chroma), 0)[None])[0]
        planes = rgb.clamp(0.0, 1.0)
    elif rgb_out:  # exact copies, not a YCbCr round trip: the channels stay equal
        planes = fused_y.expand(3, -1, -1)
    if alpha is not None:
        planes = torch.cat((planes, alpha), 0)
    return planes


def finish(fused_y: torch.Tensor, pair: Pair) -> Any:
    """Put chroma and alpha back and encode in the visible input's container."""
    h, w = fused_y.shape[-2:]
    strips = row_strips(h, w)
    if len(strips) == 1 or pair.out_spec.kind == "pil":
        return encode_image(finish_planes(fused_y, pair.chroma, pair.alpha, pair.rgb_out), pair.out_spec)
    # large numpy / torch outputs: convert and encode row strips, then join them (same values)
    parts = []
    for r0, r1 in strips:
        chroma = pair.chroma[:, r0:r1] if pair.chroma is not None else None
        alpha = pair.alpha[:, r0:r1] if pair.alpha is not None else None
        parts.append(encode_image(finish_planes(fused_y[:, r0:r1], chroma, alpha, pair.rgb_out), pair.out_spec))
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=-2 if first.ndim == 3 else 0)
    return np.concatenate(parts, axis=0)
