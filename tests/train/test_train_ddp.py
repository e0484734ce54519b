"""Data-parallel training: two CPU processes on the gloo backend stay in sync."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from emmafuse.train import ckpt_io
from emmafuse.train.config import TrainConfig
from emmafuse.train.synthetic import tiny_config, write_synthetic_pairs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, cfg: dict[str, Any], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from emmafuse.train import Trainer

    trainer = Trainer(TrainConfig.from_dict(cfg), log=lambda _: None)
    try:
        a_i, a_v = trainer.train_sensing()
        fuser = trainer.train_fuser((a_i, a_v))
        state = {f"fuser.{k}": v for k, v in fuser.state_dict().items()}
        state.update({f"a_i.{k}": v for k, v in a_i.state_dict().items()})
        state.update({f"a_v.{k}": v for k, v in a_v.state_dict().items()})
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(Path(out) / f"rank{rank}.safetensors"))
    finally:
        trainer.close()


@pytest.mark.slow
def test_two_gloo_processes_keep_parameters_in_sync(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pairs = write_synthetic_pairs(tmp_path / "pairs", 8, 48, 48, seed=2)
    cfg = tiny_config(*pairs, tmp_path / "run")
    cfg.sensing.steps, cfg.fuser.steps = 4, 3
    cfg.sensing.batch, cfg.fuser.batch = 4, 1  # per process
    mp.spawn(_worker, args=(2, _free_port(), cfg.to_dict(), str(tmp_path)), nprocs=2, join=True)
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # the processes trained (the weights left their initial values) and rank 0 wrote the run
    torch.manual_seed(0)
    final = ckpt_io.load_state(tmp_path / "run" / "fuser" / "final")["models"]["fuser"]
    assert all(torch.equal(final[k], r0[f"fuser.{k}"]) for k in final)
    ck = ckpt_io.load_state(tmp_path / "run" / "fuser" / "ckpt-0000003")
    assert ck["world"] == 2 and len(ck["rng"]["generators"]) == 2
    assert not torch.equal(ck["rng"]["generators"][0], ck["rng"]["generators"][1])
    assert (tmp_path / "run" / "sensing" / "final" / "manifest.json").is_file()
