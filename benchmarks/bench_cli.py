"""The ``emmafuse fuse`` command with and without its allocator setting: wall time and peak RSS.

The console script keeps freed memory for reuse (``emmafuse.allocator``; off with
``EMMAFUSE_ALLOCATOR=system``). This runs the installed ``emmafuse`` command on synthetic pairs
(made here, written as PNG to a temporary folder) alternately with the setting on and off and
reports the medians of wall time, user + system CPU time and the peak resident memory of each
process (``os.wait4``). The library paths (torch and onnxruntime, in a process with and without
the allocator setting) are timed by ``bench_onnx.py``.

Usage::

    python benchmarks/bench_cli.py [--sizes 640x480,7680x4320] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


_WRITE_PAIR = """
import sys
from emmafuse.image_io import write_image
from emmafuse.samples import synthetic_pair
ir, vis = synthetic_pair(int(sys.argv[2]), int(sys.argv[1]), seed=1)
write_image(sys.argv[3], ir)
write_image(sys.argv[4], vis)
"""


def _write_pair(folder: Path, width: int, height: int) -> tuple[Path, Path]:
    """Write a synthetic pair, in a child process: the peak RSS that ``os.wait4`` reports for a
    forked child starts at its parent's, so this process must stay small."""
    paths = folder / f"ir_{width}x{height}.png", folder / f"vis_{width}x{height}.png"
    subprocess.run([sys.executable, "-c", _WRITE_PAIR, str(width), str(height), *map(str, paths)], check=True)
    return paths


def _run(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run once; wall seconds, CPU seconds (user, system) and peak RSS in MiB of that process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x480,7680x4320")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    exe = shutil.which("emmafuse") or str(Path(sys.executable).with_name("emmafuse"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "EMMAFUSE_ALLOCATOR"}
    settings = {"allocator setting on (default)": base_env, "off (EMMAFUSE_ALLOCATOR=system)": {**base_env, "EMMAFUSE_ALLOCATOR": "system"}}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.lower().split("x"))
            ir, vis = _write_pair(folder, w, h)
            command = [exe, "fuse", str(ir), str(vis), "-o", str(folder / "out.png"), "--device", "cpu"]
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in settings}
            for _ in range(args.repeats):
                for label, env in settings.items():
                    runs[label].append(_run(command, env))
            results[size] = {
                label: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for label, rs in runs.items()
            }
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs; {' '.join(sys.argv)}")
    print("\n| size | emmafuse fuse | wall s | user s | system s | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for size, per in results.items():
        for label, m in per.items():
            print(f"| {size} | {label} | {m['wall_s']:.1f} | {m['user_s']:.1f} | {m['sys_s']:.1f} | {m['peak_rss_mib']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
