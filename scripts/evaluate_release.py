"""Evaluate a U-Fuser on every test set in ../shared/data/test with the paper's protocol.

For each set: ``emmafuse eval --weights W`` (gray Y in, ``output_range="minmax"``, reference
preset, the fused images saved), the grid ratio of every saved image (largest spectrum value on
the Nyquist row/column over the spectrum's median; the pixel-max image of the same pair for
comparison), and one Markdown + JSON summary. Run from the repository root:

    python scripts/evaluate_release.py --weights runs/ivf/fuser.safetensors --out runs/eval-ivf
    python scripts/evaluate_release.py --weights emma-ivf --sets TNO RoadScene --out runs/eval

The fused images stay under --out (never committed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from emmafuse.metrics.grid import grid_ratio

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "test"
SLOTS = {"MRI_CT": ("CT", "MRI"), "MRI_PET": ("PET", "MRI"), "MRI_SPECT": ("SPECT", "MRI")}
SIX = ("EN", "SD", "AG", "MI", "VIF", "Qabf")


def _gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64)


def grid_stats(fused_dir: Path, a_dir: Path, b_dir: Path) -> dict[str, float]:
    ours, maxed = [], []
    for f in sorted(fused_dir.iterdir()):
        a = next((p for p in a_dir.iterdir() if p.stem == f.stem), None)
        b = next((p for p in b_dir.iterdir() if p.stem == f.stem), None)
        if a is None or b is None:
            continue
        ours.append(grid_ratio(_gray(f)))
        maxed.append(grid_ratio(np.maximum(_gray(a), _gray(b))))
    return {"grid_median": float(np.median(ours)), "grid_max": float(np.max(ours)),
            "pixel_max_grid_median": float(np.median(maxed)), "pixel_max_grid_max": float(np.max(maxed))}


def agreement_stats(fused_dir: Path, a_dir: Path, b_dir: Path) -> dict[str, float]:
    """Mean correlation of each fused image with its two sources and with the GFF rule's result
    (issue 16: a model that copies one source, or parts from its teacher, shows it here)."""
    import torch

    from emmafuse.image_io import pair_folders, read_luma
    from emmafuse.train.domain_validation import correlation
    from emmafuse.train.pseudo_gt import GuidedFilterFusion

    gff = GuidedFilterFusion()
    fused_by_stem = {f.stem: f for f in fused_dir.iterdir()}
    rows = []
    for stem, a_path, b_path in pair_folders(a_dir, b_dir).pairs:
        if stem not in fused_by_stem:
            continue
        a, b = (torch.from_numpy(read_luma(p))[None, None] for p in (a_path, b_path))
        f = torch.from_numpy(read_luma(fused_by_stem[stem]))[None, None]
        rows.append((correlation(f, a), correlation(f, b), correlation(f, gff.fuse(a, b))))
    c_ir, c_vis, agree = (float(np.mean(col)) for col in zip(*rows))
    return {"c_ir": c_ir, "c_vis": c_vis, "agree_gff": agree}


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
    summary: dict[str, dict[str, float]] = {}
    for name in sets:
        a_name, b_name = SLOTS.get(name, ("ir", "vi"))
        a_dir, b_dir = args.root / name / a_name, args.root / name / b_name
        fused = args.out / "fused" / name
        table = args.out / f"{name}.json"
        cmd = [sys.executable, "-m", "emmafuse", "eval", "--weights", args.weights, "--save-fused", str(fused),
               "--ir-dir", str(a_dir), "--vis-dir", str(b_dir), "--set-name", name, "--json", "-o", str(table),
               "--device", "cpu", "-q"]
        if args.name:
            cmd += ["--weights-name", args.name]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        report = json.loads(table.read_text())
        method = report["methods"][0]
        summary[name] = {k: float(v) for k, v in method["means"].items()}
        summary[name]["n"] = float(method["n"])
        summary[name].update(grid_stats(fused, a_dir, b_dir))
        if args.agreement:
            summary[name].update(agreement_stats(fused, a_dir, b_dir))
        print(name, {k: round(v, 4) for k, v in summary[name].items()}, flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["| set | " + " | ".join(SIX) + " | grid (median / max) | pixel-max grid |", "|---" * (len(SIX) + 3) + "|"]
    for name, s in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{s[k]:.4g}" for k in SIX)
                     + f" | {s['grid_median']:.1f} / {s['grid_max']:.1f} | {s['pixel_max_grid_median']:.1f} / {s['pixel_max_grid_max']:.1f} |"
                     + (f" c_ir {s['c_ir']:.2f}, c_vis {s['c_vis']:.2f}, agree_gff {s['agree_gff']:.2f} |" if "c_ir" in s else ""))
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
