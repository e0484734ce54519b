"""Shared fixtures: seeded random-weight fusers and paths to ../shared when present.

The helper modules beside the tests (``hub_server``, ``parity_weights``) are importable through
``pythonpath`` in ``pyproject.toml``; nothing here changes ``sys.path`` or the environment at import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
_CACHE_KEY = pytest.StashKey[tuple[str, str | None]]()  # the session's cache folder, the variable before


def pytest_configure(config: pytest.Config) -> None:
    """Tests (and the CLI processes they start) never write to the user's pseudo-GT cache: the
    session gets its own cache folder, removed at the end with whatever tests cached."""
    cache = tempfile.mkdtemp(prefix="emmafuse-test-cache-")
    config.stash[_CACHE_KEY] = (cache, os.environ.get("EMMAFUSE_CACHE"))
    os.environ["EMMAFUSE_CACHE"] = cache


def pytest_unconfigure(config: pytest.Config) -> None:
    cache, before = config.stash.get(_CACHE_KEY, (None, None))
    if cache is None:
        return
    shutil.rmtree(cache, ignore_errors=True)
    if before is None:
        os.environ.pop("EMMAFUSE_CACHE", None)
    else:
        os.environ["EMMAFUSE_CACHE"] = before


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
