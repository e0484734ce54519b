"""EN of a medical model's colour results under several gray conversions (model card, issue 16).

The paper's Harvard EN (5.18) is above what any protocol gives our model or the rules; this
script shows that the colour handling is not the reason. For every pair of the three test
sets: EN of the functional image's luma and of the MRI, and of the fused colour result read as
its BT.601 luma (the paper's ``cv2`` gray, what ``emmafuse eval`` scores:
``emmafuse.evaluation.read_gray_reference`` for files, ``emmafuse.metrics.gray.to_gray`` for the
fused array), as the mean over its R, G, B channels, and as one histogram over all three
channels. Min-max stretched like the paper's test script. Run from the repository root:

    python scripts/mif_en_protocols.py --weights emma-mif
    python scripts/mif_en_protocols.py --weights emma-ivf-v1 --sets MRI_CT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import emmafuse
from emmafuse.evaluation import read_gray_reference
from emmafuse.image_io import pair_folders, read_image
from emmafuse.metrics import en
from emmafuse.metrics.gray import to_gray

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "test"
SLOTS = {"MRI_CT": "CT", "MRI_PET": "PET", "MRI_SPECT": "SPECT"}


def entropy(gray: np.ndarray) -> float:
    """EN of the reference evaluator (8-bit histogram of the rounded levels, bits)."""
    return en(np.round(gray))


def pair_entropies(fuser: emmafuse.Fuser, a_path: Path, m_path: Path) -> tuple[float, ...]:
    """Source EN (functional, MRI), then the fused result's EN: luma, mean over R, G, B, RGB histogram."""
    f = np.asarray(fuser.fuse(read_image(a_path), read_image(m_path), output_range="minmax")).astype(np.float64)
    channels = [f[..., c] for c in range(3)] if f.ndim == 3 else [f]
    hist = np.bincount(np.round(f).astype(int).ravel(), minlength=256) / f.size
    return (entropy(read_gray_reference(a_path)), entropy(read_gray_reference(m_path)), entropy(to_gray(f)),
            float(np.mean([entropy(c) for c in channels])), float(-(hist[hist > 0] * np.log2(hist[hist > 0])).sum()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="emma-mif")
    ap.add_argument("--sets", nargs="*", default=list(SLOTS))
    ap.add_argument("--root", type=Path, default=SHARED)
    args = ap.parse_args()
    fuser = emmafuse.load(args.weights, device="cpu")
    print(f"| {args.weights} | source EN (functional / MRI) | fused luma | mean of R, G, B | RGB histogram |")
    print("|---|---|---|---|---|")
    for name in args.sets:
        pairs = pair_folders(args.root / name / SLOTS[name], args.root / name / "MRI").pairs
        r = np.mean([pair_entropies(fuser, a_path, m_path) for _, a_path, m_path in pairs], axis=0)
        print(f"| {name} ({len(pairs)}) | {r[0]:.2f} / {r[1]:.2f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
