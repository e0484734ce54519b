"""Property-based test of ``Fuser.fuse`` (issue 11, "Done when").

Random shapes, dtypes, channel counts, value ranges and containers (numpy, PIL, torch) go in;
either the documented ``ValueError`` / ``TypeError`` comes out (exactly when the inputs break a
documented rule), or an image in the documented container, dtype and shape, with finite values.
A small random U-Fuser keeps each example to milliseconds.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from emmafuse.color import GRAY_TOLERANCE
from emmafuse.fuser import Fuser
from emmafuse.models import UFuser, UFuserConfig

pytestmark = pytest.mark.usefixtures("one_thread")

NUMPY_DTYPES = ["uint8", "uint16", "float16", "float32", "float64", "int32", "bool"]
TORCH_DTYPES = ["uint8", "float16", "bfloat16", "float32", "float64", "int32", "bool"]
PIL_MODES = ["L", "LA", "RGB", "RGBA", "I;16", "I", "F", "P", "1", "CMYK"]
# unit: the valid range; gray: R = G = B; outside: a hair outside [0, 1] (clipped, valid);
# u8 / u16: floats holding 0..255 / 0..65535 data; nan; negative
VALUE_KINDS = ["unit", "unit", "gray", "gray", "outside", "u8", "u16", "nan", "negative"]
_INT_MAX = {"uint8": 255, "uint16": 65535, "int32": 70000}
# 60 keeps the default suite fast; EMMAFUSE_PROPERTY_EXAMPLES=2000 explores deeper
EXAMPLES = int(os.environ.get("EMMAFUSE_PROPERTY_EXAMPLES", "60"))


@dataclass
class Expect:
    """What the fusion rules say about one generated input (``valid``: no documented rule broken)."""

    valid: bool
    colour: bool  # has colour channels (RGB/RGBA layout), whatever the values
    alpha: bool
    layout: str  # "HW", "HWC", "CHW" (PIL: "HWC")
    real_colour: bool = False  # carries real colour (RGB with unequal channels)


@pytest.fixture(scope="module")
def small_fuser() -> Fuser:
    state = torch.random.get_rng_state()
    torch.manual_seed(7)
    model = UFuser(UFuserConfig(channels=(4, 4, 8, 8), num_heads=1))
    torch.random.set_rng_state(state)
    return Fuser(model, device="cpu")


def _float_values(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> tuple[np.ndarray, bool]:
    """Float data of a value kind and whether it is valid."""
    base = rng.random(shape)
    if kind == "outside":
        return base * (1 + 1e-3) - 5e-4, True
    if kind == "u8":
        return base * 255 + 2, False
    if kind == "u16":
        return base * 65535 + 300, False
    if kind in ("nan", "negative"):
        if base.size:  # at least one bad value, wherever it lands
            base.flat[rng.integers(base.size)] = np.nan if kind == "nan" else -0.25
        return base, False
    return base, True


def _pixels(rng: np.random.Generator, h: int, w: int, channels: int | None, dtype: str, kind: str) -> tuple[np.ndarray, bool]:
    """(H, W) or (H, W, C) data of ``dtype`` and whether its values are valid."""
    if kind == "gray" and channels in (3, 4):  # one plane repeated into R, G, B (+ an alpha plane)
        plane, valid = _pixels(rng, h, w, 1, dtype, "unit")
        alpha = [_pixels(rng, h, w, 1, dtype, "unit")[0]] if channels == 4 else []
        return np.concatenate([plane] * 3 + alpha, axis=-1), valid
    shape = (h, w) if channels is None else (h, w, channels)
    if dtype == "bool":
        return rng.random(shape) > 0.5, False
    if dtype in _INT_MAX:
        return rng.integers(0, _INT_MAX[dtype] + 1, shape).astype(dtype), dtype != "int32"
    arr, valid = _float_values(rng, shape, kind)
    with np.errstate(over="ignore"):  # 0..65535 data overflow float16 to inf: still invalid
        return arr.astype(np.float32 if dtype == "bfloat16" else dtype), valid


def _has_colour(unit_hwc: np.ndarray) -> bool:
    """Real colour: R, G, B not all equal within the documented tolerance (on the [0, 1] scale)."""
    rgb = unit_hwc[..., :3].astype(np.float64)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() > GRAY_TOLERANCE or np.abs(rgb[..., 1] - rgb[..., 2]).max() > GRAY_TOLERANCE)


def _unit(arr: np.ndarray) -> np.ndarray:
    scale = {np.dtype("uint8"): 255.0, np.dtype("uint16"): 65535.0}.get(arr.dtype, 1.0)
    return arr.astype(np.float64) / scale


@st.composite
def images(draw: Any, h: int, w: int) -> tuple[Any, Expect]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    container = draw(st.sampled_from(["numpy", "torch", "pil"]))
    kind = draw(st.sampled_from(VALUE_KINDS))
    if container == "pil":
        return _pil_image(rng, draw(st.sampled_from(PIL_MODES)), kind, h, w)
    channels = draw(st.sampled_from([None, 1, 2, 3, 3, 4, 5]))
    dtype = draw(st.sampled_from(NUMPY_DTYPES if container == "numpy" else TORCH_DTYPES))
    empty = draw(st.sampled_from([False] * 9 + [True]))
    arr, valid = _pixels(rng, 0 if empty else h, w, channels, dtype, kind)
    valid = valid and channels in (None, 1, 3, 4) and not empty
    colour = channels in (3, 4)  # the layout decides the output's channels, never the values
    real = valid and colour and _has_colour(_unit(arr))
    alpha = channels in (2, 4)
    if container == "numpy":
        if draw(st.booleans()):
            arr = arr[::-1]  # a negative-stride view
        return arr, Expect(valid, colour, alpha, "HW" if channels is None else "HWC", real)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if dtype == "bfloat16":
        t = t.to(torch.bfloat16)
        real = valid and colour and _has_colour(t.float().numpy())
    if channels is not None:
        t = t.permute(2, 0, 1)
    return t, Expect(valid, colour, alpha, "HW" if channels is None else "CHW", real)


def _pil_image(rng: np.random.Generator, mode: str, kind: str, h: int, w: int) -> tuple[Image.Image, Expect]:
    if mode in ("L", "LA", "RGB", "RGBA", "P", "CMYK"):
        channels = {"L": None, "LA": 2, "RGB": 3, "RGBA": 4, "P": 3, "CMYK": 3}[mode]
        arr, _ = _pixels(rng, h, w, channels, "uint8", kind)
        img = Image.fromarray(arr)
        if mode in ("P", "CMYK"):
            img = img.convert(mode)
        colour = mode in ("RGB", "RGBA", "P")
        rgb = np.asarray(img.convert("RGB")) if mode == "P" else arr
        real = colour and _has_colour(_unit(rgb))
        return img, Expect(mode != "CMYK", colour, mode in ("LA", "RGBA"), "HWC", real)
    if mode == "1":
        return Image.fromarray(rng.random((h, w)) > 0.5), Expect(True, False, False, "HWC")
    if mode == "F":
        arr, valid = _float_values(rng, (h, w), kind)
        return Image.fromarray(arr.astype(np.float32)), Expect(valid, False, False, "HWC")
    over = kind in ("u16", "negative")  # I: 32-bit values outside 0..65535 are refused
    if mode == "I":
        arr = rng.integers(-5 if kind == "negative" else 0, 70001 if over else 65536, (h, w)).astype(np.int32)
        return Image.fromarray(arr), Expect(not (arr.min() < 0 or arr.max() > 65535), False, False, "HWC")
    arr = rng.integers(0, 65536, (h, w)).astype(np.uint16)
    return Image.fromarray(arr), Expect(True, False, False, "HWC")


def _expected_channels(ir: Expect, vis: Expect, vis_obj: Any) -> int:
    if isinstance(vis_obj, Image.Image) and vis_obj.mode in ("I;16", "I", "F"):
        return 1  # PIL has no colour or alpha variant of these modes
    return (3 if ir.colour or vis.colour else 1) + (1 if ir.alpha or vis.alpha else 0)


def _check_output(out: Any, vis_obj: Any, vis: Expect, channels: int, h: int, w: int, gray: bool) -> None:
    if isinstance(vis_obj, np.ndarray):
        assert isinstance(out, np.ndarray) and out.dtype == vis_obj.dtype
        assert out.shape == ((h, w) if vis.layout == "HW" and channels == 1 else (h, w, channels))
        values = out.astype(np.float64)
    elif isinstance(vis_obj, torch.Tensor):
        assert isinstance(out, torch.Tensor) and out.dtype == vis_obj.dtype and out.device == vis_obj.device
        assert tuple(out.shape) == ((h, w) if vis.layout == "HW" and channels == 1 else (channels, h, w))
        values = out.double().numpy()
    else:
        assert isinstance(out, Image.Image) and out.size == (w, h)
        gray_modes = {"I;16": "I;16", "I": "I", "F": "F"}
        expected_mode = gray_modes.get(vis_obj.mode) or {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        assert out.mode == expected_mode
        values = np.asarray(out).astype(np.float64)
    assert np.isfinite(values).all()
    if gray and channels >= 3:  # a colour layout without real colour: R = G = B
        rgb = np.moveaxis(values, 0, -1) if isinstance(vis_obj, torch.Tensor) else values
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    if (isinstance(vis_obj, np.ndarray) and vis_obj.dtype.kind == "f") or (
        isinstance(vis_obj, torch.Tensor) and vis_obj.is_floating_point()
    ):
        assert values.min() >= 0.0 and values.max() <= 1.0


@st.composite
def pairs(draw: Any) -> tuple[Any, Expect, Any, Expect, bool, int, int]:
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    same_size = draw(st.sampled_from([True, True, True, False]))
    ir, ir_expect = draw(images(h, w))
    vis, vis_expect = draw(images(h, w if same_size else w + 1))
    return ir, ir_expect, vis, vis_expect, same_size, h, w


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_fuse_gives_a_documented_error_or_a_documented_image(small_fuser: Fuser, pair: Any) -> None:
    ir, ir_expect, vis, vis_expect, same_size, h, w = pair
    valid = ir_expect.valid and vis_expect.valid and same_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 8-bit data in 16-bit containers: warned, still valid
        if not valid:
            with pytest.raises((ValueError, TypeError)):
                small_fuser.fuse(ir, vis)
            return
        out = small_fuser.fuse(ir, vis)
    gray = not (ir_expect.real_colour or vis_expect.real_colour)
    _check_output(out, vis, vis_expect, _expected_channels(ir_expect, vis_expect, vis), h, w, gray)
