"""Weights files: round trip, atomic writes, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import emmafuse
from emmafuse.checkpoint import WeightsError, build_ufuser, load_ufuser_file, save_ufuser
from emmafuse.models import UFuser, UFuserConfig


def test_round_trip_with_config_and_metadata(tmp_path):
    cfg = UFuserConfig(channels=(8, 8, 16, 16))
    model = UFuser(cfg)
    path = save_ufuser(model.state_dict(), tmp_path / "w.safetensors", cfg, metadata={"steps": 12, "data": "x"})
    state, cfg2, meta = load_ufuser_file(path)
    assert cfg2 == cfg and meta["steps"] == "12" and meta["data"] == "x"
    rebuilt = build_ufuser(state, cfg2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, rebuilt.state_dict()[k])
    assert not list(tmp_path.glob("*.part"))


def test_fp16_storage_is_upcast(tmp_path):
    path = save_ufuser(UFuser().state_dict(), tmp_path / "h.safetensors", dtype=torch.float16)
    state, _, _ = load_ufuser_file(path)
    assert all(v.dtype == torch.float32 for v in state.values())
    assert path.stat().st_size < 3_200_000


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        emmafuse.load(tmp_path / "nope.safetensors")


def test_corrupt_file(tmp_path):
    good = save_ufuser(UFuser().state_dict(), tmp_path / "good.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        emmafuse.load(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError):
        emmafuse.load(junk)


def test_wrong_architecture_is_named(tmp_path):
    small = UFuser(UFuserConfig(channels=(8, 8, 8, 8))).state_dict()
    path = save_ufuser(small, tmp_path / "w.safetensors")  # config says default widths
    with pytest.raises(WeightsError, match="wrong shape"):
        emmafuse.load(path)
    state = UFuser().state_dict()
    state.pop("last.0.bias")
    state["extra.weight"] = torch.zeros(1)
    path = save_ufuser(state, tmp_path / "k.safetensors")
    with pytest.raises(WeightsError, match="1 missing .*1 unexpected"):
        emmafuse.load(path)


def test_nan_weights_are_refused(tmp_path):
    state = UFuser().state_dict()
    state["last.0.bias"] = torch.tensor([float("nan")])
    path = save_ufuser(state, tmp_path / "n.safetensors")
    with pytest.raises(WeightsError, match="NaN"):
        emmafuse.load(path)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        save_ufuser(UFuser().state_dict(), tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path):
    import os

    path = save_ufuser(UFuser().state_dict(), tmp_path / "w.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_integer_weights_are_refused(tmp_path):
    """A file whose tensors are int32 used to load silently (cast to float by load_state_dict)."""
    from safetensors.torch import save_file

    state = {k: v.round().to(torch.int32) for k, v in UFuser().state_dict().items()}
    path = tmp_path / "int.safetensors"
    save_file(state, str(path), metadata={"format": "emmafuse.ufuser"})
    with pytest.raises(WeightsError, match=r"stored as torch.int32; U-Fuser weights are floating point"):
        emmafuse.load(path, device="cpu")


@pytest.mark.parametrize("given", ["folder", ""])
def test_folder_or_empty_weights_path_is_named(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    save_ufuser(UFuser().state_dict(), tmp_path / "adir" / "w.safetensors")
    path = str(tmp_path / "adir") if given == "folder" else ""
    message = r"is a folder, not a \.safetensors file \(it holds w\.safetensors\)" if given else r"weights path is empty \(''\)"
    with pytest.raises(WeightsError, match=message):
        emmafuse.load(path, device="cpu")
