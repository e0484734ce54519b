"""Reading, writing and pairing image files (PIL), keeping 16-bit data 16-bit: the one home of
image files for ``fuse``, ``eval`` and ``train``.

Two readers: :func:`read_image` gives the stored pixels (uint8 / uint16 numpy) for fusion;
:func:`read_luma` gives float32 luminance in [0, 1] (BT.601 Y of colour files) for training.
The evaluator's reference-exact float64 0..255 reader builds on :func:`read_image`
(:func:`emmafuse.evaluation.reader.read_gray_reference`).

Every file is opened by one function, which refuses a file declaring more pixels than
:func:`max_pixels` (:data:`DEFAULT_MAX_PIXELS`, or the environment variable
``EMMAFUSE_MAX_PIXELS``) with an :class:`ImageReadError` before anything is decoded: a PNG
header can claim 30000x30000 pixels in a few bytes. 16-bit RGB(A) PNG and uncompressed TIFF
files keep their 16 bits (:mod:`emmafuse.colour16`); other 16-bit files that PIL decodes only
to 8 bit raise one warning.

Writes are atomic: the image goes to a temporary name in the target folder and is renamed
into place, so an interrupted run never leaves a half-written output. What a format can hold
(16 bit: PNG, and TIFF for gray; alpha: not JPEG or BMP) is checked by :func:`check_output_kind`,
which the command line calls before any work and :func:`write_image` calls again.

:func:`pair_folders` is the one way ``fuse``, ``eval`` and ``train`` match two folders: by
file stem (``01.png`` pairs ``01.jpg``). Policy for a stem given by two files of one folder
(``dup.jpg`` and ``dup.png``): refuse with :class:`PairingError` naming both files. Picking one
silently could fuse or score the wrong image; the user renames or removes one.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import emmafuse.colour16 as colour16
from emmafuse._fs import atomic_write
from emmafuse.color import BT601_WEIGHTS
from emmafuse.errors import EmmafuseError
from emmafuse.image_open import (  # re-exported: image_io is where callers find image files
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    ImageHeader,
    ImageReadError,
    fused_kind,
    max_pixels,
    open_image,
    read_header,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "ImageHeader",
    "check_output_kind",
    "fused_kind",
    "max_pixels",
    "read_header",
    "read_image",
    "read_luma",
    "rgb_to_y",
    "write_image",
    "output_format",
    "normalize_suffix",
    "index_images",
    "pair_folders",
    "FolderPairs",
    "PairingError",
    "IMAGE_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "ImageReadError",
]

#: Image files written by the CLI (PIL writes each of them).
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Image files read (and paired) by fuse, eval and train: the one suffix list.
IMAGE_SUFFIXES = OUTPUT_SUFFIXES + (".pgm", ".ppm")
#: Formats that keep 16-bit samples: PNG (gray, gray + alpha, colour), TIFF (gray only: PIL
#: writes no 16-bit colour TIFF).
_SIXTEEN_BIT = ("PNG", "TIFF")
#: Formats that cannot store an alpha channel (it is dropped with a warning).
_NO_ALPHA = ("JPEG", "BMP")


class PairingError(EmmafuseError, ValueError):
    """Two folders cannot be paired: a folder is missing, or two of its images share a stem."""


@dataclass(frozen=True)
class FolderPairs:
    """Images of two folders matched by file stem."""

    pairs: list[tuple[str, Path, Path]]  # (stem, ir file, vis file), sorted by stem
    only_ir: list[str]  # stems without a partner
    only_vis: list[str]

    @property
    def unpaired(self) -> list[str]:
        return sorted(self.only_ir + self.only_vis)


def index_images(folder: str | os.PathLike[str], role: str = "image") -> dict[str, Path]:
    """Image files of ``folder`` by stem (an empty dict for a folder without images).

    Raises:
        PairingError: the folder does not exist or is a file, or two images share a stem.
    """
    path = Path(folder)
    if not path.exists():
        raise PairingError(f"{role} folder does not exist: {path}")
    if not path.is_dir():
        raise PairingError(f"{role} path is not a folder: {path}")
    found: dict[str, Path] = {}
    clashes: list[str] = []
    for entry in sorted(path.iterdir()):
        if not entry.is_file() or entry.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if entry.stem in found:
            clashes.append(f"{found[entry.stem].name} and {entry.name}")
            continue
        found[entry.stem] = entry
    if clashes:
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise PairingError(
            f"{role} folder {path} has images that share a name: {'; '.join(clashes[:3])}{more}. "
            "Pairs are matched by file name without extension; rename or remove one of each"
        )
    return found


def pair_folders(
    ir_dir: str | os.PathLike[str], vis_dir: str | os.PathLike[str], roles: tuple[str, str] = ("ir", "vis")
) -> FolderPairs:
    """Match the images of two folders by file stem (see the module docstring for the policy).

    Raises:
        PairingError: a folder is missing, or one holds two images with the same stem.
    """
    irs, viss = index_images(ir_dir, roles[0]), index_images(vis_dir, roles[1])
    common = sorted(set(irs) & set(viss))
    return FolderPairs(
        [(stem, irs[stem], viss[stem]) for stem in common],
        sorted(set(irs) - set(viss)),
        sorted(set(viss) - set(irs)),
    )


def normalize_suffix(ext: str) -> str:
    """``"jpg"`` or ``".JPG"`` -> ``".jpg"``; raises ``ValueError`` for a suffix PIL cannot write."""
    text = ext.strip().lower()
    suffix = text if text.startswith(".") else f".{text}"
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"unknown output suffix {ext!r}; use one of {', '.join(OUTPUT_SUFFIXES)}")
    return suffix


def output_format(path: str | os.PathLike[str]) -> str:
    """The PIL format name for an output file, from its suffix (checked before any work).

    Raises:
        ValueError: a suffix emmafuse does not write.
    """
    from PIL import Image

    p = Path(path)
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None or p.suffix.lower() not in OUTPUT_SUFFIXES:
        shown = f"'{p.suffix}'" if p.suffix else "(none)"
        raise ValueError(f"{p}: unknown image file suffix {shown}; use one of {', '.join(OUTPUT_SUFFIXES)}")
    return fmt


def check_output_kind(path: str | os.PathLike[str], *, sixteen_bit: bool, channels: int) -> str:
    """The PIL format of ``path`` after checking it can hold such an image; returns the format.

    A format without alpha (JPEG, BMP) is accepted: the alpha channel is dropped on writing
    with a warning.

    Raises:
        ValueError: an unknown suffix, or 16-bit data in a format that would lose it.
    """
    p = Path(path)
    fmt = output_format(p)
    if sixteen_bit and (fmt not in _SIXTEEN_BIT or (fmt == "TIFF" and channels > 1)):
        kind = {1: "gray", 2: "gray + alpha"}.get(channels, "colour")
        raise ValueError(
            f"{p}: 16-bit {kind} output cannot be written as {p.suffix}; use .png"
            + (" or .tif" if channels == 1 else "")
            + " (a 16-bit visible image gives a 16-bit result)"
        )
    return fmt


def _warn_8bit(img: Any) -> None:
    """One warning per kind of file (the text names no file, so a folder warns once)."""
    warnings.warn(
        f"16-bit {img.format} files in mode {img.mode} are read as 8 bit: PIL decodes them only to 8 bit "
        "(16-bit gray files and 16-bit RGB(A) PNG and uncompressed TIFF files keep 16 bits)",
        UserWarning,
        stacklevel=3,
    )


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as numpy: uint8 gray/RGB/RGBA, or uint16 for 16-bit files (gray; RGB(A) PNG and
    uncompressed TIFF).

    Raises:
        ImageReadError: a missing or undecodable file, or one over the pixel limit
            (:func:`max_pixels`).

    Warns:
        UserWarning: a 16-bit file that PIL decodes only to 8 bit (e.g. 16-bit gray + alpha).
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with open_image(p) as img:
            low_tiles = colour16.low_byte_tiles(img)  # 16-bit colour that PIL would cut to 8 bit
            lossy = low_tiles is None and colour16.declares_16bit(img) and not img.mode.startswith("I")
            img.load()
            mode = img.mode
            if mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
                target = "L" if mode == "1" else "RGBA" if mode == "PA" or "transparency" in img.info else "RGB"
                img = img.convert(target)
            elif mode == "LA":
                img = img.convert("RGBA")
            arr = np.asarray(img)
            if lossy:
                _warn_8bit(img)
        if low_tiles is not None:
            with open_image(p) as again:
                arr = colour16.combine(arr, colour16.low_bytes(again, low_tiles))
    except FileNotFoundError:
        raise ImageReadError(f"{p}: no such file") from None
    except ImageReadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{p}: not a readable image ({exc})") from exc
    if arr.dtype == np.int32 or mode.startswith("I;16"):
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(f"{p}: 32-bit integer pixel values outside 0..65535 are not supported")
        arr = arr.astype(np.uint16)
    elif arr.dtype == np.float32:
        raise ImageReadError(f"{p}: floating-point image files are not supported; save as 8 or 16 bit")
    return arr


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an ``(H, W, 3)`` array (float32, same scale as the input)."""
    kr, kg, kb = BT601_WEIGHTS
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * kr + rgb[..., 1] * kg + rgb[..., 2] * kb


def read_luma(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as float32 ``(H, W)`` luminance in [0, 1]; colour images give their BT.601 Y.

    16-bit files are scaled by 65535; 32-bit integer and float files by 65535 when their
    maximum exceeds 255, else by 255; alpha is ignored.

    Raises:
        ImageReadError: the file cannot be decoded (``cannot read image PATH: ...``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open_image(Path(path)) as im:
            if colour16.low_byte_tiles(im) is not None:  # 16-bit RGB(A): all 16 bits of every sample
                im.close()
                return np.clip(rgb_to_y(read_image(path)[..., :3]) / 65535.0, 0.0, 1.0).astype(np.float32)
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
            elif mode in ("I", "F"):
                arr = np.asarray(im, dtype=np.float32)
                peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
                arr = arr / peak
            elif mode == "L":
                arr = np.asarray(im, dtype=np.float32) / 255.0
            elif mode in ("1", "LA"):
                arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            else:  # RGB, RGBA, P, CMYK, YCbCr, ...
                arr = rgb_to_y(np.asarray(im.convert("RGB"))) / 255.0
    except ImageReadError:
        raise
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a numpy image atomically; the format follows the file suffix.

    ``uint16`` images keep 16 bits in PNG (gray and colour) and TIFF (gray).

    Raises:
        ValueError: an unknown suffix, or 16-bit data the format cannot hold
            (:func:`check_output_kind`).

    Warns:
        UserWarning: the format (JPEG, BMP) cannot store the image's alpha channel, which is
            dropped (the text names no file, so a folder warns once).
    """
    from PIL import Image

    p = Path(path)
    channels = image.shape[-1] if image.ndim == 3 else 1
    fmt = check_output_kind(p, sixteen_bit=image.dtype == np.uint16, channels=channels)
    if fmt in _NO_ALPHA and channels in (2, 4):
        warnings.warn(
            f"{p.suffix} files cannot store an alpha channel: it is dropped (write .png, .tif or .webp to keep it)",
            UserWarning,
            stacklevel=2,
        )
        image = image[..., : channels - 1]
        channels -= 1
    if image.dtype == np.uint16 and fmt == "PNG" and channels > 1:  # PIL writes 16-bit gray only
        data = colour16.encode_png(image)
        return atomic_write(p, lambda tmp: Path(tmp).write_bytes(data))
    pil = Image.fromarray(image[..., 0] if image.ndim == 3 and channels == 1 else image)
    return atomic_write(p, lambda tmp: pil.save(tmp, format=fmt))
