"""``emmafuse train ...``: the command-line front end of :mod:`emmafuse.train`.

The main ``emmafuse`` CLI imports this module only when the user runs ``emmafuse train``
and calls :func:`add_train_command`; it imports :mod:`emmafuse.train` only inside the commands.
``python -m emmafuse.train`` (and ``torchrun ... -m emmafuse.train``) run the same commands
without the main CLI (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emmafuse.cli._common import CliError, run_command

if TYPE_CHECKING:
    from emmafuse.train.config import TrainConfig
    from emmafuse.train.trainer import Trainer

__all__ = ["add_train_command", "build_parser", "main"]

# flag -> (config path, type, help)
_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--pairs-file": ("data.pairs_file", str, "text file of folder pairs, one 'IR_DIR<tab>VIS_DIR' per line"),
    "--out": ("out_dir", str, "run folder (checkpoints, logs, exported weights); default runs/emma"),
    "--device": ("device", str, "auto (default), cpu, cuda, cuda:1, ..."),
    "--seed": ("seed", int, "random seed (default 0)"),
    "--workers": ("data.workers", int, "DataLoader worker processes (default -1: none on a CPU, up to 4 on a GPU)"),
    "--crop": ("data.crop", int, "training patch side, multiple of 16 (default 128)"),
    "--val-pairs": ("data.val_pairs", int, "pairs held out for validation (default 10)"),
    "--pseudo-gt": ("sensing.pseudo_gt", str, "pseudo-GT sources, comma separated: laplacian, gff, gff-max, bootstrap, folder:DIR, fuser:WEIGHTS (default laplacian,gff)"),
    "--sensing-base": ("sensing.base", int, "sensing U-Net base width (default 16; official 64)"),
    "--sensing-steps": ("sensing.steps", int, "stage II steps (default 1500)"),
    "--sensing-batch": ("sensing.batch", int, "stage II patches per step and process (default 64)"),
    "--fuser-steps": ("fuser.steps", int, "stage III steps (default 1200)"),
    "--fuser-batch": ("fuser.batch", int, "stage III patches per step and process (default 32)"),
    "--lr": ("fuser.lr", float, "stage III learning rate (default 1e-4)"),
    "--alpha1": ("fuser.alpha1", float, "weight of the visible sensing term (default 1)"),
    "--alpha2": ("fuser.alpha2", float, "weight of the equivariance term (default 0.1)"),
    "--transforms": ("fuser.transforms_per_sample", int, "group elements sampled per patch and step (default 1)"),
    "--rotation": ("fuser.rotation", str, "arbitrary (default) or rot90"),
    "--init": ("fuser.init", str, "fine-tune from these U-Fuser .safetensors weights"),
}
_SWITCHES: dict[str, tuple[str, bool, str]] = {
    "--channels-last": ("channels_last", True, "channels_last memory format"),
    "--no-amp": ("amp", False, "disable bf16 autocast on CUDA"),
    "--compile": ("compile", True, "torch.compile the U-Fuser in stage III"),
    "--no-progress": ("progress", False, "no progress bars"),
}


#: The library's errors name the config key or argument at fault (``error.parameter``); the
#: command line adds its own flag for it.
_PARAMETER_FLAGS: dict[str, str] = {
    **{key: flag for flag, (key, _, _) in _FLAGS.items()},
    **{key: flag for flag, (key, _, _) in _SWITCHES.items()},
    "data.ir_dir": "--ir", "data.vis_dir": "--vis", "data.extra_ir_dirs": "--ir", "data.extra_vis_dirs": "--vis",
    "resume": "--resume or --overwrite", "overwrite": "--overwrite",
}


def _flag_of(parameter: str) -> str | None:
    """The flag of a config key or argument the library names (``--set KEY=...`` for a key
    without a flag of its own); ``run_command`` prints it with the error."""
    return _PARAMETER_FLAGS.get(parameter) or (f"--set {parameter}=..." if "." in parameter else None)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ir", action="append", default=None, metavar="DIR",
                   help="folder of infrared (or CT/PET/SPECT) images; repeat with --vis to train on several sets")
    p.add_argument("--vis", action="append", default=None, metavar="DIR",
                   help="folder of visible (or MRI) images, paired by file name with the --ir folder of the same position")
    for flag, (_, typ, help_) in _FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=help_)
    for flag, (_, _, help_) in _SWITCHES.items():
        p.add_argument(flag, action="store_true", default=None, help=help_)
    p.add_argument("--recipe", default=None, help="start from a named recipe (`emmafuse train recipes`) or a recipe .json")
    p.add_argument("--config", type=Path, default=None, help="JSON config (see `emmafuse train defaults`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config field, e.g. --set fuser.lr_step=200 (repeatable)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    group.add_argument("--overwrite", action="store_true", help="delete the run in --out and start again")


def add_train_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` (with sub-commands) on an argparse sub-parsers object."""
    train = subparsers.add_parser(
        "train",
        help="train or fine-tune a U-Fuser on your own image pairs (EMMA recipe)",
        description="Train EMMA: stage II sensing nets A_i/A_v, stage III equivariant U-Fuser, export .safetensors.",
    )
    sub = train.add_subparsers(dest="train_command", metavar="{all,sensing,fuser,export,defaults,recipes}")
    sub.required = True

    p = sub.add_parser("all", help="all stages, then export <out>/fuser.safetensors")
    _add_run_options(p)
    p.add_argument("--export", type=Path, default=None, help="where to write the weights (default <out>/fuser.safetensors)")
    p.set_defaults(func=_cmd_all)

    p = sub.add_parser("sensing", help="stage II only: train the pseudo sensing modules")
    _add_run_options(p)
    p.set_defaults(func=_cmd_sensing)

    p = sub.add_parser("fuser", help="stage III only: equivariant U-Fuser training with frozen sensing nets")
    _add_run_options(p)
    p.add_argument("--sensing", type=Path, default=None, help="sensing folder (default <out>/sensing/final)")
    p.add_argument("--export", type=Path, default=None, help="where to write the weights (default <out>/fuser.safetensors)")
    p.set_defaults(func=_cmd_fuser)

    p = sub.add_parser("export", help="export the finished fuser of a run folder to .safetensors")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--to", type=Path, default=None, help="destination (default <out>/fuser.safetensors)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("defaults", help="print the default configuration (or a recipe's, with --recipe) as JSON")
    p.add_argument("--recipe", default=None, help="print this recipe's full configuration instead")
    p.set_defaults(func=_cmd_defaults)

    p = sub.add_parser("recipes", help="list the shipped training recipes")
    p.set_defaults(func=_cmd_recipes)
    train.set_defaults(flag_of=_flag_of)  # the sub-commands' parsers inherit it
    return train


def _error(message: str) -> CliError:
    return CliError(message, command="train")


def _overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The command line as ``(dotted key, value)`` pairs: folders, flags, switches, then ``--set``."""
    from emmafuse.train.config import ConfigError

    out: list[tuple[str, Any]] = []
    if args.ir is not None or args.vis is not None:
        irs, viss = args.ir or [], args.vis or []
        if len(irs) != len(viss):
            raise ConfigError(f"--ir given {len(irs)} time(s) but --vis {len(viss)}: give them in pairs")
        out += [("data.ir_dir", irs[0]), ("data.vis_dir", viss[0]),
                ("data.extra_ir_dirs", irs[1:]), ("data.extra_vis_dirs", viss[1:])]
    for flag, (key, _, _) in _FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            out.append((key, value))
    for flag, (key, value, _) in _SWITCHES.items():
        if getattr(args, flag[2:].replace("-", "_")):
            out.append((key, value))
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((key.strip(), value))
    return out


def _build_config(args: argparse.Namespace) -> TrainConfig:
    """defaults < --recipe < --config < flags < --set (:func:`emmafuse.train.resolve.resolve_config`);
    with ``--resume`` the run's saved configuration, which the command line may not contradict."""
    from emmafuse.train.config import ConfigError
    from emmafuse.train.resolve import resolve_config

    overrides = _overrides(args)
    saved = None
    if args.resume:
        out = args.out or resolve_config(args.recipe, args.config, []).out_dir
        saved = Path(out) / "config.json"
    cfg = resolve_config(args.recipe, args.config, overrides, resume_from=saved)
    if not cfg.data.folder_pairs() or any(not a or not b for a, b in cfg.data.folder_pairs()):
        raise ConfigError("name the training pairs with --ir DIR --vis DIR (or --pairs-file, or in --config)")
    return cfg


def _run(args: argparse.Namespace, action: Callable[[Trainer], object]) -> int:
    from emmafuse.train.preflight import check_export
    from emmafuse.train.trainer import Trainer

    trainer = None
    try:
        cfg = _build_config(args)
        export = getattr(args, "export", None)
        if export is not None:  # the trainer checks data, sources and its run folder itself
            check_export(cfg, export)
        trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
        if not args.recipe and not args.resume and not cfg.recipe:  # after the checks: no note before an error
            _suggest_recipe(cfg)
        action(trainer)
        return 0
    except KeyboardInterrupt:
        print("emmafuse train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        if trainer is not None:
            trainer.close()


def _suggest_recipe(cfg: TrainConfig) -> None:
    """The defaults are the GPU recipe: on a machine without CUDA, say which recipe fits."""
    import torch

    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    if on_cpu:
        print(
            "emmafuse train: note: no --recipe given; the defaults are sized for a GPU (gpu-ivf). "
            "On this CPU use --recipe cpu-ivf-v2 (infrared-visible) or --recipe cpu-mif-v2 (medical); "
            "`emmafuse train recipes` lists them.",
            file=sys.stderr,
        )


def _cmd_all(args: argparse.Namespace) -> int:
    return _run(args, lambda t: print(t.run_all(args.export)))


def _cmd_sensing(args: argparse.Namespace) -> int:
    return _run(args, lambda t: t.train_sensing())


def _cmd_fuser(args: argparse.Namespace) -> int:
    def action(t: Trainer) -> None:
        t.train_fuser(args.sensing)
        print(t.export(args.export))

    return _run(args, action)


def _cmd_export(args: argparse.Namespace) -> int:
    from emmafuse.outputs import OutputError
    from emmafuse.train.ckpt_io import CheckpointError
    from emmafuse.train.config import ConfigError, TrainConfig
    from emmafuse.train.export import export_run
    from emmafuse.train.output_checks import check_weights_destination
    from emmafuse.train.preflight import input_folders

    saved = args.out / "config.json"
    try:  # the run's own training folders are inputs too
        folders = input_folders(TrainConfig.load(saved)) if saved.is_file() else []
    except ConfigError:
        folders = []
    try:
        check_weights_destination(args.to if args.to is not None else args.out / "fuser.safetensors", folders, what="--to file")
    except OutputError as exc:  # before reading the checkpoint
        raise _error(str(exc)) from exc
    try:
        print(export_run(args.out, args.to))
    except (CheckpointError, FileNotFoundError) as exc:
        raise _error(f"{exc} (has the fuser stage finished?)") from exc
    return 0


def _cmd_defaults(args: argparse.Namespace) -> int:
    from emmafuse.train.config import TrainConfig
    from emmafuse.train.resolve import resolve_config

    cfg = resolve_config(args.recipe) if args.recipe else TrainConfig()
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from emmafuse.train.recipes import list_recipes

    for recipe in list_recipes():
        print(f"{recipe.name:<10} {recipe.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser whose only command is ``train`` (used by ``python -m emmafuse.train``)."""
    parser = argparse.ArgumentParser(prog="emmafuse")
    subparsers = parser.add_subparsers(dest="command")
    subparsers.required = True
    add_train_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emmafuse.train all --ir ... --vis ...`` (the ``train`` word is optional)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] != "train":
        args_list.insert(0, "train")
    return run_command(build_parser().parse_args(args_list))
