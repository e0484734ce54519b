"""Folder scoring: score every pair of a checked plan, for every fused folder and fuser.

:func:`score_folders` is the one-call API; :func:`~emmafuse.evaluation.planning.plan_scoring`
(every cheap check: metrics, names, pairing, fused folders) and :func:`score_plan` (the work)
are its two halves, so a caller can load a fuser only after the folders passed (the ``eval``
command does).

Images are read by :func:`~emmafuse.evaluation.reader.read_gray_reference` and scored as
stored; a fuser's row fuses the pairs with the library's folder loop
(:func:`emmafuse.folder_fusion.fuse_pairs`). A pair that cannot be scored is recorded with its
reason, never dropped silently.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np

from emmafuse.errors import EmmafuseError, InputError
from emmafuse.evaluation.planning import EvalError, ScoringPlan, plan_scoring
from emmafuse.evaluation.reader import read_gray_reference
from emmafuse.folder_fusion import PairResult, fuse_pairs
from emmafuse.image_io import write_image
from emmafuse.metrics import Preset, evaluate
from emmafuse.metrics.gray import to_gray

if TYPE_CHECKING:
    from emmafuse.fuser import Fuser

__all__ = ["EvalReport", "MethodResult", "score_folders", "score_plan"]

Scores = dict[str, float]
_T = TypeVar("_T")


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
        raise EvalError(f"source sizes differ: {ir.shape} vs {vis.shape}")
    return ir, vis


def _score_task(task: ScoreTask) -> tuple[str, dict[str, Scores | str], str | None]:
    """Score one pair for several fused folders: ``(stem, method -> scores or reason, source error)``."""
    try:
        ir, vis = _read_sources(task.ir_path, task.vis_path)
    except EmmafuseError as exc:
        return task.stem, {}, f"sources unusable: {exc}"
    out: dict[str, Scores | str] = {}
    for method, fpath in task.fused_paths:
        try:
            fused = read_gray_reference(fpath)
            out[method] = evaluate(fused, ir, vis, preset=task.preset, metrics=task.metrics, threads=task.threads)
        except EmmafuseError as exc:
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

    Raises:
        InputError: ``jobs`` below 1, or a ``fuser`` given without a fuser row in the plan (or
            the other way round).
    """
    if jobs < 1:
        raise InputError(f"jobs must be at least 1, got {jobs}", parameter="jobs")
    if (fuser is None) != (plan.fuser_name is None):
        raise InputError("give a fuser exactly when the plan has a fuser row (fuser_name)", parameter="fuser")
    methods = [MethodResult(name, str(d)) for name, d, _ in plan.folders]
    source_errors: dict[str, str] = {}
    if methods:
        _score_fused_folders(plan, methods, source_errors, jobs, progress)
    if fuser is not None and plan.fuser_name is not None:
        row = MethodResult(plan.fuser_name, fuser_source)
        _score_fuser(plan, fuser, row, source_errors, Path(save_fused) if save_fused is not None else None, progress)
        methods.append(row)
    return EvalReport(
        set_name=plan.set_name,
        preset=plan.preset,
        metrics=plan.metrics,
        methods=methods,
        pairs=len(plan.found.pairs),
        unpaired=plan.found.unpaired,
        source_errors=source_errors,
        protocol=_protocol(plan.preset, fused_folders=bool(plan.folders), fuser=plan.fuser_name is not None),
    )


def _score_fused_folders(
    plan: ScoringPlan, methods: list[MethodResult], source_errors: dict[str, str], jobs: int, progress: bool
) -> None:
    """Score every fused folder's image of every pair (``jobs`` worker processes), into ``methods``."""
    threads = 1 if jobs > 1 else None  # worker processes already use the cores: no helper thread inside them
    tasks = _tasks(plan, methods, threads)
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    with pool if pool is not None else contextlib.nullcontext():
        outcomes = pool.map(_score_task, tasks, chunksize=2) if pool is not None else map(_score_task, tasks)
        for stem, out, err in _progress(outcomes, len(tasks), f"eval {plan.set_name}".strip(), progress):
            if err is not None:
                source_errors[stem] = err
            for m in methods:
                got = out.get(m.name)
                if isinstance(got, str):
                    m.skipped[stem] = got
                elif got is not None:
                    m.per_image[stem] = got
                elif err is not None:
                    m.skipped.setdefault(stem, err)


def _tasks(plan: ScoringPlan, methods: list[MethodResult], threads: int | None) -> list[ScoreTask]:
    """One task per source pair with the fused images that exist; the missing ones are skipped."""
    tasks = []
    for stem, ir_path, vis_path in plan.found.pairs:
        fused_paths = []
        for m, (_, _, index) in zip(methods, plan.folders, strict=True):
            if stem in index:
                fused_paths.append((m.name, str(index[stem])))
            else:
                m.skipped[stem] = "no fused image with this name"
        tasks.append(ScoreTask(stem, str(ir_path), str(vis_path), fused_paths, plan.preset, plan.metrics, threads))
    return tasks


def _read_sources_8bit(ir_path: Path, vis_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The sources as the fuser gets them: the evaluator's gray levels as uint8."""
    ir, vis = _read_sources(ir_path, vis_path)
    return ir.astype(np.uint8), vis.astype(np.uint8)


def _score_fuser(
    plan: ScoringPlan,
    fuser: Fuser,
    row: MethodResult,
    source_errors: dict[str, str],
    save_dir: Path | None,
    progress: bool,
) -> None:
    """Fuse every pair (``output_range="minmax"``), optionally save it, and score it into ``row``."""
    pairs = fuse_pairs(
        fuser,
        plan.found.pairs,
        read_pair=_read_sources_8bit,
        progress=progress,
        desc="fuse+eval",
        output_range="minmax",
    )
    for pair in pairs:
        if pair.sources is None:
            source_errors.setdefault(pair.stem, f"sources unusable: {pair.error}")
            row.skipped[pair.stem] = source_errors[pair.stem]
        elif pair.fused is None:
            row.skipped[pair.stem] = pair.error or "not fused"
        else:
            try:
                row.per_image[pair.stem] = _score_fused(pair, plan, save_dir)
            except (EmmafuseError, OSError) as exc:
                row.skipped[pair.stem] = str(exc)


def _score_fused(pair: PairResult, plan: ScoringPlan, save_dir: Path | None) -> Scores:
    """Scores of one fused pair, scored as the uint8 gray image that is (or would be) saved."""
    assert pair.sources is not None
    fused = to_gray(np.asarray(pair.fused))
    if save_dir is not None:
        write_image(save_dir / f"{pair.stem}.png", fused.astype(np.uint8))
    ir, vis = (np.asarray(s, dtype=np.float64) for s in pair.sources)
    return evaluate(fused.astype(np.float64), ir, vis, preset=plan.preset, metrics=plan.metrics)


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
            + ("; the fuser's row fused with output_range='minmax'" if fuser else "")
        ),
        "aggregate": "mean over images of per-image values; rank = mean over metrics of per-metric rank",
        "pairing": "by file stem (01.png matches 01.jpg)",
    }
