"""GPU benchmark: our fuser vs the official U-Fuser, one script, one call (< 4 min on an H100).

Times with CUDA events (median of repeats after warm-up), on the same seeded random weights
loaded into both networks:

- 640x480 batch 1 (latency), 3840x2160 batch 1, and 640x480 batched (throughput);
- ours in fp32 (cuDNN's default TF32 convolutions), fp32 with channels_last off, fp16 and bf16
  autocast, CUDA-graph replay (fp32, fp16), ``torch.compile`` (fp16; skipped when short of time);
- the official forward in fp32 and fp16 autocast.

Every output is checked against our fp32 output computed with TF32 off (max abs <= 1/255).
Two end-to-end checks exercise the host pipeline on the GPU: ``Fuser.fuse`` over a list of
pairs (pinned, overlapped copies) against ``fuse_tensor``, and tiled ``Fuser.fuse`` on a
1920x1080 pair against whole-image fusion.

Writes ``bench_gpu.json`` and ``bench_gpu.md`` into ``$OUT`` (or ``--out``), and prints the table.
The official code is imported at run time from ``--official`` / ``$EMMA_OFFICIAL`` (default
``/tmp/emma_official``); it is never part of this repository.

Targets (issue 6): 640x480 batch 1 <= 4 ms, 3840x2160 <= 60 ms, >= 500 images/s batched.

Usage (device machine)::

    PYTHONPATH=src python benchmarks/bench_gpu.py --official build/emma_official
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

T0 = time.perf_counter()
TOL = 1.0 / 255.0


def elapsed() -> float:
    return time.perf_counter() - T0


CUDA = True  # False in --cpu-dry-run (a plumbing check of this script on a machine without a GPU)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def reset_peak() -> None:
    if CUDA:
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if CUDA else float("nan")


def empty_cache() -> None:
    if CUDA:
        torch.cuda.empty_cache()


def set_tf32(enabled: bool) -> None:
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default; only convolutions use TF32


def cuda_time(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    """Median milliseconds of ``fn`` measured with CUDA events (host clock in a dry run)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        if not CUDA:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default=os.environ.get("EMMA_OFFICIAL", "/tmp/emma_official"))
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_gpu_out"))
    ap.add_argument("--batch", type=int, default=32, help="batch of the throughput rows")
    ap.add_argument("--budget-s", type=float, default=150.0, help="skip the remaining slow variants after this")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU: checks this script's plumbing")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    global CUDA
    if args.cpu_dry_run:
        CUDA = False
        dev = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench_gpu.py needs CUDA (or --cpu-dry-run)")
        dev = torch.device("cuda")
        torch.backends.cudnn.benchmark = True

    from emmafuse.fuser import Fuser
    from emmafuse.models import UFuser

    official_cls = None
    if (Path(args.official) / "nets" / "Ufuser.py").is_file():
        sys.path.insert(0, str(args.official))
        from nets.Ufuser import Ufuser as official_cls  # type: ignore[import-not-found,no-redef]
    else:
        print(f"WARNING: official code not found under {args.official}; official rows skipped", flush=True)

    info = {
        "device": torch.cuda.get_device_name(dev) if CUDA else "cpu (dry run)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "note": "fp32 rows use PyTorch defaults (cuDNN convolutions in TF32); the accuracy reference is fp32 with TF32 off",
    }
    print(json.dumps(info), flush=True)

    torch.manual_seed(0)
    ours_model = UFuser()
    state = {k: v.clone() for k, v in ours_model.state_dict().items()}
    official = None
    if official_cls is not None:
        official = official_cls().eval().to(dev)
        official.load_state_dict(state, strict=True)

    def make_fuser(dtype: str, channels_last: bool = True) -> Fuser:
        m = UFuser()
        m.load_state_dict(state)
        m.set_fast_paths(channels_last=channels_last)
        return Fuser(m, device=dev, dtype=dtype)

    g = torch.Generator().manual_seed(1)
    shapes = {
        "640x480": (1, 1, 480, 640),
        "3840x2160": (1, 1, 2160, 3840),
        f"640x480 x{args.batch}": (args.batch, 1, 480, 640),
    }
    if not CUDA:  # same keys, tiny tensors
        shapes = {k: (min(v[0], 2), 1, v[2] // 10 // 8 * 8 + 8, v[3] // 10 // 8 * 8 + 8) for k, v in shapes.items()}
    inputs = {k: (torch.rand(s, generator=g).to(dev), torch.rand(s, generator=g).to(dev)) for k, s in shapes.items()}
    reps = {"640x480": (10, 50), "3840x2160": (3, 10), f"640x480 x{args.batch}": (3, 10)}

    # reference: our fp32 with TF32 off
    refs = {}
    set_tf32(False)
    ref_fuser = make_fuser("float32")
    with torch.inference_mode():
        for k, (a, b) in inputs.items():
            refs[k] = ref_fuser.fuse_tensor(a, b)
            if official is not None and k == "640x480":
                info["max_abs_official_vs_ours_fp32_no_tf32"] = (official(a, b) - refs[k]).abs().max().item()
    set_tf32(True)  # PyTorch's default for convolutions
    del ref_fuser
    empty_cache()

    rows: list[dict[str, Any]] = []

    def bench(name: str, size: str, fn: Callable[[], torch.Tensor], slow: bool = False) -> None:
        if slow and elapsed() > args.budget_s:
            rows.append({"variant": name, "size": size, "skipped": f"time budget ({elapsed():.0f} s used)"})
            print(f"skip {name} {size}: time budget", flush=True)
            return
        try:
            sync()
            reset_peak()
            t_first = time.perf_counter()
            with torch.inference_mode():
                out = fn()
                sync()
                first_s = time.perf_counter() - t_first
                err = (out.float() - refs[size]).abs().max().item()
                warm, rep = reps[size]
                ms = cuda_time(fn, warm, rep)
            n = shapes[size][0]
            row = {
                "variant": name,
                "size": size,
                "ms": ms,
                "ms_per_image": ms / n,
                "images_per_s": 1000.0 * n / ms,
                "max_abs_vs_ref": err,
                "within_1_255": bool(err <= TOL),
                "peak_mib": peak_mib(),
                "first_call_s": first_s,
            }
        except Exception as exc:  # noqa: BLE001 - keep going: one broken variant must not lose the others
            traceback.print_exc()
            row = {"variant": name, "size": size, "error": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    # ---------------------------------------------------------------- official
    if official is not None:
        for size, (a, b) in inputs.items():
            bench("official fp32", size, lambda a=a, b=b: official(a, b))

            def off16(a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
                with torch.autocast("cuda", dtype=torch.float16):
                    return official(a, b)

            if CUDA:
                bench("official fp16", size, off16)
        official.cpu()
        empty_cache()

    # ---------------------------------------------------------------- ours, eager
    variants = [
        ("ours fp32", "float32", True),
        ("ours fp32 NCHW", "float32", False),
        ("ours fp16", "float16", True),
        ("ours fp16 NCHW", "float16", False),
        ("ours bf16", "bfloat16", True),
    ]
    for name, dtype, cl in variants:
        if not CUDA and dtype == "float16":
            continue
        fuser = make_fuser(dtype, cl)
        for size, (a, b) in inputs.items():
            bench(name, size, lambda f=fuser, a=a, b=b: f.fuse_tensor(a, b))
        del fuser
        empty_cache()

    # ---------------------------------------------------------------- ours, CUDA graphs
    for name, dtype in (("ours fp32 + CUDA graphs", "float32"), ("ours fp16 + CUDA graphs", "float16"), ("ours bf16 + CUDA graphs", "bfloat16")):
        if not CUDA:
            continue
        fuser = make_fuser(dtype).use_cuda_graphs(max_shapes=4)
        for size, (a, b) in inputs.items():
            bench(name, size, lambda f=fuser, a=a, b=b: f.fuse_tensor(a, b), slow=True)
        del fuser
        empty_cache()

    # ---------------------------------------------------------------- end-to-end checks (host pipeline)
    checks: dict[str, Any] = {}
    try:
        import numpy as np

        from emmafuse.samples import synthetic_pair

        fuser = make_fuser("float32")
        set_tf32(False)
        ph, pw = (480, 640) if CUDA else (48, 64)
        pairs = [synthetic_pair(ph, pw, seed=s) for s in range(12)]
        t = time.perf_counter()
        fused = fuser.fuse([p[0] for p in pairs], [p[1] for p in pairs], batch_size=4)
        sync()
        checks["list_of_12_pairs_s"] = time.perf_counter() - t
        one = fuser.fuse(pairs[5][0], pairs[5][1])
        checks["list_vs_single_max_abs_uint8"] = int(np.abs(fused[5].astype(int) - one).max())
        ir, vis = synthetic_pair(*((1080, 1920) if CUDA else (108, 192)), seed=3)
        irf, visf = ir.astype(np.float32) / 255, (vis.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255
        whole = fuser.fuse(irf, visf)
        t = time.perf_counter()
        tiled = fuser.fuse(irf, visf, tile=512 if CUDA else 64, tile_overlap=64 if CUDA else 16)
        sync()
        checks["tiled_1920x1080_tile512_s"] = time.perf_counter() - t
        d = np.abs(tiled - whole) * 255
        checks["tiled_vs_whole_1920x1080_mean_levels"] = float(d.mean())
        checks["tiled_vs_whole_1920x1080_max_levels"] = float(d.max())
        cpu_fuser = Fuser(fuser.model, device="cpu")
        crop_ir, crop_vis = irf[:96, :160], visf[:96, :160]
        gpu_tiles = Fuser(make_fuser("float32").model, device=dev).fuse(crop_ir, crop_vis, tile=64, tile_overlap=16)
        cpu_tiles = cpu_fuser.fuse(crop_ir, crop_vis, tile=64, tile_overlap=16)
        checks["tiled_cuda_vs_tiled_cpu_max_abs"] = float(np.abs(gpu_tiles - cpu_tiles).max())
        plan = fuser.tile_plan(4320, 7680)
        checks["auto_plan_8k_on_this_gpu"] = "whole image" if plan is None else f"{len(plan.ys)}x{len(plan.xs)} tiles of {plan.tile_h}x{plan.tile_w}"
        set_tf32(True)
        del fuser, cpu_fuser
    except Exception as exc:  # noqa: BLE001 - report and go on
        traceback.print_exc()
        checks["error"] = f"{type(exc).__name__}: {exc}"[:300]
    print(json.dumps(checks), flush=True)
    empty_cache()

    # ---------------------------------------------------------------- ours, torch.compile (slow start)
    if args.compile and CUDA:
        try:
            fuser = make_fuser("float16").compile(dynamic=False)
            for size in ("640x480", f"640x480 x{args.batch}"):
                a, b = inputs[size]
                bench("ours fp16 + compile", size, lambda f=fuser, a=a, b=b: f.fuse_tensor(a, b), slow=True)
            del fuser
        except Exception as exc:  # noqa: BLE001 - report and go on
            traceback.print_exc()
            rows.append({"variant": "ours fp16 + compile", "size": "-", "error": f"{type(exc).__name__}: {exc}"[:300]})

    # ---------------------------------------------------------------- report
    info["total_s"] = elapsed()
    result = {"info": info, "rows": rows, "checks": checks}
    (out_dir / "bench_gpu.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"GPU benchmark: {info['device']}, torch {info['torch']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}), {info['date']}",
        f"command: {info['command']}",
        "",
        "| variant | size | ms (median) | ms/image | images/s | max abs vs fp32 ref | peak MiB | first call s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "ms" in r:
            ok = "" if r["within_1_255"] else " (> 1/255!)"
            lines.append(
                f"| {r['variant']} | {r['size']} | {r['ms']:.2f} | {r['ms_per_image']:.2f} | {r['images_per_s']:.0f} | "
                f"{r['max_abs_vs_ref']:.1e}{ok} | {r['peak_mib']:.0f} | {r['first_call_s']:.1f} |"
            )
        else:
            lines.append(f"| {r['variant']} | {r['size']} | {r.get('error') or r.get('skipped')} | | | | | |")
    lines += ["", "checks: " + json.dumps(checks), f"total {info['total_s']:.0f} s"]
    (out_dir / "bench_gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
