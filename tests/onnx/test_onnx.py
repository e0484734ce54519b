"""ONNX export: the file's graph matches the PyTorch forward, its metadata names the weights,
and the documented pre/post-processing (examples/onnx_fuse.py) reproduces ``Fuser.fuse``.

Skipped when the optional extra (onnx, onnxruntime) is not installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from emmafuse.errors import InputError  # noqa: E402
from emmafuse.loading import load  # noqa: E402
from emmafuse.onnx_export import export_onnx, verify_onnx  # noqa: E402
from emmafuse.outputs import OutputError  # noqa: E402
from emmafuse.weights import locate_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED_TEST = REPO.parent / "shared" / "data" / "test"


def _example() -> object:
    """examples/onnx_fuse.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("onnx_fuse_example", REPO / "examples" / "onnx_fuse.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tmp_path_factory.mktemp("onnx") / "emma-ivf.onnx").path


@pytest.fixture(scope="module")
def session(exported: Path) -> object:
    return ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def fuser():  # type: ignore[no-untyped-def]
    return load(device="cpu")


def test_metadata_names_the_weights(exported: Path) -> None:
    import onnx

    proto = onnx.load(str(exported))
    meta = {p.key: p.value for p in proto.metadata_props}
    default = locate_weights(None)
    assert meta["model.name"] == default.name == "emma-ivf"
    assert meta["weights.sha256"] == default.sha256
    assert meta["model.version"].startswith("cpu-ivf-v2")
    assert (meta["input.multiple"], meta["input.min_side"], meta["precision"]) == ("8", "16", "float32")
    assert "YCbCr" in proto.doc_string and proto.producer_name == "emmafuse"
    onnx.checker.check_model(proto)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert dims == [["batch", 1, "height", "width"]] * 2


@pytest.mark.parametrize("shape", [(1, 1, 96, 128), (3, 1, 136, 200)])
def test_graph_matches_torch_forward(session: object, fuser, shape: tuple[int, ...]) -> None:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(sum(shape))
    ir, vis = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    with torch.inference_mode():
        ref = fuser.model(ir, vis)
    out = session.run(None, {"ir": ir.numpy(), "vis": vis.numpy()})[0]  # type: ignore[attr-defined]
    assert out.shape == shape
    assert np.abs(out - ref.numpy()).max() < 1e-4


def test_example_reproduces_fuse_on_synthetic_colour_pair(session: object, fuser) -> None:  # type: ignore[no-untyped-def]
    from emmafuse.samples import synthetic_pair

    ir, vis = synthetic_pair(133, 201, seed=3)  # odd sides: padding and cropping matter
    expected = fuser.fuse(ir.astype(np.float32) / 255, vis.astype(np.float32) / 255)
    got = _example().fuse(session, ir, vis)  # type: ignore[attr-defined]
    assert got.shape == expected.shape == (133, 201, 3)
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.skipif(not SHARED_TEST.is_dir(), reason="needs ../shared/data/test")
@pytest.mark.parametrize("pair", [("TNO", "01.png"), ("RoadScene", "FLIR_00211.jpg")])
def test_example_reproduces_fuse_on_real_pairs(session: object, fuser, pair: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    folder, name = pair
    ir = np.asarray(Image.open(SHARED_TEST / folder / "ir" / name))
    vis = np.asarray(Image.open(SHARED_TEST / folder / "vi" / name))
    expected = fuser.fuse(ir.astype(np.float32) / 255, vis.astype(np.float32) / 255)
    got = _example().fuse(session, ir, vis)  # type: ignore[attr-defined]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4


def test_fp16_file_runs(tmp_path: Path) -> None:
    result = export_onnx(tmp_path / "half.onnx", fp16=True)
    assert result.metadata["precision"] == "float16"
    diff = verify_onnx(result.path)
    assert diff is not None and diff < 5e-3  # float16 arithmetic: ~1 grey level at most


def test_refusals_leave_nothing_behind(tmp_path: Path, exported: Path) -> None:
    with pytest.raises(InputError, match="opset"):
        export_onnx(tmp_path / "a.onnx", opset=9)
    with pytest.raises(InputError, match=r"\.onnx"):
        export_onnx(tmp_path / "a.onnx.tmp")
    existing = tmp_path / "keep.onnx"
    existing.write_bytes(b"mine")
    with pytest.raises(OutputError):
        export_onnx(existing, overwrite=False)
    assert existing.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]


def test_onnxruntime_backend_fuses_like_torch(fuser) -> None:  # type: ignore[no-untyped-def]
    from emmafuse.samples import synthetic_pair

    backend = load(device="cpu", backend="onnxruntime")
    assert backend.backend == "onnxruntime" and "onnxruntime" in repr(backend)
    ir, vis = synthetic_pair(120, 170, seed=5)
    a, b = ir.astype(np.float32) / 255, vis.astype(np.float32) / 255
    assert np.abs(backend.fuse(a, b) - fuser.fuse(a, b)).max() < 1e-4
    batch = backend.fuse([a, a], [b, b], batch_size=2)
    assert np.abs(batch[1] - fuser.fuse(a, b)).max() < 1e-4
    assert backend.use_onnxruntime(False).backend == "torch"


def test_onnxruntime_session_follows_the_weights() -> None:
    import torch

    from emmafuse.samples import synthetic_pair

    backend = load(device="cpu", backend="onnxruntime")
    ir, vis = synthetic_pair(64, 64, seed=1)
    before = backend.fuse(ir, vis)
    with torch.no_grad():
        for p in backend.model.parameters():
            p.mul_(0.5)  # in place: the session must be rebuilt
    after = backend.fuse(ir, vis)
    torch_after = load(device="cpu")
    torch_after.model.load_state_dict(backend.model.state_dict())
    assert np.abs(after.astype(int) - before.astype(int)).max() > 0
    assert np.abs(after.astype(int) - torch_after.fuse(ir, vis).astype(int)).max() <= 1


def test_onnxruntime_backend_refusals() -> None:
    with pytest.raises(InputError, match="backend"):
        load(device="cpu", backend="tensorrt")
    backend = load(device="cpu", backend="onnxruntime")
    with pytest.raises(InputError, match="float32"):
        backend.to(dtype="bfloat16")
    with pytest.raises(InputError, match="threads"):
        backend.use_onnxruntime(threads=0)


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str) -> None:
    import sys

    from emmafuse.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'emmafuse\[onnx\]'") as info:
        if missing == "onnx":
            export_onnx(tmp_path / "a.onnx")
        else:
            load(device="cpu", backend="onnxruntime")
    assert info.value.extra == "onnx"
    assert list(tmp_path.iterdir()) == []
