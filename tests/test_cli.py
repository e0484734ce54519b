"""The emmafuse command line, end to end on temporary files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emmafuse.cli import main
from emmafuse.samples import synthetic_pair

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture()
def pair_files(tmp_path):
    ir, vis = synthetic_pair(48, 64)
    Image.fromarray(ir).save(tmp_path / "ir.png")
    Image.fromarray(vis).save(tmp_path / "vis.jpg", quality=95)
    return tmp_path / "ir.png", tmp_path / "vis.jpg"


def test_fuse_files(pair_files, random_weights, tmp_path):
    out = tmp_path / "out" / "fused.png"
    assert main(["fuse", str(pair_files[0]), str(pair_files[1]), "-o", str(out), "--weights", str(random_weights)]) == 0
    img = Image.open(out)
    assert img.size == (64, 48) and img.mode == "RGB"
    assert not list(out.parent.glob("*.part"))


def test_fuse_16bit_gray_png(tmp_path, random_weights):
    ir = (np.random.default_rng(0).random((40, 40)) * 65535).astype(np.uint16)
    Image.fromarray(ir).save(tmp_path / "a.png")
    Image.fromarray(ir[::-1].copy()).save(tmp_path / "b.png")
    out = tmp_path / "o.png"
    assert main(["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out), "--weights", str(random_weights)]) == 0
    assert np.asarray(Image.open(out)).dtype == np.uint16


def test_fuse_folders_skips_and_reports(tmp_path, random_weights, capsys):
    ird, visd, outd = tmp_path / "ir", tmp_path / "vi", tmp_path / "out"
    ird.mkdir(), visd.mkdir()
    for i in range(3):
        ir, vis = synthetic_pair(40, 48, seed=i)
        Image.fromarray(ir).save(ird / f"{i:02d}.png")
        Image.fromarray(vis).save(visd / f"{i:02d}.png")
    (ird / "03.png").write_bytes(b"not an image")
    (visd / "03.png").write_bytes(b"not an image either")
    Image.fromarray(ir).save(ird / "lonely.png")
    rc = main(["fuse", "--ir-dir", str(ird), "--vis-dir", str(visd), "-o", str(outd), "--weights", str(random_weights), "-q"])
    captured = capsys.readouterr()
    assert rc == 1
    assert sorted(p.name for p in outd.iterdir()) == ["00.png", "01.png", "02.png"]
    assert "fused 3 of 4 pairs" in captured.out
    assert "skipped 03" in captured.err and "lonely" in captured.err


def test_missing_weights_and_bad_args_exit_2(pair_files, tmp_path, capsys, monkeypatch):
    from emmafuse import weights

    monkeypatch.setattr(weights, "read_manifest", lambda: {"default": None, "models": {}})
    assert main(["demo", "-o", str(tmp_path / "d.png")]) == 2
    assert "no pretrained weights" in capsys.readouterr().err
    assert not (tmp_path / "d.png").exists()
    assert main(["fuse", str(pair_files[0]), "-o", str(tmp_path / "x.png"), "--weights", "w.safetensors"]) == 2
    assert "give IR and VIS files" in capsys.readouterr().err


def test_mismatched_pair_is_a_one_line_error(tmp_path, random_weights, capsys):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "b.png")
    rc = main(["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "o.png"), "--weights", str(random_weights)])
    err = capsys.readouterr().err
    assert rc == 2 and "same height and width" in err and "Traceback" not in err


def test_demo_writes_side_by_side_panel(tmp_path, random_weights):
    out = tmp_path / "demo.png"
    assert main(["demo", "-o", str(out), "--weights", str(random_weights)]) == 0
    panel = Image.open(out)
    ir, _ = synthetic_pair()
    assert panel.size == (3 * ir.shape[1] + 8, ir.shape[0])


def test_python_dash_m_is_the_same_cli(random_weights, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "emmafuse", "demo", "-o", str(tmp_path / "d.png"), "--weights", str(random_weights)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d.png").exists()


def test_inference_never_imports_training_code(random_weights):
    code = (
        "import sys, emmafuse, emmafuse.cli; "
        f"emmafuse.load({str(random_weights)!r}); emmafuse.cli.build_parser(['fuse']); "
        "bad=[m for m in sys.modules if m.startswith('emmafuse.train')]; assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_models_lists_the_manifest(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "emma-ivf" in out


@pytest.mark.parametrize(
    "options,message",
    [
        (["--tile", "8"], "at least 16"),
        (["--tile", "64", "--tile-overlap", "-1"], "non-negative"),
        (["--tile", "64", "--tile-overlap", "40"], "too large"),
        (["--tile-overlap", "16"], "needs --tile"),  # issue 17: refused without --tile
    ],
)
def test_bad_tile_options_fail_before_any_pair(tmp_path, random_weights, capsys, options, message):
    ird, visd = tmp_path / "ir", tmp_path / "vi"
    ird.mkdir(), visd.mkdir()
    ir, vis = synthetic_pair(40, 48)
    Image.fromarray(ir).save(ird / "a.png")
    Image.fromarray(vis).save(visd / "a.png")
    rc = main(["fuse", "--ir-dir", str(ird), "--vis-dir", str(visd), "-o", str(tmp_path / "o"), "--weights", str(random_weights), *options])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- issue 11, item 8
def test_version(capsys):
    import emmafuse

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"emmafuse {emmafuse.__version__}"


def test_models_has_a_header_row(capsys):
    assert main(["models"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split()[:3] == ["NAME", "STATUS", "SOURCE"] and "DESCRIPTION" in header  # SOURCE: issue 17


def test_closed_pipe_is_quiet():
    """`emmafuse train defaults | head` ended in a BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emmafuse", "train", "defaults"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    proc.stdout.close()  # the reader is gone before the first byte is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_bench_refuses_zero_repeats(capsys):
    assert main(["bench", "--repeats", "0", "--random", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "--repeats must be at least 1" in captured.err and "ms/image" not in captured.out
    assert main(["bench", "--warmup", "-1", "--random", "--device", "cpu"]) == 2
    assert "--warmup must be 0 or more" in capsys.readouterr().err


def test_16bit_file_holding_8bit_data_warns_in_one_line(tmp_path, random_weights, capsys):
    low = np.random.default_rng(1).integers(0, 256, (32, 32)).astype(np.uint16)
    Image.fromarray(low).save(tmp_path / "a.png")
    Image.fromarray(low[::-1].copy()).save(tmp_path / "b.png")
    rc = main(["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "o.png"), "--weights", str(random_weights)])
    err = capsys.readouterr().err
    assert rc == 0
    assert err.startswith("emmafuse: warning: ir: 16-bit image whose maximum is") and len(err.splitlines()) == 2  # ir and vis


def test_weights_folder_or_empty_is_named(tmp_path, pair_files, capsys):
    for weights, message in ((str(tmp_path), "is a folder, not a .safetensors file"), ("", "weights path is empty")):
        assert main(["fuse", str(pair_files[0]), str(pair_files[1]), "-o", str(tmp_path / "o.png"), "--weights", weights]) == 2
        assert message in capsys.readouterr().err
