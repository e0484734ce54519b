"""Static checks of the public API's types, run by mypy (``[tool.mypy] files``), not by pytest.

``Fuser.fuse`` gives back the container of ``vis``: numpy in, numpy out, and so on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from typing_extensions import assert_type

import emmafuse
from emmafuse.inputs import ImageLike


def check(fuser: emmafuse.Fuser, ir: np.ndarray, pil: Image.Image, t: torch.Tensor) -> None:
    assert_type(fuser.fuse(ir, ir), np.ndarray)
    assert_type(fuser.fuse(pil, t), torch.Tensor)
    assert_type(fuser.fuse(t, pil), Image.Image)
    # lists: the element type of vis decides; a numpy list whose array type holds Any (plain
    # np.ndarray) matches the mixed-list overload too, and mypy then infers list[Any]
    assert_type(fuser.fuse([pil, pil], [ir, ir]), list[Any])
    assert_type(fuser.fuse([ir], [t]), list[torch.Tensor])
    assert_type(fuser.fuse([ir], [pil]), list[Image.Image])
    mixed: list[ImageLike] = [ir, t]
    assert_type(fuser.fuse(mixed, mixed), list[ImageLike])


def check_load() -> emmafuse.Fuser:
    emmafuse.load("w.safetensors", device=torch.device("cpu"), dtype=torch.bfloat16)
    return emmafuse.load(None, device="cuda:1", dtype="float16", local_files_only=True)


def check_video(fuser: emmafuse.Fuser, frames: list[np.ndarray]) -> None:
    from collections.abc import Generator

    from emmafuse.video_job import VideoResult

    assert_type(fuser.fuse_video("ir.mp4", "vis.mp4", "fused.mp4", frames=20, start=5, side_by_side=True), VideoResult)
    assert_type(fuser.fuse_frames(frames, iter(frames), batch_size=2, prefetch=0), Generator[Any, None, None])
