"""Checking output paths before any work is done.

Every command that writes files checks its outputs first, so that a long run never ends in a
traceback after the work (a read-only folder, a parent that is a file, ``/proc``) and never
replaces one of its own inputs. A path can be written when its nearest existing ancestor is a
folder in which a file can be created; that is probed by creating and removing a temporary
file, because permission bits say nothing for root, and ``/proc`` or a read-only mount only
fail on creation. The probe leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from emmafuse.image_io import ImageReadError, check_output_kind, fused_kind, read_header
from emmafuse.errors import EmmafuseError

__all__ = [
    "OutputError",
    "same_file",
    "check_fused_outputs",
    "check_not_inputs",
    "check_writable",
    "check_output_file",
    "check_output_folder",
]


class OutputError(EmmafuseError, ValueError):
    """An output path that cannot, or must not, be written (the CLI prints it and exits 2)."""


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file or folder: same resolved path, or same inode (hard link)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:  # one of them does not exist (yet)
        pass
    return Path(a).resolve() == Path(b).resolve()


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_not_inputs(
    targets: Iterable[str | os.PathLike[str]],
    inputs: Iterable[str | os.PathLike[str]],
    *,
    what: str = "output",
    option: str = "output",
) -> None:
    """Refuse when an output file would replace an input file (by resolved path or by inode).

    ``what`` and ``option`` name the output and the argument that sets it in the message (the
    command line passes its flag, ``-o``).

    Raises:
        OutputError: naming the output and the input it would replace.
    """
    by_path: dict[Path, Path] = {}
    by_id: dict[tuple[int, int], Path] = {}
    for src in map(Path, inputs):
        by_path[src.resolve()] = src
        file_id = _file_id(src)
        if file_id is not None:
            by_id[file_id] = src
    for target in map(Path, targets):
        file_id = _file_id(target)
        given = by_path.get(target.resolve()) or (by_id.get(file_id) if file_id is not None else None)
        if given is not None:
            raise OutputError(f"{what} {target} is the input file {given}; refusing to overwrite it (choose another {option})")


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def check_writable(path: str | os.PathLike[str], what: str = "output") -> None:
    """Refuse unless a file or folder can be created at ``path`` (its missing parents included).

    Raises:
        OutputError: the nearest existing ancestor is a file, or nothing can be created in it.
    """
    target = Path(path)
    base = target if target.is_dir() else _nearest_existing(target.parent)
    if not base.is_dir():
        raise OutputError(f"cannot write {what} {target}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".emmafuse-probe-", dir=base)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"cannot write {what} {target}: cannot create files in {base} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(
    path: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]] = (),
    *,
    overwrite: bool = True,
    what: str = "output",
    option: str = "output",
) -> Path:
    """Check an output file: not a folder, not an input, writable; existing only if ``overwrite``.

    ``what`` names the output and ``option`` the argument that sets it, in the messages.

    Raises:
        OutputError: with one line saying what is wrong.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{what} {target} is a folder; give a file name")
    check_not_inputs([target], inputs, what=what, option=option)
    if target.exists() and not overwrite:
        raise OutputError(f"{what} {target} exists and overwrite is off; remove it or allow overwriting", parameter="overwrite")
    check_writable(target, what)
    return target


def check_output_folder(
    folder: str | os.PathLike[str], input_dirs: Iterable[str | os.PathLike[str]] = (), *, what: str = "output folder"
) -> Path:
    """Check an output folder: not a file, not one of ``input_dirs``, writable.

    Raises:
        OutputError: with one line saying what is wrong.
    """
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{what} {target} is a file, not a folder")
    for src in input_dirs:
        if same_file(target, src):
            raise OutputError(f"{what} {target} is the input folder {src}; its images would be replaced (choose another)")
    check_writable(target, what)
    return target


def check_fused_outputs(jobs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str], str | os.PathLike[str]]]) -> None:
    """Check, from the input files' headers, that each output format can hold its fused image.

    ``jobs`` are ``(output file, ir file, vis file)``. The fused image of a pair is 16-bit when
    its visible image is, and colour when either input is (:func:`emmafuse.image_io.fused_kind`);
    a 16-bit result needs ``.png`` (or ``.tif`` when gray). Pairs whose headers cannot be read
    are left to the fusion, which reports them.

    Raises:
        OutputError: naming how many outputs cannot be written and the first of them.
    """
    bad: list[str] = []
    for target, ir, vis in jobs:
        try:
            sixteen_bit, channels = fused_kind(read_header(ir), read_header(vis))
        except ImageReadError:
            continue
        try:
            check_output_kind(target, sixteen_bit=sixteen_bit, channels=channels)
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        count = f"{len(bad)} of {len(jobs)} outputs cannot be written" if len(jobs) > 1 else "the output cannot be written"
        raise OutputError(f"{count}: {bad[0]}")
