"""Score models and rules on held-out *training domains* (never a test set).

The generalization report of docs/training.md: for each held-out domain (pairs of the
training folders that a run never trained on, selected like ``data.holdout``), the six metrics
of each model's fused image, the same for the teacher rules, each result's correlation with the
infrared and the visible image (``c_ir``, ``c_vis``: a model that copies one source shows it
here) and with the teacher (``agree``). Whole images (cropped to a multiple of 16), the
validation protocol (clamped, not min-max stretched). Needs the ``train`` extra. Example:

    python scripts/evaluate_domains.py --ir ../shared/data/train/ivf/ir --vis ../shared/data/train/ivf/vi \\
        --ir ../shared/data/train/ivf_more/M3SVD_VideoFusion/ir --vis ../shared/data/train/ivf_more/M3SVD_VideoFusion/vi \\
        --holdout ivf/LLVIP 'M3SVD_VideoFusion/*' --weights emma-ivf-v1 runs/ivf-v2/fuser.safetensors \\
        --rules gff gff-max --teacher gff-max
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import emmafuse
from emmafuse.metrics import PAPER_METRICS
from emmafuse.train.data import collect_pairs, split_holdout
from emmafuse.train.patches import PairStore
from emmafuse.train.domain_validation import holdout_crops, score_domains
from emmafuse.train.pseudo_gt import fill_pseudo_gt, parse_sources

COLUMNS = (*PAPER_METRICS, "c_ir", "c_vis", "agree")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ir", action="append", required=True, help="ir folder (repeat, paired with --vis)")
    ap.add_argument("--vis", action="append", required=True, help="vis folder (repeat)")
    ap.add_argument("--holdout", nargs="+", required=True, help="held-out patterns, as data.holdout")
    ap.add_argument("--weights", nargs="*", default=[], help="models: names or .safetensors files")
    ap.add_argument("--rules", nargs="*", default=["gff", "gff-max"], help="pseudo-GT rules scored as rows")
    ap.add_argument("--teacher", default="gff-max", help="the rule 'agree' is measured against")
    ap.add_argument("--per-domain", type=int, default=1000, help="at most this many pairs per domain")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    _, held = split_holdout(collect_pairs(list(zip(args.ir, args.vis))), args.holdout)
    store = PairStore(held)
    rules = list(dict.fromkeys([*args.rules, args.teacher]))
    fill_pseudo_gt(store, parse_sources(rules))
    crops = holdout_crops(store, 1 << 14, args.per_domain, args.teacher)
    rows: dict[str, dict[str, float]] = {}
    for rule in args.rules:
        outputs = [c.teacher for c in holdout_crops(store, 1 << 14, args.per_domain, rule)]
        rows[f"rule {rule}"] = score_domains(crops, results=[t for t in outputs if t is not None])
    for weights in args.weights:
        fuser = emmafuse.load(weights, device="cpu")

        def run(ir: torch.Tensor, vis: torch.Tensor, _f=fuser) -> torch.Tensor:
            out = _f.fuse(ir[0, 0].numpy(), vis[0, 0].numpy())
            return torch.from_numpy(np.asarray(out, dtype=np.float32))[None, None]

        rows[str(weights)] = score_domains(crops, run)
    domains = sorted({key.split(":")[0] for row in rows.values() for key in row})
    for domain in domains:
        n = sum(c.domain == domain for c in crops)
        print(f"\n| {domain} ({n} pairs, whole images) | " + " | ".join(COLUMNS) + " |")
        print("|---" * (len(COLUMNS) + 1) + "|")
        for name, row in rows.items():
            cells = [f"{row[f'{domain}:{c}']:.3f}" if f"{domain}:{c}" in row else "" for c in COLUMNS]
            print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
