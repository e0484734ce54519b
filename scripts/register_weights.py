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
The work is done by :mod:`emmafuse.release` (registration, embedding, the float16 check) on
the schema of :mod:`emmafuse.manifest`; this script only turns its options into those calls.
Then publish with ``scripts/publish.py --name NAME --push`` and commit both changes.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _registration(args: argparse.Namespace, registered: Path, config: Any, meta: dict[str, str]) -> Any:
    from emmafuse.release import Registration

    training = dict(_read_json(args.training_json)) if args.training_json else {}
    if args.training_data:
        training["data"] = args.training_data
    return Registration(
        name=args.name, file=registered, config=config, filename=args.filename, embedded=args.embed,
        metadata=meta, repo_id=args.repo_id, published=args.published, revision=args.revision,
        description=args.description, license=args.license, training=training,
        evaluation=_read_json(args.evaluation_json) if args.evaluation_json else None,
    )


def _check_arguments(args: argparse.Namespace, manifest: dict[str, Any]) -> str | None:
    """What is wrong with the command line (``None``: nothing); fills in ``args.filename``."""
    from emmafuse.manifest import field_problem

    if args.fp16 and not args.embed:
        return "--fp16 applies to the embedded copy; add --embed"
    if args.published and not args.revision:
        return "--published needs --revision COMMIT (the Hub commit with this file)"
    entry = (manifest.get("models") or {}).get(args.name) or {}
    if not entry and not args.repo_id:
        return f"'{args.name}' is not in the manifest yet; give --repo-id owner/name"
    args.filename = args.filename or entry.get("filename") or f"{args.name}.safetensors"
    problem = field_problem("filename", args.filename)
    return f"--filename: {problem}" if problem else None


def main(argv: list[str] | None = None) -> int:
    from emmafuse.checkpoint import WeightsError, build_ufuser, load_ufuser_file
    from emmafuse.release import FP16_DRIFT_LIMIT, embed_weights, fp16_output_drift, register, write_manifest

    args = build_parser().parse_args(argv)
    src = Path(args.file)
    manifest = _read_json(args.manifest)
    previous_embedded = ((manifest.get("models") or {}).get(args.name) or {}).get("embedded")
    try:
        problem = _check_arguments(args, manifest)
        if problem:
            raise WeightsError(problem)
        state, config, meta = load_ufuser_file(src)
        build_ufuser(state, config, source=str(src))
        registered = src
        if args.embed:
            # a dry run builds the copy in a scratch folder, so the printed sha256 is the real one
            folder = Path(tempfile.mkdtemp(prefix="emmafuse-register-")) if args.dry_run else Path(args.weights_dir)
            registered = folder / args.filename
            change = embed_weights(src, registered, fp16=args.fp16)
            if args.fp16:
                print(f"float16 copy: largest absolute weight change {change:.3g}")
                drift = fp16_output_drift(src, registered, [tuple(p) for p in args.check_pair])
                print(f"float16 copy: largest output change {drift:.3f} gray levels (limit {FP16_DRIFT_LIMIT:g})")
                if drift > FP16_DRIFT_LIMIT:
                    raise WeightsError("float16 storage moves outputs by more than 1/255; embed float32")
        entry = register(manifest, _registration(args, registered, config, meta), default=args.default)
    except WeightsError as exc:
        print(f"register_weights: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({args.name: entry.to_dict()}, indent=2))
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    print(f"updated {write_manifest(args.manifest, manifest)}")
    _report(args, registered, entry, previous_embedded)
    return 0


def _report(args: argparse.Namespace, registered: Path, entry: Any, previous_embedded: str | None) -> None:
    if args.embed:
        print(f"embedded copy: {registered} ({entry.size} bytes)")
    stale = Path(args.weights_dir) / previous_embedded if previous_embedded else None
    if stale is not None and stale.name != entry.embedded and stale.exists():
        print(f"note: {stale} is no longer referenced by the manifest; delete it (git rm) to keep the wheel small")
    if not entry.published:
        print(f"next: python scripts/publish.py --name {args.name} --push --update-manifest  (uploads {registered})")


if __name__ == "__main__":
    raise SystemExit(main())
