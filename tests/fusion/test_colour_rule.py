"""The colour rule: RGB(A) images whose channels are equal are gray for every purpose.

Medical data sets store gray MRI scans as RGB. Such an image must neither win the chroma slot
from a real colour image (PET/SPECT) nor make the output colour (issue 11, item 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emmafuse.color import GRAY_TOLERANCE, is_gray_rgb

RNG = np.random.default_rng(11)
H, W = 24, 32


def _gray() -> np.ndarray:
    return RNG.integers(0, 256, (H, W), dtype=np.uint8)


def _pet() -> np.ndarray:
    """A colour image with strong chroma (a PET-like palette)."""
    base = RNG.integers(0, 256, (H, W), dtype=np.uint8).astype(np.int32)
    return np.stack([base, 255 - base, base // 3], -1).astype(np.uint8)


def _as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def _spread(rgb: np.ndarray) -> int:
    """Max |R - G| of an (H, W, 3+) array."""
    return int(np.abs(rgb[..., 0].astype(int) - rgb[..., 1].astype(int)).max())


def test_is_gray_rgb_exact_and_tolerant():
    gray = torch.rand(1, 8, 8).expand(3, -1, -1).clone()
    assert is_gray_rgb(gray)
    nudged = gray.clone()
    nudged[1, 0, 0] += GRAY_TOLERANCE / 2
    assert is_gray_rgb(nudged)
    nudged[1, 0, 0] += 1 / 65535  # one 16-bit step is colour
    assert not is_gray_rgb(nudged)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        is_gray_rgb(torch.zeros(1, 4, 4))


@pytest.mark.parametrize("pet_slot", ["ir", "vis"])
def test_numpy_gray_as_rgb_mri_keeps_pet_colour_in_either_slot(fuser, pet_slot):
    pet, mri = _pet(), _as_rgb(_gray())
    ir, vis = (pet, mri) if pet_slot == "ir" else (mri, pet)
    out = fuser.fuse(ir, vis)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert _spread(out) > 100  # before the fix: the MRI's zero chroma won, spread <= 1


def test_gray_as_rgb_fuses_exactly_like_its_gray_image(fuser):
    pet, gray = _pet(), _gray()
    assert np.array_equal(fuser.fuse(pet, _as_rgb(gray)), fuser.fuse(pet, gray))


def test_two_gray_inputs_stored_as_rgb_give_gray_output(fuser):
    gray_a, gray_b = _gray(), _gray()
    out = fuser.fuse(_as_rgb(gray_a), _as_rgb(gray_b))
    assert out.shape == (H, W, 3) and _spread(out) == 0  # the RGB layout of the inputs, gray values
    assert np.array_equal(out[..., 0], fuser.fuse(gray_a, gray_b))
    rgba = np.dstack([_as_rgb(gray_b), np.full((H, W), 77, np.uint8)])
    out = fuser.fuse(gray_a, rgba)
    assert out.shape == (H, W, 4) and _spread(out) == 0 and (out[..., 3] == 77).all()  # gray RGB + alpha


def test_pil_gray_rgb_mri_with_pet(fuser):
    pet, mri = Image.fromarray(_pet()), Image.fromarray(_as_rgb(_gray()))
    for ir, vis in ((pet, mri), (mri, pet)):
        out = fuser.fuse(ir, vis)
        assert isinstance(out, Image.Image) and out.mode == "RGB"
        assert _spread(np.asarray(out)) > 100
    assert fuser.fuse(mri, mri).mode == "RGB"  # RGB in, RGB out (R = G = B)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_torch_gray_rgb_mri_with_pet(fuser, dtype):
    def tensor(hwc: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(hwc).permute(2, 0, 1).contiguous()
        return t if dtype == torch.uint8 else t.to(dtype) / 255

    pet, mri = tensor(_pet()), tensor(_as_rgb(_gray()))
    if dtype != torch.uint8:
        mri[1] += GRAY_TOLERANCE / 4  # float rounding noise is still gray
    for ir, vis in ((pet, mri), (mri, pet)):
        out = fuser.fuse(ir, vis)
        assert out.shape == (3, H, W) and out.dtype == dtype
        scale = 1 if dtype == torch.uint8 else 255
        assert (out[0].double() - out[1].double()).abs().max() * scale > 100
    assert fuser.fuse(mri, mri).shape == (3, H, W)  # the layout of the inputs, gray values


def test_float_colour_above_the_tolerance_is_colour(fuser):
    mri = _as_rgb(_gray()).astype(np.float32) / 255
    mri[..., 0] = np.clip(mri[..., 0] + 0.01, 0, 1)  # a faint real tint
    out = fuser.fuse(_gray(), mri)
    assert out.shape == (H, W, 3)


def test_both_real_colour_keeps_the_visible_chroma(fuser):
    ir, vis = _pet(), RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    ir_luma = (ir.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255).astype(np.float32)
    out, ref = fuser.fuse(ir, vis), fuser.fuse(ir_luma, vis)  # ref: only vis carries colour
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_batch_mixing_gray_rgb_and_colour_stays_stackable(fuser):
    vis = np.stack([_as_rgb(_gray()), _pet()])
    ir = np.stack([_gray(), _gray()])[..., None]
    out = fuser.fuse(ir, vis)
    assert out.shape == (2, H, W, 3)
    assert _spread(out[0]) == 0 and np.array_equal(out[0][..., 0], fuser.fuse(ir[0], vis[0])[..., 0])
    assert np.array_equal(out[1], fuser.fuse(ir[1], vis[1]))
    gray_batch = fuser.fuse(ir, np.stack([_as_rgb(_gray())] * 2))
    assert gray_batch.shape == (2, H, W, 3) and _spread(gray_batch) == 0


def test_pil_16bit_vis_with_a_colour_ir_gives_the_fused_luminance(fuser):
    """PIL has no 16-bit colour mode: the result is the fused Y, not the red channel of a colour image."""
    pet = _pet()
    vis = Image.fromarray((RNG.random((H, W)) * 65535).astype(np.uint16))
    out = fuser.fuse(pet, vis)
    assert out.mode == "I;16"
    luma = (pet.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255).astype(np.float32)
    expected = np.asarray(fuser.fuse(luma, vis)).astype(int)
    assert np.abs(np.asarray(out).astype(int) - expected).max() <= 2
