"""The ``emmafuse eval`` command: score fused images with :mod:`emmafuse.metrics`.

Three ways to get fused images (combinable; each becomes one row of the table):

- ``--fused DIR``: a folder of fused images, paired with the sources by file stem;
- ``--compare DIR1 DIR2 ...``: several methods' folders (row name = folder name), ranked;
- ``--weights W.safetensors``: fuse the pairs with ``emmafuse.load(W)`` first
  (``output_range="minmax"``, the authors' protocol), then score.

Protocol (printed with every table): every image is read the way the reference evaluator
reads it, ``round(cvtColor(imread(path).astype(float32), BGR2GRAY))``, reproduced in numpy
bit for bit (16-bit files are reduced to their high byte as ``cv2.imread`` does; alpha is
dropped); fused images are scored as stored (no range stretching); the table holds the
mean over images of each per-image value. Ranking: each metric ranks the methods (1 =
best, MSE lower is better, ties share the mean rank); methods are ordered by the mean of
their ranks over the reported metrics.

Pairing is :func:`emmafuse.image_io.pair_folders` (by file stem; two files with one stem in a
folder are refused). Every skipped pair is named on stderr with its reason, and the exit code
is 1 when any pair was skipped; a fused folder with no image of a source pair is an error.
Outputs (``-o``, ``--save-fused``) are checked before any scoring.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "add_eval_command",
    "run_eval",
    "main",
    "read_gray",
    "bgr_to_gray_like_cv2",
    "index_folder",
    "rank_methods",
    "MethodResult",
    "EvalReport",
]


class EvalError(Exception):
    """A user-facing error of ``emmafuse eval`` (printed as one line, exit code 2)."""


# --------------------------------------------------------------------------- images
# cv2's float32 BGR2GRAY coefficients.
_CB, _CG, _CR = (float(np.float32(c)) for c in (0.114, 0.587, 0.299))


def bgr_to_gray_like_cv2(rgb: np.ndarray) -> np.ndarray:
    """Gray levels of an ``(H, W, 3)`` RGB image as the reference computes them.

    The reference converts a *float32* image with ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` and
    rounds (``np.round``). OpenCV's float kernel evaluates ``fma(R, cr, fma(B, cb, G * cg))``
    in float32; a product of two float32 numbers is exact in float64, so computing each
    fused multiply-add in float64 and rounding to float32 gives the same bits (checked
    against cv2 on all 2^24 colours). Returns float64 integers 0..255.
    """
    f32 = np.float32
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    t = (g.astype(f32) * f32(_CG)).astype(np.float64)
    t = (b * _CB + t).astype(f32).astype(np.float64)
    y = (r * _CR + t).astype(f32)
    return np.round(y).astype(np.float64)


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)  # what cv2.imread(path) does with 16-bit files
    if arr.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {arr.dtype}")
    return arr


def read_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as float64 gray levels 0..255, exactly as the reference reader.

    Gray files pass through unchanged; colour files use :func:`bgr_to_gray_like_cv2`;
    alpha is ignored and 16-bit data keeps its high byte (both like ``cv2.imread``).

    Raises:
        ValueError: unreadable file or unsupported layout (``ImageReadError`` is one).
    """
    from emmafuse.image_io import read_image

    arr = _to_8bit(read_image(path))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return arr.astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return bgr_to_gray_like_cv2(arr[..., :3])
    raise ValueError(f"{path}: unsupported image shape {arr.shape}")


def index_folder(folder: str | os.PathLike[str], role: str = "image") -> dict[str, Path]:
    """Image files of a folder by stem (:func:`emmafuse.image_io.index_images`).

    Raises:
        EvalError: the folder is missing, or two of its files share a stem (``01.png`` and
            ``01.jpg``): which one to score would be a guess.
    """
    from emmafuse.image_io import PairingError, index_images

    try:
        return index_images(folder, role)
    except PairingError as exc:
        raise EvalError(str(exc)) from exc


# --------------------------------------------------------------------------- results
@dataclass
class MethodResult:
    """Scores of one method (one fused folder or one weights file)."""

    name: str
    source: str
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stem -> reason

    def means(self, metrics: Sequence[str]) -> dict[str, float]:
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


def rank_methods(means: Sequence[dict[str, float]], metrics: Sequence[str]) -> list[float]:
    """Mean rank of each method over ``metrics`` (1 = best; MSE ranks ascending).

    Ties share the average of their ranks; a NaN score ranks last.
    """
    from emmafuse.metrics import HIGHER_IS_BETTER

    n = len(means)
    totals = np.zeros(n)
    for m in metrics:
        vals = np.array([row[m] for row in means], dtype=np.float64)
        key = -vals if HIGHER_IS_BETTER[m] else vals.copy()
        key[np.isnan(key)] = np.inf
        ranks = np.empty(n)
        for i in range(n):
            less = np.sum(key < key[i])
            equal = np.sum(key == key[i])
            ranks[i] = less + (equal + 1) / 2.0
        totals += ranks
    return list(totals / max(len(metrics), 1))


# --------------------------------------------------------------------------- scoring
_Task = tuple[str, str, str, list[tuple[str, str]], str, list[str], int | None]


def _score_task(task: _Task) -> tuple[str, dict[str, Any], str | None]:
    """Score one pair for several fused folders (runs in worker processes too)."""
    from emmafuse.metrics import evaluate

    stem, ir_path, vis_path, fused_paths, preset, metrics, threads = task
    try:
        ir, vis = read_gray(ir_path), read_gray(vis_path)
        if ir.shape != vis.shape:
            raise ValueError(f"source sizes differ: {ir.shape} vs {vis.shape}")
    except (ValueError, OSError) as exc:
        return stem, {}, f"sources unusable: {exc}"
    out: dict[str, Any] = {}
    for method, fpath in fused_paths:
        try:
            fused = read_gray(fpath)
            out[method] = evaluate(fused, ir, vis, preset=preset, metrics=metrics, threads=threads)  # type: ignore[arg-type]
        except (ValueError, OSError) as exc:
            out[method] = str(exc)
    return stem, out, None


def _load_fuser(weights: str, device: str | None) -> Any:
    try:
        import emmafuse
    except ImportError as exc:  # pragma: no cover - the package itself
        raise EvalError(f"--weights needs the emmafuse fusion API ({exc})") from exc
    load = getattr(emmafuse, "load", None)
    if load is None:
        raise EvalError("--weights needs emmafuse.load(), which this build of emmafuse does not provide")
    try:
        return load(weights, device=device)
    except (ValueError, OSError, RuntimeError) as exc:
        raise EvalError(f"cannot load weights {weights}: {exc}") from exc


def collect(args: argparse.Namespace) -> EvalReport:
    """Run the evaluation described by parsed ``eval`` arguments."""
    from tqdm import tqdm

    from emmafuse.metrics import parse_metrics

    try:
        metrics = parse_metrics(args.metrics)
    except ValueError as exc:
        raise EvalError(str(exc)) from exc
    folders: list[tuple[str, Path]] = []
    if args.fused:
        folders.append((Path(args.fused).name or str(args.fused), Path(args.fused)))
    for d in args.compare or []:
        folders.append((Path(d).name or str(d), Path(d)))
    if not folders and not args.weights:
        raise EvalError("nothing to score: give --fused DIR, --compare DIR ... or --weights FILE")
    names = [n for n, _ in folders]
    if args.weights:
        names.append(args.weights_name or Path(args.weights).stem)
    if len(set(names)) != len(names):
        raise EvalError(f"method names must be unique, got {names} (rename a folder or use --weights-name)")

    from emmafuse.image_io import PairingError, pair_folders

    try:
        found = pair_folders(args.ir_dir, args.vis_dir, roles=("--ir-dir", "--vis-dir"))
    except PairingError as exc:
        raise EvalError(str(exc)) from exc
    irs = {stem: a for stem, a, _ in found.pairs}
    viss = {stem: b for stem, _, b in found.pairs}
    stems = sorted(irs)
    if not stems:
        raise EvalError(f"no image pairs with matching names in {args.ir_dir} and {args.vis_dir}")
    indexes = [_fused_index(name, d, stems) for name, d in folders]  # fail fast, before any scoring

    fuser = _load_fuser(args.weights, args.device) if args.weights else None  # fail fast
    methods = [MethodResult(n, str(d)) for n, d in folders]
    source_errors: dict[str, str] = {}
    tasks: list[_Task] = []
    for stem in stems:
        fused_paths = []
        for m, idx in zip(methods, indexes, strict=True):
            if stem in idx:
                fused_paths.append((m.name, str(idx[stem])))
            else:
                m.skipped[stem] = "no fused image with this name"
        # worker processes already use the cores: no helper thread inside them
        threads = 1 if args.jobs > 1 else None
        tasks.append((stem, str(irs[stem]), str(viss[stem]), fused_paths, args.preset, metrics, threads))

    def take(stem: str, out: dict[str, Any], err: str | None) -> None:
        if err is not None:
            source_errors[stem] = err
        for m in methods:
            if m.name in out:
                if isinstance(out[m.name], str):
                    m.skipped[stem] = out[m.name]
                else:
                    m.per_image[stem] = out[m.name]
            elif err is not None:
                m.skipped.setdefault(stem, err)

    bar = dict(desc=f"eval {args.set_name or ''}".strip(), unit="pair", disable=args.quiet, file=sys.stderr)
    if methods:
        if args.jobs > 1:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                for res in tqdm(pool.map(_score_task, tasks, chunksize=2), total=len(tasks), **bar):
                    take(*res)
        else:
            for task in tqdm(tasks, **bar):
                take(*_score_task(task))

    if fuser is not None:
        methods.append(_fuse_and_score(args, fuser, stems, irs, viss, metrics, source_errors, bar))

    return EvalReport(
        set_name=args.set_name or _default_set_name(Path(args.ir_dir)),
        preset=args.preset,
        metrics=metrics,
        methods=methods,
        pairs=len(stems),
        unpaired=found.unpaired,
        source_errors=source_errors,
        protocol=_protocol(args),
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


def _fuse_and_score(
    args: argparse.Namespace,
    fuser: Any,
    stems: list[str],
    irs: dict[str, Path],
    viss: dict[str, Path],
    metrics: list[str],
    source_errors: dict[str, str],
    bar: dict[str, Any],
) -> MethodResult:
    from tqdm import tqdm

    from emmafuse.metrics import evaluate

    result = MethodResult(args.weights_name or Path(args.weights).stem, str(args.weights))
    save_dir = Path(args.save_fused) if args.save_fused else None
    for stem in tqdm(stems, **{**bar, "desc": "fuse+eval"}):
        try:
            ir, vis = read_gray(irs[stem]), read_gray(viss[stem])
            if ir.shape != vis.shape:
                raise ValueError(f"source sizes differ: {ir.shape} vs {vis.shape}")
        except (ValueError, OSError) as exc:
            source_errors.setdefault(stem, f"sources unusable: {exc}")
            result.skipped[stem] = source_errors[stem]
            continue
        try:
            fused = np.asarray(fuser.fuse(ir.astype(np.uint8), vis.astype(np.uint8), output_range="minmax"))
            if fused.ndim == 3:
                fused = bgr_to_gray_like_cv2(fused[..., :3]) if fused.shape[-1] >= 3 else fused[..., 0]
            if save_dir is not None:
                from emmafuse.image_io import write_image

                write_image(save_dir / f"{stem}.png", fused.astype(np.uint8))
            result.per_image[stem] = evaluate(fused.astype(np.float64), ir, vis, preset=args.preset, metrics=metrics)
        except (ValueError, TypeError, OSError) as exc:
            result.skipped[stem] = str(exc)
    return result


def _default_set_name(ir_dir: Path) -> str:
    ir_dir = ir_dir.resolve()
    modality = ("ir", "vi", "vis", "a", "b", "ct", "mri", "pet", "spect")
    return ir_dir.parent.name if ir_dir.name.lower() in modality else ir_dir.name


def _protocol(args: argparse.Namespace) -> dict[str, str]:
    preset = {
        "reference": "reference (MMIF-CDDFuse utils/Evaluator.py to 1e-6, quirks kept: MI in nats, "
        "SSIM = SSIM(F,A)+SSIM(F,B) with data_range 2, VIF = VIFp(A,F)+VIFp(B,F), "
        "Qabf ratio = g_F where g_A = g_F, PSNR peak = max(F))",
        "fixed": "fixed (MI in bits, SSIM = mean of SSIM(F,A), SSIM(F,B) with data_range 255, "
        "Qabf ratio 1 where g_A = g_F, PSNR peak 255, EN/MI levels clipped to 0..255, float64)",
    }[args.preset]
    return {
        "preset": preset,
        "gray": "round(cv2 BGR2GRAY of the float32 image), 16-bit -> high byte, alpha ignored",
        "range": (
            "fused with output_range='minmax' and scored as the returned uint8 image"
            if args.weights and not (args.fused or args.compare)
            else "fused images scored as stored (no rescaling)"
            + ("; --weights row fused with output_range='minmax'" if args.weights else "")
        ),
        "aggregate": "mean over images of per-image values; rank = mean over metrics of per-metric rank",
        "pairing": "by file stem (01.png matches 01.jpg)",
    }


# --------------------------------------------------------------------------- output
def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}"


def _rows(report: EvalReport) -> list[dict[str, Any]]:
    means = [m.means(report.metrics) for m in report.methods]
    ranks = rank_methods(means, report.metrics) if len(means) > 1 else [1.0] * len(means)
    rows: list[dict[str, Any]] = [
        {
            "method": m.name,
            "mean_rank": r,
            "n": len(m.per_image),
            "skipped": len(m.skipped),
            "means": mu,
            "source": m.source,
        }
        for m, mu, r in zip(report.methods, means, ranks, strict=True)
    ]
    rows.sort(key=lambda row: row["mean_rank"])
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows


def format_markdown(report: EvalReport) -> str:
    """A Markdown table (best value of each column in bold when several methods are compared)."""
    from emmafuse.metrics import HIGHER_IS_BETTER

    rows = _rows(report)
    multi = len(rows) > 1
    arrows = {m: ("↑" if HIGHER_IS_BETTER[m] else "↓") for m in report.metrics}
    head = (["Rank", "Method", "Mean rank"] if multi else ["Method"]) + ["N"]
    head += [f"{m} {arrows[m]}" for m in report.metrics]
    best = {}
    for m in report.metrics:
        vals = [r["means"][m] for r in rows if not math.isnan(r["means"][m])]
        if vals:
            best[m] = max(vals) if HIGHER_IS_BETTER[m] else min(vals)
    lines = [f"### {report.set_name}: {report.pairs} pairs, preset '{report.preset}'", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" if i < (3 if multi else 1) else "---:" for i in range(len(head))) + "|")
    for r in rows:
        cells = [str(r["rank"]), r["method"], f"{r['mean_rank']:.2f}"] if multi else [r["method"]]
        cells.append(str(r["n"]))
        for m in report.metrics:
            txt = _fmt(r["means"][m])
            cells.append(f"**{txt}**" if multi and m in best and r["means"][m] == best[m] else txt)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Protocol:")
    for k, v in report.protocol.items():
        lines.append(f"- {k}: {v}")
    lines.extend(_skip_lines(report, rows, prefix="- "))
    return "\n".join(lines) + "\n"


def _skip_lines(report: EvalReport, rows: list[dict[str, Any]], prefix: str) -> list[str]:
    """Summary lines: unpaired source files, and per method how many (and which) pairs were skipped."""
    out = []
    if report.unpaired:
        names = ", ".join(report.unpaired[:10]) + (", ..." if len(report.unpaired) > 10 else "")
        out.append(f"{prefix}{len(report.unpaired)} source file(s) without a partner: {names}")
    by_name = {m.name: m for m in report.methods}
    for r in rows:
        if r["skipped"]:
            stems = sorted(by_name[r["method"]].skipped)
            names = ", ".join(stems[:10]) + (", ..." if len(stems) > 10 else "")
            out.append(f"{prefix}{r['method']}: {r['skipped']} of {report.pairs} pair(s) skipped ({names})")
    return out


def _skipped_pair_lines(report: EvalReport) -> list[str]:
    """One line per skipped pair with its reason (a source problem once, not once per method)."""
    lines = [f"skipped pair {stem} for every method: {why}" for stem, why in sorted(report.source_errors.items())]
    for m in report.methods:
        for stem, why in sorted(m.skipped.items()):
            if report.source_errors.get(stem) != why:
                lines.append(f"{m.name}: skipped pair {stem}: {why}")
    return lines


def _json_safe(v: float) -> float | None:
    return v if math.isfinite(v) else None


def format_json(report: EvalReport) -> str:
    """JSON document; non-finite values (PSNR of identical images, empty means) become null."""
    rows = _rows(report)
    doc = {
        "set": report.set_name,
        "preset": report.preset,
        "pairs": report.pairs,
        "metrics": report.metrics,
        "protocol": report.protocol,
        "methods": [
            {
                "rank": r["rank"],
                "method": r["method"],
                "mean_rank": r["mean_rank"],
                "n": r["n"],
                "skipped": r["skipped"],
                "source": r["source"],
                "means": {m: _json_safe(r["means"][m]) for m in report.metrics},
            }
            for r in rows
        ],
        "unpaired": report.unpaired,
        "skipped": [
            {"method": m.name, "pair": stem, "reason": why}
            for m in report.methods
            for stem, why in sorted(m.skipped.items())
        ],
    }
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def format_csv(report: EvalReport) -> str:
    """CSV, one row per method, full precision (``inf``/``nan`` spelled out)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["set", "preset", "rank", "method", "mean_rank", "n", "skipped", *report.metrics])
    for r in _rows(report):
        w.writerow(
            [report.set_name, report.preset, r["rank"], r["method"], repr(r["mean_rank"]), r["n"], r["skipped"]]
            + [repr(r["means"][m]) for m in report.metrics]
        )
    return buf.getvalue()


# --------------------------------------------------------------------------- CLI
def add_eval_command(subparsers: Any) -> None:
    """Register ``eval`` on an ``argparse`` sub-parsers object (sets ``func=run_eval``)."""
    p = subparsers.add_parser(
        "eval",
        help="score fused images (EN, SD, SF, AG, MI, MSE, CC, PSNR, SCD, VIF, Qabf, SSIM)",
        description=(
            "Score fused images against their source pairs and print a table of per-set means. "
            "Pairs are matched by file stem; unreadable or missing files are skipped, each named on "
            "stderr with its reason, and the exit code is then 1."
        ),
    )
    src = p.add_argument_group("what to score (one or more)")
    src.add_argument("--fused", metavar="DIR", help="folder of fused images")
    src.add_argument("--compare", nargs="+", metavar="DIR", help="several methods' folders: print a ranked leaderboard")
    src.add_argument("--weights", metavar="FILE", help="fuse the pairs with these U-Fuser weights first, then score")
    src.add_argument("--weights-name", metavar="NAME", help="row name for --weights (default: the file stem)")
    src.add_argument("--save-fused", metavar="DIR", help="with --weights: also write the fused images here")
    src.add_argument("--device", default=None, help="with --weights: cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--ir-dir", required=True, help="first sources (infrared / CT / PET / SPECT), the 'A' images")
    p.add_argument("--vis-dir", required=True, help="second sources (visible / MRI), the 'B' images")
    p.add_argument(
        "--preset", choices=["reference", "fixed"], default="reference", help="metric definitions (default reference)"
    )
    p.add_argument("--metrics", default=None, help="comma-separated subset, e.g. EN,SD,SSIM (default: all 12)")
    p.add_argument("--set-name", default=None, help="name of the test set in the output (default: from --ir-dir)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of Markdown")
    p.add_argument("-o", "--output", metavar="FILE", help="write the table to FILE instead of stdout")
    p.add_argument("-j", "--jobs", type=int, default=1, help="worker processes for scoring folders (default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)


def _check_outputs(args: argparse.Namespace) -> None:
    """``-o`` and ``--save-fused`` are checked before any scoring (exit 2, one line)."""
    from emmafuse.outputs import OutputError, check_output_file, check_output_folder

    input_dirs = [Path(d) for d in (args.ir_dir, args.vis_dir, args.fused, *(args.compare or [])) if d]
    try:
        if args.output:
            # the table must not replace a source or fused image (e.g. -o fused/01.png)
            files = [f for d in input_dirs if d.is_dir() for f in d.iterdir() if f.is_file()]
            check_output_file(args.output, files, what="output file")
        if args.save_fused:
            check_output_folder(args.save_fused, input_dirs, what="--save-fused folder")
    except OutputError as exc:
        raise EvalError(str(exc)) from exc


def _write_table(text: str, output: str | None) -> None:
    if not output:
        sys.stdout.write(text)
        return
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:  # the folder changed since the check
        raise EvalError(f"cannot write {output}: {exc.strerror or exc}") from exc


def run_eval(args: argparse.Namespace) -> int:
    """Run ``emmafuse eval``; returns 0, 1 when any pair was skipped (or none scored), 2 on usage errors."""
    try:
        if args.jobs < 1:
            raise EvalError("--jobs must be at least 1")
        if args.save_fused and not args.weights:
            raise EvalError("--save-fused needs --weights")
        _check_outputs(args)
        report = collect(args)
        text = format_json(report) if args.json else format_csv(report) if args.csv else format_markdown(report)
        _write_table(text, args.output)
    except EvalError as exc:
        print(f"emmafuse eval: error: {exc}", file=sys.stderr)
        return 2
    if args.json or args.csv or args.output:  # the Markdown table already lists these
        for line in _skip_lines(report, _rows(report), prefix="emmafuse eval: "):
            print(line, file=sys.stderr)
    for line in _skipped_pair_lines(report):
        print(f"emmafuse eval: {line}", file=sys.stderr)
    scored = sum(len(m.per_image) for m in report.methods)
    skipped = any(m.skipped for m in report.methods)
    return 0 if scored and not skipped else 1


def main(argv: Iterable[str] | None = None) -> int:
    """Stand-alone entry point (``python -m emmafuse.evaluation ...`` = ``emmafuse eval ...``)."""
    parser = argparse.ArgumentParser(prog="emmafuse")
    add_eval_command(parser.add_subparsers(dest="command"))
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["eval"]:
        argv = ["eval", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
