"""Shipped recipes, the warm-start stage with the stage III anchor, and the pseudo-GT cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from emmafuse.train import Trainer
from emmafuse.cli.train import main as train_main
from emmafuse.train.config import ConfigError
from emmafuse.train.data import find_pairs
from emmafuse.train.patches import PairStore
from emmafuse.train.pseudo_gt import fill_pseudo_gt, parse_sources
from emmafuse.train.recipes import list_recipes, load_recipe
from emmafuse.train.resolve import resolve_config
from emmafuse.train.synthetic import tiny_config, write_synthetic_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic_pairs(tmp_path_factory.mktemp("pairs"), n=6, h=48, w=64)


def test_shipped_recipes_load_and_validate() -> None:
    names = {r.name for r in list_recipes()}
    assert {"cpu-ivf", "cpu-mif", "gpu-ivf"} <= names
    for name in names:
        cfg = resolve_config(name)
        assert cfg.recipe == name
        assert load_recipe(name).description


def test_cpu_recipe_changes_the_defaults_it_names() -> None:
    cfg = resolve_config("cpu-ivf")
    assert cfg.warm_start.steps > 0 and cfg.device == "cpu"
    assert cfg.data.workers == 0  # no worker processes fighting the compute threads


def test_unknown_recipe_and_unknown_keys_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    bad = tmp_path / "bad.json"
    bad.write_text('{"settings": {"fuser": {"typo": 1}}}')
    with pytest.raises(ConfigError, match="unknown config key 'fuser.typo'"):
        resolve_config(str(bad))
    assert train_main(["recipes"]) == 0
    assert "cpu-ivf" in capsys.readouterr().out
    assert train_main(["defaults", "--recipe", "nope"]) == 2


def test_warm_start_then_anchored_stage_iii(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = tiny_config(*pairs, tmp_path / "run")
    cfg.sensing.pseudo_gt = ("laplacian", "gff")
    cfg.warm_start.steps, cfg.warm_start.batch, cfg.warm_start.grad_max = 6, 2, 0.5
    cfg.warm_start.target = "gff"
    cfg.fuser.anchor = 0.5
    trainer = Trainer(cfg)
    out = trainer.run_all()
    assert out.is_file()
    warm = trainer.results["warm_start"]
    assert warm.steps == 6 and "grad_max" in warm.history[-1]
    assert len([r for r in _log(tmp_path / "run") if r["stage"] == "warm_start" and "validation" not in r]) == 3  # trained once
    assert "anchor" in trainer.results["fuser"].history[-1]
    assert {"EN", "MI", "Qabf", "grid"} <= set(trainer.results["fuser"].validation[-1])
    # stage III started from the warm start: resume reuses both finished stages
    again = Trainer(cfg, resume=True)
    assert again.train_warm_start() is not None


def test_warm_start_target_must_be_a_pseudo_gt_source(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = tiny_config(*pairs, tmp_path / "run")
    cfg.warm_start.steps, cfg.warm_start.target = 2, "folder:x"
    with pytest.raises(ConfigError, match="warm_start.target"):
        cfg.validate()


def test_pseudo_gt_cache_hits_and_invalidates(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    store = PairStore(find_pairs(*pairs))
    sources = parse_sources(["laplacian"])
    assert fill_pseudo_gt(store, sources, cache_dir=tmp_path) == {"laplacian": "computed"}
    first = store.fused["laplacian"]
    again = PairStore(find_pairs(*pairs))
    assert fill_pseudo_gt(again, sources, cache_dir=tmp_path) == {"laplacian": "cache"}
    assert all((a == b).all() for a, b in zip(first, again.fused["laplacian"]))
    # a changed training image (here: its modification time) is a new key
    path = again.pairs[0].ir_path
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    third = PairStore(find_pairs(*pairs))
    assert fill_pseudo_gt(third, sources, cache_dir=tmp_path) == {"laplacian": "computed"}
    # a truncated cache file is recomputed, not an error
    for f in tmp_path.glob("*.npz"):
        f.write_bytes(f.read_bytes()[:50])
    fourth = PairStore(find_pairs(*pairs))
    assert fill_pseudo_gt(fourth, sources, cache_dir=tmp_path) == {"laplacian": "computed"}
    assert not list(tmp_path.glob("*.part"))
    torch.testing.assert_close(torch.from_numpy(fourth.fused["laplacian"][1]), torch.from_numpy(first[1]))


def _log(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_several_folder_pairs_train_together(tmp_path: Path) -> None:
    from emmafuse.train.data import collect_pairs

    a = write_synthetic_pairs(tmp_path / "setA", n=3, h=48, w=48)
    b = write_synthetic_pairs(tmp_path / "setB", n=4, h=48, w=48)  # same file names as setA
    found = collect_pairs([a, b])
    assert len(found) == 7 and len({p.stem for p in found}) == 7
    assert {p.stem.split("/")[0] for p in found} == {"setA", "setB"}

    listing = tmp_path / "pairs.txt"
    listing.write_text(f"# two sets\n{a[0]}\t{a[1]}\n\nsetB/ir setB/vi\n")
    cfg = tiny_config(*a, tmp_path / "run")
    cfg.data.ir_dir = cfg.data.vis_dir = ""
    cfg.data.pairs_file = str(listing)
    assert cfg.data.folder_pairs() == [(str(a[0]), str(a[1])), (str(tmp_path / "setB/ir"), str(tmp_path / "setB/vi"))]


def test_cli_takes_repeated_ir_vis_and_refuses_unequal_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_synthetic_pairs(tmp_path / "setA", n=3, h=48, w=48)
    b = write_synthetic_pairs(tmp_path / "setB", n=3, h=48, w=48)
    code = train_main(["all", "--ir", str(a[0]), "--vis", str(a[1]), "--ir", str(b[0]), "--out", str(tmp_path / "r")])
    assert code == 2 and "--ir given 2 time(s) but --vis 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    code = train_main([
        "sensing", "--ir", str(a[0]), "--vis", str(a[1]), "--ir", str(b[0]), "--vis", str(b[1]),
        "--out", str(tmp_path / "r"), "--crop", "32", "--val-pairs", "2", "--workers", "0", "--sensing-steps", "1",
        "--sensing-batch", "2", "--sensing-base", "4", "--no-progress", "--pseudo-gt", "laplacian",
        "--set", "data.val_crop=32", "--set", "data.cache_dir=none",
    ])
    assert code == 0, capsys.readouterr().err
    import json

    data = json.loads((tmp_path / "r" / "data.json").read_text())
    assert data["train_pairs"] + data["val_pairs"] == 6
    assert 0 < data["patch_filter"]["crops_kept"] <= 1


def test_filter_stats_count_black_crops(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from emmafuse.train.patches import PatchDataset

    for sub in ("ir", "vi"):
        (tmp_path / sub).mkdir()
        img = np.zeros((64, 64), np.uint8)
        img[:32, :32] = np.random.default_rng(0).integers(50, 250, (32, 32))  # a quarter has content
        Image.fromarray(img).save(tmp_path / sub / "a.png")
    store = PairStore(find_pairs(tmp_path / "ir", tmp_path / "vi"))
    stats = PatchDataset(store, 16, 0).filter_stats(200)
    assert 0.1 < stats["crops_kept"] < 0.6  # most candidate crops are black
    assert stats["samples_low_contrast"] < 0.2  # ... but retries still find content
    assert 0.3 < stats["foreground"] <= 1 and 0 <= stats["mostly_background"] < 0.5
