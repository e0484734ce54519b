"""Side-by-side figures for docs/model_card.md (small JPEGs; run from the repository root).

Each row: infrared | visible | emmafuse | pixel max (of the luma, chroma of the colour input) |
the best published method of TNO42 (TNO42 pairs only). The images come from ../shared and
are not committed; only the composed, downscaled JPEG is.

    python scripts/make_card_figures.py --weights src/emmafuse/weights/emma-ivf.safetensors \\
        --pair TNO42:05 --pair TNO42:21 --pair RoadScene:FLIR_00211 --out docs/img/ivf_examples.jpg \\
        --published SeAFusion
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import emmafuse
from emmafuse.image_io import index_images, read_image
from emmafuse.planes import finish, prepare_pair

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SLOTS = {"MRI_CT": ("CT", "MRI"), "MRI_PET": ("PET", "MRI"), "MRI_SPECT": ("SPECT", "MRI")}


def _read(folder: Path, stem: str) -> np.ndarray:
    """The image ``stem`` of ``folder``, read as ``emmafuse fuse`` reads it."""
    found = index_images(folder).get(stem)
    if found is None:
        raise SystemExit(f"no image {stem} in {folder}")
    return read_image(found)


def _as_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] < 3:  # gray (+ alpha)
        a = a[..., 0]
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]


def pixel_max(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Max of the two lumas; chroma from whichever input is colour, as emmafuse fuses (its
    colour rule: the visible image's colour wins, gray stored as RGB is gray)."""
    pair = prepare_pair(ir, vis, None)
    return np.asarray(finish(torch.maximum(pair.ir_y, pair.vis_y), pair))


def _label(img: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 8 + 7 * len(text), 16), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255))
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="model name or .safetensors")
    ap.add_argument("--pair", action="append", required=True, help="SET:STEM, e.g. TNO42:05")
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=WEIGHTS",
                    help="another model as an extra column after emmafuse, e.g. v1=emma-ivf-v1 (repeatable)")
    ap.add_argument("--published", default=None, help="method folder under results/TNO42 for TNO42 rows")
    ap.add_argument("--tile-height", type=int, default=240)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    fuser = emmafuse.load(args.weights, device="cpu")
    others = [(label, emmafuse.load(w, device="cpu")) for label, _, w in (a.partition("=") for a in args.also)]
    rows = []
    for spec in args.pair:
        set_name, stem = spec.split(":", 1)
        a_dir, b_dir = SLOTS.get(set_name, ("ir", "vi"))
        root = SHARED / "test" / set_name
        ir, vis = _read(root / a_dir, stem), _read(root / b_dir, stem)
        panels = [(a_dir if a_dir != "ir" else "infrared", ir), (b_dir if b_dir != "vi" else "visible", vis),
                  ("emmafuse", np.asarray(fuser.fuse(ir, vis))),
                  *((label, np.asarray(other.fuse(ir, vis))) for label, other in others),
                  ("pixel max", pixel_max(ir, vis))]
        if args.published and set_name == "TNO42":
            pub = SHARED / "results" / "TNO42" / args.published
            panels.append((args.published, _read(pub, stem)))
        tiles = []
        for name, arr in panels:
            im = Image.fromarray(_as_rgb(arr).astype(np.uint8))
            w = round(im.width * args.tile_height / im.height)
            tiles.append(_label(im.resize((w, args.tile_height), Image.LANCZOS), f"{spec} {name}" if not tiles else name))
        row = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), args.tile_height), "white")
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width + 4
        rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 4 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 4
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=82, optimize=True)
    print(f"{args.out}: {sheet.width}x{sheet.height}, {args.out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
