"""Training configuration: nested dataclasses saved to and loaded from JSON.

Defaults are the *10-minute H100 recipe* (see ``docs/training.md`` for the arithmetic);
the official recipe's values are given in the field comments for reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from emmafuse.train.augment import SYMMETRIC_SOURCES
from emmafuse.errors import EmmafuseError

__all__ = [
    "ConfigError",
    "DataConfig",
    "SensingConfig",
    "BootstrapConfig",
    "WarmStartConfig",
    "FuserStageConfig",
    "TrainConfig",
    "DEFAULT_PSEUDO_GT",
]

#: Pseudo ground truth used when none is named: a per-sample mixture of two classical
#: multi-scale rules (the paper mixes the outputs of nine published methods likewise).
DEFAULT_PSEUDO_GT: tuple[str, ...] = ("laplacian", "gff")


class ConfigError(EmmafuseError, ValueError):
    """An invalid or inconsistent training configuration."""


@dataclass
class DataConfig:
    """Where the pairs are and how patches are cut from them."""

    ir_dir: str = ""  #: first source folder (infrared; CT/PET/SPECT for medical pairs)
    vis_dir: str = ""  #: second source folder (visible; MRI for medical pairs)
    extra_ir_dirs: tuple[str, ...] = ()  #: more folder pairs, trained on together with the first
    extra_vis_dirs: tuple[str, ...] = ()  #: (same length as extra_ir_dirs)
    pairs_file: str = ""  #: optional text file: one "IR_DIR<tab>VIS_DIR" folder pair per line
    crop: int = 128  #: square training patch side (official: 128); multiple of 16
    flips: bool = True  #: random horizontal/vertical flips of the pair
    low_contrast_filter: bool = True  #: official rule: reject patches with (p90-p10)/p90 < 0.1
    max_crop_tries: int = 10  #: crops tried per sample before accepting a low-contrast one
    val_pairs: int = 10  #: pairs held out of the training folders for validation
    val_crop: int = 256  #: side of the fixed centre crop used for validation (multiple of 16)
    workers: int = -1  #: DataLoader worker processes (0: the main process; -1: auto, see effective_workers)
    cache_dir: str = ""  #: pseudo-GT cache folder ("" = ~/.cache/emmafuse/pseudo_gt, "none" = no cache)
    holdout: tuple[str, ...] = ()  #: glob patterns on pair names or domains ("ivf/LLVIP"): never trained on, validated per domain
    holdout_pairs: int = 12  #: at most this many pairs of each held-out domain are validated
    holdout_crop: int = 320  #: side of the held-out domains' centre crops (multiple of 16)
    balance: str = "pairs"  #: "pairs" (each pair once per epoch) or "domains" (each source equally often)
    swap: float = 0.0  #: warm start: probability that the inputs swap slots (symmetric targets only)
    noise: float = 0.0  #: warm start: probability, per input, of sensor noise (the target stays clean)
    scale_min: float = 1.0  #: warm start and stage III: smallest random downscale before the crop (1 = off)


    def effective_workers(self, device_type: str) -> int:
        """Worker processes to use: ``workers`` when set, else 0 on a CPU (workers would steal the
        cores the training computes on; patch work is a few percent of a step) and up to 4 on a
        GPU (stage II needs ~1600 patches/s), never more than the cores less one."""
        if self.workers >= 0:
            return self.workers
        if device_type == "cpu":
            return 0
        return max(0, min(4, (os.cpu_count() or 1) - 1))

    def folder_pairs(self) -> list[tuple[str, str]]:
        """Every (ir folder, vis folder) pair to train on: the first, the extras, the pairs file's.

        Raises:
            ConfigError: unequal extra lists, or an unreadable or malformed pairs file.
        """
        if len(self.extra_ir_dirs) != len(self.extra_vis_dirs):
            raise ConfigError(
                f"{len(self.extra_ir_dirs)} extra ir folders but {len(self.extra_vis_dirs)} extra vis folders: "
                "data.extra_ir_dirs and data.extra_vis_dirs must have the same length",
                parameter="data.extra_vis_dirs",
            )
        found = [(self.ir_dir, self.vis_dir)] if (self.ir_dir or self.vis_dir) else []
        found += list(zip(self.extra_ir_dirs, self.extra_vis_dirs))
        if self.pairs_file:
            found += read_pairs_file(self.pairs_file)
        return found


def read_pairs_file(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Folder pairs from a text file: ``IR_DIR<tab>VIS_DIR`` per line (or two space-free fields).

    Blank lines and lines starting with ``#`` are skipped; relative folders are relative to the
    file's own folder.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the pairs file {p}: {exc}") from None
    out: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split("\t") if "\t" in text else text.split()
        if len(fields) != 2:
            raise ConfigError(f"{p}:{number}: expected 'IR_DIR<tab>VIS_DIR', got {line!r}")
        ir_dir, vis_dir = (f.strip() if os.path.isabs(f.strip()) else str(p.parent / f.strip()) for f in fields)
        out.append((ir_dir, vis_dir))
    return out


@dataclass
class SensingConfig:
    """Stage II: the pseudo sensing modules A_i, A_v (fused -> source U-Nets)."""

    base: int = 16  #: U-Net base width; official UNet5 = 64 (39.4 M params), 16 = 2.5 M
    steps: int = 1500  #: optimiser steps (official: 40 epochs of batch 64)
    batch: int = 64  #: patches per step and process (official: 64)
    lr: float = 1e-4
    lr_gamma: float = 0.5
    lr_step: int = 0  #: StepLR period in steps; 0 = steps // 4 (official: 10 of 40 epochs)
    loss: str = "l1"  #: "l1" (paper), "mse" (official code) or "l1grad"
    pseudo_gt: tuple[str, ...] = DEFAULT_PSEUDO_GT  #: sources, see emmafuse.train.pseudo_gt


@dataclass
class BootstrapConfig:
    """Optional: a U-Fuser trained with a conventional loss, used as a pseudo-GT source.

    Only runs when ``sensing.pseudo_gt`` contains ``"bootstrap"`` (paper Exp. II-like:
    intensity-max + gradient-max L1).
    """

    steps: int = 300
    batch: int = 32
    lr: float = 1e-4
    lr_gamma: float = 0.5
    lr_step: int = 0  #: StepLR period in steps; 0 = no decay


@dataclass
class WarmStartConfig:
    """Optional warm start of the U-Fuser before stage III (off when ``steps`` is 0).

    The U-Fuser is first fitted to one pseudo-GT source (``target``) with ``L1 + gradient
    L1``, plus ``grad_max`` times the gradient-max L1 of the conventional fusion loss (keeps
    the sharper source's edges). Stage III then starts from these weights instead of a random
    initialisation: on a CPU budget the equivariant objective alone converges far too slowly.
    """

    steps: int = 0
    batch: int = 8
    lr: float = 1e-3
    lr_gamma: float = 0.5
    lr_step: int = 0  #: StepLR period in steps; 0 = steps // 3
    target: str = "gff"  #: name of a pseudo-GT source in sensing.pseudo_gt
    grad_max: float = 0.0  #: weight of the gradient-max term


@dataclass
class FuserStageConfig:
    """Stage III: equivariant training of the U-Fuser."""

    channels: tuple[int, int, int, int] = (8, 16, 32, 32)  #: official release widths
    num_heads: int = 8
    steps: int = 1200  #: official: 120 epochs of batch 4 (~150k steps)
    batch: int = 32  #: patches per step and process (official code 4, paper 8)
    lr: float = 1e-4
    lr_gamma: float = 0.5
    lr_step: int = 0  #: StepLR period in steps; 0 = steps // 6 (official: 20 of 120 epochs)
    alpha1: float = 1.0  #: weight of the visible sensing term
    alpha2: float = 0.1  #: weight of the equivariance term (code 0.1, paper 10; see docs)
    transforms_per_sample: int = 1  #: sampled group elements per patch and step (official: 9 + identity)
    rotation: str = "arbitrary"  #: "arbitrary" (masked, official-like) or "rot90"
    init: str = ""  #: optional .safetensors U-Fuser weights to fine-tune from
    anchor: float = 0.0  #: weight of L(f, pseudo GT warm_start.target) in stage III (0 = the paper's loss)


@dataclass
class TrainConfig:
    """Everything a training run needs; ``save``/``load`` as JSON."""

    data: DataConfig = field(default_factory=DataConfig)
    sensing: SensingConfig = field(default_factory=SensingConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    fuser: FuserStageConfig = field(default_factory=FuserStageConfig)
    recipe: str = ""  #: name of the recipe these settings started from (informational)
    out_dir: str = "runs/emma"
    seed: int = 0
    device: str = "auto"  #: "auto", "cpu", "cuda", "cuda:1", ...
    amp: bool = True  #: bf16 autocast (CUDA only; ignored on CPU)
    channels_last: bool = False
    up_init: str = "bilinear"  #: transposed convs of new nets start as "bilinear" upsampling or "default" (PyTorch)
    balanced_upsampling: bool = True  #: project transposed convs onto checkerboard-free kernels after each step
    folded_training: bool = True  #: train the U-Fuser through its exact folded convolutions (faster; same function)
    compile: bool = False  #: torch.compile the U-Fuser (CUDA; compile time counts)
    log_every: int = 10
    val_every: int = 250
    ckpt_every: int = 250
    keep_checkpoints: int = 2
    max_shard_mib: int = 16  #: upper bound on every checkpoint file
    progress: bool = True

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        cfg = _from_dict(cls, data, "")
        cfg.validate()
        return cfg

    def save(self, path: str | os.PathLike[str]) -> Path:
        from emmafuse._fs import atomic_write

        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "TrainConfig":
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a JSON object at the top level")
        return cls.from_dict(data)

    # ------------------------------------------------------------ overrides
    def override(self, dotted: str, value: Any) -> None:
        """Set one field by dotted path, e.g. ``override("fuser.alpha2", 10)``."""
        parts = dotted.split(".")
        target: Any = self
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise ConfigError(f"unknown config section '{part}' in '{dotted}'")
            target = getattr(target, part)
        name = parts[-1]
        if not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
            raise ConfigError(f"unknown config key '{dotted}'")
        hint = get_type_hints(type(target))[name]
        setattr(target, name, _coerce(hint, value, dotted))

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values that would fail later (and less clearly)."""
        from emmafuse.train.sensing import crop_requirements

        d, s, f = self.data, self.sensing, self.fuser
        req = crop_requirements()  # what the U-Fuser and the sensing nets accept
        for key, side in (("crop", d.crop), ("val_crop", d.val_crop), ("holdout_crop", d.holdout_crop)):
            if side < req.minimum or side % req.multiple:
                raise ConfigError(
                    f"data.{key} must be a multiple of {req.multiple} and >= {req.minimum}, got {side}",
                    parameter=f"data.{key}",
                )
        if d.holdout_pairs < 1:
            raise ConfigError("data.holdout_pairs must be >= 1", parameter="data.holdout_pairs")
        if d.balance not in ("pairs", "domains"):
            raise ConfigError(f"data.balance must be 'pairs' or 'domains', got {d.balance!r}")
        if not (0 <= d.swap <= 1 and 0 <= d.noise <= 1 and 0 < d.scale_min <= 1):
            raise ConfigError("data.swap and data.noise must lie in [0, 1], data.scale_min in (0, 1]")
        if d.swap > 0 and self.warm_start.target not in SYMMETRIC_SOURCES:
            raise ConfigError(
                f"data.swap needs a warm-start target that does not depend on the input order "
                f"({', '.join(SYMMETRIC_SOURCES)}), not {self.warm_start.target!r}"
            )
        if d.val_pairs < 0 or d.workers < -1 or d.max_crop_tries < 1:
            raise ConfigError("data.val_pairs must be >= 0, data.workers >= -1 (auto), data.max_crop_tries >= 1")
        for name, stage in (("sensing", s), ("bootstrap", self.bootstrap), ("warm_start", self.warm_start), ("fuser", f)):
            if stage.steps < 0 or stage.batch < 1 or stage.lr <= 0:
                raise ConfigError(f"{name}: steps must be >= 0, batch >= 1 and lr > 0")
        if s.base < 1:
            raise ConfigError(f"sensing.base must be >= 1, got {s.base}")
        if s.loss not in ("l1", "mse", "l1grad"):
            raise ConfigError(f"sensing.loss must be 'l1', 'mse' or 'l1grad', got {s.loss!r}")
        if not s.pseudo_gt:
            raise ConfigError("sensing.pseudo_gt names no source")
        if f.rotation not in ("arbitrary", "rot90"):
            raise ConfigError(f"fuser.rotation must be 'arbitrary' or 'rot90', got {f.rotation!r}")
        if self.up_init not in ("bilinear", "default"):
            raise ConfigError(f"up_init must be 'bilinear' or 'default', got {self.up_init!r}")
        if f.anchor < 0 or self.warm_start.grad_max < 0:
            raise ConfigError("fuser.anchor and warm_start.grad_max must be >= 0")
        uses_target = self.warm_start.steps > 0 or f.anchor > 0
        sources = [spec.strip() for spec in s.pseudo_gt]  # the names the sources get
        if uses_target and self.warm_start.target not in sources:
            raise ConfigError(
                f"warm_start.target {self.warm_start.target!r} must be one of the pseudo-GT sources "
                f"{sources} (sensing.pseudo_gt)",
                parameter="warm_start.target",
            )
        if f.transforms_per_sample < 1:
            raise ConfigError("fuser.transforms_per_sample must be >= 1")
        if any(c % f.num_heads for c in f.channels):
            raise ConfigError(f"fuser.channels {f.channels} must be multiples of num_heads={f.num_heads}")
        if self.max_shard_mib < 1 or self.keep_checkpoints < 1:
            raise ConfigError("max_shard_mib and keep_checkpoints must be >= 1")
        if min(self.log_every, self.val_every, self.ckpt_every) < 1:
            raise ConfigError("log_every, val_every and ckpt_every must be >= 1")


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{where or 'top'}' must be an object")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config keys in '{where or 'top'}': {unknown}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        path = f"{where}.{key}" if where else key
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, path)
        else:
            kwargs[key] = _coerce(hint, value, path)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Convert a JSON value to the field's type (tuples from lists, ints to floats)."""
    origin = getattr(hint, "__origin__", None)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ConfigError(value)
            if not isinstance(value, (bool, int)):
                raise ConfigError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ConfigError(value)
            return value
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            args = hint.__args__
            item = args[0]
            items = tuple(_coerce(item, v, where) for v in value)
            if len(args) > 1 and args[1] is not Ellipsis and len(items) != len(args):
                raise ConfigError(f"expected {len(args)} values")
            return items
    except (TypeError, ValueError) as exc:  # ConfigError above, or int()/float() refusing the value
        raise ConfigError(f"invalid value for '{where}': {value!r} ({exc})", parameter=where) from None
    return value
