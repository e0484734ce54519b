"""The released, embedded models: offline loading, sensible output, manifest provenance.

These run on the weights shipped in the package (no ../shared, no network) and can fail:
a constant, one-sided, grid-patterned or colour-dropping model does not pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import emmafuse
from emmafuse import weights
from emmafuse.manifest import MANIFEST_ENV, read_manifest
from emmafuse.metrics.grid import grid_ratio
from emmafuse.samples import synthetic_pair

RELEASED = ("emma-ivf", "emma-ivf-v1", "emma-mif")
CARD = Path(__file__).resolve().parents[2] / "docs" / "model_card.md"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(MANIFEST_ENV, raising=False)


@pytest.mark.parametrize("name", RELEASED)
def test_released_model_is_embedded_with_provenance(name: str) -> None:
    entry = read_manifest()["models"][name]
    assert entry["status"] == "released" and entry["embedded"]
    assert len(entry["sha256"]) == 64 and entry["size"] > 1_000_000
    assert entry["training"]["recipe"] and entry["training"]["data"] and entry["training"]["code_commit"]
    assert entry["training"]["wall_time_minutes"] <= 100
    assert entry["evaluation"]["results"], "evaluation numbers from emmafuse eval"
    path = Path(weights.__file__).parent / "weights" / entry["embedded"]
    assert weights.file_sha256(path) == entry["sha256"]
    if CARD.is_file():  # the model card names the shipped file, not an earlier registration
        assert f"`{entry['sha256'][:12]}…`" in CARD.read_text(encoding="utf-8")


def test_default_model_loads_offline_and_fuses_the_synthetic_scene() -> None:
    assert read_manifest()["default"] == "emma-ivf"
    fuser = emmafuse.load(local_files_only=True, device="cpu")
    ir, vis = synthetic_pair(240, 320, seed=3)
    fused = fuser.fuse(ir, vis)
    assert fused.shape == vis.shape and fused.dtype == np.uint8
    y = fused.astype(np.float64).mean(axis=2)
    vis_y = vis.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    # keeps both sources: correlated with each, and not a copy of either
    c_ir = np.corrcoef(y.ravel(), ir.ravel().astype(np.float64))[0, 1]
    c_vis = np.corrcoef(y.ravel(), vis_y.ravel())[0, 1]
    assert c_ir > 0.3 and c_vis > 0.3, (c_ir, c_vis)
    assert y.std() > 10
    # no period-2 pattern: the Nyquist row/column within 10x the spectrum's median (or within
    # twice the pixel-max image's ratio, should the scene itself have more)
    assert grid_ratio(y) < max(10.0, 2 * grid_ratio(np.maximum(ir, vis_y)))


def test_medical_model_keeps_the_pet_colour() -> None:
    fuser = emmafuse.load("emma-mif", local_files_only=True, device="cpu")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    brain = ((yy - 48) ** 2 / 40**2 + (xx - 48) ** 2 / 34**2) < 1
    mri = (brain * (120 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0))).astype(np.uint8)
    pet = np.zeros((96, 96, 3), np.uint8)
    hot = ((yy - 40) ** 2 + (xx - 55) ** 2) < 150
    pet[..., 0] = np.where(hot, 230, brain * 60)
    pet[..., 1] = np.where(hot, 120, brain * 30)
    pet[..., 2] = (brain * 90 + rng.integers(0, 5, (96, 96))).astype(np.uint8)
    for fused in (fuser.fuse(pet, mri), fuser.fuse(mri, pet)):
        assert fused.shape == (96, 96, 3)
        spread = np.abs(fused[..., 0].astype(int) - fused[..., 1].astype(int)).max()
        assert spread > 50  # the PET's chroma is kept


def test_demo_runs_with_the_shipped_weights(tmp_path: Path) -> None:
    out = tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "emmafuse", "demo", "-o", str(out)], capture_output=True, text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.stat().st_size > 10_000
