"""One file reader, one luma function (issue 18, item 4).

``read_image`` decodes and checks every file; ``read_luma`` (training) and
``read_gray_reference`` (the metrics) are thin variants of it, and PIL images given to
``Fuser.fuse`` go through the same PIL conversion. The rules for floating-point and 32-bit
integer files are the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emmafuse.color import rgb_to_luma
from emmafuse.errors import EmmafuseError, InputError
from emmafuse.evaluation import read_gray_reference
from emmafuse.image_io import ImageReadError, pair_folders, read_image, read_luma
from emmafuse.inputs import decode_image

RNG = np.random.default_rng(18)
H, W = 12, 14


def _save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("reader", [read_image, read_luma, read_gray_reference])
def test_float_files_are_refused_by_every_reader(tmp_path, reader):
    """Training used to guess a scale (255 or 65535) for float files that fusion refused."""
    path = _save(tmp_path / "f.tif", Image.fromarray(RNG.random((H, W)).astype(np.float32), mode="F"))
    with pytest.raises(ImageReadError, match="floating-point image files are not supported"):
        reader(path)


def test_32bit_integer_files_are_16_bit_data_for_every_reader(tmp_path):
    """Values 0..255 in a 32-bit file are scaled by 65535, as read_image and fusion do (training
    used to scale them by 255); values above 65535 are refused by every reader."""
    data = RNG.integers(0, 256, (H, W)).astype(np.int32)
    path = _save(tmp_path / "i.tif", Image.fromarray(data, mode="I"))
    assert read_image(path).dtype == np.uint16
    np.testing.assert_array_equal(read_luma(path), data.astype(np.float32) / 65535.0)
    big = _save(tmp_path / "big.tif", Image.fromarray(np.full((H, W), 70000, np.int32), mode="I"))
    for reader in (read_image, read_luma, read_gray_reference):
        with pytest.raises(ImageReadError, match="outside 0..65535"):
            reader(big)
    with pytest.raises(InputError, match="outside 0..65535"):  # the same rule for a PIL image in memory
        decode_image(Image.open(big), "vis")


def _files(tmp_path: Path) -> dict[str, Path]:
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    gray = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    return {
        "gray": _save(tmp_path / "g.png", Image.fromarray(gray)),
        "rgb": _save(tmp_path / "c.bmp", Image.fromarray(rgb)),
        "gray_as_rgb": _save(tmp_path / "gc.png", Image.fromarray(np.stack([gray] * 3, -1))),
        "gray_alpha": _save(tmp_path / "la.png", Image.fromarray(RNG.integers(0, 256, (H, W, 2), dtype=np.uint8), "LA")),
        "palette_alpha": _save(tmp_path / "p.png", palette, transparency=0),
        "cmyk": _save(tmp_path / "k.jpg", Image.fromarray(rgb).convert("CMYK")),
        "16bit": _save(tmp_path / "s.png", Image.fromarray(RNG.integers(0, 65536, (H, W)).astype(np.uint16))),
    }


def test_the_gray_readers_are_the_pixels_of_read_image(tmp_path):
    for kind, path in _files(tmp_path).items():
        pixels = read_image(path)
        scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
        if pixels.ndim == 2:
            gray, levels = pixels.astype(np.float32), pixels.astype(np.float64)
        elif kind == "gray_alpha":  # read as RGBA with R = G = B: the gray channel
            gray, levels = pixels[..., 0].astype(np.float32), pixels[..., 0].astype(np.float64)
        else:
            gray, levels = rgb_to_luma(pixels), rgb_to_luma(pixels, like_cv2=True)
        np.testing.assert_array_equal(read_luma(path), np.clip(gray / scale, 0, 1), err_msg=kind)
        high = (pixels >> 8).astype(np.float64) if pixels.dtype == np.uint16 else levels  # cv2: the high byte
        np.testing.assert_array_equal(read_gray_reference(path), high, err_msg=kind)


def test_pil_images_and_files_decode_alike(tmp_path):
    """A PIL image given to Fuser.fuse and the same file read by read_image give the same pixels."""
    for kind, path in _files(tmp_path).items():
        if kind == "cmyk":  # files convert colour spaces; in-memory images must be L, RGB or RGBA
            with pytest.raises(TypeError, match="convert to 'L', 'RGB' or 'RGBA'"):
                decode_image(Image.open(path), "vis")
            continue
        from_file, _ = decode_image(read_image(path), "vis")
        with Image.open(path) as img:
            from_pil, spec = decode_image(img, "vis")
        if kind == "gray_alpha":  # a PIL LA image keeps its two planes; the file reader gives RGBA
            from_pil = from_pil[[0, 0, 0, 1]]
        assert from_pil.equal(from_file), kind


def test_luma_of_gray_stored_as_colour():
    gray = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 9)])
    np.testing.assert_array_equal(rgb_to_luma(rgba, like_cv2=True), gray)  # cv2's rounding gives the level back
    assert np.abs(rgb_to_luma(rgba) - gray).max() < 1e-4  # float32: within rounding
    with pytest.raises(InputError):
        rgb_to_luma(gray)


def test_pairing_errors_name_the_parameter(tmp_path):
    (tmp_path / "ir").mkdir()
    with pytest.raises(EmmafuseError) as info:
        pair_folders(tmp_path / "ir", tmp_path / "missing")
    assert info.value.parameter == "vis_dir" and "--" not in str(info.value)


def test_scoring_errors_name_parameters_not_flags(tmp_path):
    from emmafuse.evaluation import EvalError, plan_scoring

    for name in ("ir", "vi"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / "01.png")
    with pytest.raises(EvalError) as info:
        plan_scoring(tmp_path / "ir", tmp_path / "vi")
    assert "nothing to score" in str(info.value) and "--" not in str(info.value)
    assert info.value.parameter == "fused_dirs"
    with pytest.raises(EvalError) as info:
        plan_scoring(tmp_path / "ir", tmp_path / "nowhere", [tmp_path / "ir"])
    assert info.value.parameter == "vis_dir" and "--" not in str(info.value)
