"""Everything a training run can check before it writes anything.

A run that would fail on its data, its pseudo-GT sources or its outputs fails here, before
``config.json`` exists, so the corrected rerun is not refused as an existing run (issue 17).
The :class:`~emmafuse.train.trainer.Trainer` calls :func:`preflight` itself; the CLI adds only
:func:`check_export` for an ``--export`` path (no check runs twice).
"""

from __future__ import annotations

import os
from pathlib import Path

from emmafuse.outputs import OutputError
from emmafuse.train.config import ConfigError, TrainConfig
from emmafuse.train.data import check_training_data
from emmafuse.train.output_checks import check_run_folder, check_weights_destination
from emmafuse.train.pseudo_gt import check_specs

__all__ = ["preflight", "check_export", "input_folders"]


def input_folders(cfg: TrainConfig) -> list[str]:
    """Every training image folder of ``cfg`` (ir and vis of each folder pair)."""
    return [folder for pair in cfg.data.folder_pairs() for folder in pair]


def preflight(cfg: TrainConfig, export: str | os.PathLike[str] | None = None) -> None:
    """Check configuration, data, pseudo-GT sources, run folder and export file.

    Raises:
        ConfigError: an invalid configuration, or an output that must not be written.
        DataError: a problem with the pairs or a pseudo-GT source.
    """
    cfg.validate()
    d = cfg.data
    pairs = check_training_data(d.folder_pairs(), d.val_pairs, cfg.seed, d.crop, d.holdout)
    check_specs(cfg.sensing.pseudo_gt, [p.stem for p in pairs])
    folders = input_folders(cfg)
    try:
        check_run_folder(cfg.out_dir, folders)
    except OutputError as exc:
        raise ConfigError(str(exc)) from exc
    check_export(cfg, Path(cfg.out_dir) / "fuser.safetensors" if export is None else export)


def check_export(cfg: TrainConfig, export: str | os.PathLike[str]) -> None:
    """Check where the run's weights will be written (the part of :func:`preflight` that only
    the caller knows: the trainer checks the rest itself).

    Raises:
        ConfigError: a suffix other than ``.safetensors``, a path in an input folder, unwritable.
    """
    try:
        check_weights_destination(export, input_folders(cfg), what="export file")
    except OutputError as exc:
        raise ConfigError(str(exc)) from exc
