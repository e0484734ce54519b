"""Fuse every pair of two folders (same file names) with one batched call per size.

Usage: python examples/fuse_folder.py IR_DIR VIS_DIR OUT_DIR [weights.safetensors]
"""

import sys
from pathlib import Path

import emmafuse
from emmafuse.image_io import read_image, write_image

ir_dir, vis_dir, out_dir = map(Path, sys.argv[1:4])
fuser = emmafuse.load(sys.argv[4] if len(sys.argv) > 4 else None)
names = sorted(p.name for p in ir_dir.iterdir() if (vis_dir / p.name).exists())
fused = fuser.fuse([read_image(ir_dir / n) for n in names], [read_image(vis_dir / n) for n in names])
for name, image in zip(names, fused):
    write_image(out_dir / Path(name).with_suffix(".png"), image)
print(f"fused {len(names)} pairs into {out_dir}")
