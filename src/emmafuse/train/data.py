"""Paired-folder training data: pairing, loading, patch sampling and the step sampler.

Design for exact resume and worker independence: the *k*-th sample of a stage is a pure
function of ``(seed, stage, k)`` (which pair, where to crop, which flips), and the sampler
hands step ``s`` of process ``rank`` the sample indices of that step. Restarting at step
``s`` therefore reproduces the same batches without saving any DataLoader state, for any
number of workers.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from emmafuse.image_io import IMAGE_SUFFIXES, ImageReadError, PairingError, index_images, pair_folders, read_luma, rgb_to_y
from emmafuse.train.augment import Augment, add_sensor_noise
from emmafuse.errors import EmmafuseError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "ImagePair",
    "list_images",
    "find_pairs",
    "split_pairs",
    "rgb_to_y",
    "is_low_contrast",
    "PairStore",
    "PatchDataset",
    "StepSampler",
    "make_loader",
    "validation_crops",
    "stems_fingerprint",
    "describe_pairs",
    "check_training_data",
    "collect_pairs",
    "pair_domain",
    "split_holdout",
]

# One suffix list and one pairing rule for fuse, eval and train (emmafuse.image_io); an alias, not a copy.
IMAGE_EXTENSIONS = IMAGE_SUFFIXES


#: Gray level (of 1) above which a pixel counts as foreground in :meth:`PatchDataset.filter_stats`.
FOREGROUND_LEVEL = 0.04


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
        raise DataError(f"{role} folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
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
        raise DataError("no training folders given (--ir DIR --vis DIR)")
    if len(folder_pairs) == 1:
        return find_pairs(*folder_pairs[0])
    names = [Path(ir).resolve().parent.name or str(k) for k, (ir, _) in enumerate(folder_pairs)]
    if len(set(names)) != len(names):
        names = [f"{k}-{name}" for k, name in enumerate(names)]
    out: list[ImagePair] = []
    for name, (ir_dir, vis_dir) in zip(names, folder_pairs):
        out += [ImagePair(f"{name}/{p.stem}", p.ir_path, p.vis_path) for p in find_pairs(ir_dir, vis_dir)]
    return out


def _check_sizes(mismatched: Sequence[str], small: Sequence[str], min_side: int) -> None:
    """Raise the size problems found in a set of pairs (shared by the early check and PairStore)."""
    if mismatched:
        raise DataError(
            f"{len(mismatched)} pairs have different sizes in the two folders (register them first): "
            + ", ".join(mismatched[:5])
        )
    if small:
        raise DataError(
            f"{len(small)} pairs are smaller than the {min_side}x{min_side} crop: "
            + ", ".join(small[:5])
            + " (lower --crop or remove them)"
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
    _check_sizes(mismatched, small, min_side)
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


def is_low_contrast(
    patch: np.ndarray, fraction_threshold: float = 0.1, lower_percentile: float = 10, upper_percentile: float = 90
) -> bool:
    """The official patch filter: ``(p90 - p10) / p90 < 0.1`` means low contrast.

    An all-dark patch (``p90 == 0``) counts as low contrast (the official code divides by
    zero there and keeps it).
    """
    lo, hi = np.percentile(patch, [lower_percentile, upper_percentile])
    if hi <= 0:
        return True
    return bool((hi - lo) / hi < fraction_threshold)


class PairStore:
    """All training images in memory as float16 (half the RAM of float32; error < 2.5e-4).

    ``fused[name][i]`` holds pseudo ground truth ``name`` for pair ``i`` (filled by
    :func:`emmafuse.train.pseudo_gt.fill_pseudo_gt`).
    """

    def __init__(self, pairs: Sequence[ImagePair], min_side: int = 0) -> None:
        if not pairs:
            raise DataError("no training pairs")
        self.pairs = list(pairs)
        self.ir: list[np.ndarray] = []
        self.vis: list[np.ndarray] = []
        self.fused: dict[str, list[np.ndarray]] = {}
        small, mismatched = [], []
        for pair in self.pairs:
            try:
                a, b = read_luma(pair.ir_path), read_luma(pair.vis_path)
            except ImageReadError as exc:
                raise DataError(str(exc)) from exc
            if a.shape != b.shape:
                mismatched.append(f"{pair.stem} (ir {a.shape[1]}x{a.shape[0]}, vis {b.shape[1]}x{b.shape[0]})")
            elif min(a.shape) < min_side:
                small.append(f"{pair.stem} ({a.shape[1]}x{a.shape[0]})")
            self.ir.append(a.astype(np.float16))
            self.vis.append(b.astype(np.float16))
        _check_sizes(mismatched, small, min_side)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def stems(self) -> list[str]:
        return [p.stem for p in self.pairs]

    def add_fused(self, name: str, images: Sequence[np.ndarray]) -> None:
        if len(images) != len(self.pairs):
            raise ValueError(f"pseudo GT '{name}' has {len(images)} images for {len(self.pairs)} pairs")
        for img, a, pair in zip(images, self.ir, self.pairs):
            if img.shape != a.shape:
                raise DataError(f"pseudo GT '{name}' for {pair.stem} is {img.shape}, the pair is {a.shape}")
        self.fused[name] = [np.asarray(img, dtype=np.float16) for img in images]


class PatchDataset(Dataset[dict[str, torch.Tensor]]):
    """Random square patches of the stored pairs; item ``k`` is deterministic in ``(seed, k)``.

    Items are dicts of ``(1, crop, crop)`` float32 tensors: ``ir``, ``vis`` and, when
    ``with_fused``, ``fused`` (one pseudo-GT source drawn per sample, among ``sources``
    when given, else among all in the store).
    """

    def __init__(
        self,
        store: PairStore,
        crop: int,
        seed: int,
        *,
        stage: int = 0,
        flips: bool = True,
        low_contrast_filter: bool = True,
        max_tries: int = 10,
        with_fused: bool = False,
        sources: Sequence[str] | None = None,
        augment: Augment | None = None,
        balance: str = "pairs",
    ) -> None:
        if with_fused and not store.fused:
            raise ValueError("with_fused=True needs pseudo ground truth in the store")
        if sources is not None and (not sources or set(sources) - set(store.fused)):
            raise ValueError(f"pseudo-GT sources {list(sources)} are not all in the store ({sorted(store.fused)})")
        self.store = store
        self.crop = crop
        self.seed = seed
        self.stage = stage
        self.flips = flips
        self.low_contrast_filter = low_contrast_filter
        self.max_tries = max_tries
        self.with_fused = with_fused
        self.sources = sorted(sources) if sources is not None else sorted(store.fused)
        self.augment = augment or Augment()
        if balance not in ("pairs", "domains"):
            raise ValueError(f"balance must be 'pairs' or 'domains', got {balance!r}")
        self.balance = balance
        groups: dict[str, list[int]] = {}
        for i, stem in enumerate(store.stems):
            groups.setdefault(pair_domain(stem), []).append(i)
        self.domains = [groups[name] for name in sorted(groups)]

    def pair_index(self, k: int) -> int:
        """Which pair sample ``k`` comes from.

        ``balance="pairs"``: every pair once per epoch of ``len(store)`` samples, in a seeded
        order. ``"domains"``: a domain (:func:`pair_domain`) drawn uniformly, then one of its
        pairs, so 12 frames of a rare source weigh as much as 150 photographs of a common one.
        """
        if self.balance == "domains" and len(self.domains) > 1:
            rng = np.random.default_rng([self.seed, self.stage, 3, k])
            members = self.domains[int(rng.integers(len(self.domains)))]
            return members[int(rng.integers(len(members)))]
        n = len(self.store)
        epoch, pos = divmod(k, n)
        return int(np.random.default_rng([self.seed, self.stage, 1, epoch]).permutation(n)[pos])

    def _side(self, idx: int, rng: np.random.Generator) -> int:
        """Side of the region cut from the image: the crop, or more when downscaling is on."""
        if self.augment.scale_min >= 1:
            return self.crop
        h, w = self.store.ir[idx].shape
        scale = rng.uniform(self.augment.scale_min, 1.0)
        return max(self.crop, min(int(round(self.crop / scale)), h, w))

    def _cut(self, img: np.ndarray, y: int, x: int, side: int) -> np.ndarray:
        """The ``side``-square region at ``(y, x)``, area-resampled to the crop size."""
        patch = img[y : y + side, x : x + side].astype(np.float32)
        if side == self.crop:
            return patch
        t = torch.from_numpy(patch)[None, None]
        return torch.nn.functional.interpolate(t, size=(self.crop, self.crop), mode="area")[0, 0].numpy()

    def _crop(self, idx: int, rng: np.random.Generator) -> tuple[int, int, int, np.ndarray, np.ndarray, int]:
        """A region ``(y, x, side)`` and its patches; the last value is the number of tries (0: none passed)."""
        a, b = self.store.ir[idx], self.store.vis[idx]
        h, w = a.shape
        c = self._side(idx, rng)
        for attempt in range(1, self.max_tries + 1):
            y = int(rng.integers(0, h - c + 1))
            x = int(rng.integers(0, w - c + 1))
            pa, pb = self._cut(a, y, x, c), self._cut(b, y, x, c)
            if not self.low_contrast_filter or not (is_low_contrast(pa) or is_low_contrast(pb)):
                return y, x, c, pa, pb, attempt
        return y, x, c, pa, pb, 0  # every try was low-contrast: keep the last one (official behaviour)

    def filter_stats(self, n: int = 512) -> dict[str, float]:
        """How the low-contrast filter treats this data, from the first ``n`` samples.

        ``crops_kept``: fraction of candidate crops that passed; ``samples_low_contrast``:
        fraction of samples that fell back to a low-contrast crop after ``max_tries``;
        ``foreground``: mean fraction of a sample's pixels above ``FOREGROUND_LEVEL`` in either
        image; ``mostly_background``: fraction of samples under a quarter foreground (medical
        slices are half black background).
        """
        tries = fallbacks = 0
        foreground = []
        for k in range(n):
            rng = np.random.default_rng([self.seed, self.stage, 2, k])
            _, _, _, pa, pb, used = self._crop(self.pair_index(k), rng)
            tries += used or self.max_tries
            fallbacks += used == 0
            foreground.append(float(((pa > FOREGROUND_LEVEL) | (pb > FOREGROUND_LEVEL)).mean()))
        fg = np.asarray(foreground)
        return {
            "crops_kept": (n - fallbacks) / tries if tries else 1.0,
            "samples_low_contrast": fallbacks / n,
            "foreground": float(fg.mean()) if n else 0.0,
            "mostly_background": float((fg < 0.25).mean()) if n else 0.0,
        }

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        idx = self.pair_index(k)
        rng = np.random.default_rng([self.seed, self.stage, 2, k])
        y, x, side, pa, pb, _ = self._crop(idx, rng)
        out = {"ir": pa, "vis": pb}
        if self.with_fused:
            name = self.sources[int(rng.integers(len(self.sources)))]
            out["fused"] = self._cut(self.store.fused[name][idx], y, x, side)
        if self.flips:
            flip_h, flip_v = rng.random(2) < 0.5
            for key in out:
                if flip_h:
                    out[key] = out[key][:, ::-1]
                if flip_v:
                    out[key] = out[key][::-1, :]
        if self.augment.any_input_change:
            out = self._augment_inputs(out, rng)
        return {key: torch.from_numpy(np.ascontiguousarray(v)[None]) for key, v in out.items()}

    def _augment_inputs(self, out: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Noise and swap on the inputs; the clean pair stays as ``ir_ref`` / ``vis_ref`` (same slots)."""
        a, b = out["ir"], out["vis"]
        aug = self.augment
        noisy = []
        for patch in (a, b):
            if aug.noise > 0 and rng.random() < aug.noise:
                patch = add_sensor_noise(patch, rng, aug.noise_sigma, aug.noise_rows)
            noisy.append(patch)
        ref = [a, b]
        if aug.swap > 0 and rng.random() < aug.swap:
            noisy.reverse()
            ref.reverse()
        return {**out, "ir": noisy[0], "vis": noisy[1], "ir_ref": ref[0], "vis_ref": ref[1]}


class StepSampler(Sampler[int]):
    """Yields the sample indices of steps ``start .. end-1`` for one process.

    Step ``s`` of process ``rank`` (of ``world``) gets indices
    ``[(s * world + rank) * batch, ... + batch)``: disjoint across processes, independent
    of where a run was resumed.
    """

    def __init__(self, batch: int, start: int, end: int, rank: int = 0, world: int = 1) -> None:
        self.batch, self.start, self.end, self.rank, self.world = batch, start, end, rank, world

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.end):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.batch


def _worker_init(_: int) -> None:
    # patch work is numpy; stop each worker from spawning a full torch thread pool
    torch.set_num_threads(1)


def make_loader(
    dataset: PatchDataset,
    batch: int,
    start: int,
    end: int,
    *,
    rank: int = 0,
    world: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader[dict[str, torch.Tensor]]:
    """A DataLoader whose i-th batch is step ``start + i``."""
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=StepSampler(batch, start, end, rank, world),
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def validation_crops(store: PairStore, size: int) -> list[dict[str, Any]]:
    """Fixed centre crops (side ``size``, or the largest multiple of 16 that fits).

    Returns one dict per pair with ``(1, 1, h, w)`` tensors ``ir``, ``vis`` and
    ``fused:<name>`` for each pseudo-GT source, plus ``stem``.
    """
    out: list[dict[str, Any]] = []
    for i, pair in enumerate(store.pairs):
        h, w = store.ir[i].shape
        ch, cw = min(size, h // 16 * 16), min(size, w // 16 * 16)
        if ch < 16 or cw < 16:
            raise DataError(f"validation pair {pair.stem} ({w}x{h}) is smaller than 16x16")
        y, x = (h - ch) // 2, (w - cw) // 2

        def cut(arr: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(arr[y : y + ch, x : x + cw].astype(np.float32))[None, None]

        item: dict[str, Any] = {"ir": cut(store.ir[i]), "vis": cut(store.vis[i])}
        for name, images in store.fused.items():
            item[f"fused:{name}"] = cut(images[i])
        item["stem"] = pair.stem
        out.append(item)
    return out


def stems_fingerprint(stems: Sequence[str]) -> str:
    """A short hash of the pair names (recorded in exported metadata)."""
    import hashlib

    return hashlib.sha1("\n".join(sorted(stems)).encode()).hexdigest()[:12]


def describe_pairs(train: Sequence[ImagePair], val: Sequence[ImagePair]) -> Mapping[str, object]:
    return {
        "train_pairs": len(train),
        "val_pairs": len(val),
        "train_stems_sha1": stems_fingerprint([p.stem for p in train]),
        "val_stems": [p.stem for p in val],
    }
