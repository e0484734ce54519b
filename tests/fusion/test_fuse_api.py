"""The public Fuser.fuse contract: containers, dtypes, colour, sizes, batches, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import emmafuse
from emmafuse.color import rgb_to_ycbcr
from emmafuse.samples import synthetic_pair

RNG = np.random.default_rng(42)


def gray_u8(h=24, w=32):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def rgb_u8(h=24, w=32):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_matches_the_network_on_gray_pairs(fuser):
    ir, vis = gray_u8(32, 40), gray_u8(32, 40)
    out = fuser.fuse(ir, vis)
    with torch.inference_mode():
        ref = fuser.model(torch.from_numpy(ir)[None, None] / 255.0, torch.from_numpy(vis)[None, None] / 255.0)
    expected = np.round(ref[0, 0].numpy() * 255).astype(np.uint8)
    assert out.dtype == np.uint8 and out.shape == (32, 40)
    assert np.abs(out.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_output_dtype_and_shape_follow_vis(fuser, dtype):
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    vis = (RNG.random((24, 32)) * scale).astype(dtype)
    out = fuser.fuse(gray_u8(), vis)
    assert out.dtype == dtype and out.shape == (24, 32)
    if dtype in (np.float32, np.float64):
        assert 0.0 <= out.min() and out.max() <= 1.0


def test_uint16_keeps_full_precision(fuser):
    ir = (RNG.random((32, 32)) * 65535).astype(np.uint16)
    vis = (RNG.random((32, 32)) * 65535).astype(np.uint16)
    out = fuser.fuse(ir, vis)
    assert out.dtype == np.uint16
    # an 8-bit round trip would give multiples of 257 only
    assert np.count_nonzero(out % 257) > out.size // 2
    ref = fuser.fuse(ir.astype(np.float32) / 65535, vis.astype(np.float32) / 65535)
    assert np.abs(out.astype(np.float64) / 65535 - ref).max() <= 0.5 / 65535 + 1e-6


def test_hw1_layout_round_trips(fuser):
    out = fuser.fuse(gray_u8()[..., None], gray_u8()[..., None])
    assert out.shape == (24, 32, 1)


def test_colour_visible_keeps_its_chroma(fuser):
    vis = rgb_u8()
    out = fuser.fuse(gray_u8(), vis)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    cin = rgb_to_ycbcr(torch.from_numpy(vis).permute(2, 0, 1)[None].float() / 255)[0, 1:]
    cout = rgb_to_ycbcr(torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255)[0, 1:]
    unclipped = ((out > 0) & (out < 255)).all(-1)
    diff = (cin - cout).abs().amax(0).numpy()[unclipped]
    assert unclipped.sum() > 100
    assert np.percentile(diff, 95) < 3 / 255


def test_colour_in_the_ir_slot_is_used_for_medical_pairs(fuser):
    mri, pet = gray_u8(), rgb_u8()
    out = fuser.fuse(pet, mri)
    assert out.shape == (24, 32, 3) and out.dtype == mri.dtype


def test_luminance_of_colour_output_is_the_fused_luminance(fuser):
    ir, vis = synthetic_pair(64, 64, seed=3)
    colour = fuser.fuse(ir, vis)
    y = rgb_to_ycbcr(torch.from_numpy(colour).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy() * 255
    gray = fuser.fuse(ir, vis.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255)
    assert np.abs(y - gray * 255).mean() < 1.5


def test_rgba_alpha_is_passed_through(fuser):
    vis = np.dstack([rgb_u8(), RNG.integers(0, 256, (24, 32), dtype=np.uint8)])
    out = fuser.fuse(gray_u8(), vis)
    assert out.shape == (24, 32, 4)
    assert np.array_equal(out[..., 3], vis[..., 3])


def test_both_gray_gives_gray(fuser):
    assert fuser.fuse(gray_u8(), gray_u8()).ndim == 2


@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (2, 100), (481, 641)])
def test_any_size(fuser, h, w):
    out = fuser.fuse(gray_u8(h, w), rgb_u8(h, w))
    assert out.shape == (h, w, 3)


def test_pil_in_pil_out(fuser):
    out = fuser.fuse(Image.fromarray(gray_u8()), Image.fromarray(rgb_u8()))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (32, 24)
    out16 = fuser.fuse(Image.fromarray(gray_u8()), Image.fromarray((RNG.random((24, 32)) * 65535).astype(np.uint16)))
    assert out16.mode == "I;16" and np.asarray(out16).dtype == np.uint16


def test_torch_in_torch_out(fuser):
    ir = torch.rand(1, 24, 32)
    vis = torch.rand(3, 24, 32, dtype=torch.float64)
    out = fuser.fuse(ir, vis)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 24, 32) and out.dtype == torch.float64
    out8 = fuser.fuse(torch.randint(0, 256, (24, 32), dtype=torch.uint8), torch.randint(0, 256, (24, 32), dtype=torch.uint8))
    assert out8.dtype == torch.uint8 and out8.shape == (24, 32)


def test_list_of_pairs_of_mixed_sizes_equals_single_calls(fuser):
    irs = [gray_u8(24, 32), gray_u8(40, 16), gray_u8(24, 32)]
    viss = [rgb_u8(24, 32), gray_u8(40, 16), gray_u8(24, 32)]
    outs = fuser.fuse(irs, viss, batch_size=2)
    assert isinstance(outs, list) and len(outs) == 3
    for a, b, out in zip(irs, viss, outs):
        assert np.array_equal(out, fuser.fuse(a, b))


def test_4d_batches(fuser):
    ir = RNG.integers(0, 256, (3, 24, 32, 1), dtype=np.uint8)
    vis = RNG.integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    out = fuser.fuse(ir, vis)
    assert out.shape == (3, 24, 32, 3)
    assert np.array_equal(out[1], fuser.fuse(ir[1], vis[1]))
    tout = fuser.fuse(torch.rand(2, 1, 24, 32), torch.rand(2, 1, 24, 32))
    assert tout.shape == (2, 1, 24, 32)


def test_minmax_stretches_to_full_range(fuser):
    out = fuser.fuse(gray_u8(), gray_u8(), output_range="minmax")
    assert out.min() == 0 and out.max() == 255
    clamp = fuser.fuse(gray_u8(), gray_u8())
    assert clamp.max() - clamp.min() < 255


def test_bfloat16_on_cpu_is_close_to_float32(random_weights):
    ir, vis = synthetic_pair(64, 96)
    f32 = emmafuse.load(random_weights, device="cpu").fuse(ir, vis).astype(int)
    bf16 = emmafuse.load(random_weights, device="cpu", dtype="bfloat16").fuse(ir, vis).astype(int)
    assert np.abs(f32 - bf16).mean() < 3.0


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "ir,vis,exc,match",
    [
        (np.zeros((24, 32), np.uint8), np.zeros((24, 31), np.uint8), ValueError, "same height and width"),
        (np.zeros((0, 32), np.uint8), np.zeros((0, 32), np.uint8), ValueError, "empty"),
        (np.full((4, 4), np.nan, np.float32), np.zeros((4, 4), np.float32), ValueError, "NaN"),
        (np.zeros((4, 4), np.float32), np.full((4, 4), np.inf, np.float32), ValueError, "vis contains"),
        (np.zeros((4, 4), np.int32), np.zeros((4, 4), np.uint8), TypeError, "unsupported dtype int32"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), np.uint8), TypeError, "boolean"),
        (np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.uint8), ValueError, "ir: shape"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), ValueError, "vis: shape"),
        (np.full((4, 4), 200.0), np.zeros((4, 4)), ValueError, "divide by 255"),
        ("ir.png", np.zeros((4, 4), np.uint8), TypeError, "got str"),
        ([np.zeros((4, 4), np.uint8)], [], ValueError, "1 images but vis has 0"),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros((4, 4), np.uint8), ValueError, "both be 4-D"),
        (torch.zeros(1, 5, 4, 4), torch.zeros(1, 5, 4, 4), ValueError, "5 channels"),
    ],
)
def test_bad_inputs_give_clear_errors(fuser, ir, vis, exc, match):
    with pytest.raises(exc, match=match):
        fuser.fuse(ir, vis)


def test_bad_options(fuser):
    with pytest.raises(ValueError, match="output_range"):
        fuser.fuse(gray_u8(), gray_u8(), output_range="stretch")
    with pytest.raises(ValueError, match="batch_size"):
        fuser.fuse(gray_u8(), gray_u8(), batch_size=0)
    with pytest.raises(ValueError, match="float16 needs a CUDA"):
        fuser.to(dtype="float16")
    with pytest.raises(ValueError, match="dtype must be"):
        fuser.to(dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fuser.to("cuda")
    assert fuser.device.type == "cpu" and fuser.dtype == torch.float32


def test_no_pretrained_weights_is_said_plainly(monkeypatch):
    from emmafuse import weights

    monkeypatch.setattr(weights, "read_manifest", lambda: {"default": None, "models": {}})
    with pytest.raises(emmafuse.NoPretrainedWeightsError, match="no pretrained weights"):
        emmafuse.load()


def test_half_precision_overflow_falls_back_to_float32(random_weights):
    """A NaN produced under autocast triggers a float32 recomputation with a warning."""
    fuser = emmafuse.load(random_weights, device="cpu", dtype="bfloat16")
    real_forward = fuser.model.forward

    def flaky_forward(ir, vis):
        out = real_forward(ir, vis)
        if torch.is_autocast_enabled("cpu"):
            out = out.clone()
            out[..., 0, 0] = float("nan")
        return out

    fuser.model.forward = flaky_forward
    ir, vis = gray_u8(), gray_u8()
    with pytest.warns(RuntimeWarning, match="recomputing"):
        out = fuser.fuse(ir, vis)
    reference = emmafuse.load(random_weights, device="cpu").fuse(ir, vis)
    assert np.array_equal(out, reference)


# ------------------------------------------------------------------------- issue 11 hints
def test_torch_hwc_tensor_says_torch_is_chw(fuser):
    with pytest.raises(ValueError, match=r"torch tensors are \(C, H, W\).*permute\(2, 0, 1\)"):
        fuser.fuse(torch.rand(24, 32, 3), torch.rand(24, 32, 3))


def test_float_16bit_range_gets_the_65535_hint(fuser):
    with pytest.raises(ValueError, match="0..65535 data: divide by 65535") as info:
        fuser.fuse(gray_u8().astype(np.float32) * 250, np.zeros((24, 32), np.float32))
    assert "255" not in str(info.value).split("(")[-1]  # not the 0..255 hint
    with pytest.raises(ValueError, match="divide by 255"):
        fuser.fuse(np.full((4, 4), 200.0), np.zeros((4, 4)))


def test_16bit_input_holding_8bit_data_warns(fuser):
    low = gray_u8().astype(np.uint16)  # 0..255 values in a 16-bit container
    with pytest.warns(UserWarning, match=r"ir: 16-bit image whose maximum is \d+ \(below 256\)"):
        fuser.fuse(low, gray_u8())
    with pytest.warns(UserWarning, match="vis: 16-bit image"):
        fuser.fuse(gray_u8(), Image.fromarray(low))  # PIL I;16
    with pytest.warns(UserWarning, match="vis: 16-bit image"):
        fuser.fuse(gray_u8(), Image.fromarray(low.astype(np.int32), mode="I"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full-range 16-bit data: no warning
        fuser.fuse((RNG.random((24, 32)) * 65535).astype(np.uint16), gray_u8())


# ----------------------------------------------------------------------------- issue 18
def test_a_missing_result_is_an_error_not_a_shifted_list(fuser, monkeypatch):
    """Before issue 18 a pair without a result was dropped before the results were zipped with
    the pairs: a list of three gave two images, each possibly with another pair's colour."""
    from emmafuse import batching
    from emmafuse.errors import FusionError

    real = batching.run_pipelined

    def drop_last(*args, **kwargs):
        outputs = list(real(*args, **kwargs))
        yield from outputs[:-1]

    monkeypatch.setattr(batching, "run_pipelined", drop_last)
    ir, vis = synthetic_pair(32, 32)
    with pytest.raises(FusionError, match="gave no result"):
        fuser.fuse([ir, ir, ir], [vis, vis, vis], batch_size=1)


def test_option_errors_name_the_parameter(fuser):
    from emmafuse.errors import InputError

    ir, vis = synthetic_pair(32, 32)
    for kwargs, parameter in [({"output_range": "stretch"}, "output_range"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(InputError) as info:
            fuser.fuse(ir, vis, **kwargs)
        assert info.value.parameter == parameter
    with pytest.raises(InputError) as info:
        emmafuse.Fuser(fuser.model, device="cpu", dtype="float8")
    assert info.value.parameter == "dtype"
