"""Speed and agreement of emmafuse.metrics against a straightforward implementation.

Runs, on the same pairs and in one process, interleaved pair by pair (so that load from
other users of a shared machine hits all contestants alike):

- ours: ``emmafuse.metrics.evaluate(fused, ir, vis, preset="reference")``;
- naive: ``benchmarks/naive_metrics.py``, the reference's algorithms written plainly
  (tap-by-tap 2-D convolutions, VIF per source, sort-based MI ...);
- optionally the reference evaluator itself (``--reference-evaluator PATH`` to a local copy
  of MMIF-CDDFuse ``utils/Evaluator.py``, e.g. fetched into /tmp; it is never part of this
  repository). It needs numpy, scipy, scikit-image, scikit-learn and opencv installed; its
  ``ssim`` is called with ``data_range=2``, what its pinned scikit-image used silently.

It checks that every metric agrees to 1e-6 relative, prints the times and the speed-up,
and exits 1 on disagreement. Fused input: the per-pixel mean (or max) of each pair,
rounded to 8 bit like a saved image.

    .venv/bin/python benchmarks/bench_metrics.py --data ../shared/data/test/TNO
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from naive_metrics import NAMES, evaluate_naive  # noqa: E402

from emmafuse.evaluation import read_gray_reference as read_gray  # noqa: E402
from emmafuse.image_io import pair_folders  # noqa: E402
from emmafuse.metrics import evaluate  # noqa: E402

RTOL = 1e-6


def load_reference(path: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, float]]:
    """The reference evaluator from a local file, wrapped to return our metric names."""
    from skimage.metrics import structural_similarity

    spec = importlib.util.spec_from_file_location("reference_evaluator", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.ssim = functools.partial(structural_similarity, data_range=2)  # type: ignore[attr-defined]
    ev = mod.Evaluator

    def run(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        f, a, b = (np.asarray(x, np.float32) for x in (f, a, b))  # its reader gives float32
        return {
            "EN": ev.EN(f),
            "SD": ev.SD(f),
            "SF": ev.SF(f),
            "AG": ev.AG(f),
            "MI": ev.MI(f, a, b),
            "MSE": ev.MSE(f, a, b),
            "CC": ev.CC(f, a, b),
            "PSNR": ev.PSNR(f, a, b),
            "SCD": ev.SCD(f, a, b),
            "VIF": ev.VIFF(f, a, b),
            "Qabf": ev.Qabf(f, a, b),
            "SSIM": ev.SSIM(f, a, b),
        }

    return run


def load_pairs(data: Path, rule: str, limit: int | None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for s, ir_path, vis_path in pair_folders(data / "ir", data / "vi").pairs[:limit]:
        a, b = read_gray(ir_path), read_gray(vis_path)
        f = np.round((a + b) / 2) if rule == "mean" else np.maximum(a, b)
        out.append((s, f, a, b))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default=str(HERE.parent.parent / "shared" / "data" / "test" / "TNO"),
        help="folder with ir/ and vi/ (default ../shared/data/test/TNO)",
    )
    ap.add_argument("--fusion", choices=["mean", "max"], default="mean", help="fusion rule for the fused input")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    ap.add_argument("--reference-evaluator", metavar="PATH", help="local copy of MMIF-CDDFuse utils/Evaluator.py")
    ap.add_argument("--skip-naive", action="store_true", help="do not run the naive implementation")
    ap.add_argument("--threads", type=int, default=None, help="threads= for our evaluate (default: automatic)")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if not (data / "ir").is_dir():
        print(f"no data at {data} (needs ir/ and vi/)", file=sys.stderr)
        return 2
    pairs = load_pairs(data, args.fusion, args.limit)
    impls: dict[str, Callable[..., dict[str, Any]]] = {"ours": functools.partial(evaluate, threads=args.threads)}
    if not args.skip_naive:
        impls["naive"] = evaluate_naive
    if args.reference_evaluator:
        impls["reference"] = load_reference(args.reference_evaluator)

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    warm = pairs[0]  # first calls pay for imports, BLAS start-up, page faults
    for fn in impls.values():
        fn(*warm[1:])

    times = {k: 0.0 for k in impls}
    cpu = {k: 0.0 for k in impls}  # process CPU time (all threads): robust on a busy machine
    worst = {k: {m: 0.0 for m in NAMES} for k in impls if k != "ours"}
    pixels = 0
    for _stem, f, a, b in pairs:
        pixels += f.size
        results = {}
        for name, fn in impls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            results[name] = fn(f, a, b)
            times[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
        for name in worst:
            for m in NAMES:
                x, y = float(results["ours"][m]), float(results[name][m])
                rel = abs(x - y) / max(abs(y), 1e-300) if x != y else 0.0
                worst[name][m] = max(worst[name][m], rel)

    return _report(data, args.fusion, pairs, pixels, load, times, cpu, worst)


def _report(
    data: Path,
    fusion: str,
    pairs: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    pixels: int,
    load: str,
    times: dict[str, float],
    cpu: dict[str, float],
    worst: dict[str, dict[str, float]],
) -> int:
    """Print the timings and the agreement; 0 when every metric agrees to RTOL, else 1."""
    print(f"# emmafuse.metrics benchmark, {dt.date.today().isoformat()}")
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPU(s), "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"data: {data} ({len(pairs)} pairs, {pixels / 1e6:.2f} Mpixel, fused = {fusion} of the pair)")
    print(f"load average before: {load}")
    print()
    print("| implementation | wall s | wall s / pair | speed-up (wall) | CPU s | speed-up (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t in times.items():
        ratio = "1.0x" if name == "ours" else f"{t / times['ours']:.1f}x"
        cratio = "1.0x" if name == "ours" else f"{cpu[name] / cpu['ours']:.1f}x"
        print(f"| {name} | {t:.2f} | {t / len(pairs):.3f} | {ratio} | {cpu[name]:.2f} | {cratio} |")
    print()
    ok = True
    for name, per in worst.items():
        bad = {m: v for m, v in per.items() if v > RTOL}
        ok &= not bad
        shown = ", ".join(f"{m} {v:.1e}" for m, v in per.items())
        print(f"max relative difference ours vs {name}: {shown} -> {'OK' if not bad else 'MISMATCH ' + str(bad)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
