"""Reading and writing image files for the CLI (PIL), keeping 16-bit data 16-bit.

Writes are atomic: the image goes to a temporary name in the target folder and is renamed
into place, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emmafuse.checkpoint import atomic_write

__all__ = ["read_image", "write_image", "IMAGE_SUFFIXES", "ImageReadError"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """A file could not be read as an image."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as numpy: uint8 gray/RGB/RGBA, or uint16 gray for 16-bit files."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
            elif mode == "LA":
                img = img.convert("RGBA")
            arr = np.asarray(img)
    except FileNotFoundError:
        raise ImageReadError(f"{p}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{p}: not a readable image ({exc})") from exc
    if arr.dtype == np.int32 or mode.startswith("I;16"):
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(f"{p}: 32-bit integer pixel values outside 0..65535 are not supported")
        arr = arr.astype(np.uint16)
    elif arr.dtype == np.float32:
        raise ImageReadError(f"{p}: floating-point image files are not supported; save as 8 or 16 bit")
    return arr


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a numpy image atomically; the format follows the file suffix (PNG keeps 16 bit)."""
    from PIL import Image

    p = Path(path)
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"{p}: unknown image file suffix '{p.suffix}'; use one of {', '.join(IMAGE_SUFFIXES)}")
    if image.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        raise ValueError(f"{p}: 16-bit output needs .png or .tif, not {p.suffix}")
    if image.dtype == np.uint16 and image.ndim == 3:
        raise ValueError(f"{p}: 16-bit colour output is not supported by PIL; fuse to 8 bit or gray")
    pil = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    if fmt == "JPEG" and pil.mode == "RGBA":
        pil = pil.convert("RGB")
    return atomic_write(p, lambda tmp: pil.save(tmp, format=fmt))
