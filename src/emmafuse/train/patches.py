"""Training patches: the pairs in memory, the patches cut from them and the step sampler.

Design for exact resume and worker independence: the *k*-th sample of a stage is a pure
function of ``(seed, stage, k)`` (which pair, where to crop, which flips), and the sampler
hands step ``s`` of process ``rank`` the sample indices of that step. Restarting at step
``s`` therefore reproduces the same batches without saving any DataLoader state, for any
number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from emmafuse.errors import InputError
from emmafuse.image_io import ImageReadError, read_luma
from emmafuse.models.size_req import SizeRequirements
from emmafuse.train.augment import Augment, augment_inputs
from emmafuse.train.data import DataError, ImagePair, check_sizes, pair_domain
from emmafuse.train.sensing import crop_requirements

__all__ = [
    "FOREGROUND_LEVEL",
    "is_low_contrast",
    "PairStore",
    "PatchDataset",
    "StepSampler",
    "make_loader",
    "centre_crop_box",
    "validation_crops",
]

#: Gray level (of 1) above which a pixel counts as foreground in :meth:`PatchDataset.filter_stats`.
FOREGROUND_LEVEL = 0.04


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
        check_sizes(mismatched, small, min_side)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def stems(self) -> list[str]:
        return [p.stem for p in self.pairs]

    def add_fused(self, name: str, images: Sequence[np.ndarray]) -> None:
        if len(images) != len(self.pairs):
            raise DataError(f"pseudo GT '{name}' has {len(images)} images for {len(self.pairs)} pairs", parameter="images")
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
            raise InputError("with_fused=True needs pseudo ground truth in the store", parameter="with_fused")
        if sources is not None and (not sources or set(sources) - set(store.fused)):
            raise InputError(
                f"pseudo-GT sources {list(sources)} are not all in the store ({sorted(store.fused)})", parameter="sources"
            )
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
            raise InputError(f"balance must be 'pairs' or 'domains', got {balance!r}", parameter="balance")
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
            out = augment_inputs(out, rng, self.augment)
        return {key: torch.from_numpy(np.ascontiguousarray(v)[None]) for key, v in out.items()}


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


def centre_crop_box(h: int, w: int, size: int, req: SizeRequirements | None = None) -> tuple[int, int, int, int]:
    """``(y, x, height, width)`` of the centre crop of an ``h x w`` image: side ``size``, or the
    largest multiple of the networks' size multiple that fits (:func:`~emmafuse.train.sensing.crop_requirements`)."""
    req = req or crop_requirements()
    ch, cw = min(size, req.round_down(h)), min(size, req.round_down(w))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def validation_crops(store: PairStore, size: int) -> list[dict[str, Any]]:
    """Fixed centre crops (:func:`centre_crop_box`).

    Returns one dict per pair with ``(1, 1, h, w)`` tensors ``ir``, ``vis`` and
    ``fused:<name>`` for each pseudo-GT source, plus ``stem``.

    Raises:
        DataError: a pair smaller than the networks accept.
    """
    req = crop_requirements()
    out: list[dict[str, Any]] = []
    for i, pair in enumerate(store.pairs):
        h, w = store.ir[i].shape
        y, x, ch, cw = centre_crop_box(h, w, size, req)
        if ch < req.minimum or cw < req.minimum:
            raise DataError(f"validation pair {pair.stem} ({w}x{h}) is smaller than {req.minimum}x{req.minimum}")

        def cut(arr: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(arr[y : y + ch, x : x + cw].astype(np.float32))[None, None]

        item: dict[str, Any] = {"ir": cut(store.ir[i]), "vis": cut(store.vis[i])}
        for name, images in store.fused.items():
            item[f"fused:{name}"] = cut(images[i])
        item["stem"] = pair.stem
        out.append(item)
    return out
