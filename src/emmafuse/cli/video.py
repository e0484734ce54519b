"""``emmafuse video IR_VIDEO VIS_VIDEO -o OUT.mp4``: fuse two registered videos frame by frame.

Needs the ``video`` extra (PyAV); without it the command says what to install (exit code 2).
Everything is checked before the weights are loaded (:func:`emmafuse.video_job.prepare_video_job`):
the output (suffix, not an input, writable, ``--no-overwrite``), both inputs, frame sizes and
frame rates; each problem is one line with exit code 2. The work is
:meth:`emmafuse.Fuser.fuse_video`.
"""

from __future__ import annotations

import argparse
from typing import Any

from emmafuse.cli._common import (
    CliError,
    add_overwrite_option,
    add_quiet_option,
    add_runtime_options,
    add_tile_options,
    fuse_kwargs,
    load_fuser,
)

__all__ = ["add_video_command"]


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _cmd_video(args: argparse.Namespace) -> int:
    from emmafuse.video_job import prepare_video_job

    kwargs = fuse_kwargs(args)  # --tile / --tile-overlap checked here
    options = {
        "frames": args.frames,
        "start": args.start,
        "side_by_side": args.side_by_side,
        "crf": args.crf,
        "overwrite": args.overwrite,
        "output_range": kwargs.pop("output_range"),
    }
    # before loading weights or decoding more than one frame; without PyAV the error names the
    # extra to install (pip install 'emmafuse[video]'); every library error is one line
    prepare_video_job(args.ir, args.vis, args.output, **options)
    fuser = load_fuser(args)
    try:
        result = fuser.fuse_video(args.ir, args.vis, args.output, **options, **kwargs, progress=not args.quiet)
    except OSError as exc:  # the folder changed since the check (disk full, removed)
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    fps = result.fps
    rate = str(fps.numerator) if fps.denominator == 1 else f"{float(fps):.3f}"
    print(f"wrote {result.path}: {result.frames} frames, {result.width}x{result.height} at {rate} fps ({result.encoder})")
    return 0


def add_video_command(sub: Any) -> None:
    p = sub.add_parser(
        "video",
        help="fuse two registered videos frame by frame (pip install 'emmafuse[video]')",
        description="Fuse a registered infrared and visible video frame by frame into one video (H.264, "
        "else MPEG-4 part 2; yuv420p; the input frame rate). Frames are paired by index.",
    )
    p.add_argument("ir", metavar="IR_VIDEO", help="infrared video")
    p.add_argument("vis", metavar="VIS_VIDEO", help="visible video (a colour video keeps its colour)")
    p.add_argument("-o", "--output", required=True, help="output video: .mp4, .mkv, .avi or .mov")
    p.add_argument("--frames", type=_count(1), default=None, metavar="N", help="fuse only the first N frame pairs")
    p.add_argument("--start", type=_count(0), default=0, metavar="K", help="skip the first K frames of both videos")
    p.add_argument(
        "--side-by-side", action="store_true", help="write infrared | visible | fused side by side (a quick look)"
    )
    p.add_argument(
        "--crf",
        type=_count(0),
        default=18,
        metavar="Q",
        help="output quality, H.264 constant rate factor: 0 lossless .. 51 worst (default 18, close to "
        "visually lossless; mapped to a fixed quantiser for MPEG-4)",
    )
    add_overwrite_option(p)
    add_quiet_option(p)
    add_runtime_options(p)
    add_tile_options(p)
    p.set_defaults(func=_cmd_video)
