"""Score the classical fusion rules (pixel max, Laplacian pyramid, GFF) like a model.

The rule rows of docs/model_card.md and the held-out rows of docs/training.md: each rule fuses
the BT.601 luma of the pair, the result is min-max stretched (the paper's protocol for models,
``output_range="minmax"``) and scored with ``emmafuse.metrics.evaluate`` (reference preset);
the grid ratio as in scripts/evaluate_release.py. Needs the ``train`` extra (the rules live in
``emmafuse.train.pseudo_gt``). Run from the repository root:

    python scripts/evaluate_rules.py ../shared/data/test/TNO ir vi
    python scripts/evaluate_rules.py ../shared/data/test/MRI_PET PET MRI --rules max gff
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from emmafuse.image_io import pair_folders, read_luma
from emmafuse.metrics import evaluate
from emmafuse.metrics.grid import grid_ratio
from emmafuse.train.pseudo_gt import GuidedFilterFusion, LaplacianPyramidFusion

SIX = ["EN", "SD", "AG", "MI", "VIF", "Qabf"]
RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "max": torch.maximum,
    "laplacian": LaplacianPyramidFusion().fuse,
    "gff": GuidedFilterFusion().fuse,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="set folder")
    ap.add_argument("a", help="first source subfolder (ir, CT, PET, SPECT)")
    ap.add_argument("b", help="second source subfolder (vi, MRI)")
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    args = ap.parse_args()
    pairs = pair_folders(args.root / args.a, args.root / args.b).pairs
    print(f"| rule ({args.root.name}, {len(pairs)} pairs) | " + " | ".join(SIX) + " | grid (median / max) |")
    print("|---" * (len(SIX) + 2) + "|")
    for name in args.rules:
        scores, grids = [], []
        for _, a_path, b_path in pairs:
            a = torch.from_numpy(read_luma(a_path))[None, None]
            b = torch.from_numpy(read_luma(b_path))[None, None]
            y = RULES[name](a, b)[0, 0].clamp(0, 1).numpy()
            y = (y - y.min()) / max(float(y.max() - y.min()), 1e-8)
            fused = np.round(y * 255)
            sources = [np.round(t[0, 0].numpy() * 255) for t in (a, b)]
            scores.append(evaluate(fused, *sources, metrics=SIX))
            grids.append(grid_ratio(fused))
        means = " | ".join(f"{np.mean([s[m] for s in scores]):.4g}" for m in SIX)
        print(f"| {name} | {means} | {np.median(grids):.1f} / {np.max(grids):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
