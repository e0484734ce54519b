"""Fuse the built-in synthetic pair from Python and save the result.

Usage: python examples/fuse_synthetic.py [weights.safetensors]
"""

import sys

from PIL import Image

import emmafuse
from emmafuse.samples import synthetic_pair

fuser = emmafuse.load(sys.argv[1] if len(sys.argv) > 1 else None)
ir, vis = synthetic_pair()
fused = fuser.fuse(ir, vis)  # uint8 RGB, like vis
Image.fromarray(fused).save("fused_synthetic.png")
print("wrote fused_synthetic.png", fused.shape, fused.dtype, fuser)
