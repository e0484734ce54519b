"""Reading, writing and pairing image files (PIL), keeping 16-bit data 16-bit: the one home of
image files for ``fuse``, ``eval`` and ``train``.

One reader, one set of rules: every file is decoded and checked by the same code (the pixel
limit below, then :func:`emmafuse.inputs.pil_pixels`, the conversion PIL inputs of
``Fuser.fuse`` use too). :func:`read_image` gives the stored pixels (uint8 / uint16 numpy) for
fusion; :func:`read_luma` gives the same pixels as float32 luminance in [0, 1] (BT.601 Y of
colour files, :func:`emmafuse.color.rgb_to_luma`) for training; the evaluator's float64 0..255
gray levels are :func:`emmafuse.evaluation.reader.read_gray_reference`, also on these pixels.
The rules:

- 8-bit samples are scaled by 255; 16-bit files and 32-bit integer files (values 0..65535,
  others are refused) by 65535, whatever their largest value;
- files with floating-point samples (TIFF mode ``F``) are refused by every reader, with
  :class:`ImageReadError`: their scale is not part of the format (0..1, 0..255 or sensor
  units) and a guess would darken or saturate them silently; save them as 8 or 16 bit
  (in-memory float arrays passed to ``Fuser.fuse`` must lie in [0, 1]);
- palettes and 1-bit files are expanded; CMYK, YCbCr, LAB and HSV files become RGB; gray +
  alpha becomes RGBA for :func:`read_image` (alpha is ignored by the gray readers).

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
from emmafuse.color import rgb_to_luma
from emmafuse.errors import EmmafuseError, InputError
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
from emmafuse.inputs import pil_pixels

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
#: What the largest sample of each stored dtype means (1.0 in float images).
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


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


def index_images(
    folder: str | os.PathLike[str], role: str = "image", *, parameter: str | None = None
) -> dict[str, Path]:
    """Image files of ``folder`` by stem (an empty dict for a folder without images).

    ``parameter`` names the caller's argument that gave ``folder`` (for the error).

    Raises:
        PairingError: the folder does not exist or is a file, or two images share a stem.
    """
    path = Path(folder)
    if not path.exists():
        raise PairingError(f"{role} folder does not exist: {path}", parameter=parameter)
    if not path.is_dir():
        raise PairingError(f"{role} path is not a folder: {path}", parameter=parameter)
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
            "Pairs are matched by file name without extension; rename or remove one of each",
            parameter=parameter,
        )
    return found


def pair_folders(
    ir_dir: str | os.PathLike[str], vis_dir: str | os.PathLike[str], roles: tuple[str, str] = ("ir", "vis")
) -> FolderPairs:
    """Match the images of two folders by file stem (see the module docstring for the policy).

    Raises:
        PairingError: a folder is missing, or one holds two images with the same stem
            (``parameter``: ``"ir_dir"`` or ``"vis_dir"``).
    """
    irs = index_images(ir_dir, roles[0], parameter="ir_dir")
    viss = index_images(vis_dir, roles[1], parameter="vis_dir")
    common = sorted(set(irs) & set(viss))
    return FolderPairs(
        [(stem, irs[stem], viss[stem]) for stem in common],
        sorted(set(irs) - set(viss)),
        sorted(set(viss) - set(irs)),
    )


def normalize_suffix(ext: str) -> str:
    """``"jpg"`` or ``".JPG"`` -> ``".jpg"``; raises :class:`~emmafuse.errors.InputError` (a
    ``ValueError``, ``parameter="ext"``) for a suffix PIL cannot write."""
    text = ext.strip().lower()
    suffix = text if text.startswith(".") else f".{text}"
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"unknown output suffix {ext!r}; use one of {', '.join(OUTPUT_SUFFIXES)}", parameter="ext")
    return suffix


def output_format(path: str | os.PathLike[str]) -> str:
    """The PIL format name for an output file, from its suffix (checked before any work).

    Raises:
        InputError: (a ``ValueError``, ``parameter="path"``) a suffix emmafuse does not write.
    """
    from PIL import Image

    p = Path(path)
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None or p.suffix.lower() not in OUTPUT_SUFFIXES:
        shown = f"'{p.suffix}'" if p.suffix else "(none)"
        raise InputError(
            f"{p}: unknown image file suffix {shown}; use one of {', '.join(OUTPUT_SUFFIXES)}", parameter="path"
        )
    return fmt


def check_output_kind(path: str | os.PathLike[str], *, sixteen_bit: bool, channels: int) -> str:
    """The PIL format of ``path`` after checking it can hold such an image; returns the format.

    A format without alpha (JPEG, BMP) is accepted: the alpha channel is dropped on writing
    with a warning.

    Raises:
        InputError: (a ``ValueError``, ``parameter="path"``) an unknown suffix, or 16-bit data
            in a format that would lose it.
    """
    p = Path(path)
    fmt = output_format(p)
    if sixteen_bit and (fmt not in _SIXTEEN_BIT or (fmt == "TIFF" and channels > 1)):
        kind = {1: "gray", 2: "gray + alpha"}.get(channels, "colour")
        raise InputError(
            f"{p}: 16-bit {kind} output cannot be written as {p.suffix}; use .png"
            + (" or .tif" if channels == 1 else "")
            + " (a 16-bit visible image gives a 16-bit result)",
            parameter="path",
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


def _read_pixels(p: Path) -> np.ndarray:
    """The one decode of a file: its samples (uint8 or uint16; gray, gray + alpha, RGB, RGBA).

    Raises:
        ImageReadError: a missing, undecodable or floating-point file, or one over the pixel
            limit; the message names the file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open_image(p) as img:
            low_tiles = colour16.low_byte_tiles(img)  # 16-bit colour that PIL would cut to 8 bit
            lossy = low_tiles is None and colour16.declares_16bit(img) and not img.mode.startswith("I")
            img.load()
            arr = pil_pixels(img, str(p), colour_spaces=True)
            if lossy:
                _warn_8bit(img)
        if low_tiles is not None:
            with open_image(p) as again:
                arr = colour16.combine(arr, colour16.low_bytes(again, low_tiles))
    except FileNotFoundError:
        raise ImageReadError(f"{p}: no such file") from None
    except ImageReadError:
        raise
    except InputError as exc:  # a mode or value range the rules refuse; the message names the file
        raise ImageReadError(str(exc)) from exc
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{p}: not a readable image ({exc})") from exc
    if arr.dtype == np.float32:
        raise ImageReadError(f"{p}: floating-point image files are not supported; save as 8 or 16 bit")
    return arr


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as numpy: uint8 gray/RGB/RGBA, or uint16 for 16-bit files (gray; RGB(A) PNG and
    uncompressed TIFF). Gray + alpha files give RGBA (R = G = B), the layouts ``Fuser.fuse`` takes.

    Raises:
        ImageReadError: a missing or undecodable file, a floating-point file, or one over the
            pixel limit (:func:`max_pixels`).

    Warns:
        UserWarning: a 16-bit file that PIL decodes only to 8 bit (e.g. 16-bit gray + alpha).
    """
    arr = _read_pixels(Path(path))
    if arr.ndim == 3 and arr.shape[-1] == 2:  # gray + alpha -> RGBA, as PIL's convert("RGBA")
        arr = arr[..., [0, 0, 0, 1]]
    return arr


def read_luma(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as float32 ``(H, W)`` luminance in [0, 1] (training's reader).

    The pixels of :func:`read_image`, scaled by the full range of their type (255 or 65535);
    colour files give their BT.601 Y (:func:`emmafuse.color.rgb_to_luma`), gray + alpha files
    their gray channel; alpha is ignored.

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    arr = _read_pixels(Path(path))
    scale = _FULL_SCALE[arr.dtype]
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[-1] == 2 else rgb_to_luma(arr)
    return np.clip(arr.astype(np.float32, copy=False) / scale, 0.0, 1.0).astype(np.float32)


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a numpy image atomically; the format follows the file suffix.

    ``uint16`` images keep 16 bits in PNG (gray and colour) and TIFF (gray).

    Raises:
        InputError: (a ``ValueError``) an unknown suffix, or 16-bit data the format cannot hold
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
