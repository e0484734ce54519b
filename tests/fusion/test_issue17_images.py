"""Issue 17, items 2 and 4: image files that declare huge sizes, 16-bit colour, lossy outputs.

- A PNG declaring 30000x30000 pixels raised ``PIL.Image.DecompressionBombError`` through
  ``fuse``, ``eval --fused`` and ``eval --weights`` (a traceback; folder mode aborted).
- 16-bit RGB PNGs were read as 8 bit; 16-bit sources with ``--ext jpg`` were fused and then
  skipped; alpha dropped by a ``.jpg``/``.bmp`` output went unmentioned.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emmafuse.cli import main
from emmafuse.image_io import MAX_PIXELS_ENV, ImageReadError, read_image, write_image
from emmafuse.samples import synthetic_pair

RNG = np.random.default_rng(1717)


# ----------------------------------------------------------------------------- helpers
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A tiny valid PNG whose IHDR is patched to declare ``width x height`` (CRC fixed)."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def png16(path: Path, arr: np.ndarray, filters: tuple[int, ...] = (0,)) -> Path:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit colour), rows cycling through
    ``filters`` (0 none, 1 Sub, 2 Up), so the reader's unfiltering is exercised."""
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = arr.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2).astype(np.int32)
    bpp = 2 * c
    raw = bytearray()
    for y in range(h):
        kind = filters[y % len(filters)]
        row = rows[y]
        if kind == 1:
            left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
            row = row - left
        elif kind == 2:
            row = row - (rows[y - 1] if y else 0)
        raw += bytes([kind]) + (row % 256).astype(np.uint8).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(raw))) + _chunk(b"IEND", b""))
    return path


def tiff16(path: Path, arr: np.ndarray) -> Path:
    """An uncompressed little-endian 16-bit RGB TIFF written by hand (PIL cannot write one)."""
    h, w, c = arr.shape
    pixels = arr.astype("<u2").tobytes()
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, c, 0), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, 0), (277, 3, 1, c), (278, 3, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    bits_at = 8 + 2 + 12 * len(tags) + 4
    pixels_at = bits_at + 2 * c
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        value = {258: bits_at, 273: pixels_at}.get(tag, value)
        ifd += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == 3 and count == 1 else struct.pack("<HHII", tag, kind, count, value)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + struct.pack("<" + "H" * c, *[16] * c) + pixels)
    return path


def _pair_folders(root: Path, n: int = 2) -> tuple[Path, Path]:
    ird, visd = root / "ir", root / "vi"
    ird.mkdir(), visd.mkdir()
    for i in range(n):
        ir, vis = synthetic_pair(40, 48, seed=i)
        Image.fromarray(ir).save(ird / f"{i:02d}.png")
        Image.fromarray(vis).save(visd / f"{i:02d}.png")
    return ird, visd


# ----------------------------------------------------------------------------- item 2: pixel limit
def test_read_image_refuses_a_huge_declared_size_in_one_line(tmp_path):
    bomb = huge_png(tmp_path / "bomb.png")
    with pytest.raises(ImageReadError) as info:
        read_image(bomb)
    text = str(info.value)
    assert str(bomb) in text and "30000x30000" in text and MAX_PIXELS_ENV in text and "\n" not in text


def test_the_limit_is_an_environment_variable(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageReadError, match=r"64x48 .*1000"):
        read_image(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_PIXELS_ENV):
        read_image(tmp_path / "small.png")


def test_raising_the_limit_above_pils_own_works(tmp_path, monkeypatch):
    import PIL.Image

    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # PIL would call 10000 pixels a bomb
    monkeypatch.setenv(MAX_PIXELS_ENV, "20000")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no DecompressionBombWarning either
        assert read_image(tmp_path / "big.png").shape == (100, 100)
    assert PIL.Image.MAX_IMAGE_PIXELS == 1000  # PIL's setting is left as it was


def test_fuse_single_pair_huge_file_is_a_one_line_error(tmp_path, random_weights, capsys):
    ir, _ = synthetic_pair(40, 48)
    Image.fromarray(ir).save(tmp_path / "ir.png")
    bomb = huge_png(tmp_path / "vis.png")
    rc = main(["fuse", str(tmp_path / "ir.png"), str(bomb), "-o", str(tmp_path / "o.png"), "--weights", str(random_weights)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(bomb) in err and MAX_PIXELS_ENV in err


def test_fuse_folder_mode_skips_the_huge_pair_and_goes_on(tmp_path, random_weights, capsys):
    ird, visd = _pair_folders(tmp_path)
    huge_png(visd / "00.png")
    rc = main(["fuse", "--ir-dir", str(ird), "--vis-dir", str(visd), "-o", str(tmp_path / "out"), "-q", "--weights", str(random_weights)])
    captured = capsys.readouterr()
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["01.png"]
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "00.png" in skipped[0] and MAX_PIXELS_ENV in skipped[0]


def test_eval_fused_and_weights_skip_the_huge_file(tmp_path, random_weights, capsys):
    ird, visd = _pair_folders(tmp_path)
    fused = tmp_path / "fused"
    fused.mkdir()
    for name in ("00.png", "01.png"):
        Image.open(ird / name).save(fused / name)
    huge_png(fused / "00.png")
    base = ["eval", "--ir-dir", str(ird), "--vis-dir", str(visd), "--metrics", "EN", "--json", "-q"]
    rc = main([*base, "--fused", str(fused)])
    captured = capsys.readouterr()
    assert rc == 1 and "00" in captured.err and MAX_PIXELS_ENV in captured.err and "Traceback" not in captured.err
    huge_png(visd / "00.png")
    rc = main([*base, "--weights", str(random_weights), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 1 and MAX_PIXELS_ENV in captured.err


def test_a_bad_limit_value_is_a_usage_error(tmp_path, random_weights, capsys, monkeypatch):
    ird, visd = _pair_folders(tmp_path, 1)
    monkeypatch.setenv(MAX_PIXELS_ENV, "-5")
    rc = main(["fuse", "--ir-dir", str(ird), "--vis-dir", str(visd), "-o", str(tmp_path / "out"), "--weights", str(random_weights)])
    err = capsys.readouterr().err
    assert rc == 2 and MAX_PIXELS_ENV in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- item 4: 16 bit, alpha
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("filters", [(0,), (1, 2)])
def test_16bit_colour_png_keeps_16_bits(tmp_path, channels, filters):
    data = RNG.integers(0, 65536, (9, 11, channels)).astype(np.uint16)
    arr = read_image(png16(tmp_path / "c.png", data, filters))
    assert arr.dtype == np.uint16 and np.array_equal(arr, data)  # before: uint8, the high bytes


def test_training_reader_uses_all_16_bits_too(tmp_path):
    from emmafuse.color import rgb_to_luma
    from emmafuse.image_io import read_luma

    data = RNG.integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    luma = read_luma(png16(tmp_path / "c.png", data))
    assert np.abs(luma - rgb_to_luma(data) / 65535).max() < 1e-6  # before: the high bytes only (errors up to 1/256)


@pytest.mark.parametrize(
    "suffix,sixteen,channels,ok",
    [(".png", True, 3, True), (".png", True, 2, True), (".tif", True, 1, True), (".tif", True, 3, False), (".jpg", True, 1, False), (".webp", True, 1, False), (".jpg", False, 4, True)],
)
def test_check_output_kind(suffix, sixteen, channels, ok):
    from emmafuse.image_io import check_output_kind

    if ok:
        check_output_kind(f"o{suffix}", sixteen_bit=sixteen, channels=channels)
    else:
        with pytest.raises(ValueError, match="16-bit"):
            check_output_kind(f"o{suffix}", sixteen_bit=sixteen, channels=channels)


def test_16bit_rgb_tiff_keeps_16_bits(tmp_path):
    data = RNG.integers(0, 65536, (6, 7, 3)).astype(np.uint16)
    arr = read_image(tiff16(tmp_path / "c.tif", data))
    assert arr.dtype == np.uint16 and np.array_equal(arr, data)


def test_16bit_colour_output_is_written_and_read_back(tmp_path):
    data = RNG.integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    write_image(tmp_path / "o.png", data)
    assert np.array_equal(read_image(tmp_path / "o.png"), data)
    with pytest.raises(ValueError, match="16-bit colour"):
        write_image(tmp_path / "o.tif", data)


def test_16bit_gray_alpha_png_warns_that_it_is_read_as_8_bit(tmp_path):
    data = RNG.integers(0, 65536, (5, 6, 2)).astype(np.uint16)
    with pytest.warns(UserWarning, match="8 bit"):
        arr = read_image(png16(tmp_path / "la.png", data))
    assert arr.dtype == np.uint8


def test_fuse_16bit_rgb_files_gives_a_16bit_rgb_file(tmp_path, random_weights):
    vis = RNG.integers(0, 65536, (32, 40, 3)).astype(np.uint16)
    png16(tmp_path / "vis.png", vis)
    Image.fromarray(RNG.integers(0, 65536, (32, 40)).astype(np.uint16)).save(tmp_path / "ir.png")
    out = tmp_path / "o.png"
    assert main(["fuse", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "-o", str(out), "--weights", str(random_weights)]) == 0
    fused = read_image(out)
    assert fused.dtype == np.uint16 and fused.shape == (32, 40, 3)
    assert np.count_nonzero(fused % 257) > fused.size // 2  # not 8-bit data scaled up


def test_16bit_sources_with_ext_jpg_are_refused_before_any_work(tmp_path, random_weights, capsys):
    ird, visd = tmp_path / "ir", tmp_path / "vi"
    ird.mkdir(), visd.mkdir()
    for i in range(2):
        Image.fromarray(RNG.integers(0, 65536, (32, 32)).astype(np.uint16)).save(ird / f"{i}.png")
        Image.fromarray(RNG.integers(0, 65536, (32, 32)).astype(np.uint16)).save(visd / f"{i}.png")
    # a weights file that does not exist: the check must come before loading anything
    argv = ["fuse", "--ir-dir", str(ird), "--vis-dir", str(visd), "-o", str(tmp_path / "out"), "--ext", "jpg", "--weights", "missing.safetensors"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "16-bit" in err and ".png" in err
    assert not (tmp_path / "out").exists()
    rc = main(["fuse", str(ird / "0.png"), str(visd / "0.png"), "-o", str(tmp_path / "o.jpg"), "--weights", "missing.safetensors"])
    err = capsys.readouterr().err
    assert rc == 2 and "16-bit" in err and "missing.safetensors" not in err


def test_alpha_dropped_by_jpg_or_bmp_output_warns_once(tmp_path, random_weights, capsys):
    ird, visd = tmp_path / "ir", tmp_path / "vi"
    ird.mkdir(), visd.mkdir()
    for i in range(3):
        ir, vis = synthetic_pair(32, 40, seed=i)
        Image.fromarray(ir).save(ird / f"{i}.png")
        Image.fromarray(np.dstack([vis, np.full((32, 40), 200, np.uint8)])).save(visd / f"{i}.png")
    for ext in ("jpg", "bmp"):
        out = tmp_path / f"out_{ext}"
        argv = ["fuse", "--ir-dir", str(ird), "--vis-dir", str(visd), "-o", str(out), "--ext", ext, "-q"]
        assert main([*argv, "--weights", str(random_weights)]) == 0
        warned = [line for line in capsys.readouterr().err.splitlines() if "alpha" in line]
        assert len(warned) == 1 and warned[0].startswith("emmafuse: warning:"), warned
        assert len(list(out.iterdir())) == 3
