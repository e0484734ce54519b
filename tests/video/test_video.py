"""Video fusion (issue 19): ``Fuser.fuse_video`` and ``emmafuse video`` on small videos made here
with PyAV (64x48, 8 frames, a moving pattern), so nothing of ../shared is needed."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from emmafuse.cli import main  # noqa: E402
from emmafuse.errors import VideoError, VideoReadError  # noqa: E402
from emmafuse.outputs import OutputError  # noqa: E402
from emmafuse.video import VideoInfo, VideoReader, check_pair, probe_video  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

W, H, N = 64, 48, 8


def pattern(i: int, w: int = W, h: int = H, color: bool = False) -> np.ndarray:
    """Frame ``i`` of a moving pattern: soft stripes drifting right, a square drifting down."""
    yy, xx = np.mgrid[0:h, 0:w]
    gray = (np.sin((xx + 3 * i) / 5.0) * 0.5 + 0.5) * 150 + 40
    gray[(yy - 2 * i) % h < h // 4] += 50
    g = gray.clip(0, 255).astype(np.uint8)
    if not color:
        return g
    return np.stack([g, ((yy * 5 + 10 * i) % 200 + 30).astype(np.uint8), np.full_like(g, 90)], -1)


def make_video(
    path: Path,
    n: int = N,
    *,
    w: int = W,
    h: int = H,
    fps: Fraction | int = 10,
    color: bool = False,
    codec: str = "libx264",
    container_options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    with av.open(str(path), "w", options=container_options or {}) as c:
        stream = c.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "10"}
        for i in range(n):
            img = pattern(i, w, h, color)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24" if color else "gray")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def decode(path: Path) -> tuple[list[np.ndarray], Fraction, tuple[int, int]]:
    """All frames of a written video, gray or RGB as the reader sees them, its rate and size."""
    info = probe_video(path)
    with VideoReader(info) as reader:
        frames = []
        while (frame := reader.read()) is not None:
            frames.append(frame)
    return frames, info.fps, (info.width, info.height)


def input_pairs(ir: Path, vis: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(zip(decode(ir)[0], decode(vis)[0]))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def luma(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) if x.ndim == 2 else x @ np.array([0.299, 0.587, 0.114])


def codec_close(got: np.ndarray, expected: np.ndarray) -> bool:
    """Equal within the loss of an H.264 / yuv420p round trip (range scaling, 4:2:0 chroma): a
    mean of under 2.5 gray levels in luminance and 4.5 levels per RGB channel (measured: ~1.5, ~3)."""
    return got.shape == expected.shape and mad(luma(got), luma(expected)) < 2.5 and mad(got, expected) < 4.5


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part") or p.name.startswith("."))


def emma_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("emmafuse-")]


@pytest.fixture()
def clips(tmp_path: Path) -> dict[str, Path]:
    return {
        "ir": make_video(tmp_path / "ir.mp4"),
        "vis": make_video(tmp_path / "vis.mp4", color=True),
        "vis_gray": make_video(tmp_path / "vis_gray.mp4"),
    }


# ----------------------------------------------------------------------------- API and CLI
def test_fuse_video_matches_fuse_and_keeps_colour(fuser, clips, tmp_path):
    out = tmp_path / "fused.mp4"
    result = fuser.fuse_video(clips["ir"], clips["vis"], out)
    assert (result.frames, result.width, result.height, result.fps, result.dropped) == (N, W, H, Fraction(10), 0)
    assert result.encoder == "libx264" and result.path == out
    frames, fps, size = decode(out)
    assert len(frames) == N and fps == 10 and size == (W, H)
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
    pairs = input_pairs(clips["ir"], clips["vis"])
    assert probe_video(clips["ir"]).gray and not probe_video(clips["vis"]).gray  # gray infrared read as gray
    for (ir, vis), got in zip(pairs, frames):
        expected = fuser.fuse(ir, vis)
        assert expected.shape == got.shape == (H, W, 3)
        assert codec_close(got, expected)
    # the chroma of the visible video is kept: the output is colour, close to the input's colour
    assert np.abs(frames[3][..., 0].astype(int) - frames[3][..., 2]).mean() > 20
    ycc_in = pairs[3][1].astype(float)
    assert abs((frames[3][..., 1].astype(float) - frames[3][..., 0]).mean() - (ycc_in[..., 1] - ycc_in[..., 0]).mean()) < 6
    assert leftovers(tmp_path) == [] and emma_threads() == []


def test_two_gray_videos_give_a_gray_video(fuser, clips, tmp_path):
    out = tmp_path / "gray.mkv"
    fuser.fuse_video(clips["ir"], clips["vis_gray"], out)
    info = probe_video(out)
    assert info.gray
    frames, _, _ = decode(out)
    for (ir, vis), got in zip(input_pairs(clips["ir"], clips["vis_gray"]), frames):
        assert got.shape == (H, W) and codec_close(got, fuser.fuse(ir, vis))


def test_frames_start_and_side_by_side(fuser, clips, tmp_path):
    out = tmp_path / "sbs.mov"
    result = fuser.fuse_video(clips["ir"], clips["vis"], out, frames=3, start=2, side_by_side=True, overwrite=False)
    assert result.frames == 3 and (result.width, result.height) == (3 * W, H)
    frames, _, size = decode(out)
    assert len(frames) == 3 and size == (3 * W, H)
    pairs = input_pairs(clips["ir"], clips["vis"])[2:5]
    for (ir, vis), got in zip(pairs, frames):
        assert codec_close(got[:, :W], np.repeat(ir[..., None], 3, -1))  # infrared | visible | fused
        assert codec_close(got[:, W : 2 * W], vis)
        assert codec_close(got[:, 2 * W :], fuser.fuse(ir, vis))


def test_cli_happy_path(clips, random_weights, tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    argv = ["video", str(clips["ir"]), str(clips["vis"]), "-o", str(out), "--weights", str(random_weights)]
    assert main([*argv, "--frames", "5", "--start", "1", "--device", "cpu", "--tile", "32", "-q"]) == 0
    assert f"wrote {out}: 5 frames, {W}x{H} at 10 fps (libx264)" in capsys.readouterr().out
    assert len(decode(out)[0]) == 5
    assert main([*argv, "--side-by-side", "--crf", "30", "-q"]) == 0
    captured = capsys.readouterr()
    assert f"{N} frames, {3 * W}x{H} at 10 fps" in captured.out and captured.err == ""
    assert leftovers(tmp_path) == []


def test_crf_changes_quality_and_mpeg4_fallback(fuser, clips, tmp_path, monkeypatch):
    from emmafuse import video

    lossless = fuser.fuse_video(clips["ir"], clips["vis"], tmp_path / "q0.mp4", crf=0, frames=4)
    coarse = fuser.fuse_video(clips["ir"], clips["vis"], tmp_path / "q40.mp4", crf=40, frames=4)
    assert lossless.path.stat().st_size > coarse.path.stat().st_size
    monkeypatch.setattr(video, "_ENCODERS", ("no-such-encoder", "mpeg4"))
    result = fuser.fuse_video(clips["ir"], clips["vis"], tmp_path / "m4.avi", frames=4)
    assert result.encoder == "mpeg4"
    frames, fps, size = decode(result.path)
    assert len(frames) == 4 and fps == 10 and size == (W, H)
    pairs = input_pairs(clips["ir"], clips["vis"])[:4]
    assert all(mad(luma(got), luma(fuser.fuse(ir, vis))) < 3.0 for (ir, vis), got in zip(pairs, frames))
    with pytest.raises(VideoError, match="no-such-encoder"):
        fuser.fuse_video(clips["ir"], clips["vis"], tmp_path / "x.mp4", codec="no-such-encoder")


def test_odd_size_and_a_container_without_frame_count(fuser, tmp_path):
    # FFV1 in Matroska: odd sides and no frame count in the header
    ir = make_video(tmp_path / "ir.mkv", 5, w=33, h=25, codec="ffv1", pix_fmt="gray")
    vis = make_video(tmp_path / "vis.mkv", 5, w=33, h=25, codec="ffv1", pix_fmt="gray")
    assert probe_video(ir).frames is None
    result = fuser.fuse_video(ir, vis, tmp_path / "odd.mp4")
    assert result.frames == 5
    frames, _, size = decode(result.path)
    assert size == (34, 26) and len(frames) == 5  # yuv420p: one replicated row and column


# ----------------------------------------------------------------------------- pairing checks
def test_different_sizes_refused(fuser, clips, tmp_path, capsys, random_weights):
    big = make_video(tmp_path / "big.mp4", 3, w=80, h=48)
    out = tmp_path / "o.mp4"
    with pytest.raises(VideoError, match="64x48.*80x48"):
        fuser.fuse_video(clips["ir"], big, out)
    assert main(["video", str(clips["ir"]), str(big), "-o", str(out), "--weights", str(random_weights)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("emmafuse video: error: the videos must have the same frame size")
    assert not out.exists() and leftovers(tmp_path) == []


def test_frame_rates_differing_by_more_than_one_percent_refused(fuser, clips, tmp_path, capsys, random_weights):
    fast = make_video(tmp_path / "fast.mp4", 3, fps=12)
    with pytest.raises(VideoError, match="frame rates differ by more than 1 %.*10 fps.*12 fps"):
        fuser.fuse_video(clips["ir"], fast, tmp_path / "o.mp4")
    assert main(["video", str(clips["ir"]), str(fast), "-o", str(tmp_path / "o.mp4"), "--weights", str(random_weights)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "frame rates differ" in err
    base = probe_video(clips["ir"])

    def at(fps: Fraction) -> VideoInfo:
        return VideoInfo(base.path, base.role, base.width, base.height, fps, base.frames, base.gray, base.codec)

    check_pair(at(Fraction(30000, 1001)), at(Fraction(30)))  # 29.97 and 30: 0.1 %, paired
    check_pair(at(Fraction(25)), at(Fraction(2525, 100)))  # 1 %: still paired
    with pytest.raises(VideoError):
        check_pair(at(Fraction(25)), at(Fraction(2530, 100)))


def test_frame_count_mismatch_fuses_common_length_and_warns(fuser, clips, tmp_path, capsys, random_weights):
    short = make_video(tmp_path / "short.mp4", 6, color=True)
    with pytest.warns(UserWarning, match=r"has 6 frames.*has 8.*fused the 6 common frame pairs and dropped 2 frame\(s\) of infrared"):
        result = fuser.fuse_video(clips["ir"], short, tmp_path / "o.mp4")
    assert result.frames == 6 and result.dropped == 2 and len(decode(result.path)[0]) == 6
    with pytest.warns(UserWarning, match="dropped 1 frame"):  # only what --frames would have used
        assert fuser.fuse_video(short, clips["ir"], tmp_path / "o.mp4", frames=7).dropped == 1
    code = main(["video", str(short), str(clips["ir"]), "-o", str(tmp_path / "c.mp4"), "--weights", str(random_weights), "-q"])
    captured = capsys.readouterr()
    assert code == 0 and "6 frames" in captured.out
    assert "emmafuse: warning: frame counts differ" in captured.err and "dropped 2 frame(s) of visible video" in captured.err
    with pytest.raises(VideoError, match="start 6 is past the end"):
        fuser.fuse_video(clips["ir"], short, tmp_path / "o.mp4", start=6)


# ----------------------------------------------------------------------------- output safety
def test_output_checks_before_any_work(clips, tmp_path, capsys, random_weights, fuser):
    ir, vis = str(clips["ir"]), str(clips["vis"])
    before = clips["ir"].read_bytes()
    w = ["--weights", str(random_weights)]
    for out, message in [
        (ir, "is the input file"),
        (str(tmp_path / "fused.gif"), "needs one of .mp4, .mkv, .avi, .mov"),
        (str(tmp_path / "fused"), "no suffix"),
        (str(tmp_path), "is a folder"),
        (str(clips["vis"]) + "/x.mp4", "is a file, not a folder"),
    ]:
        assert main(["video", ir, vis, "-o", out, *w]) == 2, out
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert clips["ir"].read_bytes() == before
    with pytest.raises(OutputError, match="is the input file"):
        fuser.fuse_video(clips["ir"], clips["vis"], clips["vis"])
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    assert main(["video", ir, vis, "-o", str(existing), "--no-overwrite", *w]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    with pytest.raises(OutputError, match="exists"):
        fuser.fuse_video(ir, vis, existing, overwrite=False)
    assert main(["video", ir, vis, "-o", str(existing), "-q", *w]) == 0  # --overwrite is the default
    assert len(decode(existing)[0]) == N


def test_minmax_is_refused_for_video(fuser, clips, tmp_path, capsys, random_weights):
    with pytest.raises(VideoError, match="flicker"):
        fuser.fuse_video(clips["ir"], clips["vis"], tmp_path / "o.mp4", output_range="minmax")
    argv = ["video", str(clips["ir"]), str(clips["vis"]), "-o", str(tmp_path / "o.mp4"), "--weights", str(random_weights)]
    assert main([*argv, "--output-range", "minmax"]) == 2
    assert "flicker" in capsys.readouterr().err
    assert main([*argv, "--crf", "60"]) == 2
    assert "crf" in capsys.readouterr().err and not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_no_partial_file_after_an_exception_mid_stream(fuser, clips, tmp_path, monkeypatch, failure):
    calls = []
    real_fuse = fuser.fuse

    def failing_fuse(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise failure("stopped in the middle")
        return real_fuse(*args, **kwargs)

    monkeypatch.setattr(fuser, "fuse", failing_fuse)
    out = tmp_path / "fused.mp4"
    with pytest.raises(failure, match="stopped in the middle"):
        fuser.fuse_video(clips["ir"], clips["vis"], out)
    assert len(calls) == 4
    assert not out.exists() and leftovers(tmp_path) == [] and emma_threads() == []


def test_an_encoder_failure_leaves_nothing(fuser, clips, tmp_path, monkeypatch):
    from emmafuse.video import VideoWriter

    real_write = VideoWriter.write

    def failing_write(self, image):
        if self.frames == 3:
            raise OSError(28, "No space left on device")
        real_write(self, image)

    monkeypatch.setattr(VideoWriter, "write", failing_write)
    out = tmp_path / "fused.mp4"
    for overlap in (True, False):
        with pytest.raises(OSError, match="No space left"):
            fuser.fuse_video(clips["ir"], clips["vis"], out, overlap=overlap)
        assert not out.exists() and leftovers(tmp_path) == [] and emma_threads() == []


# ----------------------------------------------------------------------------- damaged inputs
def test_truncated_input_is_named_with_the_frame(fuser, clips, tmp_path, capsys, random_weights):
    whole = make_video(tmp_path / "whole.mp4", 30, color=True, container_options={"movflags": "faststart"})
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    ir = make_video(tmp_path / "ir30.mp4", 30)
    with pytest.raises(VideoReadError) as info:
        fuser.fuse_video(ir, cut, tmp_path / "o.mp4")
    assert info.value.path == str(cut) and info.value.frame is not None and 0 < info.value.frame < 30
    assert f"visible video {cut}" in str(info.value) and f"frame {info.value.frame}" in str(info.value)
    assert not (tmp_path / "o.mp4").exists() and leftovers(tmp_path) == [] and emma_threads() == []
    assert main(["video", str(ir), str(cut), "-o", str(tmp_path / "o.mp4"), "--weights", str(random_weights), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cut) in err and "frame" in err and "truncated" in err
    # damage after the frames that are used is not an error: the longer video's tail is dropped
    with pytest.warns(UserWarning, match=r"fused the 8 common frame pairs.*after that it cannot be decoded"):
        assert fuser.fuse_video(clips["ir"], cut, tmp_path / "o.mp4").frames == N


def test_unreadable_inputs_are_one_line_errors(clips, tmp_path, capsys, random_weights):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    for bad, message in [(junk, "cannot read infrared video"), (tmp_path / "missing.mp4", "no such file")]:
        code = main(["video", str(bad), str(clips["vis"]), "-o", str(tmp_path / "o.mp4"), "--weights", str(random_weights)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err and str(bad) in err
