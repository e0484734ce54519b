"""Fuse an image pair with an exported ONNX file and onnxruntime only: no PyTorch, no emmafuse.

This is the pre- and post-processing that ``emmafuse.Fuser.fuse`` does around the network
(``docs/onnx.md``), in numpy, for people who deploy the ONNX file on their own. On 8-bit
images it reproduces ``Fuser.fuse`` (float inputs: within 1e-4; tested in tests/onnx/test_onnx.py).

Usage::

    emmafuse export-onnx -o emma-ivf.onnx
    python examples/onnx_fuse.py emma-ivf.onnx IR.png VIS.png fused.png

Needs numpy, pillow and onnxruntime (``pip install 'emmafuse[onnx]'`` installs them).
"""

from __future__ import annotations

import sys

import numpy as np

KR, KG, KB = 0.299, 0.587, 0.114  # BT.601 luma weights


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float image -> float32 in [0, 1]; alpha channels are dropped."""
    if image.ndim == 3 and image.shape[2] in (2, 4):
        image = image[..., :-1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    return image.astype(np.float32)


def is_colour(image: np.ndarray) -> bool:
    """RGB whose channels differ (gray stored as RGB counts as gray)."""
    return image.ndim == 3 and bool(np.ptp(image, axis=2).max() > 1e-6)


def split(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """float image -> (luma Y, chroma (Cb, Cr) or None)."""
    if image.ndim == 2:
        return image, None
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    y = KR * r + KG * g + KB * b
    chroma = np.stack(((b - y) / (2 * (1 - KB)) + 0.5, (r - y) / (2 * (1 - KR)) + 0.5))
    return y, chroma if is_colour(image) else None


def pad(plane: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Pad to a multiple by reflection (extra pixel bottom/right; edge copy for very short sides)."""
    h, w = plane.shape
    ph, pw = -h % multiple, -w % multiple
    top, left = ph // 2, pw // 2
    bottom, right = ph - top, pw - left
    for axis, (before, after) in ((0, (top, bottom)), (1, (left, right))):
        if before or after:
            mode = "reflect" if max(before, after) < plane.shape[axis] else "edge"
            widths = [(0, 0), (0, 0)]
            widths[axis] = (before, after)
            plane = np.pad(plane, widths, mode=mode)
    return plane, (top, bottom, left, right)


def fuse(session: object, ir: np.ndarray, vis: np.ndarray, multiple: int = 8) -> np.ndarray:
    """Fuse one pair with an onnxruntime ``InferenceSession``; returns float32 in [0, 1]
    (H, W) or (H, W, 3) when either input has colour."""
    ir_y, ir_chroma = split(to_float(ir))
    vis_y, vis_chroma = split(to_float(vis))
    chroma = vis_chroma if vis_chroma is not None else ir_chroma  # the visible image's colour wins
    rgb_layout = to_float(ir).ndim == 3 or to_float(vis).ndim == 3
    (ir_p, pads), (vis_p, _) = pad(ir_y, multiple), pad(vis_y, multiple)
    fused = session.run(None, {"ir": ir_p[None, None], "vis": vis_p[None, None]})[0][0, 0]  # type: ignore[attr-defined]
    top, bottom, left, right = pads
    y = np.clip(fused[top : fused.shape[0] - bottom, left : fused.shape[1] - right], 0.0, 1.0)
    if chroma is None:
        return np.repeat(y[..., None], 3, axis=2) if rgb_layout else y
    cb, cr = chroma[0] - 0.5, chroma[1] - 0.5
    r = y + 2 * (1 - KR) * cr
    b = y + 2 * (1 - KB) * cb
    g = (y - KR * r - KB * b) / KG
    return np.clip(np.stack((r, g, b), axis=2), 0.0, 1.0).astype(np.float32)


def main(argv: list[str]) -> None:
    import onnxruntime as ort
    from PIL import Image

    model, ir_path, vis_path, out_path = argv
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    multiple = int(session.get_modelmeta().custom_metadata_map.get("input.multiple", 8))
    ir, vis = (np.asarray(Image.open(p)) for p in (ir_path, vis_path))
    fused = fuse(session, ir, vis, multiple)
    Image.fromarray(np.round(fused * 255).astype(np.uint8)).save(out_path)
    print(f"wrote {out_path} ({fused.shape[1]}x{fused.shape[0]})")


if __name__ == "__main__":
    main(sys.argv[1:])
