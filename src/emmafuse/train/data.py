"""Paired-folder training data: finding and pairing the images, checking them, and splitting
them into training, validation and held-out domains.

The in-memory images, the patches cut from them and the step sampler are
:mod:`emmafuse.train.patches`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emmafuse.errors import EmmafuseError
from emmafuse.image_io import IMAGE_SUFFIXES, PairingError, index_images, pair_folders

__all__ = [
    "DataError",
    "ImagePair",
    "list_images",
    "find_pairs",
    "collect_pairs",
    "check_sizes",
    "check_training_data",
    "split_pairs",
    "pair_domain",
    "split_holdout",
    "stems_fingerprint",
    "describe_pairs",
]


class DataError(EmmafuseError, ValueError):
    """A problem with the training folders or images (message names the files)."""


@dataclass(frozen=True)
class ImagePair:
    """Two registered images of one scene, paired by file stem."""

    stem: str
    ir_path: Path
    vis_path: Path


def list_images(folder: str | os.PathLike[str], role: str) -> dict[str, Path]:
    """Images of a training folder by stem (:func:`emmafuse.image_io.index_images`).

    Raises:
        DataError: no folder given, missing, not a folder, no images, or two images with one stem.
    """
    if not str(folder):
        raise DataError(f"no {role} folder given")
    try:
        found = index_images(folder, role)
    except PairingError as exc:
        raise DataError(str(exc)) from exc
    if not found:
        raise DataError(f"{role} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def find_pairs(ir_dir: str | os.PathLike[str], vis_dir: str | os.PathLike[str]) -> list[ImagePair]:
    """Pair the images of two folders by file stem (``a.png`` pairs ``a.jpg``).

    The pairing is :func:`emmafuse.image_io.pair_folders`, shared with ``fuse`` and ``eval``;
    training is stricter only about images without a partner, which it refuses.

    Raises:
        DataError: a folder is missing or empty, two images share a stem, or some names have no partner.
    """
    for folder, role in ((ir_dir, "ir"), (vis_dir, "vis")):
        list_images(folder, role)  # the training messages for missing / empty folders
    try:
        found = pair_folders(ir_dir, vis_dir)
    except PairingError as exc:  # pragma: no cover - list_images raised it already
        raise DataError(str(exc)) from exc
    if found.only_ir or found.only_vis:
        parts = []
        if found.only_ir:
            parts.append(f"{len(found.only_ir)} only in {ir_dir} (e.g. {', '.join(found.only_ir[:5])})")
        if found.only_vis:
            parts.append(f"{len(found.only_vis)} only in {vis_dir} (e.g. {', '.join(found.only_vis[:5])})")
        raise DataError("unpaired images (pairs are matched by file name without extension): " + "; ".join(parts))
    return [ImagePair(stem, a, b) for stem, a, b in found.pairs]


def collect_pairs(folder_pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]]) -> list[ImagePair]:
    """The pairs of several (ir folder, vis folder) pairs, for training on a mix.

    With one folder pair the stems are the file stems; with several each stem is prefixed by
    its set's name (the folder above the ir folder, e.g. ``MRI_PET/2004``; the index where
    those names repeat), so equal file names in different sets stay distinct pairs.

    Raises:
        DataError: no folder pair, or any problem :func:`find_pairs` reports.
    """
    if not folder_pairs:
        raise DataError("no training folders given (data.ir_dir and data.vis_dir)", parameter="data.ir_dir")
    if len(folder_pairs) == 1:
        return find_pairs(*folder_pairs[0])
    names = [Path(ir).resolve().parent.name or str(k) for k, (ir, _) in enumerate(folder_pairs)]
    if len(set(names)) != len(names):
        names = [f"{k}-{name}" for k, name in enumerate(names)]
    out: list[ImagePair] = []
    for name, (ir_dir, vis_dir) in zip(names, folder_pairs):
        out += [ImagePair(f"{name}/{p.stem}", p.ir_path, p.vis_path) for p in find_pairs(ir_dir, vis_dir)]
    return out


def check_sizes(mismatched: Sequence[str], small: Sequence[str], min_side: int) -> None:
    """Raise the size problems found in a set of pairs (shared by the early check and
    :class:`~emmafuse.train.patches.PairStore`)."""
    if mismatched:
        raise DataError(
            f"{len(mismatched)} pairs have different sizes in the two folders (register them first): "
            + ", ".join(mismatched[:5])
        )
    if small:
        raise DataError(
            f"{len(small)} pairs are smaller than the {min_side}x{min_side} crop: "
            + ", ".join(small[:5])
            + " (lower data.crop or remove them)",
            parameter="data.crop",
        )


def check_training_data(
    folder_pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]], val_pairs: int, seed: int,
    min_side: int, holdout: Sequence[str] = (),
) -> list[ImagePair]:
    """Everything about the data that can be checked cheaply, before a run folder is created.

    Pairs, the validation split, and each image's size from its header (no decoding): a run that
    would fail on its data fails before writing ``config.json``, so the corrected rerun is not
    refused as an existing run.

    Raises:
        DataError: as :func:`find_pairs` and :func:`split_pairs`, an unreadable header, pairs of
            different sizes, or images smaller than ``min_side``.
    """
    from PIL import Image, UnidentifiedImageError

    pairs = collect_pairs(folder_pairs)
    kept, _ = split_holdout(pairs, holdout)
    train, _ = split_pairs(kept, val_pairs, seed)
    training = {p.stem for p in train}
    mismatched, small = [], []
    for pair in pairs:
        sizes = []
        for path in (pair.ir_path, pair.vis_path):
            try:
                with Image.open(path) as im:
                    sizes.append(im.size)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                raise DataError(f"cannot read image {path}: {exc}") from exc
        if sizes[0] != sizes[1]:
            mismatched.append(f"{pair.stem} (ir {sizes[0][0]}x{sizes[0][1]}, vis {sizes[1][0]}x{sizes[1][1]})")
        elif pair.stem in training and min(sizes[0]) < min_side:
            small.append(f"{pair.stem} ({sizes[0][0]}x{sizes[0][1]})")
    check_sizes(mismatched, small, min_side)
    return pairs


def split_pairs(pairs: Sequence[ImagePair], val_pairs: int, seed: int) -> tuple[list[ImagePair], list[ImagePair]]:
    """Hold ``val_pairs`` pairs out (chosen by ``seed``); returns ``(train, val)``."""
    if len(pairs) - val_pairs < 1:
        raise DataError(f"{len(pairs)} pairs cannot hold out {val_pairs} for validation and still train")
    order = np.random.default_rng([seed, 7]).permutation(len(pairs))
    val = sorted((pairs[i] for i in order[:val_pairs]), key=lambda p: p.stem)
    train = sorted((pairs[i] for i in order[val_pairs:]), key=lambda p: p.stem)
    return train, val


def pair_domain(stem: str) -> str:
    """The source a pair comes from: its set prefix plus the leading word of its file name.

    ``ivf/FLIR_00006`` -> ``ivf/FLIR``, ``ivf/LLVIP_190001`` -> ``ivf/LLVIP``,
    ``M3SVD/M3SVD_0111_1716_0005`` -> ``M3SVD/M3SVD``, ``M3SVDvf_0111`` -> ``M3SVDvf``; a name without a leading word is its own
    set's domain (``MRI_PET/2004`` -> ``MRI_PET``).
    """
    head, _, name = stem.rpartition("/")
    word = re.match(r"[A-Za-z][A-Za-z0-9]*", name)
    label = word.group(0) if word else ""
    return "/".join(part for part in (head, label) if part) or "pairs"


def split_holdout(pairs: Sequence[ImagePair], patterns: Sequence[str]) -> tuple[list[ImagePair], list[ImagePair]]:
    """Pairs whose name (``set/stem``) or domain matches one of the glob ``patterns`` are held out.

    Returns ``(kept, held_out)``. A whole source held out this way is never trained on and
    measures how the model does outside its training domain.

    Raises:
        DataError: a pattern matches no pair (a typo would otherwise silently train on everything).
    """
    held: set[str] = set()
    for pattern in patterns:
        hits = {p.stem for p in pairs if fnmatch.fnmatchcase(p.stem, pattern) or fnmatch.fnmatchcase(pair_domain(p.stem), pattern)}
        if not hits:
            raise DataError(f"held-out pattern {pattern!r} matches no pair (names look like {pairs[0].stem!r})")
        held |= hits
    return [p for p in pairs if p.stem not in held], [p for p in pairs if p.stem in held]


def stems_fingerprint(stems: Sequence[str]) -> str:
    """A short hash of the pair names (recorded in exported metadata)."""
    import hashlib

    return hashlib.sha1("\n".join(sorted(stems)).encode()).hexdigest()[:12]


def describe_pairs(train: Sequence[ImagePair], val: Sequence[ImagePair]) -> Mapping[str, object]:
    """What ``data.json`` records about the split: counts, a hash of the training stems, the validation stems."""
    return {
        "train_pairs": len(train),
        "val_pairs": len(val),
        "train_stems_sha1": stems_fingerprint([p.stem for p in train]),
        "val_stems": [p.stem for p in val],
    }
