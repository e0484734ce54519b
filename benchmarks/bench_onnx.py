"""PyTorch vs onnxruntime on the CPU: the same network, the same inputs, interleaved timings.

For each size, times ``Fuser.fuse`` (numpy uint8 pair in, fused image out; the torch path and,
with ``backend="onnxruntime"``, the onnxruntime path) and the bare network forwards (torch
``model(ir, vis)``, onnxruntime ``session.run``), interleaved so that machine noise hits all
alike; reports medians and ratios. The whole measurement runs twice, in two child processes:
with glibc's default allocator settings (what a library user's process has) and with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184`` (what the ``emmafuse`` command sets
for itself), because the allocator decides much of the large-image time.

Usage::

    python benchmarks/bench_onnx.py [--sizes 640x480,1920x1080] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TUNED_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def _measure(sizes: list[tuple[int, int]], repeats: int) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch

    import emmafuse
    from emmafuse.samples import synthetic_pair

    torch_fuser = emmafuse.load(device="cpu")
    ort_fuser = emmafuse.load(device="cpu", backend="onnxruntime")
    from emmafuse.onnx_graph import OnnxRuntimeForward

    session = OnnxRuntimeForward(torch_fuser.model).session  # the graph the backend runs
    results: dict[str, Any] = {}
    for w, h in sizes:
        ir, vis = synthetic_pair(h, w)
        tir = torch.from_numpy(ir.astype(np.float32) / 255)[None, None]
        tvis = torch.from_numpy(vis.mean(axis=2, dtype=np.float32) / 255)[None, None]
        feeds = {"ir": tir.numpy(), "vis": tvis.numpy()}

        def forward_torch() -> None:
            with torch.inference_mode():
                torch_fuser.model(tir, tvis)

        variants = {
            "torch forward": forward_torch,
            "onnxruntime forward": lambda: session.run(None, feeds),
            "torch Fuser.fuse": lambda: torch_fuser.fuse(ir, vis),
            "onnxruntime Fuser.fuse": lambda: ort_fuser.fuse(ir, vis),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        same = np.abs(torch_fuser.fuse(ir, vis).astype(int) - ort_fuser.fuse(ir, vis).astype(int)).max()
        results[f"{w}x{h}"] = {
            "median_s": {k: statistics.median(v) for k, v in times.items()},
            "max_uint8_difference": int(same),
        }
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x480,1920x1080")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(_measure(sizes, args.repeats)))  # type: ignore[arg-type]
        return
    runs: dict[str, Any] = {}
    for label, extra in (("glibc default", {}), ("tuned allocator", TUNED_ENV)):
        env = {**os.environ, **extra}
        cmd = [sys.executable, __file__, "--child", "--sizes", args.sizes, "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        runs[label] = json.loads(out.strip().splitlines()[-1])
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs; {' '.join(sys.argv)}")
    print("\n| allocator | size | torch forward ms | onnxruntime forward ms | torch fuse ms | onnxruntime fuse ms | fuse speed-up of onnxruntime | max uint8 diff |")
    print("|---|---|---|---|---|---|---|---|")
    for label, per_size in runs.items():
        for size, r in per_size.items():
            m = r["median_s"]
            print(
                f"| {label} | {size} | {m['torch forward'] * 1e3:.0f} | {m['onnxruntime forward'] * 1e3:.0f} | "
                f"{m['torch Fuser.fuse'] * 1e3:.0f} | {m['onnxruntime Fuser.fuse'] * 1e3:.0f} | "
                f"{m['torch Fuser.fuse'] / m['onnxruntime Fuser.fuse']:.2f}x | {r['max_uint8_difference']} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
