"""Video files for fusion: probing, decoding, pairing and encoding, with PyAV (the ``video`` extra).

This module only reads and writes; :mod:`emmafuse.video_job` runs a file-to-file fusion with
it and :mod:`emmafuse.frames` fuses the frame stream.

- **Reading.** A video is decoded to ``uint8`` frames, ``(H, W)`` when the stream is gray and
  ``(H, W, 3)`` RGB otherwise. A stream is gray when its pixel format is gray, or when the
  chroma planes of its first frame are neutral within :data:`GRAY_CHROMA_TOLERANCE` levels
  (infrared cameras and encoders store gray video as YUV with chroma 127 or 128); the decision
  is made once per stream, so a video never switches between gray and colour. Gray frames are
  the luma plane (full range); colour frames are converted by FFmpeg (BT.601).
- **Pairing.** Frames are paired by index. Two videos must have the same frame size and frame
  rates within :data:`FPS_TOLERANCE` (1 %). When one stream ends first, the common length is
  fused and :class:`PairingReport` says how many frames of the other were dropped.
- **Errors.** A file that cannot be opened, or a frame that cannot be decoded, raises
  :class:`~emmafuse.errors.VideoReadError` naming the file and the frame index; so does a
  stream that ends before the frame count its header declares (a truncated file).
- **Writing.** H.264 (``libx264``, else another H.264 encoder of the FFmpeg build) or, when
  none works, MPEG-4 part 2, in ``yuv420p`` at the given frame rate; odd frame sizes are
  padded by one replicated row or column (``yuv420p`` needs even sides).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from emmafuse.errors import VideoError, VideoReadError, import_extra
from emmafuse.outputs import OutputError, check_output_file

if TYPE_CHECKING:
    import av.video.frame

__all__ = [
    "DEFAULT_CRF",
    "FPS_TOLERANCE",
    "GRAY_CHROMA_TOLERANCE",
    "VIDEO_FORMATS",
    "PairingReport",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "check_pair",
    "check_video_output",
    "paired_frames",
    "pick_encoder",
    "probe_video",
    "require_av",
    "side_by_side",
]

#: Output suffixes and the FFmpeg container format each one is written in.
VIDEO_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".avi": "avi", ".mov": "mov"}
#: Two frame rates may differ by this share of the larger one (pairing by index would drift).
FPS_TOLERANCE = 0.01
#: A YUV stream whose first frame's chroma is within this many levels (of 255) of neutral is gray.
GRAY_CHROMA_TOLERANCE = 3
#: Default output quality: the H.264 constant rate factor (0 lossless .. 51 worst).
DEFAULT_CRF = 18
#: Encoders tried in order when none is named: H.264 (x264, else the build's own), then MPEG-4 part 2.
_ENCODERS = ("libx264", "h264", "mpeg4")
_CRF_ENCODERS = ("libx264", "libx265")


def require_av() -> None:
    """Check that PyAV is importable.

    Raises:
        MissingExtraError: naming the extra to install (``pip install 'emmafuse[video]'``).
    """
    import_extra("av", extra="video", purpose="video (PyAV)")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).rstrip(".")


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found in one input video."""

    path: Path
    role: str  # "infrared video", "visible video": how messages name it
    width: int
    height: int
    fps: Fraction
    frames: int | None  # the count its header declares; None when the container records none
    gray: bool  # decoded as (H, W) gray frames, else (H, W, 3) RGB
    codec: str

    @property
    def name(self) -> str:
        return f"{self.role} {self.path}"


def _is_gray(frame: av.video.frame.VideoFrame) -> bool:
    name = frame.format.name
    if name.startswith(("gray", "ya", "mono")):
        return True
    yuv = frame.to_ndarray(format="yuv444p")  # (3, H, W): Y, U, V at 8 bits
    deviation = np.abs(yuv[1:].astype(np.int16) - 128).max()
    return bool(deviation <= GRAY_CHROMA_TOLERANCE)


def probe_video(path: str | os.PathLike[str], role: str = "video") -> VideoInfo:
    """Open a video, read its stream parameters and decode its first frame.

    Raises:
        MissingExtraError: PyAV is not installed.
        VideoReadError: the file is missing, is not a video, has no video stream, no frame rate
            or no decodable first frame.
    """
    require_av()
    import av

    p = Path(path)
    if not p.is_file():
        why = "no such file" if not p.exists() else "not a file"
        raise VideoReadError(f"cannot read {role} {p}: {why}", path=str(p))
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise VideoReadError(f"cannot read {role} {p}: {_reason(exc)} (not a video, or a damaged one)", path=str(p)) from exc
    with container:
        if not container.streams.video:
            raise VideoReadError(f"cannot read {role} {p}: it has no video stream", path=str(p))
        stream = container.streams.video[0]
        fps = stream.guessed_rate or stream.average_rate or stream.base_rate
        if not fps or fps <= 0:
            raise VideoReadError(f"cannot read {role} {p}: its video stream has no frame rate", path=str(p))
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoReadError(
                f"{role} {p}: cannot decode frame 0 ({_reason(exc)}); the file is corrupt or truncated", path=str(p), frame=0
            ) from exc
        if first is None:
            raise VideoReadError(f"{role} {p} has no frames", path=str(p), frame=0)
        return VideoInfo(
            path=p,
            role=role,
            width=first.width,
            height=first.height,
            fps=Fraction(fps),
            frames=stream.frames or None,
            gray=_is_gray(first),
            codec=stream.codec_context.name,
        )


def _fps_text(fps: Fraction) -> str:
    return str(fps.numerator) if fps.denominator == 1 else f"{float(fps):.3f}"


def check_pair(ir: VideoInfo, vis: VideoInfo) -> None:
    """Refuse two videos that cannot be paired frame by frame.

    Raises:
        VideoError: the frame sizes differ, or the frame rates differ by more than 1 %.
    """
    if (ir.width, ir.height) != (vis.width, vis.height):
        raise VideoError(
            f"the videos must have the same frame size (registered streams): {ir.name} is "
            f"{ir.width}x{ir.height}, {vis.name} is {vis.width}x{vis.height}"
        )
    if abs(ir.fps - vis.fps) > FPS_TOLERANCE * max(ir.fps, vis.fps):
        raise VideoError(
            f"the frame rates differ by more than 1 %: {ir.name} has {_fps_text(ir.fps)} fps, {vis.name} "
            f"{_fps_text(vis.fps)} fps (frames are paired by index, so the streams would drift apart)"
        )


def check_video_output(
    path: str | os.PathLike[str], inputs: tuple[str | os.PathLike[str], ...] = (), *, overwrite: bool = True
) -> tuple[Path, str]:
    """Check an output video path before any work: a known suffix, not an input, writable,
    existing only with ``overwrite``. Returns the path and its FFmpeg container format.

    Raises:
        OutputError: one line saying what is wrong.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"output {target} is a folder; give a video file name (.mp4, .mkv, .avi or .mov)")
    suffix = target.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        known = ", ".join(VIDEO_FORMATS)
        shown = f"suffix {target.suffix!r}" if target.suffix else "no suffix"
        raise OutputError(f"output {target} has {shown}; a video output needs one of {known}")
    check_output_file(target, inputs, overwrite=overwrite)
    return target, VIDEO_FORMATS[suffix]


class VideoReader:
    """The frames of one probed video, decoded to ``uint8`` arrays (see the module docstring).

    ``index`` counts the frames decoded so far (the index of the next one). Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, info: VideoInfo) -> None:
        require_av()
        import av

        self.info = info
        self.index = 0
        try:
            self._container = av.open(str(info.path))
        except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
            raise VideoReadError(f"cannot read {info.name}: {_reason(exc)}", path=str(info.path)) from exc
        self._frames = self._container.decode(self._container.streams.video[0])
        self._errors: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _error(self, text: str) -> VideoReadError:
        return VideoReadError(f"{self.info.name}: {text}", path=str(self.info.path), frame=self.index)

    def _next_frame(self) -> av.video.frame.VideoFrame | None:
        try:
            frame = next(self._frames)
        except StopIteration:
            declared = self.info.frames
            if declared is not None and self.index < declared:
                raise self._error(
                    f"the stream ends at frame {self.index} but its header declares {declared} frames; "
                    "the file is truncated or corrupt"
                ) from None
            return None
        except self._errors as exc:
            raise self._error(f"cannot decode frame {self.index} ({_reason(exc)}); the file is corrupt or truncated") from exc
        if (frame.width, frame.height) != (self.info.width, self.info.height):
            raise self._error(
                f"frame {self.index} is {frame.width}x{frame.height}, the stream started at "
                f"{self.info.width}x{self.info.height}; a video whose size changes cannot be fused"
            )
        self.index += 1
        return frame

    def read(self) -> np.ndarray | None:
        """The next frame, ``(H, W)`` gray or ``(H, W, 3)`` RGB ``uint8``; ``None`` at the end."""
        frame = self._next_frame()
        if frame is None:
            return None
        return frame.to_ndarray(format="gray" if self.info.gray else "rgb24")

    def skip(self, count: int | None) -> int:
        """Decode (without converting) and drop up to ``count`` frames (``None``: all that are
        left); returns how many there were."""
        done = 0
        while (count is None or done < count) and self._next_frame() is not None:
            done += 1
        return done


@dataclass
class PairingReport:
    """What :func:`paired_frames` found out while pairing (read it once the frames are used)."""

    pairs: int = 0  # frame pairs given out
    dropped: int = 0  # frames of the longer video left unpaired (0 when the counts agree)
    note: str | None = None  # the warning to show when frames were dropped


def paired_frames(
    ir: VideoInfo, vis: VideoInfo, *, start: int = 0, frames: int | None = None, report: PairingReport | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decoded ``(ir, vis)`` frame pairs by index, from frame ``start``, at most ``frames`` pairs.

    When one video ends first the pairs stop there; the frames of the other that are left (up
    to the ``frames`` limit) are counted into ``report``. The files are opened when iteration
    starts and closed when it ends or the generator is closed, in the iterating thread.

    Raises:
        VideoError: ``start`` is at or past the end of a video.
        VideoReadError: a frame cannot be decoded, or a stream is truncated.
    """
    report = report if report is not None else PairingReport()
    with VideoReader(ir) as a, VideoReader(vis) as b:
        for reader in (a, b):
            if reader.skip(start) < start:
                raise VideoError(f"start {start} is past the end of {reader.info.name}: it has {reader.index} frames")
        while frames is None or report.pairs < frames:
            x, y = a.read(), b.read()
            if x is not None and y is not None:
                report.pairs += 1
                yield x, y
                continue
            if x is None and y is None:
                break
            ended, other = (a, b) if x is None else (b, a)
            if report.pairs == 0:
                raise VideoError(f"start {start} is past the end of {ended.info.name}: it has {ended.index} frames")
            left = None if frames is None else frames - report.pairs - 1
            damaged = ""
            try:
                other.skip(left)
            except VideoReadError as exc:  # the frames that matter were read; say so, don't fail
                damaged = f" (after that it cannot be decoded: {exc})"
            report.dropped = other.index - start - report.pairs
            more = damaged or (frames is not None and other.index >= start + frames)
            total = f"at least {other.index}" if more else f"{other.index}"
            report.note = (
                f"frame counts differ: {ended.info.name} has {ended.index} frames and {other.info.name} has {total}; "
                f"fused the {report.pairs} common frame pairs and dropped {report.dropped} frame(s) of "
                f"{other.info.name}{damaged}"
            )
            break


def pick_encoder(codec: str | None, width: int, height: int, fps: Fraction) -> str:
    """The encoder to write with: ``codec`` when given, else H.264 when one opens, else MPEG-4
    part 2. Each candidate is opened once at the output size to be sure it works.

    Raises:
        VideoError: ``codec`` (or, without it, every candidate) cannot encode here.
    """
    require_av()
    import av

    failures = []
    for name in (codec,) if codec else _ENCODERS:
        try:
            context = av.CodecContext.create(name, "w")
            assert isinstance(context, av.VideoCodecContext)
            context.width, context.height = width + width % 2, height + height % 2
            context.pix_fmt = "yuv420p"
            context.time_base = 1 / fps
            context.open()
            return context.name
        except (av.FFmpegError, ValueError, AssertionError, OSError) as exc:
            failures.append(f"{name}: {_reason(exc)}")
    raise VideoError(f"no video encoder works in this PyAV build ({'; '.join(failures)})")


def _quality_options(encoder: str, crf: int) -> dict[str, str]:
    """Encoder options for a constant-quality ``crf`` (H.264's scale, 0 lossless .. 51 worst)."""
    if encoder in _CRF_ENCODERS:
        return {"crf": str(crf)}
    if encoder == "mpeg4":
        # H.264's quantiser step is 0.625 * 2^(QP/6); MPEG-4 part 2's is 2 * q
        q = min(31, max(1, round(0.3125 * 2 ** (crf / 6))))
        return {"qmin": str(q), "qmax": str(q)}
    return {}  # other encoders: their defaults


def _even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    pad = ((0, h % 2), (0, w % 2)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, pad, mode="edge")


class VideoWriter:
    """Encodes ``uint8`` frames (``(H, W)`` gray or ``(H, W, 3)`` RGB) into ``path`` as ``yuv420p``.

    ``container_format`` is the FFmpeg format (``"mp4"``...; the file name may be a temporary
    one without the suffix). Call :meth:`finish` after the last frame to flush the encoder, and
    :meth:`close` in every case.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        container_format: str,
        width: int,
        height: int,
        fps: Fraction,
        encoder: str,
        crf: int = DEFAULT_CRF,
    ) -> None:
        require_av()
        import av

        self.width, self.height = width, height
        self.frames = 0
        self._container = av.open(str(path), "w", format=container_format)
        try:
            stream = self._container.add_stream(encoder, rate=fps, options=_quality_options(encoder, crf))
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv420p"
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self._frame_type = av.VideoFrame

    def write(self, image: np.ndarray) -> None:
        """Encode one frame (its size must be the writer's)."""
        if image.shape[:2] != (self.height, self.width) or image.dtype != np.uint8:
            raise VideoError(
                f"frame {self.frames} is {image.shape} {image.dtype}; the video is {self.height}x{self.width} uint8"
            )
        frame = self._frame_type.from_ndarray(
            np.ascontiguousarray(_even(image)), format="gray" if image.ndim == 2 else "rgb24"
        )
        frame.pts = self.frames
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def finish(self) -> None:
        """Flush the frames the encoder still holds."""
        self._container.mux(self._stream.encode(None))

    def close(self) -> None:
        self._container.close()


def side_by_side(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """``ir | vis | fused`` in one frame, RGB when any of them is colour."""
    parts = [ir, vis, fused]
    if any(p.ndim == 3 for p in parts):
        parts = [p if p.ndim == 3 else np.repeat(p[..., None], 3, axis=-1) for p in parts]
    return np.concatenate(parts, axis=1)
