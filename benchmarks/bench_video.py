"""Video fusion on the real M3SVD clips (640x480): speed of ``Fuser.fuse_video`` and temporal stability.

**Speed** (``--frames`` pairs of clip 1230_1202, 22 fps). Fused frames per second, wall clock,
for:

- *plain loop*: what a user would write without emmafuse's video support: decode a pair, fuse
  it (``Fuser.fuse``), encode it, repeat (PyAV through ``emmafuse.video``'s reader and writer);
- ``fuse_video(overlap=False)``: the same steps in one thread, through the library;
- ``fuse_video`` with only the decoding thread, with only the encoding thread;
- ``fuse_video`` (default): decoding and encoding threads around the fusion.

The same runs are repeated with the network replaced by a pass-through (the visible frame is
the "fused" one), which shows what overlapping buys when fusing is fast (a GPU) and decoding
and encoding are the bottleneck; and decoding and encoding alone are timed per frame.

**Temporal stability** (``--temporal-frames`` pairs of each clip). The frame-to-frame mean
absolute difference (MAD) of the luminance, in 8-bit levels, of each source, of the fused
frames (``output_range="clamp"``, the default) as fused and as written (H.264, crf 18), and of
the fused luminance stretched per frame by its own min and max (what ``"minmax"`` would do, the
reason video refuses it); plus the mean jump of the frame's mean luminance from one frame to
the next (global flicker).

Usage (the numbers in docs/performance.md were made on a busy 2-core machine, one thread)::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_video.py --threads 1
    python benchmarks/bench_video.py --frames 20 --temporal-frames 60 --weights W --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "video" / "M3SVD"
CLIPS = ("0111_1716", "1230_1202")


def luma(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) if x.ndim == 2 else x @ np.array([0.299, 0.587, 0.114])


def read_pairs(ir: Path, vis: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from emmafuse.video import VideoReader, probe_video

    pairs = []
    with VideoReader(probe_video(ir)) as a, VideoReader(probe_video(vis)) as b:
        for _ in range(n):
            x, y = a.read(), b.read()
            if x is None or y is None:
                break
            pairs.append((x, y))
    return pairs


# ----------------------------------------------------------------------------- speed
def plain_loop(fuse_one: Callable[[Any, Any], Any], ir: Path, vis: Path, out: Path, n: int) -> int:
    """Decode a pair, fuse, encode, repeat: no threads, no emmafuse video pipeline."""
    from emmafuse.video import VideoReader, VideoWriter, pick_encoder, probe_video

    a_info, b_info = probe_video(ir), probe_video(vis)
    encoder = pick_encoder(None, b_info.width, b_info.height, b_info.fps)
    writer = VideoWriter(
        out, container_format="mp4", width=b_info.width, height=b_info.height, fps=b_info.fps, encoder=encoder
    )
    with VideoReader(a_info) as a, VideoReader(b_info) as b:
        for _ in range(n):
            x, y = a.read(), b.read()
            if x is None or y is None:
                break
            writer.write(fuse_one(x, y))
    writer.finish()
    writer.close()
    return writer.frames


def library_run(fuse_many: Callable[[list[Any], list[Any]], list[Any]], ir: Path, vis: Path, out: Path, n: int, read_ahead: bool, write_behind: bool) -> int:
    from emmafuse.video_job import prepare_video_job, run_video_job

    job = prepare_video_job(ir, vis, out, frames=n)
    return run_video_job(job, fuse_many, read_ahead=read_ahead, write_behind=write_behind).frames


def counted(name: str, run: Callable[[], int], frames: int) -> Callable[[], None]:
    """``run`` as a timing variant that checks it wrote ``frames`` frames."""

    def go() -> None:
        written = run()
        assert written == frames, (name, written)

    return go


def speed(fuser: Any, ir: Path, vis: Path, n: int, n_io: int, repeats: int, tmp: Path) -> dict[str, Any]:
    out = tmp / "speed.mp4"

    def fuse_one(x: Any, y: Any) -> Any:
        return fuser.fuse(x, y)

    def fuse_many(xs: list[Any], ys: list[Any]) -> list[Any]:
        return fuser.fuse(xs, ys)

    def passthrough_one(x: Any, y: Any) -> Any:
        return y

    def passthrough_many(xs: list[Any], ys: list[Any]) -> list[Any]:
        return list(ys)

    variants: list[tuple[str, Callable[[Callable[..., Any], Callable[..., Any], int], int]]] = [
        ("plain loop (decode, fuse, encode, repeat)", lambda one, many, k: plain_loop(one, ir, vis, out, k)),
        ("fuse_video(overlap=False)", lambda one, many, k: library_run(many, ir, vis, out, k, False, False)),
        ("fuse_video, decode thread only", lambda one, many, k: library_run(many, ir, vis, out, k, True, False)),
        ("fuse_video, encode thread only", lambda one, many, k: library_run(many, ir, vis, out, k, False, True)),
        ("fuse_video (default: both threads)", lambda one, many, k: library_run(many, ir, vis, out, k, True, True)),
    ]
    fuser.fuse(*read_pairs(ir, vis, 1)[0])  # warm-up: the network, then every variant's first-use costs
    for _, run in variants:
        run(passthrough_one, passthrough_many, 2)
    from emmafuse.bench import time_interleaved

    results: dict[str, Any] = {}
    for label, one, many, k in [("network", fuse_one, fuse_many, n), ("pass-through", passthrough_one, passthrough_many, n_io)]:
        runs = {name: counted(name, lambda run=run: run(one, many, k), k) for name, run in variants}
        timings = time_interleaved(runs, repeats=repeats)  # interleaved: a load change hits every variant alike
        rows = {}
        base = timings[variants[0][0]].median_wall
        for name, _ in variants:
            wall, cpu = timings[name].median_wall, timings[name].median_cpu
            rows[name] = {"frames": k, "wall_s": wall, "cpu_s": cpu, "fps": k / wall, "vs_plain": base / wall}
        results[label] = rows

    # decoding and encoding alone, per frame
    pairs_t0 = time.perf_counter()
    pairs = read_pairs(ir, vis, n_io)
    decode_ms = (time.perf_counter() - pairs_t0) / len(pairs) * 1000
    from emmafuse.video import VideoWriter, pick_encoder, probe_video

    h, w = pairs[0][1].shape[:2]
    fps = probe_video(vis).fps
    enc_t0 = time.perf_counter()
    writer = VideoWriter(out, container_format="mp4", width=w, height=h, fps=fps, encoder=pick_encoder(None, w, h, fps))
    for _, y in pairs:
        writer.write(y)
    writer.finish()
    writer.close()
    encode_ms = (time.perf_counter() - enc_t0) / len(pairs) * 1000
    fuse_t0 = time.perf_counter()
    for x, y in pairs[:3]:
        fuser.fuse(x, y)
    fuse_ms = (time.perf_counter() - fuse_t0) / 3 * 1000
    results["per_frame_ms"] = {"decode_pair": decode_ms, "encode": encode_ms, "fuse": fuse_ms}
    return results


# ----------------------------------------------------------------------------- temporal stability
def temporal(fuser: Any, ir: Path, vis: Path, n: int, tmp: Path) -> dict[str, Any]:
    from emmafuse.video import VideoReader, VideoWriter, probe_video

    pairs = read_pairs(ir, vis, n)
    fused = list(fuser.fuse_frames([p[0] for p in pairs], [p[1] for p in pairs]))
    h, w = fused[0].shape[:2]
    info = probe_video(vis)
    out = tmp / "temporal.mp4"
    writer = VideoWriter(out, container_format="mp4", width=w, height=h, fps=info.fps, encoder="libx264")
    for f in fused:
        writer.write(f)
    writer.finish()
    writer.close()
    with VideoReader(probe_video(out)) as reader:
        written: list[np.ndarray] = []
        while (frame := reader.read()) is not None:
            written.append(frame)

    def stretch(y: np.ndarray) -> np.ndarray:
        lo, hi = y.min(), y.max()
        return (y - lo) / (hi - lo) * 255.0 if hi > lo else y

    series = {
        "infrared": [luma(p[0]) for p in pairs],
        "visible (luminance)": [luma(p[1]) for p in pairs],
        "fused, clamp (as fused)": [luma(f) for f in fused],
        "fused, clamp (as written, H.264 crf 18)": [luma(f) for f in written],
        "fused, per-frame min-max stretch": [stretch(luma(f)) for f in fused],
    }
    rows = {}
    for name, frames in series.items():
        diffs = [float(np.abs(b - a).mean()) for a, b in zip(frames, frames[1:])]
        means = [float(f.mean()) for f in frames]
        rows[name] = {
            "mad": float(np.mean(diffs)),
            "mad_max": float(np.max(diffs)),
            "mean_jump": float(np.mean(np.abs(np.diff(means)))),
        }
    codec = [float(np.abs(luma(a) - luma(b)).mean()) for a, b in zip(fused, written)]
    return {"frames": len(pairs), "rows": rows, "codec_loss_luma": float(np.mean(codec))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with infrared/ and visible/ clips")
    parser.add_argument("--weights", default=None, help="weights (default: the built-in model)")
    parser.add_argument("--frames", type=int, default=20, help="frame pairs per speed run (default 20)")
    parser.add_argument("--io-frames", type=int, default=60, help="frame pairs per pass-through run (default 60)")
    parser.add_argument("--temporal-frames", type=int, default=60, help="frame pairs of each clip (default 60)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds of the speed runs (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-temporal", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import emmafuse

    if args.threads:
        torch.set_num_threads(args.threads)
    clips = {c: (args.data / "infrared" / f"{c}.mp4", args.data / "visible" / f"{c}.mp4") for c in CLIPS}
    missing = [str(p) for pair in clips.values() for p in pair if not p.exists()]
    if missing:
        print(f"missing clips: {', '.join(missing)}", file=sys.stderr)
        return 2
    fuser = emmafuse.load(args.weights, device="cpu")
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        "weights": repr(fuser),
    }
    print(f"{report['machine']}; {fuser}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_speed:
            ir, vis = clips["1230_1202"]
            sp = speed(fuser, ir, vis, args.frames, args.io_frames, args.repeats, tmp)
            report["speed"] = sp
            for label in ("network", "pass-through"):
                print(f"\nspeed, 640x480 clip 1230_1202, {label} fusion ({args.repeats} round(s), median)")
                print("| run | frames | wall s | fused frames/s | vs plain loop | process CPU s |")
                print("|---|---|---|---|---|---|")
                for name, r in sp[label].items():
                    print(f"| {name} | {r['frames']} | {r['wall_s']:.2f} | {r['fps']:.2f} | {r['vs_plain']:.3f}x | {r['cpu_s']:.2f} |")
            ms = sp["per_frame_ms"]
            print(f"\nper frame: decode a pair {ms['decode_pair']:.1f} ms, encode {ms['encode']:.1f} ms, fuse {ms['fuse']:.0f} ms")
        if not args.skip_temporal:
            report["temporal"] = {}
            for clip, (ir, vis) in clips.items():
                t = temporal(fuser, ir, vis, args.temporal_frames, tmp)
                report["temporal"][clip] = t
                rows = t["rows"]
                print(f"\ntemporal stability, clip {clip}, first {t['frames']} frames (luminance, 8-bit levels)")
                print("| frames | frame-to-frame MAD | max | vs infrared | vs visible | mean jump of the frame mean |")
                print("|---|---|---|---|---|---|")
                ir_mad, vis_mad = rows["infrared"]["mad"], rows["visible (luminance)"]["mad"]
                for name, r in rows.items():
                    print(
                        f"| {name} | {r['mad']:.2f} | {r['mad_max']:.2f} | {r['mad'] / ir_mad:.2f} | "
                        f"{r['mad'] / vis_mad:.2f} | {r['mean_jump']:.2f} |"
                    )
                print(f"codec loss of the written video: mean |written - fused| = {t['codec_loss_luma']:.2f} levels (luminance)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
