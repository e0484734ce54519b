"""Official U-Fuser forward vs ours on the CPU: speed ratio and max abs difference.

Both networks get the same weights (seeded random) and the same inputs; they are timed
interleaved (official, ours, ours-plain, official, ...) so that machine noise hits all alike,
and the medians are compared. Wall-clock and process CPU time are both reported: on a shared
machine the CPU-time ratio is the steadier one.

The official code is imported at run time from ``--official`` (or ``$EMMA_OFFICIAL``, default
``/tmp/emma_official``: a checkout or ``git archive`` of github.com/Zhaozixiang1228/MMIF-EMMA
holding ``nets/Ufuser.py``); it is never copied into this repository.

Usage::

    PYTHONPATH=src python benchmarks/bench_cpu.py [--size 640x480] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def load_official(path: str):
    if not (Path(path) / "nets" / "Ufuser.py").is_file():
        raise SystemExit(f"official code not found: {path}/nets/Ufuser.py (use --official or $EMMA_OFFICIAL)")
    sys.path.insert(0, str(path))
    from nets.Ufuser import Ufuser  # type: ignore[import-not-found]

    return Ufuser


def harsh_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from emmafuse.testing import seeded_state_dict

    return seeded_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()})


def _fuse_calls(ours: torch.nn.Module, ir: torch.Tensor, vis: torch.Tensor, args: argparse.Namespace) -> dict:
    """``Fuser.fuse`` on the same luminance as a uint8 pair (infrared gray, visible RGB): the
    whole call a user makes, colour conversion, padding and the uint8 result included."""
    import numpy as np

    from emmafuse.fuser import Fuser

    ir_u8 = (ir[0, 0].numpy() * 255).round().astype(np.uint8)
    vis_u8 = np.repeat((vis[0, 0].numpy() * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    vis_u8[..., 0] = np.clip(vis_u8[..., 0].astype(int) + 20, 0, 255)  # a little colour
    torch_fuser = Fuser(copy.deepcopy(ours), device="cpu")
    calls = {"ours Fuser.fuse (uint8 pair)": lambda: torch_fuser.fuse(ir_u8, vis_u8)}
    if args.onnxruntime:
        ort_fuser = Fuser(copy.deepcopy(ours), device="cpu").use_onnxruntime()
        calls["ours Fuser.fuse, onnxruntime backend"] = lambda: ort_fuser.fuse(ir_u8, vis_u8)
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default=os.environ.get("EMMA_OFFICIAL", "/tmp/emma_official"))
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-plain", dest="plain", action="store_false", help="skip our plain (no fast paths) variant")
    ap.add_argument("--no-fuse", dest="fuse", action="store_false", help="skip the whole Fuser.fuse call variants")
    ap.add_argument("--onnxruntime", action="store_true", help="also time Fuser.fuse with the onnxruntime backend")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()

    from emmafuse.bench import time_interleaved
    from emmafuse.models import UFuser

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    Ufuser = load_official(args.official)

    torch.manual_seed(0)
    official = Ufuser().eval()
    ours = UFuser().eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    plain = copy.deepcopy(ours).set_fast_paths(False)

    g = torch.Generator().manual_seed(7)
    ir = torch.rand(args.batch, 1, h, w, generator=g)
    vis = torch.rand(args.batch, 1, h, w, generator=g)

    variants = {"official": official, "ours": ours}
    if args.plain:
        variants["ours (fast paths off)"] = plain
    calls = _fuse_calls(ours, ir, vis, args) if args.fuse else {}
    outs = {}
    with torch.inference_mode():
        for name, net in variants.items():  # warm-up (oneDNN primitive creation, fold caches)
            outs[name] = net(ir, vis)
        runs = {name: (lambda net=net: net(ir, vis)) for name, net in variants.items()}
        for name, call in calls.items():
            call()  # warm-up
            runs[name] = call
        timings = time_interleaved(runs, repeats=args.repeats)  # interleaved: noise hits all alike
        wall = {k: t.wall_s for k, t in timings.items()}
        cpu = {k: t.cpu_s for k, t in timings.items()}
        diff = (outs["ours"] - outs["official"]).abs().max().item()
        diff_plain = (outs["ours (fast paths off)"] - outs["official"]).abs().max().item() if args.plain else None
        # the same check on high-gain weights (the parity-test weights), where rounding is amplified
        hw = harsh_state_dict(official)
        official.load_state_dict(hw)
        ours.load_state_dict(hw)
        diff_harsh = (ours(ir, vis) - official(ir, vis)).abs().max().item()

    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "size": f"{w}x{h}",
        "batch": args.batch,
        "repeats": args.repeats,
        "median_s": med,
        "min_s": {k: min(v) for k, v in wall.items()},
        "median_cpu_s": med_cpu,
        "speedup_wall": med["official"] / med["ours"],
        "speedup_cpu": med_cpu["official"] / med_cpu["ours"],
        "max_abs_diff_vs_official": diff,
        "max_abs_diff_plain_vs_official": diff_plain,
        "max_abs_diff_vs_official_harsh_weights": diff_harsh,
    }
    print(f"# CPU benchmark {result['date']}, torch {result['torch']}, {result['machine']}")
    print(f"# {result['command']}")
    print("\n| variant | median ms | min ms | median CPU-time ms | speed-up vs official (wall / CPU time) |")
    print("|---|---|---|---|---|")
    for k in runs:
        print(
            f"| {k} | {med[k] * 1e3:.0f} | {min(wall[k]) * 1e3:.0f} | {med_cpu[k] * 1e3:.0f} | "
            f"{med['official'] / med[k]:.2f}x / {med_cpu['official'] / med_cpu[k]:.2f}x |"
        )
    print(f"\nmax |ours - official| = {diff:.2e} (seed-0 default init), {diff_harsh:.2e} (parity-test weights)")
    if diff_plain is not None:
        print(f"max |ours plain - official| = {diff_plain:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
