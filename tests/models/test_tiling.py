"""Tiled inference: tile plans, blending, agreement with whole-image fusion, options, memory."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from emmafuse.fuser import Fuser
from emmafuse.models import UFuser
from emmafuse.samples import synthetic_pair
from emmafuse.tiling import (
    MIN_AUTO_TILE,
    TilePlan,
    auto_tile_size,
    axis_starts,
    check_tile_options,
    feather_ramp,
    plan_tiles,
)

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def cpu_fuser() -> Fuser:
    torch.manual_seed(1234)
    return Fuser(UFuser(), device="cpu")


def _gray_pair(h: int, w: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    ir, vis = synthetic_pair(h, w, seed=seed)
    lum = vis.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return ir.astype(np.float32) / 255.0, lum / 255.0


# ----------------------------------------------------------------------------- plans
@pytest.mark.parametrize(
    "h, w, tile, overlap",
    [(480, 640, 256, 64), (203, 317, 96, 24), (1000, 700, 256, 64), (17, 1001, 64, 16), (104, 100, 96, 48), (33, 33, 16, 8)],
)
def test_plan_covers_every_pixel_with_positive_weights(h, w, tile, overlap):
    plan = plan_tiles(h, w, tile, overlap)
    assert plan.height % 8 == 0 and plan.width % 8 == 0
    assert plan.height >= h and plan.width >= w
    for starts, size, length in ((plan.ys, plan.tile_h, plan.height), (plan.xs, plan.tile_w, plan.width)):
        assert size % 8 == 0 and 16 <= size <= max(tile, 16)
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(s % 8 == 0 for s in starts)
        assert all(b > a for a, b in itertools.pairwise(starts))
        # neighbours overlap by at least the requested amount (when there are neighbours)
        assert all(a + size - b >= min(overlap, size) for a, b in itertools.pairwise(starts))
    coverage = torch.zeros(plan.height, plan.width, dtype=torch.int64)
    for y0, y1, x0, x1 in plan.boxes():
        coverage[y0:y1, x0:x1] += 1
    assert coverage.min() >= 1
    wy, wx = plan.axis_weights()
    total = torch.zeros(plan.height, plan.width, dtype=torch.float64)
    for (i, y), (j, x) in ((a, b) for a in enumerate(plan.ys) for b in enumerate(plan.xs)):
        total[y : y + plan.tile_h, x : x + plan.tile_w] += wy[i][:, None] * wx[j][None, :]
    assert torch.allclose(total, torch.ones_like(total), atol=1e-12)


def test_feather_ramp_is_a_partition_of_unity_strictly_inside_0_1():
    for n in (1, 2, 7, 64):
        r = feather_ramp(n, torch.float64)
        assert (r > 0).all() and (r < 1).all()
        assert torch.allclose(r + r.flip(0), torch.ones(n, dtype=torch.float64))


def test_tile_not_smaller_than_image_is_one_tile():
    plan = plan_tiles(200, 300, 512, 64)
    assert plan.is_single and (plan.tile_h, plan.tile_w) == (200, 304)
    assert axis_starts(304, 304, 64) == [0]


def test_tile_side_is_rounded_down_to_the_size_multiple():
    plan = plan_tiles(500, 500, 101, 16)
    assert plan.tile_h <= 96 and plan.tile_h % 8 == 0


@pytest.mark.parametrize(
    "tile, overlap, match",
    [
        (8, 0, "at least 16"),
        ("big", 16, "None, 'auto' or an integer"),
        (True, 16, "None, 'auto' or an integer"),
        (2.5, 0, "None, 'auto' or an integer"),
        (128, -1, "non-negative"),
        (128, 1.5, "non-negative"),
        (128, 65, "at most half the tile side"),
        (64, 64, "at most half the tile side"),
    ],
)
def test_tile_option_validation(tile, overlap, match):
    with pytest.raises(ValueError, match=match):
        check_tile_options(tile, overlap)


def test_fuse_rejects_bad_tile_options(cpu_fuser):
    ir, vis = _gray_pair(64, 64)
    with pytest.raises(ValueError, match="tile_overlap"):
        cpu_fuser.fuse(ir, vis, tile=32, tile_overlap=17)
    with pytest.raises(ValueError, match="tile must be"):
        cpu_fuser.fuse(ir, vis, tile="huge")


def test_auto_tile_size_respects_budget_and_minimum():
    assert auto_tile_size(1 << 40, torch.float32) % 8 == 0
    assert auto_tile_size(1, torch.float32) == MIN_AUTO_TILE
    small, big = auto_tile_size(1 << 30, torch.float32), auto_tile_size(4 << 30, torch.float32)
    assert MIN_AUTO_TILE <= small < big


def test_default_tiles_only_above_the_memory_budget(cpu_fuser, monkeypatch):
    assert cpu_fuser.tile_plan(480, 640) is None  # fits the default CPU budget: whole image
    assert cpu_fuser.tile_plan(480, 640, "auto") is None  # smaller than the auto tile
    monkeypatch.setenv("EMMAFUSE_CPU_MEMORY_BUDGET", "64M")
    plan = cpu_fuser.tile_plan(1200, 1600)
    assert isinstance(plan, TilePlan) and plan.num_tiles > 1
    assert plan == cpu_fuser.tile_plan(1200, 1600, "auto")
    assert cpu_fuser.tile_plan(480, 640) is not None  # 184 MB > 64 MiB: tiles of the minimum auto side
    monkeypatch.setenv("EMMAFUSE_CPU_MEMORY_BUDGET", "lots")
    with pytest.raises(ValueError, match="EMMAFUSE_CPU_MEMORY_BUDGET"):
        cpu_fuser.tile_plan(1200, 1600)


# ----------------------------------------------------------------------------- fusion
def test_tile_at_least_image_size_is_exactly_untiled(cpu_fuser):
    ir, vis = synthetic_pair(120, 160, seed=1)
    whole = cpu_fuser.fuse(ir, vis)
    assert np.array_equal(cpu_fuser.fuse(ir, vis, tile=160), whole)
    assert np.array_equal(cpu_fuser.fuse(ir, vis, tile=4096, tile_overlap=0), whole)


@pytest.mark.parametrize("h, w, tile, overlap", [(256, 320, 128, 32), (203, 317, 96, 24)])
def test_tiled_agrees_with_untiled(cpu_fuser, h, w, tile, overlap):
    ir, vis = _gray_pair(h, w)
    whole = cpu_fuser.fuse(ir, vis)
    tiled = cpu_fuser.fuse(ir, vis, tile=tile, tile_overlap=overlap)
    assert tiled.shape == whole.shape == (h, w) and tiled.dtype == np.float32
    assert np.isfinite(tiled).all()
    diff = np.abs(tiled - whole) * 255
    # random weights: measured ~0.03 mean / ~0.26 max grey levels; the bounds leave margin
    assert diff.mean() <= 0.25
    assert diff.max() <= 1.5
    # no seam: the difference image has no step between neighbouring pixels
    d = (tiled - whole) * 255
    assert max(np.abs(np.diff(d, axis=0)).max(), np.abs(np.diff(d, axis=1)).max()) <= 0.5


def test_tiled_colour_and_uint8_io(cpu_fuser):
    ir, vis = synthetic_pair(96, 200, seed=2)
    out = cpu_fuser.fuse(ir, vis, tile=64, tile_overlap=16)
    assert out.shape == vis.shape and out.dtype == np.uint8
    whole = cpu_fuser.fuse(ir, vis)
    assert np.abs(out.astype(int) - whole).max() <= 2


def test_tile_batches_give_the_same_result(cpu_fuser):
    ir, vis = _gray_pair(96, 160)
    one = cpu_fuser.fuse(ir, vis, tile=64, tile_overlap=16, batch_size=1)
    many = cpu_fuser.fuse(ir, vis, tile=64, tile_overlap=16, batch_size=8)
    assert np.abs(one - many).max() <= 1e-5


def test_minmax_is_applied_to_the_stitched_image(cpu_fuser):
    ir, vis = _gray_pair(96, 160)
    raw = cpu_fuser.fuse(ir, vis, tile=64, tile_overlap=16, output_range="clamp").astype(np.float64)
    stretched = cpu_fuser.fuse(ir, vis, tile=64, tile_overlap=16, output_range="minmax")
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    # per-tile stretching would move every tile by its own min/max: far more than rounding
    assert np.abs(stretched - expected).max() <= 1e-5


@pytest.mark.parametrize("tile", [None, 32])
def test_torch_outputs_are_ordinary_tensors(cpu_fuser, tile):
    ir = torch.rand(48, 64)
    vis = torch.rand(48, 64)
    out = cpu_fuser.fuse(ir, vis, tile=tile, tile_overlap=8)
    assert not out.is_inference()
    out.mul_(1.0)  # in-place use outside inference mode works


def test_lists_with_mixed_sizes_and_tiles(cpu_fuser):
    a = _gray_pair(64, 96)
    b = _gray_pair(100, 80, seed=5)
    out = cpu_fuser.fuse([a[0], b[0]], [a[1], b[1]], tile=48, tile_overlap=8)
    assert [o.shape for o in out] == [(64, 96), (100, 80)]


# ----------------------------------------------------------------------------- memory
_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    sys.path.insert(0, {src!r})
    torch.set_num_threads(2)
    from emmafuse.fuser import Fuser
    from emmafuse.models import UFuser
    torch.manual_seed(0)
    fuser = Fuser(UFuser(), device="cpu")
    ir = torch.rand(512, 512)
    vis = torch.rand(512, 512)
    def peak_kib():
        # VmHWM belongs to this process image; ru_maxrss can carry the parent's peak over exec
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    fuser.fuse(ir[:64, :64], vis[:64, :64])  # warm up at a small size
    base = peak_kib()
    fuser.fuse(ir, vis, tile={tile}, tile_overlap=16, batch_size=1)
    print("GROWTH_KIB", peak_kib() - base)
    """
)


def _rss_growth_kib(tile: object) -> int:
    code = _RSS_SCRIPT.format(src=str(SRC), tile=repr(tile))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return int(next(ln for ln in proc.stdout.splitlines() if ln.startswith("GROWTH_KIB")).split()[1])


@pytest.mark.slow
def test_tiled_fusion_bounds_peak_memory():
    whole = _rss_growth_kib(None)  # 512x512 fits the default budget: one whole-image forward
    tiled = _rss_growth_kib(128)
    # measured: ~165 MB for the whole 0.26 MP forward, ~15 MB with 128-px tiles
    assert whole > 80 * 1024, (whole, tiled)
    assert tiled < 0.5 * whole, (whole, tiled)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_large_outputs_converted_in_strips_are_identical(kind):
    """Colour conversion and encoding of very large images run in row strips: same values."""
    from emmafuse.color import rgb_to_ycbcr
    from emmafuse.planes import Pair as _Pair
    from emmafuse.planes import finish as _finish
    from emmafuse.planes import finish_planes as _finish_planes
    from emmafuse.planes import row_strips as _row_strips
    from emmafuse.planes import split_planes as _split_planes
    from emmafuse.inputs import decode_image, encode_image

    h, w = 2056, 2100  # above the strip threshold (4 MP)
    assert len(_row_strips(h, w)) > 1
    rng = np.random.default_rng(0)
    vis = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)  # RGBA: chroma and alpha
    image = vis if kind == "numpy" else torch.from_numpy(vis).permute(2, 0, 1).contiguous()
    chw, spec = decode_image(image, "vis")
    luma, chroma, alpha = _split_planes(chw, spec)
    assert torch.equal(torch.cat((luma, chroma)), rgb_to_ycbcr(chw[None, :3])[0])
    fused = torch.rand(1, h, w)
    pair = _Pair(luma, luma, chroma, alpha, spec)
    out = _finish(fused, pair)
    ref = encode_image(_finish_planes(fused, chroma, alpha), spec)
    assert type(out) is type(ref) and out.shape == ref.shape and out.dtype == ref.dtype
    assert (out == ref).all()
