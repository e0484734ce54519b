"""Pseudo ground truth for the sensing modules A_i, A_v.

The paper trains A_i (fused -> infrared) and A_v (fused -> visible) on the fused images of
nine published methods, mixed. Those images do not exist for new training pairs, so the
source is pluggable; several sources are mixed per sample like the paper's nine methods.

Source specs (``sensing.pseudo_gt``, comma separated):

- ``laplacian``: Laplacian-pyramid fusion, max-abs detail selection, averaged base.
- ``gff``: guided-filtering fusion (Li, Kang & Hu, TIP 2013), a saliency-weighted two-scale rule.
- ``gff-max``: GFF's detail layer over the brighter base layer (the emma-ivf v2 teacher).
- ``folder:PATH``: your own fused images, one per pair, matched by file stem.
- ``fuser:PATH``: a U-Fuser weights file (e.g. released EMMA weights) fuses the pairs.
- ``bootstrap``: a U-Fuser first trained here with a conventional loss (intensity max +
  gradient max L1, the paper's Exp. II idea); see :mod:`emmafuse.train.stages`.

Default: ``laplacian,gff`` (no extra training, no external files, deterministic).
All sources fuse *whole images* once, before training, on the training device.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emmafuse.errors import InputError
from emmafuse.image_io import ImageReadError, read_luma
from emmafuse.models import UFuser
from emmafuse.padding import crop, pad_to_network
from emmafuse.train.data import DataError, list_images
from emmafuse.train.filters import box_mean, gaussian_kernel_1d, guided_filter, replicate_pad, separable_conv
from emmafuse.train.patches import PairStore
from emmafuse.train.pseudo_gt_cache import cache_file, read_cache, write_cache

__all__ = [
    "PseudoGTSource",
    "LaplacianPyramidFusion",
    "GuidedFilterFusion",
    "MaxBaseGuidedFilterFusion",
    "FolderPseudoGT",
    "FuserPseudoGT",
    "parse_sources",
    "check_specs",
    "fill_pseudo_gt",
    "prepare_pseudo_gt",
]


class PseudoGTSource(ABC):
    """Produces a pseudo fused image for one registered pair."""

    name: str = "source"

    def cache_key(self) -> str | None:
        """A string naming this rule and its parameters, or None when results must not be cached."""
        return None

    @abstractmethod
    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, stem: str) -> torch.Tensor:
        """Fuse ``(1, 1, H, W)`` images in [0, 1] into one ``(1, 1, H, W)`` image in [0, 1]."""

    def check(self, stems: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Raise :class:`DataError` early if the source cannot serve these pairs."""


# ------------------------------------------------------------------------- rule sources
class LaplacianPyramidFusion(PseudoGTSource):
    """Burt-Adelson pyramid fusion: keep the larger-magnitude detail coefficient, average the base."""

    name = "laplacian"

    def __init__(self, levels: int = 4) -> None:
        self.levels = levels
        self._kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0

    def cache_key(self) -> str:
        return f"laplacian-v1-levels{self.levels}"

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return separable_conv(x, self._kernel)[..., ::2, ::2]

    @staticmethod
    def _up(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Laplacian pyramid, finest first; the last entry is the Gaussian base."""
        # keep the coarsest level at least 8 pixels on its short side
        levels = max(1, min(self.levels, int(math.log2(max(min(x.shape[-2:]), 1) / 8)) + 1))
        out, g = [], x
        for _ in range(levels - 1):
            d = self._down(g)
            out.append(g - self._up(d, g.shape[-2:]))
            g = d
        out.append(g)
        return out

    def reconstruct(self, pyr: Sequence[torch.Tensor]) -> torch.Tensor:
        g = pyr[-1]
        for lap in reversed(pyr[:-1]):
            g = lap + self._up(g, lap.shape[-2:])
        return g

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, stem: str = "") -> torch.Tensor:
        pa, pb = self.pyramid(ir.float()), self.pyramid(vis.float())
        fused = [torch.where(a.abs() >= b.abs(), a, b) for a, b in zip(pa[:-1], pb[:-1])]
        fused.append((pa[-1] + pb[-1]) / 2)
        return self.reconstruct(fused).clamp(0, 1)


class GuidedFilterFusion(PseudoGTSource):
    """GFF (Li, Kang & Hu 2013): two-scale split, Laplacian saliency, guided-filtered weights.

    Parameters are the paper's: base = 31x31 mean, saliency = Gaussian(11x11, sigma 5) of
    |Laplacian|, weights refined with (r=45, eps=0.3) for the base and (r=7, eps=1e-6)
    for the detail layer.
    """

    name = "gff"

    def __init__(self, r1: int = 45, eps1: float = 0.3, r2: int = 7, eps2: float = 1e-6) -> None:
        self.r1, self.eps1, self.r2, self.eps2 = r1, eps1, r2, eps2
        self._gauss = gaussian_kernel_1d(5, 5.0)
        self._lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)

    def cache_key(self) -> str:
        return f"gff-v1-r{self.r1}-e{self.eps1}-r{self.r2}-e{self.eps2}"

    def _split(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both images stacked ``(2, 1, H, W)``, their base layers (31x31 mean) and the
        fused detail layer (saliency decision refined by the r2 guided filter)."""
        imgs = torch.cat([ir.float(), vis.float()], 0)
        base = box_mean(imgs, 15)
        detail = imgs - base
        sal = separable_conv(F.conv2d(replicate_pad(imgs, 1), self._lap.to(imgs)).abs(), self._gauss)
        p = _decision(sal)
        wd = _normalised(guided_filter(imgs, p, self.r2, self.eps2))
        return imgs, base, (wd * detail).sum(0, keepdim=True)

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, stem: str = "") -> torch.Tensor:
        imgs, base, detail = self._split(ir, vis)
        sal = separable_conv(F.conv2d(replicate_pad(imgs, 1), self._lap.to(imgs)).abs(), self._gauss)
        wb = _normalised(guided_filter(imgs, _decision(sal), self.r1, self.eps1))
        return ((wb * base).sum(0, keepdim=True) + detail).clamp(0, 1)


class MaxBaseGuidedFilterFusion(GuidedFilterFusion):
    """GFF's detail layer over a *brighter-base* rule: the emma-ivf v2 teacher (``gff-max``).

    GFF takes each region's base layer from the image with more local texture. Where the
    visible camera sees a smooth bright sky and the infrared a dark grainy one, that is the
    infrared, and the sky turns black (RoadScene); on TNO the same rule flips to the visible
    image. Here the base decision is which base layer is brighter (hot targets from the
    infrared, lit scenery and sky from the visible), refined by a guided filter (r=15,
    eps=0.01) so the switch follows edges without seams; the detail layer is GFF's.
    Symmetric in its inputs. Chosen on held-out training domains (LLVIP, M3SVD), never on a
    test set: docs/training.md.
    """

    name = "gff-max"

    def __init__(self, r1: int = 15, eps1: float = 0.01, r2: int = 7, eps2: float = 1e-6) -> None:
        super().__init__(r1, eps1, r2, eps2)

    def cache_key(self) -> str:
        return f"gff-max-v1-r{self.r1}-e{self.eps1}-r{self.r2}-e{self.eps2}"

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, stem: str = "") -> torch.Tensor:
        imgs, base, detail = self._split(ir, vis)
        wb = _normalised(guided_filter(imgs, _decision(base), self.r1, self.eps1))
        return ((wb * base).sum(0, keepdim=True) + detail).clamp(0, 1)


def _decision(score: torch.Tensor) -> torch.Tensor:
    """Binary maps ``(2, 1, H, W)``: where the first image's score wins (ties to it), and the rest."""
    first = (score[:1] >= score[1:]).float()
    return torch.cat([first, 1.0 - first], 0)


def _normalised(weights: torch.Tensor) -> torch.Tensor:
    w = weights.clamp_min(0)
    return w / w.sum(0, keepdim=True).clamp_min(1e-8)


# ---------------------------------------------------------------------- external sources
class FolderPseudoGT(PseudoGTSource):
    """Fused images you already have (e.g. from published methods), matched by stem."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.name = f"folder:{self.folder}"
        self._files: dict[str, Path] | None = None

    def _index(self) -> dict[str, Path]:
        if self._files is None:
            self._files = list_images(self.folder, "pseudo-GT")
        return self._files

    def check(self, stems: Sequence[str]) -> None:
        missing = sorted(set(stems) - set(self._index()))
        if missing:
            raise DataError(
                f"pseudo-GT folder {self.folder} lacks {len(missing)} of the training pairs "
                f"(e.g. {', '.join(missing[:5])})"
            )

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, stem: str) -> torch.Tensor:
        path = self._index().get(stem)
        if path is None:
            raise DataError(f"pseudo-GT folder {self.folder} has no image for '{stem}'")
        try:
            img = read_luma(path)
        except ImageReadError as exc:
            raise DataError(str(exc)) from exc
        if img.shape != tuple(ir.shape[-2:]):
            raise DataError(f"pseudo-GT {path} is {img.shape[1]}x{img.shape[0]}, the pair is {ir.shape[-1]}x{ir.shape[-2]}")
        return torch.from_numpy(img)[None, None].to(ir.device)


class FuserPseudoGT(PseudoGTSource):
    """A U-Fuser (a weights file, or the bootstrap network) fuses the pairs.

    Images are padded to the network's size requirements exactly as :class:`emmafuse.Fuser`
    pads them (:func:`emmafuse.padding.pad_to_network`), and cropped back.
    """

    def __init__(self, model: UFuser, name: str = "fuser") -> None:
        self.model = model
        self.name = name

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> FuserPseudoGT:
        from emmafuse.checkpoint import build_ufuser, load_ufuser_file

        state, config, _ = load_ufuser_file(path)
        return cls(build_ufuser(state, config, source=str(path)), name=f"fuser:{path}")

    @torch.no_grad()
    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, stem: str = "") -> torch.Tensor:
        req = self.model.size_requirements
        device = next(self.model.parameters()).device
        a, pads = pad_to_network(ir.to(device).float(), req)
        b, _ = pad_to_network(vis.to(device).float(), req)
        was_training = self.model.training
        self.model.eval()
        out = crop(self.model(a, b), pads).float()
        self.model.train(was_training)
        return out.to(ir.device)


def parse_sources(specs: Sequence[str], bootstrap: UFuser | None = None) -> list[PseudoGTSource]:
    """Turn spec strings (see module docstring) into sources."""
    sources: list[PseudoGTSource] = []
    for raw in specs:
        spec = raw.strip()
        if spec == "laplacian":
            sources.append(LaplacianPyramidFusion())
        elif spec == "gff":
            sources.append(GuidedFilterFusion())
        elif spec == "gff-max":
            sources.append(MaxBaseGuidedFilterFusion())
        elif spec.startswith("folder:"):
            sources.append(FolderPseudoGT(spec[len("folder:") :]))
        elif spec.startswith("fuser:"):
            sources.append(FuserPseudoGT.from_file(spec[len("fuser:") :]))
        elif spec == "bootstrap":
            if bootstrap is None:
                raise InputError("pseudo-GT 'bootstrap' needs the trained bootstrap U-Fuser", parameter="bootstrap")
            sources.append(FuserPseudoGT(bootstrap, name="bootstrap"))
        else:
            raise DataError(
                f"unknown pseudo-GT source {spec!r}: use laplacian, gff, gff-max, bootstrap, folder:PATH or fuser:PATH"
            )
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise DataError(f"pseudo-GT sources repeat: {names}")
    return sources


def check_specs(specs: Sequence[str], stems: Sequence[str]) -> None:
    """Check pseudo-GT source specs before a run starts: known kinds, folders that cover every
    pair, readable weights files (``bootstrap`` is trained by the run itself).

    Raises:
        DataError: one line naming the bad source.
    """
    from emmafuse.errors import WeightsError

    for spec in (raw.strip() for raw in specs):
        if spec == "bootstrap":
            continue
        try:
            for source in parse_sources([spec], bootstrap=None):
                source.check(stems)
        except WeightsError as exc:
            raise DataError(f"pseudo-GT source {spec!r}: {exc}") from exc


def fill_pseudo_gt(
    store: PairStore,
    sources: Sequence[PseudoGTSource],
    device: torch.device | str = "cpu",
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Fuse every stored pair with every source (whole images) and keep the results in ``store``.

    Deterministic rules (``laplacian``, ``gff``) are cached in ``cache_dir`` (None: no cache),
    keyed by the rule, its parameters and the pairs' paths, sizes and modification times.
    Returns ``{source name: "cache" | "computed"}``.
    """
    for source in sources:
        source.check(store.stems)
    device = torch.device(device)
    how: dict[str, str] = {}
    for source in sources:
        cache = cache_file(Path(cache_dir), source.cache_key(), store) if cache_dir is not None else None
        cached = read_cache(cache, store) if cache is not None and cache.is_file() else None
        if cached is not None:
            store.add_fused(source.name, cached)
            how[source.name] = "cache"
            continue
        results: list[np.ndarray] = []
        items: Iterable[int] = range(len(store))
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc=f"pseudo-GT {source.name}", unit="pair", leave=False)
        for i in items:
            ir = torch.from_numpy(store.ir[i].astype(np.float32))[None, None].to(device)
            vis = torch.from_numpy(store.vis[i].astype(np.float32))[None, None].to(device)
            fused = source.fuse(ir, vis, store.pairs[i].stem)
            results.append(fused[0, 0].float().cpu().numpy())
        store.add_fused(source.name, results)
        how[source.name] = "computed"
        if cache is not None:
            write_cache(cache, store.fused[source.name])
    return how


def prepare_pseudo_gt(
    train: PairStore,
    others: Sequence[PairStore | None],
    specs: Sequence[str],
    device: torch.device | str,
    *,
    bootstrap: Callable[[], UFuser],
    cache_dir: str | os.PathLike[str] | None,
    progress: bool = False,
) -> dict[str, str]:
    """Fill the training store, then the ``others`` (validation, held-out; None: absent), with
    pseudo GT ``specs``; returns how the training store's sources were obtained (:func:`fill_pseudo_gt`).

    ``bootstrap`` is called (to train or reload the bootstrap U-Fuser) only when the specs name it.
    """
    boot = bootstrap() if "bootstrap" in specs else None
    sources = parse_sources(specs, bootstrap=boot)
    how = fill_pseudo_gt(train, sources, device, progress=progress, cache_dir=cache_dir)
    for store in others:
        if store is not None:
            fill_pseudo_gt(store, sources, device, cache_dir=cache_dir)
    return how
