"""Folder scoring: pair the sources, match fused images by stem, score every pair.

:func:`score_folders` is the one-call API; :func:`plan_scoring` (every cheap check: metrics,
names, pairing, fused folders) and :func:`score_plan` (the work) are its two halves, so a
caller can load a fuser only after the folders passed (the ``eval`` command does).

Pairing is :func:`emmafuse.image_io.pair_folders` (by file stem; two files with one stem in a
folder are refused). Images are read by :func:`~emmafuse.evaluation.reader.read_gray_reference`
and scored as stored; a pair that cannot be scored is recorded with its reason, never dropped
silently.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np

from emmafuse.evaluation.reader import bgr_to_gray_like_cv2, read_gray_reference
from emmafuse.image_io import FolderPairs, PairingError, index_images, pair_folders, write_image
from emmafuse.metrics import Preset, evaluate, parse_metrics
from emmafuse.errors import EmmafuseError

if TYPE_CHECKING:
    from emmafuse.fuser import Fuser

__all__ = [
    "EvalError",
    "EvalReport",
    "MethodResult",
    "ScoringPlan",
    "index_folder",
    "plan_scoring",
    "score_folders",
    "score_plan",
]

Scores = dict[str, float]
_T = TypeVar("_T")


class EvalError(EmmafuseError, ValueError):
    """The folders cannot be scored as asked (the ``eval`` command prints it, exit code 2)."""


def index_folder(folder: str | os.PathLike[str], role: str = "image") -> dict[str, Path]:
    """Image files of a folder by stem (:func:`emmafuse.image_io.index_images`).

    Raises:
        EvalError: the folder is missing, or two of its files share a stem (``01.png`` and
            ``01.jpg``): which one to score would be a guess.
    """
    try:
        return index_images(folder, role)
    except PairingError as exc:
        raise EvalError(str(exc)) from exc


# --------------------------------------------------------------------------- results
@dataclass
class MethodResult:
    """Scores of one method (one fused folder or one fuser)."""

    name: str
    source: str
    per_image: dict[str, Scores] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stem -> reason

    def means(self, metrics: Sequence[str]) -> Scores:
        """Mean over scored images of each metric (NaN when nothing was scored)."""
        out = {}
        for m in metrics:
            vals = [s[m] for s in self.per_image.values()]
            out[m] = float(np.mean(vals)) if vals else math.nan
        return out


@dataclass
class EvalReport:
    """Everything a table needs: the methods, the protocol, what was skipped."""

    set_name: str
    preset: str
    metrics: list[str]
    methods: list[MethodResult]
    pairs: int
    unpaired: list[str]
    source_errors: dict[str, str]
    protocol: dict[str, str]


@dataclass(frozen=True)
class ScoringPlan:
    """What :func:`score_plan` will score, checked: pairs, fused folders (name, folder, images)."""

    set_name: str
    preset: Preset
    metrics: list[str]
    found: FolderPairs
    folders: list[tuple[str, Path, dict[str, Path]]]
    fuser_name: str | None  # the row of a fuser, if one is to be scored

    @property
    def stems(self) -> list[str]:
        return [stem for stem, _, _ in self.found.pairs]


# --------------------------------------------------------------------------- planning
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
    except ValueError as exc:
        raise EvalError(str(exc)) from exc
    named = [(Path(d).name or str(d), Path(d)) for d in fused_dirs]
    if not named and fuser_name is None:
        raise EvalError("nothing to score: give --fused DIR, --compare DIR ... or --weights FILE")
    names = [n for n, _ in named] + ([fuser_name] if fuser_name is not None else [])
    if len(set(names)) != len(names):
        raise EvalError(f"method names must be unique, got {names} (rename a folder or use --weights-name)")
    try:
        found = pair_folders(ir_dir, vis_dir, roles=("--ir-dir", "--vis-dir"))
    except PairingError as exc:
        raise EvalError(str(exc)) from exc
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
    index = index_folder(folder, f"fused ({name})")
    if not index:
        raise EvalError(f"fused folder {folder} holds no images")
    if not set(index) & set(stems):
        raise EvalError(
            f"none of the {len(index)} image(s) in fused folder {folder} has the name of a source pair "
            f"(e.g. {sorted(index)[0]} vs {stems[0]}); fused images are matched to sources by file name"
        )
    return index


def _default_set_name(ir_dir: Path) -> str:
    ir_dir = ir_dir.resolve()
    modality = ("ir", "vi", "vis", "a", "b", "ct", "mri", "pet", "spect")
    return ir_dir.parent.name if ir_dir.name.lower() in modality else ir_dir.name


# --------------------------------------------------------------------------- scoring
class ScoreTask(NamedTuple):
    """One source pair to score against several fused images (sent to worker processes)."""

    stem: str
    ir_path: str
    vis_path: str
    fused_paths: list[tuple[str, str]]  # (method, fused file)
    preset: Preset
    metrics: list[str]
    threads: int | None


def _read_sources(ir_path: str | os.PathLike[str], vis_path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    ir, vis = read_gray_reference(ir_path), read_gray_reference(vis_path)
    if ir.shape != vis.shape:
        raise ValueError(f"source sizes differ: {ir.shape} vs {vis.shape}")
    return ir, vis


def _score_task(task: ScoreTask) -> tuple[str, dict[str, Scores | str], str | None]:
    """Score one pair for several fused folders: ``(stem, method -> scores or reason, source error)``."""
    try:
        ir, vis = _read_sources(task.ir_path, task.vis_path)
    except (ValueError, OSError) as exc:
        return task.stem, {}, f"sources unusable: {exc}"
    out: dict[str, Scores | str] = {}
    for method, fpath in task.fused_paths:
        try:
            fused = read_gray_reference(fpath)
            out[method] = evaluate(fused, ir, vis, preset=task.preset, metrics=task.metrics, threads=task.threads)
        except (ValueError, OSError) as exc:
            out[method] = str(exc)
    return task.stem, out, None


def _progress(items: Iterable[_T], total: int, desc: str, enabled: bool) -> Iterable[_T]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="pair", file=sys.stderr)


def score_plan(
    plan: ScoringPlan,
    *,
    fuser: Fuser | None = None,
    fuser_source: str = "",
    save_fused: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> EvalReport:
    """Score a checked plan: every fused folder, then (with ``fuser``) the pairs fused by it.

    The fuser fuses each pair with ``output_range="minmax"`` (the authors' protocol); with
    ``save_fused`` the fused images are written there as ``<stem>.png``, and the table scores
    exactly what was written.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if (fuser is None) != (plan.fuser_name is None):
        raise ValueError("give a fuser exactly when the plan has a fuser row (fuser_name)")
    irs = {stem: a for stem, a, _ in plan.found.pairs}
    viss = {stem: b for stem, _, b in plan.found.pairs}
    stems = plan.stems
    methods = [MethodResult(name, str(d)) for name, d, _ in plan.folders]
    source_errors: dict[str, str] = {}
    tasks: list[ScoreTask] = []
    threads = 1 if jobs > 1 else None  # worker processes already use the cores: no helper thread inside them
    for stem in stems:
        fused_paths = []
        for m, (_, _, index) in zip(methods, plan.folders, strict=True):
            if stem in index:
                fused_paths.append((m.name, str(index[stem])))
            else:
                m.skipped[stem] = "no fused image with this name"
        tasks.append(ScoreTask(stem, str(irs[stem]), str(viss[stem]), fused_paths, plan.preset, plan.metrics, threads))

    def take(stem: str, out: dict[str, Scores | str], err: str | None) -> None:
        if err is not None:
            source_errors[stem] = err
        for m in methods:
            if m.name in out:
                got = out[m.name]
                if isinstance(got, str):
                    m.skipped[stem] = got
                else:
                    m.per_image[stem] = got
            elif err is not None:
                m.skipped.setdefault(stem, err)

    desc = f"eval {plan.set_name}".strip()
    if methods:
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for res in _progress(pool.map(_score_task, tasks, chunksize=2), len(tasks), desc, progress):
                    take(*res)
        else:
            for task in _progress(tasks, len(tasks), desc, progress):
                take(*_score_task(task))

    if fuser is not None and plan.fuser_name is not None:
        result = MethodResult(plan.fuser_name, fuser_source)
        save_dir = Path(save_fused) if save_fused is not None else None
        for stem in _progress(stems, len(stems), "fuse+eval", progress):
            _fuse_and_score(fuser, plan, stem, irs[stem], viss[stem], result, source_errors, save_dir)
        methods.append(result)

    return EvalReport(
        set_name=plan.set_name,
        preset=plan.preset,
        metrics=plan.metrics,
        methods=methods,
        pairs=len(stems),
        unpaired=plan.found.unpaired,
        source_errors=source_errors,
        protocol=_protocol(plan.preset, fused_folders=bool(plan.folders), fuser=plan.fuser_name is not None),
    )


def _fuse_and_score(
    fuser: Fuser,
    plan: ScoringPlan,
    stem: str,
    ir_path: Path,
    vis_path: Path,
    result: MethodResult,
    source_errors: dict[str, str],
    save_dir: Path | None,
) -> None:
    try:
        ir, vis = _read_sources(ir_path, vis_path)
    except (ValueError, OSError) as exc:
        source_errors.setdefault(stem, f"sources unusable: {exc}")
        result.skipped[stem] = source_errors[stem]
        return
    try:
        fused = np.asarray(fuser.fuse(ir.astype(np.uint8), vis.astype(np.uint8), output_range="minmax"))
        if fused.ndim == 3:
            fused = bgr_to_gray_like_cv2(fused[..., :3]) if fused.shape[-1] >= 3 else fused[..., 0]
        if save_dir is not None:
            write_image(save_dir / f"{stem}.png", fused.astype(np.uint8))
        result.per_image[stem] = evaluate(fused.astype(np.float64), ir, vis, preset=plan.preset, metrics=plan.metrics)
    except (ValueError, TypeError, OSError) as exc:
        result.skipped[stem] = str(exc)


def score_folders(
    ir_dir: str | os.PathLike[str],
    vis_dir: str | os.PathLike[str],
    fused_dirs: Sequence[str | os.PathLike[str]] = (),
    *,
    fuser: Fuser | None = None,
    fuser_name: str = "fuser",
    fuser_source: str = "",
    save_fused: str | os.PathLike[str] | None = None,
    preset: Preset = "reference",
    metrics: str | Iterable[str] | None = None,
    jobs: int = 1,
    set_name: str | None = None,
    progress: bool = False,
) -> EvalReport:
    """Score fused folders (and, with ``fuser``, the pairs fused by it) against the sources.

    Args:
        ir_dir, vis_dir: the source folders (first modality ``A``, second ``B``), paired by stem.
        fused_dirs: fused folders, one row each (named after the folder).
        fuser: also fuse every pair with this fuser (``output_range="minmax"``) and score the
            result as the row ``fuser_name``.
        save_fused: with ``fuser``: write the fused images here.
        preset, metrics: see :func:`emmafuse.metrics.evaluate`.
        jobs: worker processes for scoring folders.
        set_name: name of the test set (default: from ``ir_dir``).
        progress: show progress bars on stderr.

    Raises:
        EvalError: see :func:`plan_scoring`.
    """
    plan = plan_scoring(
        ir_dir,
        vis_dir,
        fused_dirs,
        fuser_name=fuser_name if fuser is not None else None,
        preset=preset,
        metrics=metrics,
        set_name=set_name,
    )
    return score_plan(plan, fuser=fuser, fuser_source=fuser_source, save_fused=save_fused, jobs=jobs, progress=progress)


def _protocol(preset: str, *, fused_folders: bool, fuser: bool) -> dict[str, str]:
    """The protocol lines printed with every table."""
    preset_text = {
        "reference": "reference (MMIF-CDDFuse utils/Evaluator.py to 1e-6, quirks kept: MI in nats, "
        "SSIM = SSIM(F,A)+SSIM(F,B) with data_range 2, VIF = VIFp(A,F)+VIFp(B,F), "
        "Qabf ratio = g_F where g_A = g_F, PSNR peak = max(F))",
        "fixed": "fixed (MI in bits, SSIM = mean of SSIM(F,A), SSIM(F,B) with data_range 255, "
        "Qabf ratio 1 where g_A = g_F, PSNR peak 255, EN/MI levels clipped to 0..255, float64)",
    }[preset]
    return {
        "preset": preset_text,
        "gray": "round(cv2 BGR2GRAY of the float32 image), 16-bit -> high byte, alpha ignored",
        "range": (
            "fused with output_range='minmax' and scored as the returned uint8 image"
            if fuser and not fused_folders
            else "fused images scored as stored (no rescaling)"
            + ("; --weights row fused with output_range='minmax'" if fuser else "")
        ),
        "aggregate": "mean over images of per-image values; rank = mean over metrics of per-metric rank",
        "pairing": "by file stem (01.png matches 01.jpg)",
    }
