"""Export a trained U-Fuser to the inference ``.safetensors`` format, with provenance metadata.

Metadata keys written besides the format's own ``format``/``config``: ``producer``,
``train_config`` (the full TrainConfig), ``data`` (folders, pair counts, a hash of the
training stems, the held-out stems), ``steps`` (per stage), ``pseudo_gt``, ``init``,
``git_commit``, ``torch``, ``created``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emmafuse.checkpoint import save_ufuser
from emmafuse.errors import InputError
from emmafuse.models import UFuser, UFuserConfig
from emmafuse.train import ckpt_io
from emmafuse.train.run_folder import RunFolder
from emmafuse.train.stage_names import STAGES, Stage

__all__ = ["git_commit", "export_fuser", "export_run"]


def git_commit(start: str | os.PathLike[str] | None = None) -> str:
    """``git describe --always --dirty`` of the emmafuse source tree, or ``"unknown"``."""
    where = Path(start) if start is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_fuser(fuser: UFuser, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``fuser`` with :func:`emmafuse.checkpoint.save_ufuser` (float32) plus provenance."""
    meta: dict[str, Any] = {
        "producer": "emmafuse.train",
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.update(metadata or {})
    if "config" in meta:
        raise InputError("'config' is reserved for the U-Fuser architecture; use 'train_config'", parameter="metadata")
    state = {k: v.detach().float() if v.is_floating_point() else v for k, v in fuser.state_dict().items()}
    return save_ufuser(state, path, config=fuser.config, metadata=meta)


def export_run(run_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None) -> Path:
    """Export the finished fuser stage of a run folder (default :attr:`RunFolder.export_path`)."""
    folder = RunFolder(run_dir)
    run = folder.path
    state = ckpt_io.load_state(folder.final_dir(Stage.FUSER))
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    c1, c2, c3, c4 = (int(c) for c in state["meta"].get("channels", cfg["fuser"]["channels"]))
    fuser = UFuser(UFuserConfig(channels=(c1, c2, c3, c4), num_heads=int(cfg["fuser"]["num_heads"])))
    fuser.load_state_dict(state["models"]["fuser"])
    steps = {}
    for stage in STAGES:
        if folder.has_final(stage):
            steps[stage.value] = int(ckpt_io.load_state(folder.final_dir(stage))["meta"]["steps"])
    data_file = run / "data.json"
    data = json.loads(data_file.read_text(encoding="utf-8")) if data_file.is_file() else {}
    meta = {
        "train_config": cfg,
        "data": {
            "ir_dir": cfg["data"]["ir_dir"], "vis_dir": cfg["data"]["vis_dir"],
            "extra_ir_dirs": cfg["data"].get("extra_ir_dirs", []), "extra_vis_dirs": cfg["data"].get("extra_vis_dirs", []),
            "pairs_file": cfg["data"].get("pairs_file", ""), **data,
        },
        "steps": steps,
        "pseudo_gt": cfg["sensing"]["pseudo_gt"],
        "init": cfg["fuser"]["init"],
    }
    return export_fuser(fuser, path if path is not None else folder.export_path, meta)
