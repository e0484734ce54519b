"""Shared fixtures: seeded random-weight fusers and paths to ../shared when present."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))
# Tests (and the CLI processes they start) never write to the user's pseudo-GT cache. The
# folder is this process's own: removed when the process ends (with whatever tests cached).
_CACHE = tempfile.mkdtemp(prefix="emmafuse-test-cache-")
os.environ["EMMAFUSE_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is absent (a user's fresh clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data), which is absent")
    return path


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random U-Fuser weights file (speed/plumbing tests only)."""
    from emmafuse.checkpoint import save_ufuser
    from emmafuse.models import UFuser

    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("weights") / "random.safetensors"
    save_ufuser(UFuser().state_dict(), path, metadata={"name": "random-test"})
    return path


@pytest.fixture(scope="session")
def fuser(random_weights: Path):
    import emmafuse

    return emmafuse.load(random_weights, device="cpu")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is faster and far steadier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
