"""Issue 17, item 1: the layout of ``Fuser.fuse``'s result depends on the inputs' layouts only.

Before the fix a ``(H, W, 3)`` visible image whose channels happen to be equal gave a
``(H, W, 1)`` result, and the same image with a little colour a ``(H, W, 3)`` one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emmafuse.metrics import evaluate

RNG = np.random.default_rng(17)
H, W = 24, 32


def _gray() -> np.ndarray:
    return RNG.integers(0, 256, (H, W), dtype=np.uint8)


def _rgb_of(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def _tinted(gray: np.ndarray) -> np.ndarray:
    rgb = _rgb_of(gray).copy()
    rgb[0, 0, 0] ^= 1  # one pixel with a trace of colour
    return rgb


def _pet() -> np.ndarray:
    base = RNG.integers(0, 256, (H, W), dtype=np.uint8).astype(np.int32)
    return np.stack([base, 255 - base, base // 3], -1).astype(np.uint8)


def test_gray_as_rgb_visible_keeps_its_rgb_layout(fuser):
    ir, gray = _gray(), _gray()
    as_rgb, tinted = fuser.fuse(ir, _rgb_of(gray)), fuser.fuse(ir, _tinted(gray))
    assert as_rgb.shape == tinted.shape == (H, W, 3)  # before: (H, W, 1) and (H, W, 3)
    assert (as_rgb[..., 0] == as_rgb[..., 1]).all() and (as_rgb[..., 1] == as_rgb[..., 2]).all()
    assert np.array_equal(as_rgb[..., 0], fuser.fuse(ir, gray))  # the values are the gray result


@pytest.mark.parametrize(
    "ir_kind,vis_kind,shape",
    [
        ("2d", "2d", (H, W)),
        ("2d", "hw1", (H, W, 1)),
        ("2d", "gray_rgb", (H, W, 3)),
        ("gray_rgb", "2d", (H, W, 3)),  # the colour layout of either input decides
        ("gray_rgb", "gray_rgb", (H, W, 3)),
        ("pet", "2d", (H, W, 3)),
        ("pet", "gray_rgb", (H, W, 3)),
        ("gray_rgba", "2d", (H, W, 4)),
        ("2d", "gray_rgba", (H, W, 4)),
    ],
)
def test_numpy_layout_table(fuser, ir_kind, vis_kind, shape):
    make = {
        "2d": _gray,
        "hw1": lambda: _gray()[..., None],
        "gray_rgb": lambda: _rgb_of(_gray()),
        "gray_rgba": lambda: np.dstack([_rgb_of(_gray()), np.full((H, W), 9, np.uint8)]),
        "pet": _pet,
    }
    assert fuser.fuse(make[ir_kind](), make[vis_kind]()).shape == shape


def test_colour_ir_with_gray_as_rgb_vis_keeps_the_ir_colour(fuser):
    out = fuser.fuse(_pet(), _rgb_of(_gray()))
    assert out.shape == (H, W, 3) and np.abs(out[..., 0].astype(int) - out[..., 1].astype(int)).max() > 100


def test_torch_layout_follows_the_layouts(fuser):
    gray = torch.from_numpy(_gray())
    rgb = gray.expand(3, -1, -1).contiguous()
    assert fuser.fuse(gray, rgb).shape == (3, H, W)  # before: (1, H, W)
    assert fuser.fuse(rgb, gray).shape == (3, H, W)
    assert fuser.fuse(gray, gray).shape == (H, W)
    assert fuser.fuse(gray[None], gray[None]).shape == (1, H, W)


def test_pil_rgb_in_rgb_out(fuser):
    gray_rgb = Image.fromarray(_rgb_of(_gray()))
    assert fuser.fuse(gray_rgb, gray_rgb).mode == "RGB"  # before: "L"
    assert fuser.fuse(Image.fromarray(_gray()), gray_rgb).mode == "RGB"
    assert fuser.fuse(Image.fromarray(_gray()), Image.fromarray(_gray())).mode == "L"


def test_batches_of_gray_as_rgb_stay_rgb(fuser):
    vis = np.stack([_rgb_of(_gray()), _rgb_of(_gray())])
    out = fuser.fuse(np.stack([_gray(), _gray()])[..., None], vis)
    assert out.shape == (2, H, W, 3)  # before: (2, H, W, 1)


def test_evaluate_accepts_the_rgb_result(fuser):
    ir, gray = _gray(), _gray()
    fused = fuser.fuse(ir, _rgb_of(gray))
    scores = evaluate(fused, ir, gray, metrics="EN,SD,SSIM")
    assert scores == evaluate(fused[..., 0], ir, gray, metrics="EN,SD,SSIM")
    assert evaluate(fused, _rgb_of(ir), np.dstack([_rgb_of(gray), gray]), metrics="EN,SD,SSIM") == scores
    colour = fuser.fuse(ir, _pet())
    assert set(evaluate(colour, ir, _pet(), metrics="EN")) == {"EN"}  # converted like a colour file
    with pytest.raises(ValueError, match="2-D gray image"):
        evaluate(np.zeros((H, W, 2)), ir, gray)


def test_cli_writes_rgb_for_rgb_input_files(tmp_path, random_weights):
    """The CLI follows the library: an RGB input file gives an RGB output file (documented)."""
    from emmafuse.cli import main

    Image.fromarray(_gray()).save(tmp_path / "ir.png")
    Image.fromarray(_rgb_of(_gray())).save(tmp_path / "vis.png")
    argv = ["fuse", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "--weights", str(random_weights)]
    assert main([*argv, "-o", str(tmp_path / "o.png")]) == 0
    out = Image.open(tmp_path / "o.png")
    assert out.mode == "RGB"
    arr = np.asarray(out)
    assert (arr[..., 0] == arr[..., 2]).all()
    Image.fromarray(_gray()).save(tmp_path / "vis.png")
    assert main([*argv, "-o", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").mode == "L"
