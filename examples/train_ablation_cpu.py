"""Short CPU ablations behind two defaults of the recipe (numbers in docs/training.md).

1. Sensing width: stage II with base 16 (2.5 M parameters) vs the official base 64
   (UNet5, 39.4 M), same data, seed and steps; compared by the held-out L1 of A_i, A_v.
2. alpha2: stage III with alpha2 = 0.1 (official code) vs 10 (paper), same frozen
   base-16 sensing nets, data, seed and steps; compared by the held-out unweighted loss
   ``L(A_i f, i) + L(A_v f, v) + L(T f, F(A_i T f, A_v T f))`` (fixed transforms) and EN/SD/AG.

Only training folders are used (validation pairs are held out of them). Example:

    python examples/train_ablation_cpu.py --ir ../shared/data/train/ivf/ir \\
        --vis ../shared/data/train/ivf/vi --out /tmp/ablation
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from emmafuse.train import TrainConfig, Trainer  # noqa: E402


def base_config(args: argparse.Namespace, name: str) -> TrainConfig:
    cfg = TrainConfig(out_dir=str(args.out / name), device="cpu", progress=False, seed=args.seed)
    cfg.data.ir_dir, cfg.data.vis_dir = str(args.ir), str(args.vis)
    cfg.data.crop, cfg.data.val_crop, cfg.data.val_pairs, cfg.data.workers = args.crop, args.val_crop, 10, 1
    cfg.sensing.steps, cfg.sensing.batch = args.sensing_steps, args.sensing_batch
    cfg.sensing.lr, cfg.sensing.lr_step = args.lr, args.sensing_steps  # constant LR: a short proxy run
    cfg.fuser.steps, cfg.fuser.batch = args.fuser_steps, args.fuser_batch
    cfg.fuser.lr, cfg.fuser.lr_step = args.lr, args.fuser_steps
    cfg.val_every = cfg.ckpt_every = args.val_every
    cfg.log_every = 10
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ir", type=Path, required=True)
    ap.add_argument("--vis", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--val-crop", type=int, default=128)
    ap.add_argument("--sensing-steps", type=int, default=150)
    ap.add_argument("--sensing-batch", type=int, default=16)
    ap.add_argument("--fuser-steps", type=int, default=200)
    ap.add_argument("--fuser-batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", choices=["sensing", "alpha2"], default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, object] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    report = args.out / "ablation.json"
    args.out.mkdir(parents=True, exist_ok=True)

    if args.only in (None, "sensing"):
        for base in (16, 64):
            cfg = base_config(args, f"sensing{base}")
            cfg.sensing.base = base
            t0 = time.perf_counter()
            trainer = Trainer(cfg, overwrite=True, log=print)
            trainer.train_sensing()
            res = trainer.results["sensing"]
            results[f"sensing_base{base}"] = {"seconds": time.perf_counter() - t0, "validation": res.validation}
            print(f"base {base}: {res.validation[-1]}", flush=True)
            report.write_text(json.dumps(results, indent=2))

    if args.only in (None, "alpha2"):
        sensing = args.out / "sensing16" / "sensing" / "final"
        for alpha2 in (0.1, 10.0):
            cfg = base_config(args, f"alpha2_{alpha2:g}")
            cfg.fuser.alpha2 = alpha2
            t0 = time.perf_counter()
            trainer = Trainer(cfg, overwrite=True, log=print)
            trainer.train_fuser(sensing)
            res = trainer.results["fuser"]
            results[f"alpha2_{alpha2:g}"] = {"seconds": time.perf_counter() - t0, "validation": res.validation}
            print(f"alpha2 {alpha2:g}: {res.validation[-1]}", flush=True)
            report.write_text(json.dumps(results, indent=2))
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
