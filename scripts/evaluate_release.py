"""Evaluate a U-Fuser on every test set in ../shared/data/test with the paper's protocol.

For each set: what ``emmafuse eval --weights W --save-fused`` does
(``emmafuse.evaluation.score_folders``: gray Y in, ``output_range="minmax"``, reference preset,
the fused images saved), the grid ratio of every saved image (largest spectrum value on the
Nyquist row/column over the spectrum's median; the pixel-max image of the same pair for
comparison), and one Markdown + JSON summary. Every image is read by the evaluator's reader
(``emmafuse.evaluation.read_gray_reference``), so all columns see the same gray levels. Run
from the repository root:

    python scripts/evaluate_release.py --weights runs/ivf/fuser.safetensors --out runs/eval-ivf
    python scripts/evaluate_release.py --weights emma-ivf --sets TNO RoadScene --out runs/eval

The fused images stay under --out (never committed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import emmafuse
from emmafuse.evaluation import format_json, read_gray_reference, score_folders
from emmafuse.image_io import index_images, pair_folders
from emmafuse.metrics import PAPER_METRICS
from emmafuse.metrics.grid import grid_ratio

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "test"
SLOTS = {"MRI_CT": ("CT", "MRI"), "MRI_PET": ("PET", "MRI"), "MRI_SPECT": ("SPECT", "MRI")}


def grid_stats(fused_dir: Path, a_dir: Path, b_dir: Path) -> dict[str, float]:
    """Grid ratio of each fused image, and of the pixel max of its sources."""
    fused = index_images(fused_dir, "fused")
    ours, maxed = [], []
    for stem, a_path, b_path in pair_folders(a_dir, b_dir).pairs:
        if stem in fused:
            ours.append(grid_ratio(read_gray_reference(fused[stem])))
            maxed.append(grid_ratio(np.maximum(read_gray_reference(a_path), read_gray_reference(b_path))))
    return {"grid_median": float(np.median(ours)), "grid_max": float(np.max(ours)),
            "pixel_max_grid_median": float(np.median(maxed)), "pixel_max_grid_max": float(np.max(maxed))}


def agreement_stats(fused_dir: Path, a_dir: Path, b_dir: Path) -> dict[str, float]:
    """Mean correlation of each fused image with its two sources and with the GFF rule's result
    (issue 16: a model that copies one source, or parts from its teacher, shows it here).
    Training's reader (``read_luma``): GFF fuses what training gives it."""
    import torch

    from emmafuse.image_io import read_luma
    from emmafuse.train.domain_validation import correlation
    from emmafuse.train.pseudo_gt import GuidedFilterFusion

    gff = GuidedFilterFusion()
    fused = index_images(fused_dir, "fused")
    rows = []
    for stem, a_path, b_path in pair_folders(a_dir, b_dir).pairs:
        if stem not in fused:
            continue
        a, b, f = (torch.from_numpy(read_luma(p))[None, None] for p in (a_path, b_path, fused[stem]))
        rows.append((correlation(f, a), correlation(f, b), correlation(f, gff.fuse(a, b))))
    c_ir, c_vis, agree = (float(np.mean(col)) for col in zip(*rows))
    return {"c_ir": c_ir, "c_vis": c_vis, "agree_gff": agree}


def evaluate_set(fuser: emmafuse.Fuser, args: argparse.Namespace, name: str) -> dict[str, float]:
    """One set: scores (and ``<set>.json``, the table ``emmafuse eval --json`` writes), grid, agreement."""
    a_name, b_name = SLOTS.get(name, ("ir", "vi"))
    a_dir, b_dir = args.root / name / a_name, args.root / name / b_name
    fused = args.out / "fused" / name
    report = score_folders(a_dir, b_dir, fuser=fuser, fuser_name=args.name or Path(args.weights).stem,
                           fuser_source=str(args.weights), save_fused=fused, set_name=name)
    (args.out / f"{name}.json").write_text(format_json(report), encoding="utf-8")
    method = report.methods[0]
    stats = {**method.means(report.metrics), "n": float(len(method.per_image))}
    stats.update(grid_stats(fused, a_dir, b_dir))
    if args.agreement:
        stats.update(agreement_stats(fused, a_dir, b_dir))
    return stats


def summary_table(summary: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| set | " + " | ".join(PAPER_METRICS) + " | grid (median / max) | pixel-max grid |",
             "|---" * (len(PAPER_METRICS) + 3) + "|"]
    for name, s in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{s[k]:.4g}" for k in PAPER_METRICS)
                     + f" | {s['grid_median']:.1f} / {s['grid_max']:.1f} | {s['pixel_max_grid_median']:.1f} / {s['pixel_max_grid_max']:.1f} |"
                     + (f" c_ir {s['c_ir']:.2f}, c_vis {s['c_vis']:.2f}, agree_gff {s['agree_gff']:.2f} |" if "c_ir" in s else ""))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sets", nargs="*", default=None, help="default: every set under ../shared/data/test")
    ap.add_argument("--name", default=None, help="row name (default: the weights' stem)")
    ap.add_argument("--root", type=Path, default=SHARED, help="folder of sets <SET>/{ir,vi} (default ../shared/data/test)")
    ap.add_argument("--agreement", action="store_true",
                    help="also the correlation with each source and with GFF (needs the train extra)")
    args = ap.parse_args()
    sets = args.sets or sorted(p.name for p in args.root.iterdir() if p.is_dir())
    args.out.mkdir(parents=True, exist_ok=True)
    fuser = emmafuse.load(args.weights, device="cpu")
    summary: dict[str, dict[str, float]] = {}
    for name in sets:
        summary[name] = evaluate_set(fuser, args, name)
        print(name, {k: round(v, 4) for k, v in summary[name].items()}, flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = summary_table(summary)
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
