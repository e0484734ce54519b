#!/usr/bin/env python
"""Register a trained U-Fuser weights file as a released model (maintainers only).

    python scripts/register_weights.py runs/ivf/final.safetensors --name emma-ivf --embed --fp16 --default \\
        --license mit --training-data "MSRS train split (1083 pairs)" --evaluation-json eval_ivf.json

What it does:

1. reads and validates FILE (emmafuse .safetensors weights; convert EMMA.pth first with
   ``emmafuse convert``): strict keys/shapes for the architecture in its metadata, finite values;
2. with ``--embed``: copies it into ``src/emmafuse/weights/<filename>`` (``--fp16``: stored as
   float16, half the size; the loader upcasts to float32), the copy shipped in the wheel;
3. computes sha256 and size of the registered file (the embedded copy when embedding; this very
   file is what ``scripts/publish.py`` uploads) and writes them, the architecture config,
   training data, licence and evaluation numbers into ``weights_manifest.json``, marking the
   model ``released`` (``--default`` makes it what ``emmafuse.load()`` picks).

The manifest is rewritten atomically in place (through the package's symlink, if any).
Then publish with ``scripts/publish.py --name NAME --push`` and commit both changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

DEFAULT_MANIFEST = ROOT / "weights_manifest.json"
DEFAULT_WEIGHTS_DIR = ROOT / "src" / "emmafuse" / "weights"


def _read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("file", help="trained weights (.safetensors in emmafuse's format)")
    p.add_argument("--name", required=True, help="model name in the manifest, e.g. emma-ivf")
    p.add_argument("--embed", action="store_true", help="copy the weights into the package (src/emmafuse/weights/)")
    p.add_argument("--fp16", action="store_true", help="with --embed: store floating tensors as float16")
    p.add_argument("--default", action="store_true", help="make this model the default of emmafuse.load()")
    p.add_argument("--repo-id", help="Hub repository owner/name (required for a model not yet in the manifest)")
    p.add_argument("--filename", help="file name on the Hub and in the package (default: NAME.safetensors)")
    p.add_argument("--published", action="store_true", help="this exact file is already on the Hub at --revision")
    p.add_argument("--revision", help="Hub commit hash holding the file (with --published)")
    p.add_argument("--description", help="one-line description")
    p.add_argument("--license", help="licence of the weights (Hub identifier, e.g. mit, apache-2.0)")
    p.add_argument("--training-data", help="what the model was trained on (free text)")
    p.add_argument("--training-json", help="JSON object merged into the entry's 'training' (recipe, steps, commit...)")
    p.add_argument(
        "--evaluation-json", help="JSON object with evaluation numbers ({'protocol': ..., 'results': {...}})"
    )
    p.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="manifest to update (default: the repository's)")
    p.add_argument("--weights-dir", default=str(DEFAULT_WEIGHTS_DIR), help="package weights folder (for --embed)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the new entry; write nothing")
    p.add_argument("--check-pair", nargs=2, action="append", default=[], metavar=("IR", "VIS"),
                   help="with --fp16: also compare float16 and float32 outputs on this image pair (repeatable)")
    return p


def _same_content(a: Path, b: Path) -> bool:
    """Two safetensors files with equal tensors and equal metadata (byte order of the header aside)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        if fa.metadata() != fb.metadata():
            return False
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)


def _fp16_output_drift(full: Path, half: Path, pairs: list[list[str]]) -> float:
    """Largest |fused(float16-stored) - fused(float32)| in 8-bit gray levels (float32 compute).

    On the built-in synthetic scene and on the ``--check-pair`` images: float16 *storage* is
    only acceptable if the outputs stay within one gray level.
    """
    import numpy as np
    from PIL import Image

    import emmafuse
    from emmafuse.samples import synthetic_pair

    images = [synthetic_pair(480, 640, seed=s) for s in (0, 1)]
    images += [(np.asarray(Image.open(a)), np.asarray(Image.open(b))) for a, b in pairs]
    f32, f16 = emmafuse.load(str(full), device="cpu"), emmafuse.load(str(half), device="cpu")
    worst = 0.0
    for ir, vis in images:
        # float inputs give float outputs: the drift is measured before any rounding
        ir_f, vis_f = (np.asarray(x, np.float32) / (65535.0 if x.dtype == np.uint16 else 255.0) for x in (ir, vis))
        a = np.asarray(f32.fuse(ir_f, vis_f, output_range="clamp"), dtype=np.float64)
        b = np.asarray(f16.fuse(ir_f, vis_f, output_range="clamp"), dtype=np.float64)
        worst = max(worst, float(np.abs(a - b).max()) * 255.0)
    return worst


def main(argv: list[str] | None = None) -> int:
    import torch

    from emmafuse.checkpoint import WeightsError, build_ufuser, load_ufuser_file, save_ufuser
    from emmafuse.release import validate_manifest, write_manifest
    from emmafuse.weights import file_sha256

    args = build_parser().parse_args(argv)
    src = Path(args.file)
    if args.fp16 and not args.embed:
        print("register_weights: --fp16 applies to the embedded copy; add --embed", file=sys.stderr)
        return 2
    if args.published and not args.revision:
        print("register_weights: --published needs --revision COMMIT (the Hub commit with this file)", file=sys.stderr)
        return 2
    try:
        state, config, meta = load_ufuser_file(src)
        build_ufuser(state, config, source=str(src))
    except WeightsError as exc:
        print(f"register_weights: {exc}", file=sys.stderr)
        return 2

    manifest = _read_json(args.manifest)
    models = manifest.setdefault("models", {})
    entry: dict[str, Any] = dict(models.get(args.name) or {})
    if not entry and not args.repo_id:
        print(f"register_weights: '{args.name}' is not in the manifest yet; give --repo-id owner/name", file=sys.stderr)
        return 2
    filename = args.filename or entry.get("filename") or f"{args.name}.safetensors"
    if not filename.endswith(".safetensors") or "/" in filename:
        print(f"register_weights: --filename must be a plain *.safetensors name, got {filename!r}", file=sys.stderr)
        return 2

    previous_embedded = entry.get("embedded")
    registered = src
    if args.embed:
        # a dry run builds the copy in a scratch folder, so the printed sha256 is the real one
        weights_dir = Path(tempfile.mkdtemp(prefix="emmafuse-register-")) if args.dry_run else Path(args.weights_dir)
        registered = weights_dir / filename
        if args.fp16:
            extra = {k: v for k, v in meta.items() if k not in ("format", "config")}
            extra["storage_dtype"] = "float16"
            fresh = registered.with_name(registered.name + ".new")
            save_ufuser(state, fresh, config, metadata=extra, dtype=torch.float16)
            if registered.is_file() and _same_content(registered, fresh):
                fresh.unlink()  # keep the shipped bytes: safetensors may order the header differently each time
            else:
                os.replace(fresh, registered)
            half, _, _ = load_ufuser_file(registered)
            build_ufuser(half, config, source=str(registered))  # float16 overflow would show as Inf here
            err = max(float((half[k] - state[k]).abs().max()) for k in state if state[k].is_floating_point())
            print(f"float16 copy: largest absolute weight change {err:.3g}")
            drift = _fp16_output_drift(src, registered, args.check_pair)
            print(f"float16 copy: largest output change {drift:.3f} gray levels (limit 1)")
            if drift > 1.0:
                print("register_weights: float16 storage moves outputs by more than 1/255; embed float32", file=sys.stderr)
                return 2
        elif registered.resolve() != src.resolve():
            from emmafuse._fs import atomic_write

            atomic_write(registered, lambda tmp: shutil.copyfile(src, tmp))

    if args.embed:
        registered.chmod(0o644)  # shipped in the package: world-readable like the other files

    training = dict(entry.get("training") or {})
    if args.training_json:
        training.update(_read_json(args.training_json))
    if args.training_data:
        training["data"] = args.training_data
    for key in ("git_commit", "training_data", "steps"):
        if key in meta and key not in training:
            training[key] = meta[key]

    new_sha = file_sha256(registered)
    published = bool(args.published or (entry.get("published") and entry.get("sha256") == new_sha))
    entry.update(
        {
            "status": "released",
            "repo_id": args.repo_id or entry.get("repo_id"),
            "revision": args.revision or (entry.get("revision") if published else None),
            "filename": filename,
            "sha256": new_sha,
            "size": registered.stat().st_size,
            "embedded": filename if args.embed else None,
            "published": published,
            "config": config.to_dict(),
            "training": training,
        }
    )
    entry.setdefault("description", "")
    entry.setdefault("evaluation", {})
    entry.setdefault("license", None)
    if args.description:
        entry["description"] = args.description
    if args.license:
        entry["license"] = args.license
    if args.evaluation_json:
        entry["evaluation"] = _read_json(args.evaluation_json)
    models[args.name] = entry
    if args.default:
        manifest["default"] = args.name

    problems = validate_manifest(manifest)
    if problems:
        print("register_weights: the updated manifest would be invalid:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    print(json.dumps({args.name: entry}, indent=2))
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    written = write_manifest(args.manifest, manifest)
    print(f"updated {written}")
    if args.embed:
        print(f"embedded copy: {registered} ({entry['size']} bytes)")
    stale = Path(args.weights_dir) / previous_embedded if previous_embedded else None
    if stale is not None and stale.name != entry["embedded"] and stale.exists():
        print(f"note: {stale} is no longer referenced by the manifest; delete it (git rm) to keep the wheel small")
    if not published:
        print(f"next: python scripts/publish.py --name {args.name} --push --update-manifest  (uploads {registered})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
