"""The run folder of a training run: its layout, the start/resume/overwrite rules, checkpoint discovery.

Layout (``config.out_dir``)::

    config.json                 the TrainConfig of the run
    data.json                   the pairs (counts, stems hash, held-out stems) and patch-filter statistics
    log.jsonl                   one JSON record per log/validation event
    bootstrap/ warm_start/ sensing/ fuser/
                                per stage: ckpt-NNNNNNN/ (resumable) and final/ (weights)
    fuser.safetensors           the exported U-Fuser (``emmafuse.load(path)``)

Only the main process writes; every process reads. The trainer decides *what* is saved
(:mod:`emmafuse.train.ckpt_io` writes it); this module decides *where*.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from emmafuse.train import ckpt_io
from emmafuse.train.config import TrainConfig
from emmafuse.train.distributed import DistContext
from emmafuse.train.stage_names import STAGES
from emmafuse.errors import EmmafuseError

__all__ = ["RunFolder", "RunFolderError", "RUN_FILES"]

#: What a run writes at the top of its folder (nothing else there is touched, even by ``overwrite``).
RUN_FILES = ("config.json", "data.json", "log.jsonl", *STAGES, "fuser.safetensors")


class RunFolderError(EmmafuseError, ValueError):
    """The run folder already holds a run (and neither resume nor overwrite was asked)."""


class RunFolder:
    """One run's folder (see the module doc for the layout)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------ start
    def prepare(
        self,
        config: TrainConfig,
        ctx: DistContext,
        *,
        resume: bool,
        overwrite: bool,
        log: Callable[[str], None],
    ) -> None:
        """Refuse an existing run unless resuming or overwriting; clear it for ``overwrite``;
        write ``config.json`` (logging what changed when resuming).

        Raises:
            RunFolderError: the folder holds a run and neither ``resume`` nor ``overwrite``.
        """
        existing = [n for n in RUN_FILES if (self.path / n).exists()]
        ctx.barrier()  # every process looks before the main one writes
        if existing and not (resume or overwrite):
            raise RunFolderError(
                f"{self.path} already holds a training run ({', '.join(existing)}); "
                "continue it (resume) or start again (overwrite)",
                parameter="resume",
            )
        if ctx.is_main:
            if overwrite and not resume:
                for name in existing:  # only what this trainer writes
                    p = self.path / name
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            self.path.mkdir(parents=True, exist_ok=True)
            old = self.path / "config.json"
            if resume and old.exists():
                before = TrainConfig.load(old).to_dict()
                changed = _diff(before, config.to_dict())
                if changed:
                    log("resume with changed settings: " + ", ".join(changed))
            config.save(old)
        ctx.barrier()

    # ------------------------------------------------------------------ files
    def write_data(self, described: Mapping[str, object]) -> None:
        """``data.json``: what the run trains and validates on."""
        (self.path / "data.json").write_text(json.dumps(described, indent=2) + "\n", encoding="utf-8")

    def append_log(self, record: Mapping[str, Any]) -> None:
        """One line of ``log.jsonl``."""
        with open(self.path / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    @property
    def export_path(self) -> Path:
        """Where the exported U-Fuser goes by default."""
        return self.path / "fuser.safetensors"

    # ------------------------------------------------------------------ stages
    def stage_dir(self, stage: str) -> Path:
        """The folder of ``stage`` (a :class:`~emmafuse.train.stage_names.Stage`)."""
        return self.path / stage

    def final_dir(self, stage: str) -> Path:
        """The finished stage's weights (``<stage>/final``)."""
        return self.stage_dir(stage) / "final"

    def has_final(self, stage: str) -> bool:
        """Whether ``stage`` has finished (its ``final`` folder is complete)."""
        return (self.final_dir(stage) / ckpt_io.MANIFEST).is_file()

    def checkpoint_dir(self, stage: str, step: int) -> Path:
        """The resumable checkpoint of ``stage`` after ``step`` steps."""
        return self.stage_dir(stage) / f"ckpt-{step:07d}"

    def latest_checkpoint(self, stage: str) -> Path | None:
        """The complete checkpoint of ``stage`` with the highest step, if any."""
        d = self.stage_dir(stage)
        if not d.is_dir():
            return None
        found = [
            (int(m.group(1)), p)
            for p in d.iterdir()
            if (m := re.fullmatch(r"ckpt-(\d+)", p.name)) and (p / ckpt_io.MANIFEST).is_file()
        ]
        return max(found)[1] if found else None

    def prune_checkpoints(self, stage: str, current: Path, keep: int) -> None:
        """Delete the oldest checkpoints of ``stage`` so that ``keep`` remain, ``current`` included."""
        old = sorted(p for p in self.stage_dir(stage).glob("ckpt-*") if p.is_dir() and p != current)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(x, dict) and isinstance(y, dict):
            out += _diff(x, y, name + ".")
        elif x != y:
            out.append(f"{name}: {x!r} -> {y!r}")
    return out
