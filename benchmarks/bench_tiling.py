"""How far tiled fusion is from whole-image fusion, on real pairs; and 8K peak memory.

The U-Fuser's channel attention normalises queries and keys over the whole image, so a tile
sees slightly different attention statistics (and reflect-padded borders) than the whole image:
tiled output is not bit-identical. This script measures the difference

1. on the real evaluation pairs at their own size (~256x256 to 768x576), with tiles much
   smaller than the image (stress settings: ``--configs``, e.g. 128/32, 256/64, 384/64), and
2. at the *default* settings (``tile=None``: whole image unless it exceeds the memory budget)
   on large mosaics of real pairs (e.g. 4x4 MSRS pairs = 2560x1920), where the default CPU
   budget makes ``Fuser.fuse`` tile automatically,

comparing against one whole-image forward (``Fuser.fuse_tensor``). Differences are in 8-bit
grey levels of the fused luminance (float, before rounding): mean and max of |tiled - whole|,
its 99.9th percentile, and the largest jump of the difference between neighbouring pixels
(a seam would show up there).

Weights: ``--weights W`` (a trained .safetensors file, the meaningful case) or seeded random
weights (``--random default``: PyTorch's default init, seed 1234, low-contrast output;
``--random harsh``: the parity-test weights, a high-gain network whose output spans [0, 1] and
amplifies every perturbation - a worst case). Random weights only bound the effect.

``--rss-8k`` fuses a 7680x4320 pair (uint8 gray IR + RGB visible) on the CPU in a subprocess
with the default settings and reports its peak RSS (``resource.getrusage().ru_maxrss``).

Usage::

    PYTHONPATH=src python benchmarks/bench_tiling.py --random default --random harsh
    PYTHONPATH=src python benchmarks/bench_tiling.py --weights path/to/weights.safetensors
    PYTHONPATH=src python benchmarks/bench_tiling.py --rss-8k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "test"
SETS = {
    "TNO": ("ir", "vi"),
    "RoadScene": ("ir", "vi"),
    "MSRS": ("ir", "vi"),
    "MRI_CT": ("CT", "MRI"),
    "MRI_PET": ("PET", "MRI"),
    "MRI_SPECT": ("SPECT", "MRI"),
}


def _load_fuser(weights: str | None, random_kind: str | None, threads: int | None):
    import emmafuse
    from emmafuse.fuser import Fuser
    from emmafuse.models import UFuser

    if threads:
        torch.set_num_threads(threads)
    if weights:
        return emmafuse.load(weights, device="cpu"), f"weights {weights}"
    model = UFuser()
    if random_kind == "harsh":
        from emmafuse.testing import seeded_state_dict

        model.load_state_dict(seeded_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}))
        label = "random weights (harsh: parity-test seeded weights)"
    else:
        torch.manual_seed(1234)
        model = UFuser()
        label = "random weights (default init, seed 1234)"
    return Fuser(model, device="cpu"), label


def _gray(path: Path) -> np.ndarray:
    """Luma in [0, 1] as float32 (the plane the network fuses)."""
    from emmafuse.image_io import read_luma

    return read_luma(path)


def _pairs(data: Path, name: str, limit: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    a, b = SETS[name]
    folder = data / name
    if not folder.is_dir():
        return []
    stems = sorted(p.name for p in (folder / a).iterdir())
    out = []
    for fname in stems[: limit if limit > 0 else None]:
        if (folder / b / fname).exists():
            out.append((_gray(folder / a / fname), _gray(folder / b / fname), fname))
    return out


def _whole(fuser, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    t = lambda a: torch.from_numpy(a)[None, None]
    return fuser.fuse_tensor(t(ir), t(vis))[0, 0].clamp(0, 1).cpu().numpy()


def _diff_stats(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    d = (out.astype(np.float64) - ref.astype(np.float64)) * 255.0
    ad = np.abs(d)
    jump = max(np.abs(np.diff(d, axis=0)).max(initial=0.0), np.abs(np.diff(d, axis=1)).max(initial=0.0))
    return {
        "mean": float(ad.mean()),
        "max": float(ad.max()),
        "p999": float(np.percentile(ad, 99.9)),
        "max_jump": float(jump),
        "range": float((ref.max() - ref.min()) * 255.0),
    }


def _aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    return {
        "mean": float(np.mean([r["mean"] for r in rows])),
        "max": float(np.max([r["max"] for r in rows])),
        "p999": float(np.max([r["p999"] for r in rows])),
        "max_jump": float(np.max([r["max_jump"] for r in rows])),
        "range": float(np.mean([r["range"] for r in rows])),
        "n": len(rows),
    }


def _mosaic(pairs: list[tuple[np.ndarray, np.ndarray, str]], grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A grid of real pairs, each centre-cropped to the smallest pair's size."""
    gh, gw = grid
    ch = min(p[0].shape[0] for p in pairs)
    cw = min(p[0].shape[1] for p in pairs)

    def crop(a: np.ndarray) -> np.ndarray:
        y0, x0 = (a.shape[0] - ch) // 2, (a.shape[1] - cw) // 2
        return a[y0 : y0 + ch, x0 : x0 + cw]

    rows_ir, rows_vis = [], []
    k = 0
    for _ in range(gh):
        ri, rv = [], []
        for _ in range(gw):
            ir, vis, _name = pairs[k % len(pairs)]
            ri.append(crop(ir))
            rv.append(crop(vis))
            k += 1
        rows_ir.append(np.concatenate(ri, 1))
        rows_vis.append(np.concatenate(rv, 1))
    return np.ascontiguousarray(np.concatenate(rows_ir, 0)), np.ascontiguousarray(np.concatenate(rows_vis, 0))


def run_differences(args: argparse.Namespace, weights: str | None, random_kind: str | None) -> dict:
    fuser, label = _load_fuser(weights, random_kind, args.threads)
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",") if c]
    report: dict = {"weights": label, "native": {}, "default_mosaic": {}}
    print(f"\n## {label}")
    if configs:
        print("\nNative size, stress tile settings (8-bit levels of the fused luminance):\n")
        print("| set | pairs | tile/overlap | mean abs | max abs | p99.9 | max jump | output range |")
        print("|---|---|---|---|---|---|---|---|")
    for name in args.sets.split(",") if configs else []:
        pairs = _pairs(Path(args.data), name, args.max_pairs)
        if not pairs:
            print(f"| {name} | 0 | (missing) | | | | | |")
            continue
        refs = [_whole(fuser, ir, vis) for ir, vis, _ in pairs]
        report["native"][name] = {}
        for tile, overlap in configs:
            rows = [
                _diff_stats(ref, fuser.fuse(ir, vis, tile=tile, tile_overlap=overlap))
                for (ir, vis, _), ref in zip(pairs, refs)
            ]
            agg = _aggregate(rows)
            report["native"][name][f"{tile}/{overlap}"] = agg
            print(
                f"| {name} | {agg['n']} | {tile}/{overlap} | {agg['mean']:.4f} | {agg['max']:.3f} | "
                f"{agg['p999']:.3f} | {agg['max_jump']:.3f} | {agg['range']:.1f} |",
                flush=True,
            )
    if args.mosaic:
        from emmafuse.tiling import memory_budget

        print(f"\nDefault settings (tile=None, CPU budget {memory_budget(torch.device('cpu')) / 2**30:.2f} GiB) on mosaics of real pairs:\n")
        print("| set | mosaic | tiles (h x w, tile size) | mean abs | max abs | p99.9 | max jump | output range | s whole | s tiled |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, grid in (("MSRS", (4, 4)), ("RoadScene", (10, 6)), ("TNO", (8, 8)), ("MRI_CT", (8, 8))):
            if name not in args.sets.split(","):
                continue
            pairs = _pairs(Path(args.data), name, 0 if args.max_pairs <= 0 else max(args.max_pairs, grid[0] * grid[1]))
            if not pairs:
                continue
            ir, vis = _mosaic(pairs, grid)
            plan = fuser.tile_plan(*ir.shape)
            t0 = time.perf_counter()
            ref = _whole(fuser, ir, vis)
            t1 = time.perf_counter()
            out = fuser.fuse(ir, vis)  # the defaults
            t2 = time.perf_counter()
            st = _diff_stats(ref, out)
            tiles = "whole image" if plan is None else f"{len(plan.ys)}x{len(plan.xs)}, {plan.tile_h}x{plan.tile_w}"
            report["default_mosaic"][name] = {"size": list(ir.shape), "tiles": tiles, **st, "s_whole": t1 - t0, "s_tiled": t2 - t1}
            print(
                f"| {name} | {ir.shape[1]}x{ir.shape[0]} | {tiles} | {st['mean']:.4f} | {st['max']:.3f} | "
                f"{st['p999']:.3f} | {st['max_jump']:.3f} | {st['range']:.1f} | {t1 - t0:.1f} | {t2 - t1:.1f} |",
                flush=True,
            )
            del ref, out, ir, vis
    return report


_RSS_CHILD = r"""
import resource, sys, time, numpy as np, torch
sys.path.insert(0, {src!r})
torch.set_num_threads({threads})
from emmafuse.fuser import Fuser
from emmafuse.models import UFuser
from emmafuse.samples import synthetic_pair
ir0, vis0 = synthetic_pair(480, 640, seed=0)
ir = np.ascontiguousarray(np.tile(ir0, (9, 12)))          # 4320 x 7680 uint8
vis = np.ascontiguousarray(np.tile(vis0, (9, 12, 1)))     # 4320 x 7680 x 3 uint8
del ir0, vis0
torch.manual_seed(1234)
fuser = Fuser(UFuser(), device="cpu")
def hwm():  # peak RSS of this process image (ru_maxrss may carry the parent's peak over exec)
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = fuser.tile_plan(*ir.shape)
t = time.perf_counter()
out = fuser.fuse(ir, vis, output_range={output_range!r})
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("HWM", hwm() / 1024)
print("RESULT", out.shape, out.dtype, base / 1024, peak / 1024, dt,
      "whole" if plan is None else f"{{len(plan.ys)}}x{{len(plan.xs)}} tiles of {{plan.tile_h}}x{{plan.tile_w}}")
"""


def run_rss_8k(threads: int, output_range: str) -> dict:
    code = _RSS_CHILD.format(src=str(ROOT / "src"), threads=threads or torch.get_num_threads(), output_range=output_range)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    if proc.returncode != 0 or line is None:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        raise SystemExit("8K RSS subprocess failed")
    parts = line.split()
    # RESULT (4320, 7680, 3) uint8 base peak seconds plan...
    nums = [p for p in parts if p.replace(".", "", 1).isdigit()]
    base_mib, peak_mib, secs = float(nums[-3]), float(nums[-2]), float(nums[-1])
    plan = line.split(f"{nums[-1]} ", 1)[1]
    hwm_line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("HWM")), None)
    hwm_mib = float(hwm_line.split()[1]) if hwm_line else float("nan")
    res = {
        "base_rss_mib": base_mib,
        "peak_rss_mib": peak_mib,
        "vm_hwm_mib": hwm_mib,
        "seconds": secs,
        "plan": plan,
        "output_range": output_range,
    }
    print(
        f"\n8K (7680x4320, gray uint8 IR + RGB uint8 visible, output_range={output_range}) on the CPU, defaults: "
        f"peak RSS (ru_maxrss) {peak_mib:.0f} MiB, VmHWM {hwm_mib:.0f} MiB (before fusing: {base_mib:.0f} MiB), "
        f"{secs:.1f} s, {plan}"
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="trained .safetensors weights (otherwise random weights, see --random)")
    ap.add_argument("--random", action="append", choices=["default", "harsh"], help="random-weight kind(s)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder with the test sets")
    ap.add_argument("--sets", default="TNO,RoadScene,MSRS,MRI_CT,MRI_PET,MRI_SPECT")
    ap.add_argument("--max-pairs", type=int, default=6, help="pairs per set (0: all)")
    ap.add_argument("--configs", default="128:32,256:64,384:64", help="tile:overlap stress settings ('' to skip)")
    ap.add_argument("--no-mosaic", dest="mosaic", action="store_false", help="skip the default-settings mosaics")
    ap.add_argument("--rss-8k", action="store_true", help="measure 8K peak RSS (subprocess) and exit")
    ap.add_argument("--output-range", default="clamp", choices=["clamp", "minmax"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    header = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(f"# tiling benchmark {header}")
    results: dict = {"header": header}
    if args.rss_8k:
        results["rss_8k"] = run_rss_8k(args.threads or 0, args.output_range)
    else:
        with torch.inference_mode():
            if args.weights:
                results["runs"] = [run_differences(args, args.weights, None)]
            else:
                results["runs"] = [run_differences(args, None, kind) for kind in (args.random or ["default"])]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
