"""Issue 17, command-line items: convert's destination (3), tile options and bench (5), the same
folder twice (6), progress on a terminal (7), ``models`` (8), message prefixes and sub-command
usage (9), the documentation (10) and the test cache folder (11)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emmafuse.cli import main
from emmafuse.samples import synthetic_pair

ROOT = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (tqdm draws its bars only on one)."""

    def isatty(self) -> bool:
        return True


def _pair(folder: Path, h: int = 40, w: int = 48) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ir, vis = synthetic_pair(h, w)
    Image.fromarray(ir).save(folder / "ir.png")
    Image.fromarray(vis).save(folder / "vis.png")
    return folder / "ir.png", folder / "vis.png"


# ----------------------------------------------------------------------------- item 3: convert
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emmafuse.models import UFuser

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("convert") / "EMMA.pth"
    torch.save(UFuser().state_dict(), path)
    return path


@pytest.mark.parametrize("dst", ["out.pth", "out", "out.safetensors.bak"])
def test_convert_refuses_a_destination_without_the_safetensors_suffix(checkpoint, tmp_path, capsys, monkeypatch, dst):
    import emmafuse.convert

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was read before the destination was checked")

    monkeypatch.setattr(emmafuse.convert, "read_torch_checkpoint", no_work)
    rc = main(["convert", str(checkpoint), str(tmp_path / dst)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and ".safetensors" in err and "DST" in err
    assert not (tmp_path / dst).exists()


def test_convert_library_refuses_it_too(checkpoint, tmp_path):
    from emmafuse.convert import convert_checkpoint
    from emmafuse.outputs import OutputError

    with pytest.raises(OutputError, match=r"must end in \.safetensors"):
        convert_checkpoint(checkpoint, tmp_path / "out.pth")


def test_convert_same_file_error_names_dst(tmp_path, capsys, checkpoint):
    src = tmp_path / "w.safetensors"
    src.write_bytes(checkpoint.read_bytes())
    rc = main(["convert", str(src), str(src)])
    err = capsys.readouterr().err
    assert rc == 2 and "choose another DST" in err and "another -o" not in err  # before: "-o", which convert has not


# ----------------------------------------------------------------------------- item 5: tiles, bench
def test_tile_100_works_with_the_derived_overlap(tmp_path, random_weights, capsys):
    ir, vis = _pair(tmp_path, 160, 200)
    rc = main(["fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--tile", "100", "--weights", str(random_weights)])
    assert rc == 0, capsys.readouterr().err  # before: "tile_overlap=64 is too large for tile=100"


def test_default_overlap_is_a_quarter_of_the_tile():
    from emmafuse.tiling import default_overlap, plan_tiles

    assert [default_overlap(t) for t in (16, 24, 100, 128, 256, 512, 4096)] == [8, 8, 24, 32, 64, 64, 64]
    assert plan_tiles(300, 300, 100).overlap == 24


def test_fuser_accepts_small_tiles_without_an_overlap(fuser):
    ir, vis = synthetic_pair(64, 80)
    assert fuser.fuse(ir, vis, tile=32).shape == vis.shape  # before: ValueError (overlap 64 > 16)


def test_tile_overlap_without_tile_is_refused(tmp_path, random_weights, capsys):
    ir, vis = _pair(tmp_path)
    rc = main(["fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--tile-overlap", "16", "--weights", str(random_weights)])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "emmafuse fuse: error: --tile-overlap needs --tile (a tile side in pixels, or 'auto')"
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    "options,message",
    [(["--tile", "7"], "at least 16"), (["--tile", "64", "--tile-overlap", "40"], "too large"), (["--tile-overlap", "8"], "needs --tile")],
)
def test_bench_takes_the_tile_options_and_prints_nothing_before_failing(capsys, options, message):
    rc = main(["bench", "--random", "--device", "cpu", "--sizes", "32x32", "--repeats", "1", "--warmup", "0", *options])
    captured = capsys.readouterr()
    assert rc == 2 and message in captured.err and captured.out == ""
    assert captured.err.startswith("emmafuse bench: error:")


def test_bench_tile_options_are_the_shared_definitions(capsys):
    from emmafuse.cli import build_parser

    args = build_parser(["bench"]).parse_args(["bench", "--tile", "auto", "--tile-overlap", "32"])
    assert args.tile == "auto" and args.tile_overlap == 32
    rc = main(["bench", "--random", "--device", "cpu", "--sizes", "64x48", "--repeats", "1", "--warmup", "0", "--tile", "32"])
    out = capsys.readouterr().out
    assert rc == 0 and "64x48" in out


def test_bench_note_comes_after_the_checks(capsys, monkeypatch):
    from emmafuse import weights

    monkeypatch.setattr(weights, "read_manifest", lambda: {"default": None, "models": {}})
    rc = main(["bench", "--device", "cpu", "--dtype", "float16", "--sizes", "32x32"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and "float16" in captured.err  # before: the note, then the error


# ----------------------------------------------------------------------------- item 6
def test_the_same_folder_twice_is_refused(tmp_path, random_weights, capsys):
    _pair(tmp_path / "both")
    (tmp_path / "link").symlink_to(tmp_path / "both")
    for other in (tmp_path / "both", tmp_path / "link"):
        rc = main(["fuse", "--ir-dir", str(tmp_path / "both"), "--vis-dir", str(other), "-o", str(tmp_path / "out"), "--weights", str(random_weights)])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "same folder" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- item 7: progress
def test_tiled_fuse_shows_tile_progress_on_a_terminal_only(fuser, monkeypatch):
    ir, vis = synthetic_pair(64, 96)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    fuser.fuse(ir, vis, tile=32, progress=True)
    assert "tiles" in terminal.getvalue()
    piped = io.StringIO()  # not a terminal: nothing
    monkeypatch.setattr(sys, "stderr", piped)
    fuser.fuse(ir, vis, tile=32, progress=True)
    assert piped.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", terminal := _Terminal())
    fuser.fuse(ir, vis, tile=32)  # progress is off by default in the library
    assert terminal.getvalue() == ""


def test_cli_single_tiled_fuse_passes_progress(tmp_path, random_weights, monkeypatch):
    ir, vis = _pair(tmp_path, 64, 96)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--tile", "32", "--weights", str(random_weights)]) == 0
    assert "tiles" in terminal.getvalue()


def test_bench_shows_progress_on_a_terminal_only(monkeypatch, capsys):
    from emmafuse.bench import random_fuser, run_bench

    fuser = random_fuser("cpu")
    lines: list[str] = []
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run_bench(fuser, [(32, 32)], repeats=1, warmup=0, out=lines.append, progress=True)
    assert "bench" in terminal.getvalue() and any("32x32" in line for line in lines)
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    run_bench(fuser, [(32, 32)], repeats=1, warmup=0, out=lines.append, progress=True)
    assert piped.getvalue() == ""


# ----------------------------------------------------------------------------- item 8: models
def test_models_shows_the_source_and_that_nothing_is_on_the_hub(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATUS", "SOURCE"] and "HUB" not in lines[0]
    row = next(line for line in lines if line.startswith("emma-ivf "))
    assert row.split()[2] == "embedded"
    assert "Nothing is published on the Hugging Face Hub yet" in out


def test_models_names_published_models_and_the_cache(monkeypatch, capsys):
    from emmafuse import hub, manifest, weights

    entry = {
        "status": "released",
        "repo_id": "someone/emma-x",
        "filename": "x.safetensors",
        "sha256": "0" * 64,
        "published": True,
        "description": "a published one",
    }
    fake = {"default": None, "models": {"emma-x": entry, "emma-y": dict(entry, repo_id="someone/emma-y")}}
    for module in (weights, manifest):  # list_models reads the manifest where it lives (issue 18: emmafuse.manifest)
        if hasattr(module, "read_manifest"):
            monkeypatch.setattr(module, "read_manifest", lambda: fake)
    monkeypatch.setattr(hub, "cached_file", lambda repo, *a, **k: Path("/cache/x") if repo.endswith("x") else None)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:3]}
    assert rows == {"emma-x": "cache", "emma-y": "hub"}
    assert "Published on the Hugging Face Hub: emma-x (someone/emma-x)" in out and "Nothing is published" not in out


# ----------------------------------------------------------------------------- item 9: messages
@pytest.mark.parametrize(
    "argv,command",
    [
        (["models", "extra"], "models"),
        (["fuse", "a.png", "b.png", "c.png", "-o", "x.png"], "fuse"),
        (["demo", "extra"], "demo"),
        (["bench", "extra"], "bench"),
        (["convert", "a.pth", "b.safetensors", "c"], "convert"),
        (["eval", "extra", "--ir-dir", "a", "--vis-dir", "b"], "eval"),
    ],
)
def test_an_extra_positional_shows_the_commands_usage(capsys, argv, command):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith(f"usage: emmafuse {command} ")  # before: "usage: emmafuse [-h] [--version] COMMAND ..."
    assert f"emmafuse {command}: error: unrecognized arguments:" in err


@pytest.mark.parametrize(
    "argv,command",
    [
        (["convert", "missing.pth"], "convert"),
        (["fuse", "a.png", "-o", "x.png"], "fuse"),
        (["demo", "-o", ""], "demo"),
        (["bench", "--repeats", "0", "--random"], "bench"),
        (["eval", "--ir-dir", "nope", "--vis-dir", "nope2", "--fused", "x"], "eval"),
    ],
)
def test_every_command_prefixes_its_errors_with_its_name(capsys, argv, command):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"emmafuse {command}: error: "), err  # before: "emmafuse: error:" for most


# ----------------------------------------------------------------------------- item 10: docs
def test_docs_no_stale_weights_status_and_usage_covers_tiles_and_the_mri_slot():
    weights_md = (ROOT / "docs" / "weights.md").read_text(encoding="utf-8")
    assert "no trained weights are released yet" not in weights_md
    usage = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    assert "tile=" in usage and "tile_overlap=" in usage and "progress=" in usage
    slot = usage[usage.index("**Which image goes in which slot.**") :].split("\n\n")[0]
    assert "emma-mif" in slot and "`ir`" in slot and "MRI as `vis`" in slot and "soft-tissue detail" in slot
    assert "EMMAFUSE_MAX_PIXELS" in usage
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "never on pixel values" in readme and "never on pixel values" in usage


# ----------------------------------------------------------------------------- item 11
def test_the_suite_leaves_no_cache_folder_behind(tmp_path):
    """Run a tiny pytest session with this conftest and a private temp folder; nothing may remain."""
    test = tmp_path / "suite" / "test_nothing.py"
    test.parent.mkdir()
    test.write_text("def test_nothing():\n    pass\n")
    (test.parent / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT / "src")}
    env.pop("EMMAFUSE_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(test.parent), str(test)],
        capture_output=True,
        text=True,
        env=env,
        cwd=test.parent,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list(temp.glob("emmafuse-test-cache-*"))  # before: one empty folder per run
