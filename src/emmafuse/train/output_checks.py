"""Every output of training is checked before any work, like the outputs of ``fuse``.

A run folder, an ``--export`` file and ``train export --to`` must never replace or land among
the training images: a weights file written into an input folder would be read as an image
pair member by the next run, and one written over an image destroys it. So, before the run
folder is created (or the checkpoint read):

- a weights file must end in ``.safetensors``, must not be an input file or lie inside an
  input folder, and must be writable;
- a run folder must not be an input folder, lie inside one, or hold one (``--overwrite``
  deletes what a run wrote there), and must be writable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from emmafuse.outputs import OutputError, check_output_file, check_output_folder

__all__ = ["WEIGHTS_SUFFIX", "check_weights_destination", "check_run_folder", "is_inside"]

WEIGHTS_SUFFIX = ".safetensors"


def is_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (resolved paths)."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def check_weights_destination(
    path: str | os.PathLike[str], input_folders: Iterable[str | os.PathLike[str]] = (), *, what: str = "weights file"
) -> Path:
    """Check where trained weights will be written.

    Raises:
        OutputError: a suffix other than ``.safetensors``, a folder, a path inside an input
            folder, or an unwritable place (one line naming the path).
    """
    target = Path(path)
    if target.suffix.lower() != WEIGHTS_SUFFIX:
        raise OutputError(f"{what} {target} must end in {WEIGHTS_SUFFIX} (trained weights are safetensors files)")
    for folder in input_folders:
        if is_inside(target, folder):
            raise OutputError(f"{what} {target} lies in the input folder {folder}; write the weights elsewhere")
    return check_output_file(target, what=what)


def check_run_folder(folder: str | os.PathLike[str], input_folders: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Check a run folder against the input folders (see the module doc).

    Raises:
        OutputError: one line naming the run folder and the input folder it collides with.
    """
    folders = list(input_folders)
    target = Path(folder)
    for src in folders:
        if is_inside(target, src):
            raise OutputError(f"run folder {target} lies in the input folder {src}; choose another")
        if is_inside(src, target):
            raise OutputError(f"run folder {target} holds the input folder {src}; choose another")
    return check_output_folder(target, folders, what="run folder")
