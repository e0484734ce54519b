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

SRC = Path(__file__).resolve().parents[2] / "src"


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
    # issue 18: the library names the parameter, the command line adds its flag
    assert captured.err.strip() == "emmafuse bench: error: argument --repeats: repeats must be at least 1 (timed runs per size), got 0"
    assert "ms/image" not in captured.out
    assert main(["bench", "--warmup", "-1", "--random", "--device", "cpu"]) == 2
    assert "argument --warmup: warmup must be 0 or more" in capsys.readouterr().err


# ------------------------------------------------------------------------- issue 18, item 2: one error model
def test_a_library_error_is_one_line_with_the_flag_of_its_parameter(capsys, monkeypatch):
    from emmafuse.cli import fuse as fuse_cli
    from emmafuse.errors import InputError

    def refuse(args):
        raise InputError("tile_overlap must be at most half the tile side", parameter="tile_overlap")

    monkeypatch.setattr(fuse_cli, "_cmd_fuse", refuse)
    assert main(["fuse", "a.png", "b.png", "-o", "o.png"]) == 2
    err = capsys.readouterr().err
    assert err == "emmafuse fuse: error: argument --tile-overlap: tile_overlap must be at most half the tile side\n"


def test_a_library_error_without_a_known_parameter_is_one_line(capsys, monkeypatch):
    from emmafuse.cli import fuse as fuse_cli
    from emmafuse.errors import FusionError

    def fail(args):
        raise FusionError("out of memory at the smallest tile")

    monkeypatch.setattr(fuse_cli, "_cmd_fuse", fail)
    assert main(["fuse", "a.png", "b.png", "-o", "o.png"]) == 2
    assert capsys.readouterr().err == "emmafuse fuse: error: out of memory at the smallest tile\n"


def test_an_unexpected_value_error_is_a_bug_and_keeps_its_traceback(monkeypatch):
    # before issue 18 every ValueError became a one-line "usage error" with exit code 2
    def bug(*args, **kwargs):
        raise ValueError("expected input[1, 2, 3] to have 1 channels")  # as torch says it, deep inside

    monkeypatch.setattr("emmafuse.bench.run_bench", bug)
    with pytest.raises(ValueError, match="to have 1 channels"):
        main(["bench", "--random", "--device", "cpu", "--sizes", "32x32", "--repeats", "1", "--warmup", "0"])


def test_an_os_error_without_a_file_is_not_swallowed(monkeypatch):
    from emmafuse.cli import fuse as fuse_cli

    def bug(args):
        raise OSError("shared memory exhausted")  # no file name: not about a file the user named

    monkeypatch.setattr(fuse_cli, "_cmd_fuse", bug)
    with pytest.raises(OSError, match="shared memory"):
        main(["fuse", "a.png", "b.png", "-o", "o.png"])


def test_an_os_error_about_a_named_file_is_one_line(capsys, monkeypatch):
    import errno

    from emmafuse.cli import fuse as fuse_cli

    def fail(args):
        raise PermissionError(errno.EACCES, "Permission denied", "secret.png")

    monkeypatch.setattr(fuse_cli, "_cmd_fuse", fail)
    assert main(["fuse", "a.png", "b.png", "-o", "o.png"]) == 2
    assert capsys.readouterr().err == "emmafuse fuse: error: secret.png: Permission denied\n"


def test_every_command_loads_weights_one_way_with_one_wording(capsys, tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    ird, visd = tmp_path / "ir", tmp_path / "vi"
    for folder, image in zip((ird, visd), synthetic_pair(32, 32)):
        folder.mkdir()
        Image.fromarray(image).save(folder / "a.png")
    runs = {
        "demo": ["demo", "-o", str(tmp_path / "d.png"), "--weights", missing],
        "bench": ["bench", "--weights", missing, "--sizes", "32x32"],
        "eval": ["eval", "--weights", missing, "--ir-dir", str(ird), "--vis-dir", str(visd)],
    }
    for command, argv in runs.items():
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(f"emmafuse {command}: error: cannot load weights {missing}: "), err


def test_bench_declares_the_shared_runtime_options():
    from emmafuse.cli import build_parser

    args = build_parser(["bench"]).parse_args(["bench", "--weights", "w", "--device", "cpu", "--dtype", "bfloat16"])
    assert (args.weights, args.device, args.dtype) == ("w", "cpu", "bfloat16")
    assert not hasattr(args, "output_range")  # bench times the network: no output policy


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


# ------------------------------------------------------------------------- issue 18, item 6: folder fusion in the library
def test_fuse_folder_returns_a_report(tmp_path, fuser):
    from emmafuse.folder_fusion import fuse_folder

    ird, visd, out = tmp_path / "ir", tmp_path / "vi", tmp_path / "out"
    ird.mkdir(), visd.mkdir()
    ir, vis = synthetic_pair(40, 48)
    Image.fromarray(ir).save(ird / "a.png")
    Image.fromarray(vis).save(visd / "a.png")
    Image.fromarray(ir).save(ird / "b.png")
    Image.fromarray(synthetic_pair(32, 32)[1]).save(visd / "b.png")  # another size: this pair fails
    Image.fromarray(ir).save(ird / "c.png")  # no partner
    report = fuse_folder(fuser, ird, visd, out, ext="jpg")
    assert report.fused == ["a"] and list(report.failures) == ["b"] and report.unpaired == ["c"]
    assert "same height and width" in report.failures["b"] and (out / "a.jpg").is_file()
    again = fuse_folder(fuser, ird, visd, out, ext="jpg", overwrite=False)
    assert again.kept == ["a"] and again.fused == [] and list(again.failures) == ["b"]


def test_fuse_folder_checks_before_any_work(tmp_path, fuser):
    from emmafuse.errors import InputError
    from emmafuse.folder_fusion import fuse_folder

    ird = tmp_path / "ir"
    ird.mkdir()
    Image.fromarray(synthetic_pair(32, 32)[0]).save(ird / "a.png")
    with pytest.raises(InputError, match="same folder") as info:
        fuse_folder(fuser, ird, ird, tmp_path / "out")
    assert info.value.parameter == "vis_dir" and not (tmp_path / "out").exists()
    with pytest.raises(InputError) as info:
        fuse_folder(fuser, ird, tmp_path, tmp_path / "out", ext=".xyz")
    assert info.value.parameter == "ext"


def test_train_errors_name_their_flag_through_the_shared_mechanism():
    """``emmafuse train`` gives run_command its own flag lookup (config keys); no second formatter."""
    from emmafuse.cli._common import error_line
    from emmafuse.cli.train import _flag_of
    from emmafuse.train.config import ConfigError

    assert error_line(ConfigError("bad", parameter="data.ir_dir"), "train", _flag_of) == (
        "emmafuse train: error: argument --ir: bad"
    )
    assert error_line(ConfigError("bad", parameter="fuser.anchor"), "train", _flag_of) == (
        "emmafuse train: error: argument --set fuser.anchor=...: bad"
    )
    assert error_line(ConfigError("bad", parameter="tile"), "train", _flag_of).endswith("argument --tile: bad")
