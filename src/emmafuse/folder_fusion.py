"""Fusing two folders of image pairs into a third: every check first, then pair after pair.

:func:`plan_folder_fusion` pairs the files by stem (:func:`emmafuse.image_io.pair_folders`) and
checks everything that can be checked before any work: the folders differ, there are pairs, the
output folder can be written and is none of the inputs, no output file is an input, and every
output format can hold its fused image (16-bit results need ``.png``). With
``overwrite=False`` existing outputs are kept and only the missing ones planned.
:func:`run_folder_fusion` fuses the plan; a pair that cannot be read, fused or written is
recorded in the :class:`FolderReport` with its reason and the others go on.
:func:`fuse_folder` is both in one call. :func:`fuse_pairs` is the loop underneath, for callers
that read the pairs their own way and keep the results in memory (``emmafuse.evaluation``).

A failure of one pair is an :class:`~emmafuse.errors.EmmafuseError` (an unreadable image, a pair
of different sizes) or an ``OSError`` while writing; any other exception is a bug and propagates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emmafuse.errors import EmmafuseError, InputError
from emmafuse.image_io import IMAGE_SUFFIXES, normalize_suffix, pair_folders, read_image, write_image
from emmafuse.outputs import check_fused_outputs, check_not_inputs, check_output_folder, same_file

if TYPE_CHECKING:
    from emmafuse.fuser import Fuser

__all__ = ["FolderPlan", "FolderReport", "PairResult", "fuse_folder", "fuse_pairs", "plan_folder_fusion", "run_folder_fusion"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class FolderPlan:
    """A checked folder fusion: the pairs to fuse and what is left alone."""

    out_dir: Path
    todo: list[tuple[str, Path, Path, Path]]  # (stem, ir file, vis file, output file), sorted by stem
    kept: list[str]  # stems whose output exists and is kept (overwrite=False)
    unpaired: list[str]  # files without a partner in the other folder


@dataclass
class FolderReport:
    """What :func:`run_folder_fusion` did."""

    out_dir: Path
    fused: list[str] = field(default_factory=list)  # stems written
    kept: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # stem -> why it was skipped

    @property
    def attempted(self) -> int:
        """Pairs that were to be fused (written or failed)."""
        return len(self.fused) + len(self.failures)


@dataclass(frozen=True)
class PairResult:
    """One pair of :func:`fuse_pairs`: its sources and fused image, or why it has none."""

    stem: str
    sources: tuple[Any, Any] | None  # what ``read_pair`` gave; None when reading failed
    fused: Any | None = None
    error: str | None = None  # the reason the pair was skipped

    @property
    def read_failed(self) -> bool:
        return self.sources is None


def plan_folder_fusion(
    ir_dir: PathLike, vis_dir: PathLike, out_dir: PathLike, *, ext: str = ".png", overwrite: bool = True
) -> FolderPlan:
    """Pair ``ir_dir`` and ``vis_dir`` by stem and check the outputs ``out_dir/<stem><ext>``.

    Raises:
        InputError: the two folders are one, ``out_dir`` is empty or looks like an image file,
            ``ext`` is not a writable image suffix, or no file names match.
        PairingError: a folder is missing, or two of its images share a stem.
        OutputError: the output folder or an output file cannot or must not be written.
    """
    out = _check_out_dir(out_dir)
    suffix = normalize_suffix(ext)
    if same_file(ir_dir, vis_dir):
        raise InputError(
            f"ir_dir and vis_dir are the same folder ({vis_dir}); give one folder per modality", parameter="vis_dir"
        )
    found = pair_folders(ir_dir, vis_dir)
    if not found.pairs:
        raise InputError(f"no pairs with matching names in {ir_dir} and {vis_dir}")
    check_output_folder(out, [ir_dir, vis_dir])
    targets = [out / f"{stem}{suffix}" for stem, _, _ in found.pairs]
    check_not_inputs(targets, [f for _, a, b in found.pairs for f in (a, b)], option="out_dir")  # links
    todo = [(s, a, b, t) for (s, a, b), t in zip(found.pairs, targets) if overwrite or not t.exists()]
    check_fused_outputs([(t, a, b) for _, a, b, t in todo])  # 16-bit as .jpg: refused now, not per pair
    kept = sorted({s for s, _, _ in found.pairs} - {s for s, _, _, _ in todo})
    return FolderPlan(out, todo, kept, found.unpaired)


def _check_out_dir(out_dir: PathLike) -> Path:
    if not str(out_dir).strip():
        raise InputError("out_dir is empty", parameter="out_dir")
    out = Path(out_dir)
    if not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES:  # it would silently become a folder
        raise InputError(
            f"a folder fusion writes one image per pair into a folder, but out_dir {out} looks like a file name; "
            f"give a folder (e.g. {out.with_suffix('')}) and ext for the format",
            parameter="out_dir",
        )
    return out


def _read_files(ir_path: Path, vis_path: Path) -> tuple[Any, Any]:
    return read_image(ir_path), read_image(vis_path)


def fuse_pairs(
    fuser: Fuser,
    pairs: Sequence[tuple[str, Path, Path]],
    *,
    read_pair: Callable[[Path, Path], tuple[Any, Any]] = _read_files,
    progress: bool = False,
    desc: str = "fusing",
    **fuse_options: Any,
) -> Iterator[PairResult]:
    """Read and fuse ``(stem, ir file, vis file)`` pairs one after the other, in order.

    ``read_pair`` reads one pair (default: :func:`emmafuse.image_io.read_image` of each file);
    ``fuse_options`` go to :meth:`Fuser.fuse`. A pair that cannot be read or fused is yielded
    with its ``error`` (an :class:`~emmafuse.errors.EmmafuseError`'s message) and the loop goes
    on. ``progress``: a bar on stderr (``desc``), shown only when stderr is a terminal.
    """
    from tqdm import tqdm

    for stem, ir_path, vis_path in tqdm(pairs, desc=desc, unit="pair", file=sys.stderr, disable=None if progress else True):
        try:
            sources = read_pair(ir_path, vis_path)
        except EmmafuseError as exc:
            yield PairResult(stem, None, error=str(exc))
            continue
        try:
            fused = fuser.fuse(sources[0], sources[1], **fuse_options)
        except EmmafuseError as exc:
            yield PairResult(stem, sources, error=str(exc))
            continue
        yield PairResult(stem, sources, fused)


def run_folder_fusion(fuser: Fuser, plan: FolderPlan, *, progress: bool = False, **fuse_options: Any) -> FolderReport:
    """Fuse the pairs of a checked ``plan`` into its folder (created when missing).

    ``fuse_options`` go to :meth:`Fuser.fuse` (``output_range``, ``tile``, ...). A pair that
    cannot be read, fused or written is recorded in ``failures`` with its reason.
    """
    report = FolderReport(plan.out_dir, kept=list(plan.kept), unpaired=list(plan.unpaired))
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    targets = {stem: target for stem, _, _, target in plan.todo}
    pairs = [(stem, ir, vis) for stem, ir, vis, _ in plan.todo]
    for result in fuse_pairs(fuser, pairs, progress=progress, **fuse_options):
        if result.fused is None:
            report.failures[result.stem] = result.error or "not fused"
            continue
        try:
            write_image(targets[result.stem], result.fused)
        except EmmafuseError as exc:
            report.failures[result.stem] = str(exc)
        except OSError as exc:  # the folder changed since the check (disk full, removed)
            report.failures[result.stem] = f"cannot write {targets[result.stem]}: {exc.strerror or exc}"
        else:
            report.fused.append(result.stem)
    return report


def fuse_folder(
    fuser: Fuser,
    ir_dir: PathLike,
    vis_dir: PathLike,
    out_dir: PathLike,
    *,
    ext: str = ".png",
    overwrite: bool = True,
    progress: bool = False,
    **fuse_options: Any,
) -> FolderReport:
    """Fuse every pair of ``ir_dir`` and ``vis_dir`` (matched by file stem) into
    ``out_dir/<stem><ext>``: :func:`plan_folder_fusion`, then :func:`run_folder_fusion`.

    Args:
        ext: the output format's suffix (``".png"``, ``"jpg"``, ...).
        overwrite: replace existing outputs (default); ``False`` keeps them and fuses only the
            missing ones.
        progress: a progress bar on stderr, shown only when stderr is a terminal.
        fuse_options: passed to :meth:`Fuser.fuse` (``output_range``, ``tile``, ``tile_overlap``).

    Raises:
        InputError, PairingError, OutputError: see :func:`plan_folder_fusion`; nothing is
            fused then.
    """
    plan = plan_folder_fusion(ir_dir, vis_dir, out_dir, ext=ext, overwrite=overwrite)
    return run_folder_fusion(fuser, plan, progress=progress, **fuse_options)
