#!/usr/bin/env python
"""Prepare (and with --push, upload) the Hugging Face Hub repository of a released model.

    python scripts/publish.py --name emma-ivf                  # build build/hub/emma-ivf/ only
    python scripts/publish.py --name emma-ivf --push --update-manifest

Maintainers only. The model must first be registered with ``scripts/register_weights.py``:
the weights file (``--file``, default: the copy embedded in the package) must match the
manifest's sha256 and size exactly, so the Hub serves the very bytes the package verifies.

The folder holds the weights (under the manifest's ``filename``), ``config.json`` and a model
card ``README.md`` rendered from ``docs/hub_model_card_template.md`` (Hub YAML front-matter: license, tags,
library_name). ``--push`` calls ``HfApi.create_repo(exist_ok=True)`` and ``upload_folder``
(needs a write token: ``hf auth login`` or ``HF_TOKEN``); ``--update-manifest`` then records
the resulting commit hash as the model's ``revision`` and marks it ``published``.
Without ``--push`` nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

DEFAULT_MANIFEST = ROOT / "weights_manifest.json"
DEFAULT_WEIGHTS_DIR = ROOT / "src" / "emmafuse" / "weights"
CARD_TEMPLATE = ROOT / "docs" / "hub_model_card_template.md"
NOT_MEASURED = "not yet measured"
METRICS = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")
_TABLE = re.compile(r"<!-- evaluation-table:start -->.*?<!-- evaluation-table:end -->", re.S)


class PublishError(Exception):
    pass


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return NOT_MEASURED
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def evaluation_table(evaluation: dict[str, Any]) -> str | None:
    """Markdown table of ``evaluation["results"]`` ({dataset: {metric: value}}), or None if empty."""
    results = evaluation.get("results") or {}
    if not results:
        return None
    metrics = list(METRICS) + sorted({m for row in results.values() for m in row} - set(METRICS))
    lines = ["| dataset | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for dataset, row in results.items():
        lines.append(f"| {dataset} | " + " | ".join(_fmt(row.get(m)) for m in metrics) + " |")
    return "\n".join(lines)


def render_card(template: str, name: str, entry: dict[str, Any], version: str) -> str:
    training = entry.get("training") or {}
    evaluation = entry.get("evaluation") or {}
    task = str(entry.get("task", ""))
    fields = {
        "name": name,
        "license": entry["license"],
        "task_tag": "medical-image-fusion" if "medical" in task else "infrared-visible-fusion",
        "description": entry.get("description") or "",
        "repo_id": entry["repo_id"],
        "filename": entry["filename"],
        "size": str(entry["size"]),
        "sha256": entry["sha256"],
        "config_json": json.dumps(entry.get("config") or {}, indent=2),
        "provenance": training.get("provenance")
        or "emmafuse's own training run (see Training below), not the EMMA authors' released checkpoint.",
        "training_data": training.get("data") or "not recorded",
        "training_recipe": training.get("recipe") or "not recorded",
        "code_commit": training.get("code_commit") or training.get("git_commit") or "not recorded",
        "evaluation_protocol": evaluation.get("protocol") or f"{NOT_MEASURED}",
        "emmafuse_version": version,
    }
    text = template
    for key, value in fields.items():
        text = text.replace("{{" + key + "}}", str(value))
    table = evaluation_table(evaluation)
    if table is not None:
        text = _TABLE.sub(lambda _: f"<!-- evaluation-table:start -->\n{table}\n<!-- evaluation-table:end -->", text)
    text = re.sub(r"<!--\nModel card TEMPLATE.*?-->\n\n", "", text, flags=re.S)
    leftover = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)))
    if leftover:
        raise PublishError(f"model card template has unknown fields: {leftover}")
    return text


def prepare_folder(
    name: str,
    out: Path,
    *,
    manifest_path: Path = DEFAULT_MANIFEST,
    weights_file: Path | None = None,
    weights_dir: Path = DEFAULT_WEIGHTS_DIR,
    license_override: str | None = None,
    template_path: Path = CARD_TEMPLATE,
) -> Path:
    """Build the Hub folder for ``name`` in ``out``; returns ``out``."""
    from emmafuse import __version__
    from emmafuse.checkpoint import FORMAT_TAG, build_ufuser, load_ufuser_file
    from emmafuse.errors import ChecksumMismatchError, WeightsError
    from emmafuse.weights import verify_file

    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    entry = dict((manifest.get("models") or {}).get(name) or {})
    if not entry:
        raise PublishError(f"'{name}' is not in {manifest_path}")
    if entry.get("status") != "released" or not entry.get("sha256"):
        raise PublishError(f"'{name}' is not registered yet: run scripts/register_weights.py FILE --name {name} first")
    if license_override:
        entry["license"] = license_override
    if not entry.get("license"):
        raise PublishError(f"'{name}' has no licence in the manifest; pass --license (e.g. mit)")

    if weights_file is None:
        if not entry.get("embedded"):
            raise PublishError(f"'{name}' is not embedded; pass --file with the registered weights file")
        weights_file = Path(weights_dir) / entry["embedded"]
    try:
        verify_file(weights_file, entry["sha256"], entry.get("size"), what=str(weights_file))
        state, config, _ = load_ufuser_file(weights_file)
        build_ufuser(state, config, source=str(weights_file))
    except ChecksumMismatchError as exc:
        raise PublishError(f"{exc}: not the file registered in the manifest") from exc
    except (WeightsError, OSError) as exc:
        raise PublishError(str(exc)) from exc

    expected = {entry["filename"], "config.json", "README.md"}
    out.mkdir(parents=True, exist_ok=True)
    others = sorted(p.name for p in out.iterdir() if p.name not in expected)
    if others:  # the folder is uploaded as a whole: never mix in unrelated files
        raise PublishError(f"{out} holds other files ({', '.join(others[:5])}); use an empty or dedicated folder")
    shutil.copyfile(weights_file, out / entry["filename"])
    config_json = {
        "architecture": "UFuser",
        "library_name": "emmafuse",
        "format": FORMAT_TAG,
        "weights_file": entry["filename"],
        "sha256": entry["sha256"],
        **(entry.get("config") or {}),
    }
    (out / "config.json").write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")
    card = render_card(Path(template_path).read_text(encoding="utf-8"), name, entry, __version__)
    (out / "README.md").write_text(card, encoding="utf-8")
    return out


def push_folder(repo_id: str, folder: Path, *, private: bool, message: str) -> str:
    """Create the repository if needed and upload the folder; returns the commit hash."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), commit_message=message)
    commit = getattr(info, "oid", None) or api.model_info(repo_id).sha
    if not commit:
        raise PublishError(f"uploaded to {repo_id} but could not determine the commit hash")
    return str(commit)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="model name in the manifest (emma-ivf, emma-mif)")
    p.add_argument("--file", type=Path, help="weights file to publish (default: the embedded copy)")
    p.add_argument("--out", type=Path, help="folder to prepare (default: build/hub/NAME)")
    p.add_argument("--license", help="override / supply the licence (Hub identifier, e.g. mit)")
    p.add_argument("--push", action="store_true", help="upload to the Hub (otherwise only prepare the folder)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--update-manifest", action="store_true", help="after --push, record the commit as revision")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    args = p.parse_args(argv)
    if args.update_manifest and not args.push:
        p.error("--update-manifest needs --push")

    out = args.out or ROOT / "build" / "hub" / args.name
    try:
        prepare_folder(
            args.name,
            out,
            manifest_path=args.manifest,
            weights_file=args.file,
            weights_dir=args.weights_dir,
            license_override=args.license,
        )
    except PublishError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 2
    print(f"prepared {out}: " + ", ".join(sorted(f.name for f in out.iterdir())))
    if not args.push:
        print("not uploaded (add --push to upload)")
        return 0

    manifest = json.loads(args.manifest.read_text(encoding="utf-8"))
    entry = manifest["models"][args.name]
    message = args.message or f"emmafuse: {args.name} weights sha256 {entry['sha256'][:12]}"
    commit = push_folder(entry["repo_id"], out, private=args.private, message=message)
    print(f"uploaded to https://huggingface.co/{entry['repo_id']} at commit {commit}")
    if args.update_manifest:
        entry["revision"] = commit
        entry["published"] = True
        if args.license:
            entry["license"] = args.license
        from emmafuse.release import write_manifest

        written = write_manifest(args.manifest, manifest)
        print(f"updated {written}: revision {commit}, published")
    else:
        print(f"record it: set models.{args.name}.revision = {commit!r} and published = true in the manifest")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
