"""Score the classical fusion rules (pixel max, Laplacian pyramid, GFF) like a model.

The rule rows of docs/model_card.md and the held-out rows of docs/training.md, through the
model rows' protocol (``emmafuse eval --weights``): the sources read by the evaluator's reader
(``emmafuse.evaluation.read_gray_reference``), each rule fuses them as the model does (float32
in [0, 1]), the result is min-max stretched with the library's output-range policy
(``output_range="minmax"``), quantised to 8 bit and scored with ``emmafuse.metrics.evaluate``
(reference preset); the grid ratio as in scripts/evaluate_release.py. The rules live in
``emmafuse.train.pseudo_gt``. Run from the repository root:

    python scripts/evaluate_rules.py ../shared/data/test/TNO ir vi
    python scripts/evaluate_rules.py ../shared/data/test/MRI_PET PET MRI --rules max gff
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from emmafuse.batching import apply_range
from emmafuse.evaluation import read_gray_reference
from emmafuse.image_io import pair_folders
from emmafuse.metrics import PAPER_METRICS, evaluate
from emmafuse.metrics.grid import grid_ratio
from emmafuse.train.pseudo_gt import GuidedFilterFusion, LaplacianPyramidFusion

RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "max": torch.maximum,
    "laplacian": LaplacianPyramidFusion().fuse,
    "gff": GuidedFilterFusion().fuse,
}


def score_rule(rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a_path: Path, b_path: Path) -> tuple[dict[str, float], float]:
    """The paper's six metrics and the grid ratio of one rule on one pair."""
    a, b = read_gray_reference(a_path), read_gray_reference(b_path)
    planes = [torch.from_numpy(x.astype(np.float32) / 255.0)[None, None] for x in (a, b)]  # as Fuser.fuse gets them
    y = apply_range(rule(*planes), "minmax")[0, 0].numpy()
    fused = np.round(y.astype(np.float64) * 255.0)  # the uint8 image a model row scores
    return evaluate(fused, a, b, metrics=PAPER_METRICS), grid_ratio(fused)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="set folder")
    ap.add_argument("a", help="first source subfolder (ir, CT, PET, SPECT)")
    ap.add_argument("b", help="second source subfolder (vi, MRI)")
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    args = ap.parse_args()
    pairs = pair_folders(args.root / args.a, args.root / args.b).pairs
    print(f"| rule ({args.root.name}, {len(pairs)} pairs) | " + " | ".join(PAPER_METRICS) + " | grid (median / max) |")
    print("|---" * (len(PAPER_METRICS) + 2) + "|")
    for name in args.rules:
        rows = [score_rule(RULES[name], a_path, b_path) for _, a_path, b_path in pairs]
        means = " | ".join(f"{np.mean([s[m] for s, _ in rows]):.4g}" for m in PAPER_METRICS)
        grids = [g for _, g in rows]
        print(f"| {name} | {means} | {np.median(grids):.1f} / {np.max(grids):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
