"""Output safety of every CLI command (issue 11 items 2-5): outputs are checked before any work.

An output that is one of the inputs, an output that cannot be written and a bad output format
are each one line on stderr with exit code 2, and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from emmafuse.cli import main
from emmafuse.outputs import OutputError, check_output_file, check_output_folder, check_writable, same_file
from emmafuse.samples import synthetic_pair


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with the bytes of files (None for folders): 'nothing written' checks."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture()
def data(tmp_path: Path) -> dict[str, Path]:
    """One pair as files and as folders, a fused folder, a .pth checkpoint and a plain file."""
    ir, vis = synthetic_pair(32, 40, seed=4)
    for sub in ("ir", "vi", "fused"):
        (tmp_path / sub).mkdir()
    Image.fromarray(ir).save(tmp_path / "ir" / "01.png")
    Image.fromarray(vis).save(tmp_path / "vi" / "01.png")
    Image.fromarray(ir).save(tmp_path / "fused" / "01.png")
    from emmafuse.models import UFuser

    torch.manual_seed(0)
    torch.save(UFuser().state_dict(), tmp_path / "emma.pth")
    (tmp_path / "afile.safetensors").write_text("not a folder")
    return {
        "root": tmp_path,
        "ir": tmp_path / "ir" / "01.png",
        "vis": tmp_path / "vi" / "01.png",
        "ir_dir": tmp_path / "ir",
        "vis_dir": tmp_path / "vi",
        "fused": tmp_path / "fused",
        "pth": tmp_path / "emma.pth",
        "file": tmp_path / "afile.safetensors",
    }


def _command(name: str, d: dict[str, Path], out: Path, weights: Path) -> list[str]:
    w = ["--weights", str(weights), "--device", "cpu"]
    ir, vis, ird, visd = (str(d[k]) for k in ("ir", "vis", "ir_dir", "vis_dir"))
    return {
        "fuse": ["fuse", ir, vis, "-o", str(out / "o.png"), *w],
        "fuse-folders": ["fuse", "--ir-dir", ird, "--vis-dir", visd, "-o", str(out / "fused_out"), "-q", *w],
        "demo": ["demo", "-o", str(out / "demo.png"), *w],
        "eval": ["eval", "--fused", str(d["fused"]), "--ir-dir", ird, "--vis-dir", visd, "-q", "-o", str(out / "t.md")],
        "eval-save-fused": ["eval", "--weights", str(weights), "--ir-dir", ird, "--vis-dir", visd, "-q",
                            "--save-fused", str(out / "saved")],
        "convert": ["convert", str(d["pth"]), str(out / "emma.safetensors")],
        "train": ["train", "all", "--ir", ird, "--vis", visd, "--out", str(out / "run"), "--device", "cpu",
                  "--val-pairs", "0", "--crop", "16"],
        "train-export": ["train", "export", "--out", str(d["root"]), "--to", str(out / "w.safetensors")],
    }[name]


COMMANDS = ["fuse", "fuse-folders", "demo", "eval", "eval-save-fused", "convert", "train", "train-export"]


def _unwritable(kind: str, d: dict[str, Path]) -> Path:
    if kind == "parent-is-a-file":
        return d["file"]
    if kind == "proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc")
        return Path("/proc")
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = d["root"] / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


@pytest.mark.parametrize("kind", ["parent-is-a-file", "proc"])
@pytest.mark.parametrize("command", COMMANDS)
def test_unwritable_output_is_one_line_exit_2_nothing_written(data, random_weights, capsys, command, kind):
    _check_unwritable(data, random_weights, capsys, command, kind)


@pytest.mark.parametrize("command", ["fuse", "fuse-folders"])
def test_read_only_output_folder(data, random_weights, capsys, command):
    _check_unwritable(data, random_weights, capsys, command, "read-only")


def _check_unwritable(data, random_weights, capsys, command: str, kind: str) -> None:
    out = _unwritable(kind, data)
    before = _tree(data["root"])
    code = main(_command(command, data, out, random_weights))
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot write" in err
    assert _tree(data["root"]) == before


def test_output_replacing_an_input_file_is_refused(data, random_weights, capsys):
    w = ["--weights", str(random_weights)]
    original = data["vis"].read_bytes()
    os.link(data["vis"], data["root"] / "hardlink.png")  # same inode, other name
    (data["root"] / "symlink.png").symlink_to(data["vis"])
    before = _tree(data["root"])
    for target in (data["vis"], data["root"] / "hardlink.png", data["root"] / "symlink.png", data["vis_dir"] / ".." / "vi" / "01.png"):
        code = main(["fuse", str(data["ir"]), str(data["vis"]), "-o", str(target), *w])
        err = capsys.readouterr().err
        assert code == 2 and "is the input file" in err and len(err.splitlines()) == 1, (target, err)
    assert main(["convert", str(data["pth"]), str(data["pth"])]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert _tree(data["root"]) == before and data["vis"].read_bytes() == original


def test_output_folder_equal_to_an_input_folder_is_refused(data, random_weights, capsys):
    (data["root"] / "vi_link").symlink_to(data["vis_dir"])
    before = _tree(data["root"])
    ird, visd = str(data["ir_dir"]), str(data["vis_dir"])
    for out in (visd, str(data["root"] / "vi_link"), ird + "/"):
        code = main(["fuse", "--ir-dir", ird, "--vis-dir", visd, "-o", out, "--weights", str(random_weights), "-q"])
        err = capsys.readouterr().err
        assert code == 2 and "is the input folder" in err and len(err.splitlines()) == 1, (out, err)
    # eval: the table must not replace a fused image, --save-fused must not be a source folder
    code = main(["eval", "--fused", str(data["fused"]), "--ir-dir", ird, "--vis-dir", visd, "-o", str(data["fused"] / "01.png")])
    assert code == 2 and "is the input file" in capsys.readouterr().err
    code = main(["eval", "--weights", str(random_weights), "--ir-dir", ird, "--vis-dir", visd, "--save-fused", ird])
    assert code == 2 and "is the input folder" in capsys.readouterr().err
    assert _tree(data["root"]) == before


def test_existing_outputs_overwrite_by_default_and_no_overwrite_keeps_them(data, random_weights, capsys):
    w = ["--weights", str(random_weights), "--device", "cpu"]
    out = data["root"] / "o.png"
    out.write_bytes(b"old")
    assert main(["fuse", str(data["ir"]), str(data["vis"]), "-o", str(out), *w]) == 0
    assert Image.open(out).size == (40, 32)  # replaced (the documented default, --overwrite)
    out.write_bytes(b"old")
    assert main(["fuse", str(data["ir"]), str(data["vis"]), "-o", str(out), "--no-overwrite", *w]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"old"
    # folder mode: existing outputs are kept, missing ones are fused
    ir, vis = synthetic_pair(32, 40, seed=5)
    Image.fromarray(ir).save(data["ir_dir"] / "02.png")
    Image.fromarray(vis).save(data["vis_dir"] / "02.png")
    out_dir = data["root"] / "out"
    out_dir.mkdir()
    (out_dir / "01.png").write_bytes(b"old")
    argv = ["fuse", "--ir-dir", str(data["ir_dir"]), "--vis-dir", str(data["vis_dir"]), "-o", str(out_dir), "-q", *w]
    assert main([*argv, "--no-overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "fused 1 of 1 pairs" in printed and "kept 1 existing output" in printed
    assert (out_dir / "01.png").read_bytes() == b"old" and Image.open(out_dir / "02.png").size == (40, 32)
    nothing_left = [*argv[:-4], "--weights", str(data["root"] / "missing.safetensors"), "--no-overwrite"]
    assert main(nothing_left) == 0 and "kept 2 existing output" in capsys.readouterr().out  # weights not needed
    assert main(argv) == 0 and (out_dir / "01.png").read_bytes() != b"old"


def test_output_format_is_checked_before_loading_or_fusing(data, capsys):
    # weights that do not exist: the format error must come first (nothing was loaded or fused)
    w = ["--weights", str(data["root"] / "missing.safetensors")]
    before = _tree(data["root"])
    assert main(["fuse", str(data["ir"]), str(data["vis"]), "-o", str(data["root"] / "m.xyz"), *w]) == 2
    assert "unknown image file suffix '.xyz'" in capsys.readouterr().err
    folders = ["fuse", "--ir-dir", str(data["ir_dir"]), "--vis-dir", str(data["vis_dir"]), "-o", str(data["root"] / "o")]
    assert main([*folders, "--ext", ".xyz", *w]) == 2
    assert "unknown output suffix '.xyz'" in capsys.readouterr().err
    assert main(["demo", "-o", str(data["root"] / "demo.txt"), *w]) == 2
    assert "suffix '.txt'" in capsys.readouterr().err
    assert _tree(data["root"]) == before


@pytest.mark.parametrize("ext", ["jpg", ".jpg", "JPG"])
def test_ext_with_or_without_dot(data, random_weights, ext):
    out = data["root"] / "o"
    argv = ["fuse", "--ir-dir", str(data["ir_dir"]), "--vis-dir", str(data["vis_dir"]), "-o", str(out), "-q"]
    assert main([*argv, "--ext", ext, "--weights", str(random_weights)]) == 0
    assert [p.name for p in out.iterdir()] == ["01.jpg"]  # not "01jpg"


def test_single_file_output_into_a_folder(data, random_weights, capsys):
    w = ["--weights", str(random_weights)]
    existing = data["root"] / "existing_dir"
    existing.mkdir()
    assert main(["fuse", str(data["ir"]), str(data["vis"]), "-o", str(existing), *w]) == 0
    assert [p.name for p in existing.iterdir()] == ["01.png"]  # <IR stem>.png
    new = data["root"] / "new_dir"
    assert main(["fuse", str(data["ir"]), str(data["vis"]), "-o", f"{new}{os.sep}", *w]) == 0
    assert [p.name for p in new.iterdir()] == ["01.png"]
    assert main(["demo", "-o", str(existing), *w]) == 0
    assert (existing / "emmafuse_demo.png").is_file()


def test_folder_mode_refuses_an_image_file_name(data, random_weights, capsys):
    before = _tree(data["root"])
    out = data["root"] / "d" / "o.png"
    code = main(["fuse", "--ir-dir", str(data["ir_dir"]), "--vis-dir", str(data["vis_dir"]), "-o", str(out), "--weights", str(random_weights)])
    err = capsys.readouterr().err
    assert code == 2 and "looks like a file name" in err and len(err.splitlines()) == 1
    assert _tree(data["root"]) == before  # no folder named o.png


def test_fuse_folder_mode_refuses_duplicate_stems(data, random_weights, capsys):
    """Issue 11 item 5: dup.jpg + dup.png used to be picked silently."""
    Image.open(data["ir"]).save(data["ir_dir"] / "01.jpg")
    before = _tree(data["root"])
    out = data["root"] / "out"
    code = main(["fuse", "--ir-dir", str(data["ir_dir"]), "--vis-dir", str(data["vis_dir"]), "-o", str(out), "--weights", str(random_weights)])
    err = capsys.readouterr().err
    assert code == 2 and "01.jpg and 01.png" in err and "rename or remove" in err
    assert _tree(data["root"]) == before


# ------------------------------------------------------------------------- library helpers
def test_helpers_directly(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert same_file(f, tmp_path / "." / "f.txt") and not same_file(f, tmp_path / "g.txt")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable(f / "sub" / "o.png")
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_folder(f)
    check_output_folder(tmp_path / "a" / "b")  # missing parents are fine and are not created
    check_output_file(tmp_path / "a" / "o.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # the probes left nothing
