"""Planning a scoring run: every check that needs no scoring, before any work.

:func:`plan_scoring` checks the metric names, the row names, the pairing of the source folders
(:func:`emmafuse.image_io.pair_folders`: by file stem; two files with one stem in a folder are
refused) and the fused folders, and returns a :class:`ScoringPlan` for
:func:`emmafuse.evaluation.scoring.score_plan`; so a caller can load a fuser only after the
folders passed (the ``eval`` command does). Messages name the parameters (``ir_dir``,
``fuser_name``); the command line adds its flags.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emmafuse.errors import EmmafuseError, InputError
from emmafuse.image_io import FolderPairs, PairingError, index_images, pair_folders
from emmafuse.metrics import Preset, parse_metrics

__all__ = ["EvalError", "ScoringPlan", "index_folder", "plan_scoring"]


class EvalError(EmmafuseError, ValueError):
    """The folders cannot be scored as asked (the ``eval`` command prints it, exit code 2)."""


def index_folder(
    folder: str | os.PathLike[str], role: str = "image", *, parameter: str | None = None
) -> dict[str, Path]:
    """Image files of a folder by stem (:func:`emmafuse.image_io.index_images`).

    Raises:
        EvalError: the folder is missing, or two of its files share a stem (``01.png`` and
            ``01.jpg``): which one to score would be a guess.
    """
    try:
        return index_images(folder, role, parameter=parameter)
    except PairingError as exc:
        raise EvalError(str(exc), parameter=exc.parameter) from exc


@dataclass(frozen=True)
class ScoringPlan:
    """What :func:`~emmafuse.evaluation.scoring.score_plan` will score, checked: pairs, fused folders
    (name, folder, images)."""

    set_name: str
    preset: Preset
    metrics: list[str]
    found: FolderPairs
    folders: list[tuple[str, Path, dict[str, Path]]]
    fuser_name: str | None  # the row of a fuser, if one is to be scored

    @property
    def stems(self) -> list[str]:
        return [stem for stem, _, _ in self.found.pairs]


def plan_scoring(
    ir_dir: str | os.PathLike[str],
    vis_dir: str | os.PathLike[str],
    fused_dirs: Sequence[str | os.PathLike[str]] = (),
    *,
    fuser_name: str | None = None,
    preset: Preset = "reference",
    metrics: str | Iterable[str] | None = None,
    set_name: str | None = None,
) -> ScoringPlan:
    """Check everything that can be checked without scoring; each fused folder is a row named
    after the folder, ``fuser_name`` names the row of a fuser (``None``: no fuser row).

    Raises:
        EvalError: unknown metrics, nothing to score, repeated row names, unpairable or
            pair-less source folders, a fused folder without images or without any image
            named like a source pair.
    """
    try:
        names_of_metrics = parse_metrics(metrics)
    except InputError as exc:
        raise EvalError(str(exc), parameter="metrics") from exc
    named = [(Path(d).name or str(d), Path(d)) for d in fused_dirs]
    if not named and fuser_name is None:
        raise EvalError(
            "nothing to score: give fused folders (fused_dirs) or a fuser (fuser_name)", parameter="fused_dirs"
        )
    names = [n for n, _ in named] + ([fuser_name] if fuser_name is not None else [])
    if len(set(names)) != len(names):
        raise EvalError(
            f"method names must be unique, got {names} (rename a folder or choose another fuser_name)",
            parameter="fuser_name",
        )
    try:
        found = pair_folders(ir_dir, vis_dir, roles=("ir_dir", "vis_dir"))
    except PairingError as exc:
        raise EvalError(str(exc), parameter=exc.parameter) from exc
    stems = [stem for stem, _, _ in found.pairs]
    if not stems:
        raise EvalError(f"no image pairs with matching names in {ir_dir} and {vis_dir}")
    folders = [(name, d, _fused_index(name, d, stems)) for name, d in named]
    return ScoringPlan(
        set_name=set_name or _default_set_name(Path(ir_dir)),
        preset=preset,
        metrics=names_of_metrics,
        found=found,
        folders=folders,
        fuser_name=fuser_name,
    )


def _fused_index(name: str, folder: Path, stems: Sequence[str]) -> dict[str, Path]:
    """The images of a fused folder; a folder that can score no pair is an error, not a NaN row."""
    index = index_folder(folder, f"fused ({name})", parameter="fused_dirs")
    if not index:
        raise EvalError(f"fused folder {folder} holds no images", parameter="fused_dirs")
    if not set(index) & set(stems):
        raise EvalError(
            f"none of the {len(index)} image(s) in fused folder {folder} has the name of a source pair "
            f"(e.g. {sorted(index)[0]} vs {stems[0]}); fused images are matched to sources by file name",
            parameter="fused_dirs",
        )
    return index


def _default_set_name(ir_dir: Path) -> str:
    ir_dir = ir_dir.resolve()
    modality = ("ir", "vi", "vis", "a", "b", "ct", "mri", "pet", "spect")
    return ir_dir.parent.name if ir_dir.name.lower() in modality else ir_dir.name
