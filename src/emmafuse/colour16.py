"""16-bit colour image files, which PIL decodes and encodes only as 8 bit.

Reading: PIL decodes a 16-bit RGB(A) PNG with the raw mode ``RGB;16B`` (an uncompressed TIFF
with ``RGB;16L`` or ``RGB;16B``) and keeps the high byte of every sample. Decoding the same file
once more with the other byte order (the same bits per pixel, so the same inflation and PNG
unfiltering) keeps the other byte, the low one; together they are the file's 16-bit samples
(:func:`combine`). Other 16-bit files that PIL reduces to 8 bit (16-bit gray + alpha PNG,
compressed colour TIFF) are reported by :func:`declares_16bit`, so the reader can warn.

Writing: :func:`encode_png` is a small PNG encoder for ``uint16`` arrays with 1 to 4 channels
(gray, gray + alpha, RGB, RGBA), rows filtered with PNG's "Up" filter and deflated with zlib.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from emmafuse.errors import InputError

__all__ = ["combine", "declares_16bit", "encode_png", "low_byte_tiles", "low_bytes"]

# raw mode that keeps the high byte -> the one that keeps the low byte of the same samples
_OTHER_BYTE = {"RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B", "RGBA;16B": "RGBA;16L", "RGBA;16L": "RGBA;16B"}
_CODECS = {"zip": ("PNG",), "raw": ("TIFF",)}  # decoders whose tiles are decoded by raw mode alone
_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def _rawmode(tile: Any) -> str | None:
    args = tile[3]
    if isinstance(args, tuple):
        args = args[0] if args else None
    return args if isinstance(args, str) else None


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    args = (rawmode, *tile[3][1:]) if isinstance(tile[3], tuple) else rawmode
    try:
        return tile._replace(args=args)  # Pillow >= 11: a NamedTuple
    except AttributeError:  # pragma: no cover - older Pillow: a plain tuple
        return (tile[0], tile[1], tile[2], args)


def low_byte_tiles(img: Any) -> list[Any] | None:
    """For an opened (not yet loaded) 16-bit RGB(A) PNG or uncompressed TIFF: its tiles decoding
    the low bytes (for :func:`low_bytes`); ``None`` for every other file."""
    tiles = list(img.tile)
    if not tiles or getattr(img, "format", None) not in _CODECS.get(tiles[0][0], ()):
        return None
    modes = [_rawmode(t) for t in tiles]
    if any(t[0] != tiles[0][0] or m not in _OTHER_BYTE for t, m in zip(tiles, modes)):
        return None
    return [_with_rawmode(t, _OTHER_BYTE[str(m)]) for t, m in zip(tiles, modes)]


def declares_16bit(img: Any) -> bool:
    """Whether an opened (not yet loaded) image stores 16-bit samples (any format, any mode)."""
    return str(img.mode).startswith("I;16") or any(";16" in (_rawmode(t) or "") for t in img.tile)


def low_bytes(img: Any, tiles: list[Any]) -> np.ndarray:
    """Decode an opened, not yet loaded second copy of a file with its :func:`low_byte_tiles`."""
    img.tile = tiles
    img.load()
    return np.asarray(img)


def combine(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """``uint16`` samples from their high and low bytes (two ``uint8`` arrays of one shape)."""
    return (high.astype(np.uint16) << 8) | low.astype(np.uint16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """A 16-bit PNG file of a ``uint16`` ``(H, W)`` or ``(H, W, C)`` array (C in 1..4).

    Raises:
        InputError: (a ``ValueError``) another dtype or layout.
    """
    arr = image if image.ndim == 3 else image[..., None]
    if image.dtype != np.uint16 or arr.ndim != 3 or arr.shape[-1] not in _COLOUR_TYPE or 0 in arr.shape:
        raise InputError(
            f"a 16-bit PNG needs a non-empty uint16 (H, W) or (H, W, 1..4) array, got {image.dtype} {image.shape}",
            parameter="image",
        )
    h, w, c = arr.shape
    rows = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    filtered = np.empty((h, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # "Up": each byte minus the byte above it (modulo 256)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps modulo 256
    header = struct.pack(">IIBBBBB", w, h, 16, _COLOUR_TYPE[c], 0, 0, 0)
    idat = zlib.compress(filtered.tobytes(), 6)
    return b"".join((b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _chunk(b"IEND", b"")))
