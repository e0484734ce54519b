"""``emmafuse video`` on the real M3SVD clips of ../shared (640x480; skipped when absent)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from conftest import shared_path
from emmafuse.cli import main

av = pytest.importorskip("av")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def clip(modality: str, name: str):
    return shared_path("data", "video", "M3SVD", modality, f"{name}.mp4")


def luma(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) if x.ndim == 2 else x @ np.array([0.299, 0.587, 0.114])


def test_twenty_frames_of_1230_1202_match_fuse_within_codec_loss(tmp_path, capsys):
    import emmafuse
    from emmafuse.video import VideoReader, probe_video

    ir, vis = clip("infrared", "1230_1202"), clip("visible", "1230_1202")
    out = tmp_path / "fused.mp4"
    assert main(["video", str(ir), str(vis), "-o", str(out), "--frames", "20", "-q"]) == 0
    assert "wrote" in capsys.readouterr().out

    ir_info, vis_info = probe_video(ir), probe_video(vis)
    assert ir_info.gray and not vis_info.gray  # gray infrared (YUV with neutral chroma), colour visible
    with av.open(str(out)) as c:  # a playable H.264 / yuv420p video
        stream = c.streams.video[0]
        assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")
        assert (stream.width, stream.height, stream.frames) == (640, 480, 20)
        assert stream.average_rate == Fraction(22)
    with VideoReader(probe_video(out)) as reader:
        fused = []
        while (frame := reader.read()) is not None:
            fused.append(frame)
    assert len(fused) == 20 and fused[0].shape == (480, 640, 3)

    fuser = emmafuse.load()  # what the command used: the default model
    check = {0, 7, 13, 19}  # a sample of the frames: fusing at 640x480 on a CPU is slow
    with VideoReader(ir_info) as a, VideoReader(vis_info) as b:
        for i in range(20):
            x, y = a.read(), b.read()
            if i not in check:
                continue
            expected = fuser.fuse(x, y)
            diff_y = np.abs(luma(fused[i]) - luma(expected)).mean()
            diff_rgb = np.abs(fused[i].astype(float) - expected).mean()
            assert diff_y < 2.0 and diff_rgb < 3.0, (i, diff_y, diff_rgb)  # codec loss only
    # colour kept: the output's chroma follows the visible video's
    chroma_out = fused[0][..., 2].astype(float) - fused[0][..., 1]
    with VideoReader(vis_info) as b:
        v = b.read()
    assert v is not None
    chroma_in = v[..., 2].astype(float) - v[..., 1]
    assert np.corrcoef(chroma_out.ravel(), chroma_in.ravel())[0, 1] > 0.9


def test_real_clips_of_different_sizes_are_refused_in_one_line(tmp_path, capsys):
    from emmafuse.video import VideoReader, VideoWriter, probe_video

    ir = clip("infrared", "0111_1716")
    small = tmp_path / "small.mp4"  # the first frames of the visible clip, half size
    info = probe_video(clip("visible", "0111_1716"))
    writer = VideoWriter(small, container_format="mp4", width=320, height=240, fps=info.fps, encoder="libx264")
    with VideoReader(info) as reader:
        for _ in range(3):
            frame = reader.read()
            assert frame is not None
            writer.write(np.ascontiguousarray(frame[::2, ::2]))
    writer.finish()
    writer.close()
    out = tmp_path / "o.mp4"
    assert main(["video", str(ir), str(small), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "640x480" in err and "320x240" in err and not out.exists()
