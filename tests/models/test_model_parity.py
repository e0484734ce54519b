"""Our U-Fuser against the authors' code: same state-dict layout, same numbers.

The fixture was produced once by scripts/make_parity_fixture.py running the official
nets/Ufuser.py on seeded weights and inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from emmafuse.models import UFuser, UFuserConfig
from parity_weights import seeded_state_dict

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ufuser_parity.safetensors"


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    shapes = {k: tuple(v) for k, v in json.loads(meta["shapes"]).items()}
    return tensors, shapes


def test_state_dict_keys_and_shapes_match_official(fixture):
    _, shapes = fixture
    ours = {k: tuple(v.shape) for k, v in UFuser().state_dict().items()}
    assert ours == shapes


def test_parameter_count_of_released_architecture():
    assert sum(p.numel() for p in UFuser().parameters()) == 1_517_657


def test_seeded_weights_are_the_ones_the_fixture_used(fixture):
    tensors, shapes = fixture
    weights = seeded_state_dict(shapes)
    for key, value in weights.items():
        assert value.double().sum().item() == pytest.approx(tensors[f"checksum/{key}"].item(), rel=1e-6), key


def test_numerical_parity_with_official_forward(fixture):
    tensors, shapes = fixture
    model = UFuser().eval()
    model.load_state_dict(seeded_state_dict(shapes), strict=True)
    with torch.inference_mode():
        out = model(tensors["ir"], tensors["vis"])
    assert out.shape == tensors["fused"].shape
    assert (out - tensors["fused"]).abs().max().item() <= 1e-5
    # and our float32 is as close to the official float64 run as the official float32 is
    assert (out.double() - tensors["fused_float64"]).abs().max().item() <= 1e-5


def test_configurable_widths_run():
    model = UFuser(UFuserConfig(channels=(16, 32, 64, 128))).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 1, 32, 48), torch.rand(1, 1, 32, 48))
    assert out.shape == (1, 1, 32, 48)
    assert 0.0 < out.min() and out.max() < 1.0


def test_config_round_trip_and_validation():
    cfg = UFuserConfig(channels=(8, 8, 16, 16), num_heads=4)
    assert UFuserConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="4 widths"):
        UFuserConfig.from_dict({"channels": [8, 16]})
    with pytest.raises(ValueError, match="unknown"):
        UFuserConfig.from_dict({"chanels": [8, 16, 32, 32]})
