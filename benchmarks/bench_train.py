"""Training-step benchmark: our default recipe vs the official EMMA step, same device, one run.

Official-like step (re-implemented with our modules at the official sizes, no official
code imported): batch 4, fused image + 9 transformed copies (3 random circular shifts,
rotations by 10/130/250 degrees, 3 flips) = 40 images through the sensing nets, two
SensingUNet(base=64) = the 39.4 M-parameter UNet5 (eval mode but *not* frozen, as in
the official script, so their weight gradients are computed too), four separate sensing
calls, unmasked L1 + gradient loss, alpha = 0.1, Adam on the U-Fuser, fp32.

Ours (Stage III): batch 32 (--batch), one sampled group element per patch, frozen
SensingUNet(base=16), both sensing calls batched, masked loss, bf16 autocast on CUDA.
Also timed: our Stage II step (two base-16 sensing nets, batch 64) and the pseudo-GT
rules on a 640x480 pair; from those the script projects the default recipe's wall time.

    python benchmarks/bench_train.py --device cpu --crop 32 --steps 3      # this machine
    python benchmarks/bench_train.py --device cuda                          # H100: < 3 min

Timings alternate between the variants and report the median step, which keeps
a noisy shared machine from favouring either side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from emmafuse.bench import time_interleaved  # noqa: E402
from emmafuse.models import UFuser  # noqa: E402
from emmafuse.train.config import TrainConfig  # noqa: E402
from emmafuse.train.losses import l1_gradient_loss  # noqa: E402
from emmafuse.train.pseudo_gt import GuidedFilterFusion, LaplacianPyramidFusion  # noqa: E402
from emmafuse.train.sensing import SensingUNet  # noqa: E402
from emmafuse.train.resolve import resolve_config  # noqa: E402
from emmafuse.train.stages import EquivariantObjective, SensingObjective, WarmStartObjective  # noqa: E402
from emmafuse.train.transforms import Transform, TransformGroup, apply_transforms, official_transforms  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def official_step_fn(device: torch.device, batch: int, crop: int, amp: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    fuser = UFuser().to(device).train()
    f2i, f2v = SensingUNet(64).to(device).eval(), SensingUNet(64).to(device).eval()  # not frozen (official)
    opt = torch.optim.Adam(fuser.parameters(), lr=1e-4)
    ir, vis = torch.rand(batch, 1, crop, crop, device=device), torch.rand(batch, 1, crop, crop, device=device)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            f = fuser(ir, vis)
            elems = [Transform()] + official_transforms(crop, crop, gen)
            ft, _ = apply_transforms(f.repeat(len(elems), 1, 1, 1), [e for e in elems for _ in range(batch)])
            ft_hat = fuser(f2i(ft), f2v(ft))
            loss = l1_gradient_loss(f2v(f), vis) + l1_gradient_loss(f2i(f), ir) + 0.1 * l1_gradient_loss(ft, ft_hat)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def ours_step_fn(
    device: torch.device, batch: int, crop: int, amp: bool, cfg: TrainConfig, folded: bool | None = None
) -> Callable[[], None]:
    torch.manual_seed(0)
    f = cfg.fuser
    fuser = UFuser().to(device).train()
    fuser.fast.train_folds = cfg.folded_training if folded is None else folded
    a_i, a_v = SensingUNet(cfg.sensing.base).to(device), SensingUNet(cfg.sensing.base).to(device)
    objective = EquivariantObjective(fuser, a_i, a_v, f.alpha1, f.alpha2)
    if cfg.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(fuser.parameters(), lr=f.lr)
    ir, vis = torch.rand(batch, 1, crop, crop, device=device), torch.rand(batch, 1, crop, crop, device=device)
    group, gen = TransformGroup(f.rotation), torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = objective(ir, vis, group.sample(batch * f.transforms_per_sample, crop, crop, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _three_input_step(objective: torch.nn.Module, params: list[torch.nn.Parameter], lr: float, device: torch.device,
                      batch: int, crop: int, amp: bool) -> Callable[[], None]:
    """One optimiser step of an objective taking three (batch, 1, crop, crop) tensors."""
    opt = torch.optim.Adam(params, lr=lr)
    x = [torch.rand(batch, 1, crop, crop, device=device) for _ in range(3)]

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = objective(*x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def warm_start_step_fn(device: torch.device, batch: int, crop: int, amp: bool, folded: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    fuser = UFuser().to(device).train()
    fuser.fast.train_folds = folded
    return _three_input_step(WarmStartObjective(fuser), list(fuser.parameters()), 1e-3, device, batch, crop, amp)


def sensing_step_fn(device: torch.device, batch: int, crop: int, amp: bool, base: int) -> Callable[[], None]:
    torch.manual_seed(0)
    a_i, a_v = SensingUNet(base).to(device), SensingUNet(base).to(device)
    params = list(a_i.parameters()) + list(a_v.parameters())
    return _three_input_step(SensingObjective(a_i, a_v, "l1"), params, 1e-4, device, batch, crop, amp)


def median_step_ms(fns: dict[str, Callable[[], None]], device: torch.device, warmup: int, steps: int,
                   budget_s: float) -> dict[str, float]:
    """Median ms/step of each function, round-robin so drifts hit all alike (:func:`emmafuse.bench.time_interleaved`)."""
    timings = time_interleaved(fns, repeats=steps, warmup=warmup, device=device, budget_s=budget_s)
    return {k: t.median_wall * 1e3 for k, t in timings.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--recipe", default=None, help="recipe whose sizes and steps to time (default: gpu-ivf on CUDA, cpu-ivf on CPU)")
    ap.add_argument("--crop", type=int, default=None, help="patch side (default: the recipe's)")
    ap.add_argument("--batch", type=int, default=None, help="our stage III batch (default: the recipe's)")
    ap.add_argument("--skip-official", action="store_true", help="time only our steps (the official-like one is slow on CPU)")
    ap.add_argument("--official-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--budget", type=float, default=120.0, help="stop timing after this many seconds")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    ap.add_argument("--no-amp", action="store_true", help="fp32 for our steps on CUDA too")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg = resolve_config(args.recipe or ("gpu-ivf" if device.type == "cuda" else "cpu-ivf"))
    args.crop = args.crop or cfg.data.crop
    batch = args.batch or cfg.fuser.batch
    amp = device.type == "cuda" and not args.no_amp
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device {name}, torch {torch.__version__}, crop {args.crop}, official batch {args.official_batch}, "
          f"our batch {batch}, our amp {'bf16' if amp else 'off'}")

    fns = {
        "ours": ours_step_fn(device, batch, args.crop, amp, cfg, folded=True),
        "ours_plain": ours_step_fn(device, batch, args.crop, amp, cfg, folded=False),
        "ours_b4": ours_step_fn(device, args.official_batch, args.crop, amp, cfg),
        "warm_start": warm_start_step_fn(device, cfg.warm_start.batch, args.crop, amp, folded=True),
        "warm_start_plain": warm_start_step_fn(device, cfg.warm_start.batch, args.crop, amp, folded=False),
        "sensing": sensing_step_fn(device, cfg.sensing.batch, args.crop, amp, cfg.sensing.base),
    }
    if not args.skip_official:
        fns["official"] = official_step_fn(device, args.official_batch, args.crop, amp=False)
    ms = median_step_ms(fns, device, args.warmup, args.steps, args.budget)

    ir, vis = torch.rand(1, 1, 480, 640, device=device), torch.rand(1, 1, 480, 640, device=device)
    rules = {}
    for rule in (LaplacianPyramidFusion(), GuidedFilterFusion()):
        rule.fuse(ir, vis)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(3):
            rule.fuse(ir, vis)
        _sync(device)
        rules[rule.name] = (time.perf_counter() - t0) / 3 * 1e3

    ours_pps = batch / ms["ours"] * 1e3
    print(f"recipe {cfg.recipe}: crop {args.crop}")
    print(f"ours stage III (batch {batch}, {cfg.fuser.transforms_per_sample} transform, base-{cfg.sensing.base} sensing), "
          f"folded: {ms['ours']:9.1f} ms  ({ours_pps:.1f} patches/s)")
    print(f"ours stage III, plain (release) computation:  {ms['ours_plain']:9.1f} ms  "
          f"(folded/plain {ms['ours'] / ms['ours_plain']:.3f})")
    print(f"ours stage III at batch {args.official_batch}:                      {ms['ours_b4']:9.1f} ms")
    print(f"warm start (batch {cfg.warm_start.batch}), folded:                    {ms['warm_start']:9.1f} ms  "
          f"(plain {ms['warm_start_plain']:.1f} ms, folded/plain {ms['warm_start'] / ms['warm_start_plain']:.3f})")
    print(f"ours stage II (batch {cfg.sensing.batch}, two base-{cfg.sensing.base} U-Nets):    {ms['sensing']:9.1f} ms")
    if "official" in ms:
        official_pps = args.official_batch / ms["official"] * 1e3
        print(f"official-like step (batch {args.official_batch}, 9 transforms, UNet5-64 sensing, fp32): "
              f"{ms['official']:9.1f} ms  ({official_pps:.1f} patches/s)")
        print(f"ratio ms/step ours/official: {ms['ours'] / ms['official']:.3f}; at equal batch: "
              f"{ms['ours_b4'] / ms['official']:.3f}; patches/s ours/official: {ours_pps / official_pps:.2f}x")
    print(f"pseudo-GT rules on a 640x480 pair: " + ", ".join(f"{k} {v:.1f} ms" for k, v in rules.items()))
    recipe = (cfg.warm_start.steps * ms["warm_start"] + cfg.sensing.steps * ms["sensing"]
              + cfg.fuser.steps * ms["ours"]) / 1e3
    official_total = 150_000 * ms["official"] / 3600e3 if "official" in ms else float("nan")
    print(f"recipe {cfg.recipe} training steps: {cfg.warm_start.steps} x warm start + {cfg.sensing.steps} x stage II + "
          f"{cfg.fuser.steps} x stage III = {recipe:.0f} s (without pseudo GT, validation, checkpoints); "
          f"official schedule 150k steps = {official_total:.1f} h")
    print(f"benchmark wall time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "recipe": cfg.recipe, "crop": args.crop, "batch": batch, "ms": ms,
                                         "rules_ms_640x480": rules, "recipe_steps_s": recipe}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
