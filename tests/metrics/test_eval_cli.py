"""``emmafuse eval`` on small seeded synthetic folders: pairing, skipping, output formats,
ranking, the --weights mode and the gray conversion."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emmafuse.cli.eval import main
from emmafuse.color import rgb_to_luma
from emmafuse.evaluation import rank_methods
from emmafuse.evaluation import read_gray_reference as read_gray
from emmafuse.metrics import METRICS, evaluate

SIZE = (48, 56)  # >= 41 so that VIF is defined


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ir/ (gray .png), vi/ (RGB .bmp), methods mean/ and noisy/, with defects."""
    root = tmp_path_factory.mktemp("evalset")
    rng = np.random.default_rng(2024)
    y, x = np.mgrid[: SIZE[0], : SIZE[1]]
    for i in range(4):
        stem = f"{i + 1:02d}"
        ir = np.clip(100 + 80 * np.sin((x + 5 * i) / 6.0) + rng.normal(0, 8, SIZE), 0, 255).astype(np.uint8)
        vi_gray = np.clip(90 + 70 * np.cos((y + 3 * i) / 5.0) + rng.normal(0, 8, SIZE), 0, 255)
        vi = np.clip(np.stack([vi_gray * 1.1, vi_gray, vi_gray * 0.8], -1), 0, 255).astype(np.uint8)
        _save(root / "ir" / f"{stem}.png", ir)
        _save(root / "vi" / f"{stem}.bmp", vi)  # other extension and colour: pair by stem, cv2 gray
        vi_g = rgb_to_luma(vi, like_cv2=True)
        mean = np.round((ir + vi_g) / 2).astype(np.uint8)
        noisy = np.clip(mean + rng.normal(0, 25, SIZE), 0, 255).astype(np.uint8)
        _save(root / "mean" / f"{stem}.png", mean)
        _save(root / "dim" / f"{stem}.png", np.round(mean * 0.3).astype(np.uint8))  # low contrast
        if i != 2:  # method "noisy" lacks pair 03
            _save(root / "noisy" / f"{stem}.png", noisy)
    _save(root / "ir" / "99.png", np.zeros(SIZE, np.uint8))  # no visible partner
    (root / "mean" / "04.png").write_bytes(b"not a png")  # unreadable fused image
    return {name: root / name for name in ("ir", "vi", "mean", "noisy", "dim")} | {"root": root}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["eval", *argv, "-q"])
    out, err = capsys.readouterr()
    return code, out, err


def _expected_means(ds: dict[str, Path], method: str, stems: list[str], preset: str = "reference") -> dict[str, float]:
    rows = [
        evaluate(
            read_gray(ds[method] / f"{s}.png"),
            read_gray(ds["ir"] / f"{s}.png"),
            read_gray(ds["vi"] / f"{s}.bmp"),
            preset=preset,  # type: ignore[arg-type]
        )
        for s in stems
    ]
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def test_compare_json(dataset, capsys):
    code, out, err = _run(
        capsys,
        "--compare",
        str(dataset["mean"]),
        str(dataset["noisy"]),
        "--ir-dir",
        str(dataset["ir"]),
        "--vis-dir",
        str(dataset["vi"]),
        "--json",
    )
    assert code == 1  # pairs were skipped (issue 11 item 7)
    doc = json.loads(out)
    assert doc["set"] == dataset["root"].name and doc["preset"] == "reference" and doc["pairs"] == 4
    assert doc["metrics"] == list(METRICS)
    assert "cv2" in doc["protocol"]["gray"] and "nats" in doc["protocol"]["preset"]
    assert doc["unpaired"] == ["99"]
    rows = {r["method"]: r for r in doc["methods"]}
    assert rows["mean"]["n"] == 3 and rows["mean"]["skipped"] == 1  # 04 unreadable
    assert rows["noisy"]["n"] == 3 and rows["noisy"]["skipped"] == 1  # 03 missing
    assert sorted(r["rank"] for r in doc["methods"]) == [1, 2]
    reasons = {(s["method"], s["pair"]): s["reason"] for s in doc["skipped"]}
    assert "no fused image" in reasons[("noisy", "03")]
    assert "not a readable image" in reasons[("mean", "04")] or "04.png" in reasons[("mean", "04")]
    expected = _expected_means(dataset, "mean", ["01", "02", "03"])
    for m in METRICS:
        assert rows["mean"]["means"][m] == pytest.approx(expected[m], rel=1e-12), m
    assert "skipped" in err  # the counts are reported on stderr with --json
    assert "emmafuse eval: mean: skipped pair 04: " in err and "emmafuse eval: noisy: skipped pair 03: no fused image" in err


def test_markdown_default_and_ranking(dataset, capsys):
    code, out, _ = _run(
        capsys,
        "--compare",
        str(dataset["dim"]),
        str(dataset["mean"]),
        "--ir-dir",
        str(dataset["ir"]),
        "--vis-dir",
        str(dataset["vi"]),
        "--set-name",
        "Synth",
    )
    assert code == 1  # mean/04 is unreadable
    lines = out.splitlines()
    assert lines[0].startswith("### Synth: 4 pairs, preset 'reference'")
    header = next(line for line in lines if line.startswith("| Rank"))
    assert header.split("|")[2].strip() == "Method" and "SSIM ↑" in header and "MSE ↓" in header
    table = [line for line in lines if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert len(table) == 2
    # averaging the sources beats a low-contrast copy of the same average -> rank 1
    assert table[0].split("|")[2].strip() == "mean"
    assert table[1].split("|")[2].strip() == "dim"
    assert "**" in table[0]  # best values in bold
    assert "Protocol:" in out and "- gray:" in out
    assert "1 source file(s) without a partner: 99" in out


def test_csv_and_metric_subset_and_fixed_preset(dataset, capsys):
    code, out, _ = _run(
        capsys,
        "--fused",
        str(dataset["noisy"]),
        "--ir-dir",
        str(dataset["ir"]),
        "--vis-dir",
        str(dataset["vi"]),
        "--csv",
        "--metrics",
        "ssim,MI",
        "--preset",
        "fixed",
    )
    assert code == 1  # noisy/03 is missing
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert list(rows[0]) == ["set", "preset", "rank", "method", "mean_rank", "n", "skipped", "MI", "SSIM"]
    assert rows[0]["preset"] == "fixed" and rows[0]["method"] == "noisy" and rows[0]["n"] == "3"
    expected = _expected_means(dataset, "noisy", ["01", "02", "04"], preset="fixed")
    assert float(rows[0]["SSIM"]) == pytest.approx(expected["SSIM"], rel=1e-12)
    assert float(rows[0]["MI"]) == pytest.approx(expected["MI"], rel=1e-12)
    assert 0 < float(rows[0]["SSIM"]) < 1


def test_output_file_and_jobs(dataset, capsys, tmp_path):
    args = [
        "--compare",
        str(dataset["mean"]),
        str(dataset["noisy"]),
        "--ir-dir",
        str(dataset["ir"]),
        "--vis-dir",
        str(dataset["vi"]),
        "--json",
        "--metrics",
        "EN,SD,VIF",
    ]
    code, out, _ = _run(capsys, *args)
    assert code == 1
    serial = json.loads(out)
    target = tmp_path / "out" / "table.json"
    code, out, _ = _run(capsys, *args, "--jobs", "2", "-o", str(target))
    assert code == 1 and out == ""
    parallel = json.loads(target.read_text())
    assert parallel["methods"] == serial["methods"]


def test_usage_errors(dataset, capsys, tmp_path):
    ir, vi = str(dataset["ir"]), str(dataset["vi"])
    code, _, err = _run(capsys, "--ir-dir", ir, "--vis-dir", vi)
    assert code == 2 and "nothing to score" in err
    code, _, err = _run(capsys, "--fused", str(tmp_path / "nope"), "--ir-dir", ir, "--vis-dir", vi)
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, "--fused", str(dataset["ir"] / "01.png"), "--ir-dir", ir, "--vis-dir", vi)
    assert code == 2 and "not a folder" in err
    code, _, err = _run(capsys, "--fused", ir, "--ir-dir", ir, "--vis-dir", vi, "--metrics", "EN,XYZ")
    assert code == 2 and "unknown metric" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(capsys, "--fused", ir, "--ir-dir", str(empty), "--vis-dir", vi)
    assert code == 2 and "no image pairs" in err
    if hasattr(__import__("emmafuse"), "load"):  # a bad weights file fails before any scoring
        code, _, err = _run(capsys, "--weights", str(tmp_path / "nope.safetensors"), "--ir-dir", ir, "--vis-dir", vi)
        assert code == 2 and "cannot load weights" in err
    # an empty fused folder, or one matching no pair, is an error, not an N=0 / NaN row (issue 11 item 7)
    code, out, err = _run(capsys, "--fused", str(empty), "--ir-dir", ir, "--vis-dir", vi, "--json")
    assert code == 2 and out == "" and f"fused folder {empty} holds no images" in err
    other = tmp_path / "other"
    _save(other / "zz.png", np.zeros(SIZE, np.uint8))
    code, out, err = _run(capsys, "--fused", str(other), "--ir-dir", ir, "--vis-dir", vi, "--json")
    assert code == 2 and out == "" and "has the name of a source pair" in err


def test_wrong_size_and_tiny_images_are_skipped_with_reasons(dataset, capsys, tmp_path):
    fused = tmp_path / "wrong"
    _save(fused / "01.png", np.zeros((SIZE[0], SIZE[1] + 1), np.uint8))  # one column too many
    code, out, _ = _run(
        capsys, "--fused", str(fused), "--ir-dir", str(dataset["ir"]), "--vis-dir", str(dataset["vi"]), "--json"
    )
    doc = json.loads(out)
    assert code == 1 and doc["methods"][0]["n"] == 0 and doc["methods"][0]["skipped"] == 4
    assert "same shape" in {(s["pair"]): s["reason"] for s in doc["skipped"]}["01"]
    tiny = tmp_path / "tiny"
    for sub in ("ir", "vi", "f"):
        _save(tiny / sub / "01.png", np.full((20, 20), 9, np.uint8))
    args = ["--fused", str(tiny / "f"), "--ir-dir", str(tiny / "ir"), "--vis-dir", str(tiny / "vi"), "--json"]
    code, out, _ = _run(capsys, *args)
    assert code == 1 and "VIF needs images of at least 41x41" in json.loads(out)["skipped"][0]["reason"]
    code, out, _ = _run(capsys, *args, "--metrics", "EN,SSIM")  # without VIF it works
    assert code == 0 and json.loads(out)["methods"][0]["means"] == {"EN": 0.0, "SSIM": 2.0}


def test_duplicate_stems_are_refused_with_both_names(dataset, capsys, tmp_path):
    """One pairing policy for fuse, eval and train: a stem given by two files is refused."""
    from emmafuse.evaluation import EvalError, index_folder

    img = np.full((8, 8), 5, np.uint8)
    _save(tmp_path / "f" / "01.jpg", img)
    _save(tmp_path / "f" / "01.png", img)
    _save(tmp_path / "f" / "02.bmp", img)
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    with pytest.raises(EvalError, match=r"share a name: 01\.jpg and 01\.png"):
        index_folder(tmp_path / "f")
    (tmp_path / "f" / "01.jpg").unlink()
    assert {k: v.name for k, v in index_folder(tmp_path / "f").items()} == {"01": "01.png", "02": "02.bmp"}
    # in the command: a clash in a source folder or in a fused folder is a usage error
    _save(tmp_path / "mean" / "01.png", img)
    _save(tmp_path / "mean" / "01.jpg", img)
    code, out, err = _run(
        capsys, "--fused", str(tmp_path / "mean"), "--ir-dir", str(dataset["ir"]), "--vis-dir", str(dataset["vi"])
    )
    assert code == 2 and out == "" and "01.jpg and 01.png" in err


def test_rank_methods():
    means = [
        {"EN": 7.0, "MSE": 10.0, "SSIM": 0.9},  # best everywhere
        {"EN": 6.0, "MSE": 20.0, "SSIM": 0.9},  # ties with the first on SSIM
        {"EN": math.nan, "MSE": 5.0, "SSIM": 0.1},  # NaN ranks last; lowest MSE ranks first
    ]
    ranks = rank_methods(means, ["EN", "MSE", "SSIM"])
    assert ranks == pytest.approx([(1 + 2 + 1.5) / 3, (2 + 3 + 1.5) / 3, (3 + 1 + 3) / 3])


def test_gray_conversion_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # include colours whose float32 luma lands on .5 boundaries
    rgb[0, :4] = [[1, 0, 0], [0, 1, 1], [3, 0, 5], [255, 254, 0]]
    ref = np.round(cv2.cvtColor(rgb[..., ::-1].astype(np.float32), cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(rgb_to_luma(rgb, like_cv2=True), ref)


def test_read_gray_formats(tmp_path):
    gray = np.arange(48 * 56, dtype=np.uint32).reshape(SIZE) % 256
    _save(tmp_path / "g.png", gray.astype(np.uint8))
    np.testing.assert_array_equal(read_gray(tmp_path / "g.png"), gray)
    rgba = np.dstack([np.stack([gray] * 3, -1), np.full(SIZE, 7)]).astype(np.uint8)
    _save(tmp_path / "c.png", rgba)  # gray stored as RGBA: alpha ignored, levels unchanged
    np.testing.assert_array_equal(read_gray(tmp_path / "c.png"), gray)
    Image.fromarray((gray * 257).astype(np.uint16)).save(tmp_path / "d.png")  # 16-bit: high byte
    np.testing.assert_array_equal(read_gray(tmp_path / "d.png"), gray)
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(ValueError):
        read_gray(tmp_path / "bad.png")


def test_weights_mode(dataset, capsys, tmp_path):
    emmafuse = pytest.importorskip("emmafuse")
    if not hasattr(emmafuse, "load"):
        pytest.skip("emmafuse.load is not available in this build")
    import torch

    from emmafuse.checkpoint import save_ufuser
    from emmafuse.models import UFuser

    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_ufuser(UFuser().state_dict(), weights)
    saved = tmp_path / "fused"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny images: intra-op threads only add overhead on a busy machine
    try:
        code, out, _ = _run(
            capsys,
            "--weights",
            str(weights),
            "--ir-dir",
            str(dataset["ir"]),
            "--vis-dir",
            str(dataset["vi"]),
            "--json",
            "--device",
            "cpu",
            "--save-fused",
            str(saved),
            "--weights-name",
            "EMMA-random",
            "--metrics",
            "EN,SSIM,Qabf",
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0, out
    doc = json.loads(out)
    (row,) = doc["methods"]
    assert row["method"] == "EMMA-random" and row["n"] == 4
    assert "minmax" in doc["protocol"]["range"]
    files = sorted(p.name for p in saved.iterdir())
    assert files == ["01.png", "02.png", "03.png", "04.png"]
    # the table scores exactly what was saved
    ir, vi = read_gray(dataset["ir"] / "01.png"), read_gray(dataset["vi"] / "01.bmp")
    again = evaluate(read_gray(saved / "01.png"), ir, vi, metrics="EN,SSIM,Qabf")
    assert np.asarray(Image.open(saved / "01.png")).max() == 255  # minmax stretch
    assert all(math.isfinite(v) for v in again.values())


def test_registered_in_main_cli(dataset, capsys):
    cli = pytest.importorskip("emmafuse.cli")
    code = cli.main(
        [
            "eval",
            "--fused",
            str(dataset["mean"]),
            "--ir-dir",
            str(dataset["ir"]),
            "--vis-dir",
            str(dataset["vi"]),
            "--metrics",
            "EN",
            "--json",
            "-q",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and json.loads(out)["methods"][0]["n"] == 3  # 04 is unreadable
