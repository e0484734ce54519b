"""Opening image files under emmafuse's pixel limit, and what a file holds from its header.

A PNG header can declare 30000x30000 pixels in a few bytes (a "decompression bomb"). Every
image file emmafuse reads is opened by :func:`open_image`, which refuses a file declaring more
pixels than :func:`max_pixels` with an :class:`ImageReadError` before anything is decoded. The
limit is :data:`DEFAULT_MAX_PIXELS` (PIL's own), or the environment variable
``EMMAFUSE_MAX_PIXELS``, which may also raise it above PIL's (PIL's limit is set aside while a
header is parsed; PIL's ``DecompressionBombWarning`` is silenced, as emmafuse's limit replaces it).

:func:`read_header` says what :func:`emmafuse.image_io.read_image` will give for a file (size,
channels, bit depth) without decoding it; :func:`fused_kind` applies the layout rule of
:mod:`emmafuse.planes` to two headers, so the command line can check its outputs before any work.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import emmafuse.colour16 as colour16
from emmafuse.errors import EmmafuseError, InputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "ImageHeader",
    "ImageReadError",
    "fused_kind",
    "max_pixels",
    "open_image",
    "read_header",
]

#: Environment variable that sets the largest image (in pixels) emmafuse reads.
MAX_PIXELS_ENV = "EMMAFUSE_MAX_PIXELS"
#: The default pixel limit: PIL's own decompression-bomb limit (about 179 megapixels, e.g.
#: 16384 x 10922), so every image PIL reads by default is read.
DEFAULT_MAX_PIXELS = 178_956_970
_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(EmmafuseError, ValueError):
    """A file could not be read as an image (or declares more pixels than :func:`max_pixels`)."""


def max_pixels() -> int:
    """The largest image, in pixels, that emmafuse reads: ``EMMAFUSE_MAX_PIXELS`` or the default.

    Raises:
        InputError: (a ``ValueError``) the environment variable is not a positive integer.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_PIXELS_ENV}={text!r} must be a positive integer number of pixels (e.g. 400000000)")
    return value


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Any]:
    """``PIL.Image.open`` with emmafuse's pixel limit instead of PIL's (checked before decoding)."""
    import PIL.Image

    limit = max_pixels()
    with _PIL_LIMIT_LOCK:  # PIL's limit is a module global: replaced only while the header is parsed
        saved, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None
        try:
            img = PIL.Image.open(path)
        finally:
            PIL.Image.MAX_IMAGE_PIXELS = saved
    with img:
        width, height = img.size
        if width * height > limit:
            raise ImageReadError(
                f"{path}: {width}x{height} = {width * height} pixels is more than the limit of {limit}; "
                f"if the file is genuine, raise the limit with the environment variable {MAX_PIXELS_ENV}"
            )
        with warnings.catch_warnings():  # the limit above replaces PIL's (it may be higher)
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            yield img


@dataclass(frozen=True)
class ImageHeader:
    """What :func:`read_image` will give for a file, known from its header alone."""

    width: int
    height: int
    channels: int  # 1 gray, 3 RGB, 4 RGBA (gray + alpha files are read as RGBA)
    sixteen_bit: bool  # read as uint16


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """The size, channels and bit depth :func:`read_image` gives, without decoding the pixels.

    Raises:
        ImageReadError: the file cannot be opened as an image or is over the pixel limit.
    """
    p = Path(path)
    try:
        with open_image(p) as img:
            mode = img.mode
            alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info)
            channels = 1 if mode in ("L", "1", "I", "F") or mode.startswith("I;16") else 4 if alpha else 3
            sixteen = mode == "I" or mode.startswith("I;16") or colour16.low_byte_tiles(img) is not None
            return ImageHeader(img.width, img.height, channels, sixteen)
    except FileNotFoundError:
        raise ImageReadError(f"{p}: no such file") from None
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{p}: not a readable image ({exc})") from exc


def fused_kind(ir: ImageHeader, vis: ImageHeader) -> tuple[bool, int]:
    """``(16 bit, channels)`` of the image ``Fuser.fuse`` makes of two such files.

    The rule of :mod:`emmafuse.planes`: the dtype of ``vis``; colour channels when either
    input has them, alpha when either has it (layouts only, never pixel values).
    """
    colour = ir.channels >= 3 or vis.channels >= 3
    alpha = ir.channels in (2, 4) or vis.channels in (2, 4)
    return vis.sixteen_bit, (3 if colour else 1) + int(alpha)
