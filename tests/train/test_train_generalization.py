"""Issue 16: held-out domains, source-balanced sampling, shortcut-breaking augmentation and
the gff-max teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emmafuse.train import Trainer
from emmafuse.train.augment import Augment, add_sensor_noise
from emmafuse.train.config import ConfigError
from emmafuse.train.data import DataError, ImagePair, pair_domain, split_holdout
from emmafuse.train.patches import PairStore, PatchDataset
from emmafuse.train.domain_validation import correlation, holdout_crops, score_domains
from emmafuse.train.pseudo_gt import GuidedFilterFusion, MaxBaseGuidedFilterFusion, fill_pseudo_gt
from emmafuse.train.synthetic import tiny_config, write_synthetic_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """10 pairs named CAMA_* and 3 named CAMB_* in one folder pair."""
    root = tmp_path_factory.mktemp("two")
    ir, vis = write_synthetic_pairs(root / "a", 13, 64, 64, seed=5)
    for folder in (ir, vis):
        for k, path in enumerate(sorted(folder.iterdir())):
            path.rename(folder / (("CAMA_" if k < 10 else "CAMB_") + path.name))
    return ir, vis


def test_pair_domain_names_the_source() -> None:
    assert pair_domain("ivf/FLIR_00006") == "ivf/FLIR"
    assert pair_domain("ivf/FLIR_video_00012") == "ivf/FLIR"
    assert pair_domain("ivf/LLVIP_190001") == "ivf/LLVIP"
    assert pair_domain("M3SVD_VideoFusion/M3SVDvf_0111_1753_0000") == "M3SVD_VideoFusion/M3SVDvf"
    assert pair_domain("MRI_PET/2004") == "MRI_PET"
    assert pair_domain("0042") == "pairs"


def test_split_holdout_by_domain_or_name_and_refuses_typos() -> None:
    pairs = [ImagePair(s, Path(s), Path(s)) for s in ("ivf/FLIR_1", "ivf/FLIR_2", "ivf/LLVIP_1", "M3/M3SVD_1")]
    kept, held = split_holdout(pairs, ["ivf/LLVIP", "M3/*"])
    assert [p.stem for p in held] == ["ivf/LLVIP_1", "M3/M3SVD_1"]
    assert [p.stem for p in kept] == ["ivf/FLIR_1", "ivf/FLIR_2"]
    assert split_holdout(pairs, []) == (pairs, [])
    with pytest.raises(DataError, match="matches no pair"):
        split_holdout(pairs, ["ivf/LLVIp"])


def test_gff_max_is_symmetric_keeps_the_brighter_base_and_gff_is_unchanged() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 80, 96, generator=g) * 0.2  # dark, grainy "infrared sky"
    b = torch.full((1, 1, 80, 96), 0.85)  # bright, smooth "visible sky"
    rule = MaxBaseGuidedFilterFusion()
    fused = rule.fuse(a, b)
    assert torch.equal(fused, rule.fuse(b, a))
    assert float(fused.mean()) > 0.75  # the sky stays bright
    assert float(GuidedFilterFusion().fuse(a, b).mean()) < 0.5  # GFF takes the grain's base: the dark sky
    assert rule.cache_key() != GuidedFilterFusion().cache_key()


def test_sensor_noise_changes_inputs_within_range() -> None:
    patch = np.full((32, 32), 0.5, dtype=np.float32)
    noisy = add_sensor_noise(patch, np.random.default_rng(0), 0.05, 0.05)
    assert noisy.dtype == np.float32 and 0 <= noisy.min() and noisy.max() <= 1
    assert np.abs(noisy - patch).mean() > 0


def _store(two_sources: tuple[Path, Path]) -> PairStore:
    from emmafuse.train.data import find_pairs

    return PairStore(find_pairs(*two_sources))


def test_swap_and_noise_keep_a_clean_target_and_references(two_sources) -> None:
    store = _store(two_sources)
    fill_pseudo_gt(store, [MaxBaseGuidedFilterFusion()])
    ds = PatchDataset(store, 32, 0, with_fused=True, augment=Augment(swap=1.0, noise=0.0), flips=False)
    plain = PatchDataset(store, 32, 0, with_fused=True, flips=False)
    s, p = ds[3], plain[3]
    assert torch.equal(s["ir"], p["vis"]) and torch.equal(s["vis"], p["ir"])  # swapped slots
    assert torch.equal(s["fused"], p["fused"])  # the symmetric teacher's target is unchanged
    assert torch.equal(s["ir_ref"], s["ir"])  # no noise: the references are the inputs
    noisy = PatchDataset(store, 32, 0, with_fused=True, augment=Augment(noise=1.0), flips=False)[3]
    assert not torch.equal(noisy["ir"], noisy["ir_ref"]) and torch.equal(noisy["fused"], p["fused"])
    assert torch.equal(noisy["ir_ref"], p["ir"])


def test_downscaled_context_resamples_inputs_and_target_alike(two_sources) -> None:
    store = _store(two_sources)
    store.add_fused("copy", list(store.ir))  # target = the infrared: must stay aligned with it
    ds = PatchDataset(store, 32, 0, with_fused=True, augment=Augment(scale_min=0.5))
    sides = {ds._side(0, np.random.default_rng(k)) for k in range(20)}
    assert min(sides) >= 32 and max(sides) > 40 and len(sides) > 3
    for k in range(8):
        item = ds[k]
        assert item["ir"].shape == (1, 32, 32)
        assert torch.allclose(item["ir"], item["fused"], atol=2e-3)


def test_domain_balance_draws_each_source_equally(two_sources) -> None:
    store = _store(two_sources)
    by_pairs = PatchDataset(store, 32, 0, balance="pairs")
    by_domains = PatchDataset(store, 32, 0, balance="domains")
    rare = {i for i, s in enumerate(store.stems) if s.startswith("CAMB")}
    n = 2000
    share_pairs = np.mean([by_pairs.pair_index(k) in rare for k in range(n)])
    share_domains = np.mean([by_domains.pair_index(k) in rare for k in range(n)])
    assert abs(share_pairs - 3 / 13) < 0.03
    assert abs(share_domains - 0.5) < 0.05
    assert by_domains.pair_index(17) == PatchDataset(store, 32, 0, balance="domains").pair_index(17)


def test_swap_needs_a_symmetric_teacher(two_sources, tmp_path) -> None:
    cfg = tiny_config(*two_sources, tmp_path / "run")
    cfg.data.swap = 0.5
    cfg.warm_start.steps, cfg.warm_start.target = 2, "gff"
    cfg.validate()
    cfg.sensing.pseudo_gt = ("laplacian", "gff", "folder:x")
    cfg.warm_start.target = "folder:x"
    with pytest.raises(ConfigError, match="input order"):
        cfg.validate()


def test_trainer_holds_a_domain_out_and_reports_it(two_sources, tmp_path) -> None:
    cfg = tiny_config(*two_sources, tmp_path / "run")
    cfg.data.holdout = ("CAMB",)
    cfg.data.holdout_crop, cfg.data.balance, cfg.data.swap, cfg.data.noise, cfg.data.scale_min = 48, "domains", 0.5, 0.5, 0.6
    cfg.sensing.pseudo_gt = ("laplacian", "gff-max")
    cfg.warm_start.steps, cfg.warm_start.batch, cfg.warm_start.target, cfg.warm_start.grad_max = 4, 2, "gff-max", 0.5
    cfg.sensing.steps, cfg.fuser.steps, cfg.fuser.anchor = 2, 2, 1.0
    cfg.val_every = 2
    trainer = Trainer(cfg)
    assert {p.stem for p in trainer.holdout_pairs} == {p.stem for p in trainer.holdout_pairs if p.stem.startswith("CAMB")}
    assert len(trainer.holdout_pairs) == 3
    assert not any(s.startswith("CAMB") for s in trainer.train_store.stems)
    trainer.run_all()
    val = trainer.results["warm_start"].validation[-1]
    for key in ("CAMB:EN", "CAMB:MI", "CAMB:Qabf", "CAMB:agree", "CAMB:c_ir", "CAMB:c_vis"):
        assert key in val and np.isfinite(val[key])
    assert "CAMB:agree" in trainer.results["fuser"].validation[-1]
    log = [json.loads(line) for line in (trainer.out / "log.jsonl").read_text().splitlines()]
    teacher = [r for r in log if "teacher" in r]
    assert len(teacher) == 1 and "CAMB:agree" not in teacher[0]["holdout"] and "CAMB:EN" in teacher[0]["holdout"]
    data = json.loads((trainer.out / "data.json").read_text())
    assert sorted(data["holdout_stems"]) == sorted(p.stem for p in trainer.holdout_pairs)


def test_correlation_and_domain_scores() -> None:
    x = torch.rand(1, 1, 48, 48)
    assert correlation(x, x) == pytest.approx(1.0)
    assert correlation(x, 1 - x) == pytest.approx(-1.0)
    assert correlation(x, torch.zeros_like(x)) == 0.0
    store = PairStore.__new__(PairStore)
    store.pairs = [ImagePair("A_1", Path("a"), Path("a")), ImagePair("B_1", Path("b"), Path("b"))]
    store.ir = [np.random.default_rng(k).random((64, 64)).astype(np.float16) for k in range(2)]
    store.vis = [np.random.default_rng(k + 5).random((64, 64)).astype(np.float16) for k in range(2)]
    store.fused = {"t": [a for a in store.ir]}
    crops = holdout_crops(store, 48, 4, "t")
    scores = score_domains(crops, lambda ir, vis: ir)  # a "student" that copies the infrared
    assert scores["A:agree"] == pytest.approx(1.0, abs=1e-3) and scores["A:c_ir"] == pytest.approx(1.0, abs=1e-3)
    assert abs(scores["B:c_vis"]) < 0.2
    precomputed = score_domains(crops, results=[c.vis for c in crops])  # a rule's outputs, given
    assert precomputed["A:c_vis"] == pytest.approx(1.0, abs=1e-3) and "A:agree" in precomputed
    assert "A:agree" not in score_domains(crops)  # the teacher scored on its own
