"""`emmafuse convert`: official .pth checkpoints -> pickle-free .safetensors."""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from emmafuse.checkpoint import WeightsError, load_ufuser_file
from emmafuse.cli.convert import add_convert_command
from emmafuse.convert import SENSING_FORMAT_TAG, convert_checkpoint
from emmafuse.models import UFuser, UFuserConfig


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return UFuser().state_dict()


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _assert_same(path: Path, state: dict[str, torch.Tensor]) -> None:
    loaded, config, meta = load_ufuser_file(path)
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value.float()), key
    assert config.channels == (8, 16, 32, 32)


def test_plain_state_dict_roundtrip_with_metadata(tmp_path: Path, official_state) -> None:
    src = _save(official_state, tmp_path / "EMMA.pth")
    out = convert_checkpoint(src, tmp_path / "emma.safetensors")
    assert out == tmp_path / "emma.safetensors"
    _assert_same(out, official_state)
    _, _, meta = load_ufuser_file(out)
    assert meta["format"] == "emmafuse.ufuser"
    assert meta["source_file"] == "EMMA.pth"
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert not list(tmp_path.glob("*.part")), "no temporary file left behind"


@pytest.mark.parametrize("wrap", ["module", "state_dict", "model", "nested"])
def test_wrappers_and_prefixes(tmp_path: Path, official_state, wrap: str) -> None:
    if wrap == "module":
        obj: object = collections.OrderedDict((f"module.{k}", v) for k, v in official_state.items())
    elif wrap == "nested":
        obj = {"model": {"state_dict": dict(official_state)}, "epoch": 7, "optimizer": {}}
    else:
        obj = {wrap: dict(official_state), "epoch": 3}
    src = _save(obj, tmp_path / "EMMA.pth")
    _assert_same(convert_checkpoint(src), official_state)  # default output: EMMA.safetensors


def test_other_widths_are_inferred(tmp_path: Path) -> None:
    config = UFuserConfig(channels=(16, 32, 64, 128))
    state = UFuser(config).state_dict()
    out = convert_checkpoint(_save(state, tmp_path / "big.pth"), tmp_path / "big.safetensors", dtype=torch.float16)
    loaded, got, _ = load_ufuser_file(out)
    assert got.channels == (16, 32, 64, 128)
    with safe_open(str(out), framework="pt") as f:
        assert f.get_tensor("last.0.weight").dtype == torch.float16
    assert loaded["last.0.weight"].dtype == torch.float32


def test_wrong_keys_and_shapes_are_rejected(tmp_path: Path, official_state) -> None:
    missing = dict(official_state)
    missing.pop("last.0.bias")
    missing["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"1 missing \(e.g. last.0.bias\); 1 unexpected \(e.g. extra.weight\)"):
        convert_checkpoint(_save(missing, tmp_path / "a.pth"), tmp_path / "a.safetensors")
    wrong = dict(official_state)
    wrong["last.0.weight"] = torch.zeros(1, 8, 5, 5)
    with pytest.raises(WeightsError, match="wrong shape .*last.0.weight"):
        convert_checkpoint(_save(wrong, tmp_path / "b.pth"), tmp_path / "b.safetensors")
    assert not list(tmp_path.glob("*.safetensors")), "nothing written for invalid checkpoints"


def test_unsafe_and_unreadable_inputs(tmp_path: Path, official_state) -> None:
    with pytest.raises(WeightsError, match="not a file"):
        convert_checkpoint(tmp_path / "missing.pth", tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="not a file"):
        convert_checkpoint(tmp_path, tmp_path / "x.safetensors")
    pickled = _save({"state_dict": dict(official_state), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "p.pth")
    with pytest.raises(WeightsError, match="Python objects other than tensors .*argparse.Namespace"):
        convert_checkpoint(pickled, tmp_path / "p.safetensors")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        convert_checkpoint(junk, tmp_path / "j.safetensors")
    with pytest.raises(WeightsError, match="not tensors"):
        convert_checkpoint(_save({"a": torch.zeros(1), "epoch": 3}, tmp_path / "e.pth"), tmp_path / "e.safetensors")
    with pytest.raises(WeightsError, match="not a state_dict"):
        convert_checkpoint(_save([torch.zeros(1)], tmp_path / "l.pth"), tmp_path / "l.safetensors")
    assert not list(tmp_path.glob("*.safetensors"))


def test_refuses_to_overwrite_source(tmp_path: Path, official_state) -> None:
    src = _save(official_state, tmp_path / "EMMA.safetensors")
    with pytest.raises(ValueError, match="overwrite the input"):
        convert_checkpoint(src, src)


def _unet5_like() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))


def test_sensing_kind(tmp_path: Path) -> None:
    net = _unet5_like()
    state = net.state_dict()
    src = _save({"model": state}, tmp_path / "Ai.pth")
    out = convert_checkpoint(src, tmp_path / "Ai.safetensors", kind="sensing")
    loaded = load_file(str(out))
    assert set(loaded) == set(state) and "1.num_batches_tracked" in loaded
    for key, value in state.items():
        assert torch.equal(loaded[key], value)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == SENSING_FORMAT_TAG and meta["source_file"] == "Ai.pth"
    with pytest.raises(WeightsError, match="emmafuse.sensing"):
        load_ufuser_file(out)  # not mistaken for fusion weights
    with pytest.raises(ValueError, match="kind"):
        convert_checkpoint(src, tmp_path / "x.safetensors", kind="other")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="emmafuse")
    add_convert_command(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_function(tmp_path: Path, official_state, capsys) -> None:
    from emmafuse.errors import WeightsError

    src = _save(official_state, tmp_path / "EMMA.pth")
    assert _run(["convert", str(src), str(tmp_path / "o.safetensors")]) == 0
    assert "sha256" in capsys.readouterr().out
    _assert_same(tmp_path / "o.safetensors", official_state)
    with pytest.raises(WeightsError, match="not a file"):  # the library's error; run_command prints it (issue 18)
        _run(["convert", str(tmp_path / "nope.pth")])
    sensing = _save(_unet5_like().state_dict(), tmp_path / "Av.pth")
    assert _run(["convert", "--kind", "sensing", "--fp16", str(sensing)]) == 0
    with safe_open(str(tmp_path / "Av.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == SENSING_FORMAT_TAG


def test_emmafuse_main_convert(tmp_path: Path, official_state, capsys) -> None:
    from emmafuse.cli import main

    src = _save(official_state, tmp_path / "EMMA.pth")
    assert main(["convert", str(src), str(tmp_path / "m.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "missing.pth")]) == 2
    assert "emmafuse convert: error:" in capsys.readouterr().err  # the command in the prefix (issue 17)
    meta = load_ufuser_file(tmp_path / "m.safetensors")[2]
    assert json.loads(meta["config"])["channels"] == [8, 16, 32, 32]
