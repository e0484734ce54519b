"""Issue 17, training side: outputs checked before any work, one configuration chain,
provenance with every stage, no half-created run folder, CPU-aware workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from emmafuse.checkpoint import load_ufuser_file
from emmafuse.cli.train import main as train_main
from emmafuse.train import Trainer
from emmafuse.train.config import ConfigError, TrainConfig
from emmafuse.train.resolve import resolve_config
from emmafuse.train.synthetic import tiny_config, write_synthetic_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic_pairs(tmp_path_factory.mktemp("synthetic"), 8, 48, 48, seed=3)


def _config_file(pairs: tuple[Path, Path], out: Path, where: Path, **changes: object) -> Path:
    cfg = tiny_config(*pairs, out)
    cfg.sensing.steps, cfg.fuser.steps = 2, 2
    for key, value in changes.items():
        cfg.override(key.replace("__", "."), value)
    path = where / "tiny.json"
    cfg.save(path)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("target", ["image", "new_in_folder", "bad_suffix"])
def test_export_never_lands_on_or_among_the_inputs(pairs, tmp_path, capsys, target):
    ir_dir = pairs[0]
    before = _snapshot(ir_dir)
    first = sorted(ir_dir.iterdir())[0]
    export = {
        "image": first,
        "new_in_folder": ir_dir / "weights.safetensors",
        "bad_suffix": tmp_path / "weights.png",
    }[target]
    cfg = _config_file(pairs, tmp_path / "run", tmp_path)
    code = train_main(["all", "--config", str(cfg), "--export", str(export)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(export) in err
    assert _snapshot(ir_dir) == before
    assert not (tmp_path / "run").exists()  # refused before the run folder was written


def test_run_folder_inside_an_input_folder_is_refused(pairs, tmp_path, capsys):
    cfg = _config_file(pairs, pairs[1] / "run", tmp_path)
    assert train_main(["all", "--config", str(cfg)]) == 2
    assert "input folder" in capsys.readouterr().err
    assert not (pairs[1] / "run").exists()


def test_export_to_refuses_images_and_other_suffixes(pairs, tmp_path, capsys):
    image = tmp_path / "photo.png"
    image.write_bytes(b"not really a png")
    for dest in (image, tmp_path / "w.pth", sorted(pairs[0].iterdir())[0]):
        before = dest.read_bytes() if dest.exists() else None
        assert train_main(["export", "--out", str(tmp_path / "norun"), "--to", str(dest)]) == 2
        assert ".safetensors" in capsys.readouterr().err
        assert (dest.read_bytes() if dest.exists() else None) == before


def test_bad_pseudo_gt_leaves_no_run_folder_and_the_rerun_starts(pairs, tmp_path, capsys):
    cfg = _config_file(pairs, tmp_path / "run", tmp_path)
    code = train_main(["all", "--config", str(cfg), "--pseudo-gt", f"folder:{tmp_path / 'nowhere'}"])
    assert code == 2 and "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    code = train_main(["all", "--config", str(cfg), "--pseudo-gt", "nonsense"])
    assert code == 2 and "unknown pseudo-GT source" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert train_main(["all", "--config", str(cfg)]) == 0  # no --overwrite needed


def test_precedence_defaults_recipe_config_flags_set(tmp_path):
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"fuser": {"alpha2": 3.0}, "data": {"crop": 48}}))
    cfg = resolve_config("cpu-ivf", partial, [("data.crop", 32), ("data.crop", 80)])
    assert cfg.warm_start.steps == 3500  # the recipe survives the config file
    assert cfg.fuser.alpha2 == 3.0  # the file beats the recipe
    assert cfg.data.crop == 80  # later overrides (--set after flags) win
    assert cfg.recipe == "cpu-ivf"
    assert resolve_config().fuser.alpha2 == TrainConfig().fuser.alpha2


def test_cli_recipe_is_not_dropped_by_config(pairs, tmp_path, capsys):
    # `defaults` shows only recipes; check the chain through the run's saved config instead
    cfg = _config_file(pairs, tmp_path / "run", tmp_path)
    data = json.loads(cfg.read_text())
    data.pop("warm_start")  # a partial file: the recipe's warm start must stay
    cfg.write_text(json.dumps(data))
    code = train_main(["sensing", "--recipe", "cpu-ivf", "--config", str(cfg), "--set", "sensing.steps=2",
                       "--set", "warm_start.steps=0"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["recipe"] == "cpu-ivf" and saved["warm_start"]["target"] == "gff"
    assert saved["warm_start"]["grad_max"] == 0.5 and saved["data"]["crop"] == 32


def test_resume_keeps_the_saved_configuration_and_refuses_conflicts(pairs, tmp_path, capsys):
    cfg = _config_file(pairs, tmp_path / "run", tmp_path)
    assert train_main(["sensing", "--config", str(cfg)]) == 0
    capsys.readouterr()
    code = train_main(["sensing", "--out", str(tmp_path / "run"), "--resume", "--set", "sensing.lr=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "sensing.lr" in err and err.count("\n") == 1
    assert train_main(["sensing", "--out", str(tmp_path / "run"), "--resume", "--no-progress"]) == 0


def test_export_provenance_lists_the_warm_start(pairs, tmp_path):
    cfg = tiny_config(*pairs, tmp_path / "run")
    cfg.sensing.steps, cfg.fuser.steps = 2, 2
    cfg.warm_start.steps, cfg.warm_start.batch = 3, 2
    path = Trainer(cfg).run_all()
    _, _, meta = load_ufuser_file(path)
    assert json.loads(meta["steps"]) == {"warm_start": 3, "sensing": 2, "fuser": 2}


def test_workers_follow_the_device(pairs, tmp_path):
    cfg = tiny_config(*pairs, tmp_path / "run")
    cfg.data.workers = -1
    cfg.validate()
    assert cfg.data.effective_workers("cpu") == 0
    assert cfg.data.effective_workers("cuda") == max(0, min(4, (os.cpu_count() or 1) - 1))
    cfg.data.workers = 3
    assert cfg.data.effective_workers("cpu") == 3  # an explicit value is kept
    with pytest.raises(ConfigError):
        cfg.override("data.workers", -2)
        cfg.validate()


def test_zero_fuser_steps_ship_the_warm_start(pairs, tmp_path):
    cfg = tiny_config(*pairs, tmp_path / "run")
    cfg.warm_start.steps, cfg.warm_start.batch, cfg.fuser.steps = 3, 2, 0
    trainer = Trainer(cfg)
    path = trainer.run_all()
    state, _, meta = load_ufuser_file(path)
    assert json.loads(meta["steps"]) == {"warm_start": 3, "fuser": 0}
    assert not (tmp_path / "run" / "sensing").exists()
    warm = trainer.train_warm_start()
    assert warm is not None
    for key, value in warm.state_dict().items():
        assert torch.equal(value.float(), state[key])
