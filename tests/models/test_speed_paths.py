"""Each inference fast path of the U-Fuser against the plain (release) computation.

Numerical equivalence only (<= 1e-5 on the high-gain parity weights); no timing assertions.
Speed is measured by benchmarks/bench_cpu.py and benchmarks/bench_gpu.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from parity_weights import seeded_state_dict
from safetensors import safe_open

from emmafuse.fuser import Fuser
from emmafuse.models import UFuser
from emmafuse.models.fast_paths import FastPaths
from emmafuse.models.restormer import ChannelAttention, ChannelLayerNorm, GatedMlp

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ufuser_parity.safetensors"
FLAGS = tuple(f.name for f in dataclasses.fields(FastPaths))


@pytest.fixture(scope="module")
def parity_model() -> UFuser:
    model = UFuser().eval()
    model.load_state_dict(seeded_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}))
    return model


def _inputs(n: int, h: int, w: int, seed: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, h, w, generator=g), torch.rand(n, 1, h, w, generator=g)


def _run(model: UFuser, ir: torch.Tensor, vis: torch.Tensor, **flags: bool) -> torch.Tensor:
    model.set_fast_paths(**flags)
    try:
        with torch.inference_mode():
            return model(ir, vis)
    finally:
        model.set_fast_paths(True)


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("batch", [1, 2])
def test_each_fast_path_matches_plain(parity_model, flag, batch):
    ir, vis = _inputs(batch, 32, 56)
    plain = _run(parity_model, ir, vis, enabled=False)
    fast = _run(parity_model, ir, vis, enabled=False, **{flag: True})
    assert fast.shape == plain.shape
    assert (fast - plain).abs().max().item() <= 1e-5


@pytest.mark.parametrize("batch", [1, 2])
def test_all_fast_paths_match_plain(parity_model, batch):
    ir, vis = _inputs(batch, 48, 64, seed=5)
    plain = _run(parity_model, ir, vis, enabled=False)
    fast = _run(parity_model, ir, vis, enabled=True)
    assert (fast - plain).abs().max().item() <= 1e-5
    assert fast.is_contiguous()


def test_fast_paths_keep_parity_with_the_official_fixture(parity_model):
    with safe_open(str(FIXTURE), framework="pt") as f:
        ir, vis, ref = f.get_tensor("ir"), f.get_tensor("vis"), f.get_tensor("fused")
    for enabled in (True, False):
        out = _run(parity_model, ir, vis, enabled=enabled)
        assert (out - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dim, heads, batch", [(8, 8, 1), (16, 8, 1), (16, 8, 3), (32, 8, 2), (32, 4, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_attention_matches_plain_attention(dim, heads, batch, channels_last):
    torch.manual_seed(dim + heads + batch)
    attn = ChannelAttention(dim, heads).eval()
    with torch.no_grad():
        attn.scale.uniform_(0.5, 2.0)
    x = torch.randn(batch, dim, 24, 40)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        plain = attn._forward_plain(x)
        folded = attn._forward_folded(x)
    assert (folded - plain).abs().max().item() <= 1e-5 * max(1.0, plain.abs().max().item())


def test_folded_mlp_matches_plain_mlp():
    torch.manual_seed(3)
    mlp = GatedMlp(16).eval()
    x = torch.randn(2, 16, 20, 28)
    with torch.inference_mode():
        mlp.fast.fold_mlp = False
        plain = mlp(x)
        mlp.fast.fold_mlp = True
        folded = mlp(x)
    assert (folded - plain).abs().max().item() <= 1e-5 * max(1.0, plain.abs().max().item())


def test_fused_layernorm_matches_formula():
    torch.manual_seed(4)
    norm = ChannelLayerNorm(16)
    with torch.no_grad():
        norm.body.weight.uniform_(0.5, 1.5)
        norm.body.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 16, 12, 10) * 3 + 1
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (16,), norm.body.weight, norm.body.bias).permute(0, 3, 1, 2)
    with torch.inference_mode():
        norm.fast.fused_layernorm = False
        plain = norm(x.contiguous(memory_format=torch.channels_last))
        norm.fast.fused_layernorm = True
        fused = norm(x.contiguous(memory_format=torch.channels_last))
    assert (plain - ref).abs().max() <= 1e-5 and (fused - ref).abs().max() <= 1e-5


def test_fold_cache_follows_weight_changes(parity_model):
    model = copy.deepcopy(parity_model)
    ir, vis = _inputs(1, 32, 48)
    first = _run(model, ir, vis)  # fills the caches
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("qkv1.weight", "qkv2.weight", "proj.weight", "project_in.weight", "dwconv.weight")):
                p.mul_(0.9)  # in place: same storage, new version
    changed = _run(model, ir, vis)
    assert (changed - first).abs().max() > 1e-4
    assert (changed - _run(model, ir, vis, enabled=False)).abs().max() <= 1e-5
    # load_state_dict copies into the parameters in place as well
    model.load_state_dict(parity_model.state_dict())
    assert (_run(model, ir, vis) - first).abs().max() <= 1e-6


def test_fold_cache_follows_dtype_changes(parity_model):
    model = copy.deepcopy(parity_model)
    ir, vis = _inputs(1, 32, 32)
    _run(model, ir, vis)
    model.double()
    out = _run(model, ir.double(), vis.double())
    assert out.dtype == torch.float64
    assert (out - _run(model, ir.double(), vis.double(), enabled=False)).abs().max() <= 1e-10


def test_model_built_under_inference_mode(parity_model):
    with torch.inference_mode():
        model = UFuser().eval()
        model.load_state_dict(parity_model.state_dict())
        ir, vis = _inputs(1, 32, 32)
        assert (model(ir, vis) - _run(parity_model, ir, vis)).abs().max() <= 1e-6


def test_autograd_uses_the_plain_path(parity_model):
    model = copy.deepcopy(parity_model).train()
    ir, vis = _inputs(1, 16, 24)
    out = model(ir, vis)
    out.mean().backward()
    attn = model.I_en_2.GlobalFeature.attn
    assert attn.qkv1.weight.grad is not None and attn.qkv1.weight.grad.abs().sum() > 0
    assert model.I_en_1.GlobalFeature.mlp.project_in.weight.grad is not None


def test_set_fast_paths_validation():
    model = UFuser()
    with pytest.raises(ValueError, match="unknown fast paths"):
        model.set_fast_paths(fold_everything=True)
    model.set_fast_paths(False, fold_mlp=True)
    assert model.fast == FastPaths(**{f: f == "fold_mlp" for f in FLAGS})
    # one FastPaths object is shared by every module of the network
    assert model.de_3.GlobalFeature.attn.fast is model.fast
    assert model.prepare_inference() is model


def test_state_dict_unchanged_by_fast_paths(parity_model):
    keys = json.loads(safe_open(str(FIXTURE), framework="pt").metadata()["shapes"])
    model = copy.deepcopy(parity_model)
    _run(model, *_inputs(1, 32, 32))
    model.prepare_inference()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == keys


def test_cuda_graphs_need_cuda():
    fuser = Fuser(UFuser(), device="cpu")
    with pytest.raises(ValueError, match="CUDA"):
        fuser.use_cuda_graphs()
    assert fuser.use_cuda_graphs(False) is fuser


def test_fuser_with_fast_paths_off_matches_on(parity_model):
    fuser = Fuser(copy.deepcopy(parity_model), device="cpu")
    ir, vis = _inputs(2, 40, 56)
    on = fuser.fuse_tensor(ir, vis)
    fuser.model.set_fast_paths(False)
    off = fuser.fuse_tensor(ir, vis)
    assert (on - off).abs().max() <= 1e-5


# ----------------------------------------------------------------------------- bench command
def test_bench_command_without_weights_uses_labelled_random_weights(capsys, monkeypatch):
    from emmafuse import weights
    from emmafuse.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # a build without pretrained weights (the shipped ones are replaced by an empty manifest)
    monkeypatch.setattr(weights, "read_manifest", lambda: {"default": None, "models": {}})
    code = main(["bench", "--sizes", "48x32", "--batch", "2", "--repeats", "1", "--warmup", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "random weights (speed only)" in out
    assert "48x32" in out and "ms/image" in out and "images/s" in out and "float32" in out and "cpu" in out


def test_cli_tile_options_parse():
    from emmafuse.cli import build_parser

    parser = build_parser(["fuse"])
    args = parser.parse_args(["fuse", "a.png", "b.png", "-o", "c.png", "--tile", "auto", "--tile-overlap", "32"])
    assert args.tile == "auto" and args.tile_overlap == 32
    parser = build_parser(["demo"])  # only the command given gets its full parser
    args = parser.parse_args(["demo", "--tile", "256"])
    assert args.tile == 256 and args.tile_overlap is None
    # non-numbers fail at parse time; range rules are checked by tiling.check_tile_options
    # (see tests/cli/test_cli.py::test_bad_tile_options_fail_before_any_pair)
    for bad in (["--tile", "huge"], ["--tile-overlap", "wide"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["demo", *bad])


def test_fuser_compile_traces_the_network_in_one_graph(parity_model):
    """``Fuser.compile`` wires torch.compile in; the eager backend checks tracing cheaply."""
    import torch._dynamo as dynamo

    model = copy.deepcopy(parity_model)
    ir, vis = _inputs(1, 32, 48)
    with torch.inference_mode():
        explanation = dynamo.explain(model)(ir, vis)
    assert explanation.graph_break_count == 0
    fuser = Fuser(model, device="cpu")
    expected = fuser.fuse_tensor(ir, vis)
    assert fuser.compile(backend="eager") is fuser
    assert (fuser.fuse_tensor(ir, vis) - expected).abs().max() <= 1e-6


@pytest.mark.parametrize("shape", [(1, 8, 2, 2), (2, 8, 17, 31), (1, 16, 40, 64), (1, 1, 9, 9)])
def test_reflect_pad1_equals_f_pad(shape: tuple[int, int, int, int]) -> None:
    """The fast reflection pad (buffer + border strips) gives F.pad's values, bit for bit."""
    from emmafuse.models.fast_paths import reflect_pad1

    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    for layout in (torch.channels_last, torch.contiguous_format):
        y = x.contiguous(memory_format=layout)
        with torch.inference_mode():
            assert torch.equal(reflect_pad1(y), torch.nn.functional.pad(y, (1, 1, 1, 1), mode="reflect"))


def test_reflect_conv_keeps_the_state_dict_and_the_values() -> None:
    from emmafuse.models.restormer import ReflectConv2d

    conv = ReflectConv2d(8, 8, 3, padding=1, padding_mode="reflect")
    plain = torch.nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
    plain.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(1, 8, 20, 24).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(conv(x), plain(x), atol=1e-6)
