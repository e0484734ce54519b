"""Unit tests of emmafuse.train: transforms, losses, pseudo GT, data, checkpoint shards, config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from emmafuse.image_io import read_luma as read_gray
from emmafuse.train import ckpt_io
from emmafuse.train.config import ConfigError, TrainConfig
from emmafuse.train.data import DataError, find_pairs, split_pairs
from emmafuse.train.patches import PairStore, PatchDataset, is_low_contrast, make_loader
from emmafuse.train.losses import conventional_fusion_loss, l1_gradient_loss, sobel_gradient
from emmafuse.train.pseudo_gt import GuidedFilterFusion, LaplacianPyramidFusion, fill_pseudo_gt, parse_sources
from emmafuse.train.synthetic import blob_texture_pair as synthetic_pair
from emmafuse.train.synthetic import write_synthetic_pairs
from emmafuse.train.transforms import Transform, TransformGroup, apply_transforms, official_transforms



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic_pairs(tmp_path_factory.mktemp("pairs"), 6, 48, 64, seed=3)


def _smooth(n: int, h: int, w: int) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synthetic_pair(i, h, w)[0]) for i in range(n)])[:, None]


# ----------------------------------------------------------------------------- transforms
EXACT = [
    Transform(),
    Transform("shift", dy=5, dx=-3),
    Transform("shift", dy=-40, dx=71),
    Transform("flip", flip=1),
    Transform("flip", flip=2),
    Transform("flip", flip=3),
    Transform("rot90", k=1),
    Transform("rot90", k=2),
    Transform("rot90", k=3),
]


def test_exact_transforms_match_torch_ops_and_invert_exactly() -> None:
    x = torch.rand(len(EXACT), 2, 16, 16)
    y, mask = apply_transforms(x, EXACT)
    assert y.shape == x.shape and mask.shape == (len(EXACT), 1, 16, 16)
    assert torch.equal(mask, torch.ones_like(mask))
    expected = [
        x[0],
        torch.roll(x[1], (5, -3), (-2, -1)),
        torch.roll(x[2], (-40, 71), (-2, -1)),
        x[3].flip(-1),
        x[4].flip(-2),
        x[5].flip(-1).flip(-2),
        torch.rot90(x[6], 1, (-2, -1)),
        torch.rot90(x[7], 2, (-2, -1)),
        torch.rot90(x[8], 3, (-2, -1)),
    ]
    for got, want in zip(y, expected):
        assert torch.equal(got, want)
    back, _ = apply_transforms(y, [t.inverse() for t in EXACT])
    assert torch.equal(back, x)


def test_arbitrary_rotation_mask_and_inverse() -> None:
    x = _smooth(3, 32, 32)
    ts = [Transform("rotate", angle=a) for a in (30.0, 130.0, 250.0)]
    y, mask = apply_transforms(x, ts)
    # the valid region of a 45-degree-ish turn of a square is an octagon: most, not all, pixels
    assert 0.6 < mask.mean().item() < 0.95
    # every valid output pixel samples inside the image: a constant image stays constant there,
    # and pixels with no source at all are zero
    ones, _ = apply_transforms(torch.ones(3, 1, 32, 32), ts)
    assert torch.allclose(ones[mask == 1], torch.ones(1), atol=1e-5)
    assert torch.all(y[ones.expand_as(y) == 0] == 0) and (ones == 0).any()
    back, back_mask = apply_transforms(y, [t.inverse() for t in ts])
    both = apply_transforms(mask, [t.inverse() for t in ts])[0] * back_mask
    inner = both > 0.999
    # two bilinear resamplings blur a little; compare well inside the doubly valid region
    assert inner.float().mean() > 0.4
    assert (back - x).abs()[inner].mean() < 0.02
    # 90 degrees through the bilinear path equals the exact quarter turn
    r, m = apply_transforms(x, [Transform("rotate", angle=90.0)] * 3)
    assert torch.allclose(r, torch.rot90(x, 1, (-2, -1)), atol=1e-5) and m.min() == 1


def test_group_sampling_is_seeded_and_covers_kinds() -> None:
    group = TransformGroup("arbitrary")
    a = group.sample(400, 32, 32, torch.Generator().manual_seed(1))
    b = group.sample(400, 32, 32, torch.Generator().manual_seed(1))
    assert a == b
    kinds = {t.kind for t in a}
    assert kinds == {"identity", "shift", "rotate", "flip"}
    share = sum(t.kind == "identity" for t in a) / 400
    assert 0.04 < share < 0.18  # expected 0.1
    assert all(t.kind != "shift" or (t.dy % 32 and t.dx % 32) for t in a)
    q = TransformGroup("rot90").sample(50, 32, 48, torch.Generator().manual_seed(0))
    assert all(t.kind != "rot90" or t.k == 2 for t in q)  # non-square: only half turns
    off = official_transforms(32, 32, torch.Generator().manual_seed(0))
    assert [t.kind for t in off] == ["shift"] * 3 + ["rotate"] * 3 + ["flip"] * 3


def test_rot90_rejects_non_square() -> None:
    with pytest.raises(ValueError, match="square"):
        apply_transforms(torch.rand(1, 1, 16, 32), [Transform("rot90", k=1)])


# --------------------------------------------------------------------------------- losses
def test_sobel_matches_normalised_kornia_definition() -> None:
    x = torch.rand(2, 1, 9, 11, dtype=torch.float64)
    g = sobel_gradient(x)
    assert g.shape == (2, 1, 2, 9, 11)
    # interior pixel by hand: ((p[.,+1] - p[.,-1]) weighted 1,2,1) / 8
    p = x[0, 0]
    gx = ((p[3, 6] - p[3, 4]) + 2 * (p[4, 6] - p[4, 4]) + (p[5, 6] - p[5, 4])) / 8
    gy = ((p[5, 4] - p[3, 4]) + 2 * (p[5, 5] - p[3, 5]) + (p[5, 6] - p[3, 6])) / 8
    assert torch.isclose(g[0, 0, 0, 4, 5], gx) and torch.isclose(g[0, 0, 1, 4, 5], gy)
    # replicate padding: a constant image has zero gradient everywhere, borders included
    assert torch.all(sobel_gradient(torch.full((1, 1, 5, 5), 0.3)) == 0)


def test_masked_loss_equals_plain_loss_with_full_mask_and_ignores_masked_pixels() -> None:
    a, b = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    plain = l1_gradient_loss(a, b)
    assert torch.isclose(plain, l1_gradient_loss(a, b, torch.ones(2, 1, 16, 16)))
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    c = b.clone()
    c[mask.expand_as(c) == 0] = 5.0  # garbage outside the mask (and far from its interior)
    assert torch.isclose(l1_gradient_loss(a, b, mask), l1_gradient_loss(a, c, mask))
    assert l1_gradient_loss(a, a) == 0
    f = torch.maximum(a, b)
    assert conventional_fusion_loss(f, a, b) < conventional_fusion_loss((a + b) / 2, a, b)


# ------------------------------------------------------------------------------ pseudo GT
def test_rule_fusions_are_valid_images_that_keep_both_sources() -> None:
    a, b = synthetic_pair(5, 64, 80)
    # complementary halves: the detailed image is the "infrared" on the left, the "visible" on the right
    ir_np = np.concatenate([b[:, :40], a[:, 40:]], 1)
    vis_np = np.concatenate([a[:, :40], b[:, 40:]], 1)
    ir, vis = torch.from_numpy(ir_np)[None, None], torch.from_numpy(vis_np)[None, None]
    lap = LaplacianPyramidFusion()
    # the pyramid reconstructs exactly when nothing is fused
    assert torch.allclose(lap.reconstruct(lap.pyramid(ir)), ir, atol=1e-6)
    for rule in (lap, GuidedFilterFusion()):
        f = rule.fuse(ir, vis)
        assert f.shape == ir.shape and f.min() >= 0 and f.max() <= 1
        # same images in -> (almost) the same image out
        assert (rule.fuse(ir, ir) - ir).abs().max() < 0.02
        # closer to each source than the other source is
        assert (f - ir).abs().mean() < (vis - ir).abs().mean()
        assert (f - vis).abs().mean() < (vis - ir).abs().mean()
        # detail of the visible image survives: more gradient than the plain average
        grad = lambda t: sobel_gradient(t).abs().mean()  # noqa: E731
        assert grad(f) > grad((ir + vis) / 2)


def test_pseudo_gt_folder_source_and_errors(pairs_dir: tuple[Path, Path], tmp_path: Path) -> None:
    ir_dir, vis_dir = pairs_dir
    store = PairStore(find_pairs(ir_dir, vis_dir))
    fused_dir = tmp_path / "fused"
    fused_dir.mkdir()
    for p in ir_dir.iterdir():  # pretend the infrared images are some method's fused output
        (fused_dir / p.name).write_bytes(p.read_bytes())
    fill_pseudo_gt(store, parse_sources(["laplacian", f"folder:{fused_dir}"]))
    assert set(store.fused) == {"laplacian", f"folder:{fused_dir}"}
    np.testing.assert_array_equal(store.fused[f"folder:{fused_dir}"][0], store.ir[0])
    next(fused_dir.iterdir()).unlink()
    with pytest.raises(DataError, match="lacks 1 of the training pairs"):
        fill_pseudo_gt(store, parse_sources([f"folder:{fused_dir}"]))
    with pytest.raises(DataError, match="unknown pseudo-GT source"):
        parse_sources(["nine-sota-methods"])


# ----------------------------------------------------------------------------------- data
def test_read_gray_uses_bt601_luma_of_colour(tmp_path: Path) -> None:
    from PIL import Image

    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_gray(tmp_path / "c.png")[0, 0] == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=1e-6)


def test_low_contrast_rule_is_the_official_one() -> None:
    flat = np.full((8, 8), 0.5)
    assert is_low_contrast(flat)
    ramp = np.linspace(0, 1, 64).reshape(8, 8)
    assert not is_low_contrast(ramp)
    # (p90 - p10) / p90 just below / above 0.1
    assert is_low_contrast(np.linspace(0.905, 1.0, 100))
    assert not is_low_contrast(np.linspace(0.85, 1.0, 100))
    assert is_low_contrast(np.zeros((4, 4)))  # all dark: no division by zero


def test_bad_folders_give_clear_errors(tmp_path: Path, pairs_dir: tuple[Path, Path]) -> None:
    ir_dir, vis_dir = pairs_dir
    with pytest.raises(DataError, match="does not exist"):
        find_pairs(tmp_path / "nope", vis_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        find_pairs(empty, vis_dir)
    # unpaired names
    lonely = tmp_path / "ir"
    lonely.mkdir()
    for p in ir_dir.iterdir():
        (lonely / p.name).write_bytes(p.read_bytes())
    (lonely / "stray.png").write_bytes(next(ir_dir.iterdir()).read_bytes())
    with pytest.raises(DataError, match=r"unpaired images.*1 only in .*stray"):
        find_pairs(lonely, vis_dir)
    # unreadable file
    (lonely / "stray.png").unlink()
    first = sorted(lonely.iterdir())[0]
    first.write_bytes(b"not an image")
    # (the wording is emmafuse.image_io's, being unified by issue 18 item 4)
    with pytest.raises(DataError, match=f"(cannot read image .*{first.name}|{first.name}: not a readable image)"):
        PairStore(find_pairs(lonely, vis_dir))
    # smaller than the crop
    with pytest.raises(DataError, match=r"6 pairs are smaller than the 128x128 crop.*\(64x48\)"):
        PairStore(find_pairs(ir_dir, vis_dir), min_side=128)
    with pytest.raises(DataError, match="cannot hold out"):
        split_pairs(find_pairs(ir_dir, vis_dir), 6, 0)


def test_patches_are_deterministic_per_index_and_independent_of_workers(pairs_dir: tuple[Path, Path]) -> None:
    store = PairStore(find_pairs(*pairs_dir), min_side=32)
    fill_pseudo_gt(store, parse_sources(["laplacian", "gff"]))
    ds = PatchDataset(store, 32, seed=5, with_fused=True)
    a, b = ds[17], ds[17]
    assert all(torch.equal(a[k], b[k]) for k in a) and a["ir"].shape == (1, 32, 32)
    assert not torch.equal(ds[17]["ir"], ds[18]["ir"])
    # one epoch visits every pair once
    assert sorted(ds.pair_index(k) for k in range(len(store))) == list(range(len(store)))
    serial = [b["ir"] for b in make_loader(ds, 4, 3, 6, workers=0)]
    parallel = [b["ir"] for b in make_loader(ds, 4, 3, 6, workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel)) and len(serial) == 3
    # resuming at step 4 gives step 4's batch; ranks get disjoint samples
    assert torch.equal(next(iter(make_loader(ds, 4, 4, 6)))["ir"], serial[1])
    r0 = next(iter(make_loader(ds, 4, 3, 4, rank=0, world=2)))["ir"]
    r1 = next(iter(make_loader(ds, 4, 3, 4, rank=1, world=2)))["ir"]
    assert not torch.equal(r0, r1)


# --------------------------------------------------------------------------- checkpoint io
def test_sharded_state_roundtrip_keeps_every_file_under_the_limit(tmp_path: Path) -> None:
    big = torch.randn(300_000)  # 1.2 MB: split across shards
    state = {
        "models": {"w": big, "b": torch.arange(5), "h": torch.randn(3, 3).bfloat16()},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.999), "lr": 1e-4}]},
        "rng": torch.Generator().manual_seed(3).get_state(),
        "step": 7,
        "note": None,
    }
    limit = 512 * 1024
    path = ckpt_io.save_state(tmp_path / "ck", state, max_shard_bytes=limit)
    files = list(path.iterdir())
    assert len(files) >= 4 and all(f.stat().st_size <= limit for f in files)
    back = ckpt_io.load_state(path)
    assert torch.equal(back["models"]["w"], big) and back["models"]["h"].dtype == torch.bfloat16
    assert back["optimizer"]["state"][0]["step"] == 3.0  # int key survives
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuple survives
    assert torch.equal(back["rng"], state["rng"]) and back["step"] == 7 and back["note"] is None
    with pytest.raises(ckpt_io.CheckpointError, match="missing manifest.json"):
        ckpt_io.load_state(tmp_path / "nothing")


# ---------------------------------------------------------------------------------- config
def test_config_json_roundtrip_overrides_and_validation(tmp_path: Path) -> None:
    cfg = TrainConfig()
    cfg.override("fuser.alpha2", 10)
    cfg.override("sensing.pseudo_gt", "laplacian,folder:/x")
    cfg.override("data.flips", "false")
    path = cfg.save(tmp_path / "c.json")
    back = TrainConfig.load(path)
    assert back == cfg and back.fuser.alpha2 == 10.0 and back.sensing.pseudo_gt == ("laplacian", "folder:/x")
    assert back.fuser.channels == (8, 16, 32, 32) and back.data.flips is False
    with pytest.raises(ConfigError, match="unknown config key 'fuser.alpha3'"):
        cfg.override("fuser.alpha3", 1)
    data = json.loads(path.read_text())
    data["data"]["crop"] = 100
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="multiple of 16"):
        TrainConfig.load(path)
    data["data"]["crop"] = 128
    data["data"]["typo"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown config keys in 'data'"):
        TrainConfig.load(path)


def test_quick_metrics_are_the_reference_metrics_of_the_8bit_image() -> None:
    from emmafuse.metrics import evaluate
    from emmafuse.train.quick_metrics import VALIDATION_METRICS, quick_metrics

    torch.manual_seed(0)
    f = torch.rand(1, 1, 48, 50) ** 2
    ir, vis = torch.rand(1, 1, 48, 50), torch.rand(1, 1, 48, 50)
    got = quick_metrics(f, ir, vis)
    want = evaluate(
        torch.round(f * 255)[0, 0].double().numpy(), (ir * 255)[0, 0].double().numpy(),
        (vis * 255)[0, 0].double().numpy(), metrics=list(VALIDATION_METRICS),
    )
    for name in VALIDATION_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9)
    assert "grid" in got and not math.isnan(got["AG"])
    small = quick_metrics(f[..., :32, :32], ir[..., :32, :32], vis[..., :32, :32])
    assert "VIF" not in small and "Qabf" in small  # VIF needs 41 pixels: left out, not an error


def test_grid_ratio_flags_a_checkerboard_and_not_a_smooth_image() -> None:
    from emmafuse.metrics.grid import grid_ratio

    yy, xx = np.mgrid[0:128, 0:128]
    smooth = 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + np.random.default_rng(0).normal(0, 2, (128, 128))
    checker = smooth + 6 * ((xx + yy) % 2 * 2 - 1)
    assert grid_ratio(smooth) < 20
    assert grid_ratio(checker) > 100


def test_inference_code_does_not_import_training() -> None:
    import subprocess
    import sys

    code = (
        "import sys, emmafuse, emmafuse.cli, emmafuse.checkpoint; "
        "emmafuse.cli.build_parser(['fuse']); "
        "assert not [m for m in sys.modules if m.startswith('emmafuse.train')], 'inference imported emmafuse.train'"
    )
    import os

    import emmafuse

    src = str(Path(emmafuse.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr


def test_duplicate_stems_are_refused_like_fuse_and_eval(tmp_path: Path, pairs_dir: tuple[Path, Path]) -> None:
    ir_dir, vis_dir = pairs_dir
    dup = tmp_path / "ir"
    dup.mkdir()
    for p in ir_dir.iterdir():
        (dup / p.name).write_bytes(p.read_bytes())
    first = sorted(dup.iterdir())[0]
    (dup / f"{first.stem}.jpg").write_bytes(first.read_bytes())
    with pytest.raises(DataError, match=f"share a name: {first.stem}.jpg and {first.name}"):
        find_pairs(dup, vis_dir)


@pytest.mark.parametrize("problem", ["missing_ir", "size_mismatch", "too_small", "out_is_a_file"])
def test_failed_train_all_leaves_no_run_folder(tmp_path: Path, pairs_dir: tuple[Path, Path], capsys, problem) -> None:
    """Issue 11 item 6: data and outputs are checked before config.json is written, so the
    corrected rerun is not refused as an existing run."""
    from emmafuse.cli.train import main as train_main

    ir_dir, vis_dir = pairs_dir
    out = tmp_path / "run"
    argv = ["all", "--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out), "--device", "cpu", "--val-pairs", "1", "--crop", "32"]
    expected = {
        "missing_ir": "ir folder does not exist",
        "size_mismatch": "pairs have different sizes",
        "too_small": "smaller than the 128x128 crop",
        "out_is_a_file": "is a file, not a folder",
    }[problem]
    if problem == "missing_ir":
        argv[2] = str(tmp_path / "missing")
    elif problem == "size_mismatch":
        odd = tmp_path / "odd_vis"
        odd.mkdir()
        for p in vis_dir.iterdir():
            (odd / p.name).write_bytes(p.read_bytes())
        from PIL import Image

        Image.new("L", (40, 40)).save(odd / sorted(p.name for p in vis_dir.iterdir())[0])
        argv[4] = str(odd)
    elif problem == "too_small":
        argv += ["--crop", "128"]
    else:
        out.write_text("a file")
        argv[6] = str(out / "run")
    for attempt in range(2):  # the rerun gets the same data error, not "already holds a training run"
        assert train_main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and "already holds" not in err and "Traceback" not in err, (attempt, err)
    assert not (out / "config.json").exists() and (problem == "out_is_a_file" or not out.exists())


def test_crop_sides_follow_the_networks_size_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    from emmafuse.models.size_req import SizeRequirements
    from emmafuse.models.ufuser import UFuser
    from emmafuse.train.sensing import crop_requirements

    assert crop_requirements() == SizeRequirements(multiple=16, minimum=16)  # U-Fuser 8, sensing U-Net 16
    monkeypatch.setattr(UFuser, "size_requirements", SizeRequirements(multiple=32, minimum=64))
    assert crop_requirements() == SizeRequirements(multiple=32, minimum=64)
    cfg = TrainConfig()
    cfg.data.crop = 48
    with pytest.raises(ConfigError, match="data.crop must be a multiple of 32 and >= 64, got 48") as raised:
        cfg.validate()
    assert raised.value.parameter == "data.crop"


def test_stage_names_are_one_list() -> None:
    from emmafuse.train.run_folder import RUN_FILES, RunFolder
    from emmafuse.train.stage_names import STAGE_SEED_IDS, STAGES, Stage, stage_seed

    assert [str(s) for s in STAGES] == ["bootstrap", "warm_start", "sensing", "fuser"]
    assert {s.value: s.seed_id for s in Stage} == STAGE_SEED_IDS == {"sensing": 1, "fuser": 2, "bootstrap": 3, "warm_start": 4}
    assert f"{Stage.WARM_START}" == "warm_start" and json.dumps({"stage": Stage.FUSER}) == '{"stage": "fuser"}'
    assert stage_seed(0, Stage.SENSING) == stage_seed(0, "sensing") == 7919  # the data pipeline's identity
    assert RunFolder("r").final_dir(Stage.FUSER) == Path("r/fuser/final") and "sensing" in RUN_FILES


def test_library_messages_name_config_keys_not_flags() -> None:
    cfg = TrainConfig()
    cfg.data.extra_ir_dirs = ("a",)
    with pytest.raises(ConfigError) as raised:
        cfg.data.folder_pairs()
    assert raised.value.parameter == "data.extra_vis_dirs" and "--" not in str(raised.value)
    from emmafuse.train.data import collect_pairs

    with pytest.raises(DataError) as no_folders:
        collect_pairs([])
    assert no_folders.value.parameter == "data.ir_dir" and "--" not in str(no_folders.value)
