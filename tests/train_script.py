"""A small training entry point for the resume and torchrun tests (not collected by pytest).

    python tests/train_script.py --model agmn --out DIR [--resume] [--max-steps N] [--checkpoint-every K]
    python -m torch.distributed.run --nproc_per_node=2 tests/train_script.py ...

Builds a very small CPM or AGMN (64x64 input, 8x8 maps), a small ``SyntheticHands`` training and validation
split (rendered once per process and kept in memory) and the network's recipe with ``--epochs`` epochs
per stage, and calls ``run_recipe`` under ``handops_models.train.distributed.setup()`` (a process group
when torchrun started it, a single process otherwise).

Test hooks (none of them changes what the loop does):
- ``--augment``: each training sample's image gets noise from torch's global RNG and a brightness factor
  from numpy's and Python's global RNGs, so the parameters depend on the RNG states (a resume that does not
  restore them, or restores another rank's, ends elsewhere).
- ``--delay S``: sleep S seconds per training sample (gives the kill test time to kill between steps).
- ``--dtype float64``: the model in double precision (the torchrun test compares with a single process).
- Each rank writes ``<out>/test_dump/rank<r>.pt``: its parameters after run_recipe, the training indices it
  read (in order), its seed, its first random draw and draws from torch's, numpy's and Python's RNGs after
  training (equal draws: equal RNG states); ``pid<r>`` at the start (the kill test kills the
  processes by these); and, with ``--record-start``, its parameters before training as ``start<r>.pt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from handops_models.data.synthetic import SyntheticHands
from handops_models.nets import build_model
from handops_models.nets.configs import CPMConfig
from handops_models.train import Settings, recipe_for, run_recipe
from handops_models.train import distributed as D

SMALL_CPM = CPMConfig(input_size=64, width=0.0625, num_stages=2, feature_channels=64, stage1_channels=64,
                      stage_channels=32)


def small_model(name: str):
    if name == "cpm":
        return build_model("cpm", SMALL_CPM)
    if name == "agmn":
        return build_model("agmn", "tiny", cpm=SMALL_CPM, kernel_size=7)
    raise ValueError(name)


class Recorded(torch.utils.data.Dataset):
    """A dataset rendered once and kept in memory; records the indices read; optional augmentation/delay."""

    def __init__(self, base, augment=False, delay=0.0):
        self.samples = [base[i] for i in range(len(base))]
        self.augment, self.delay, self.read = augment, delay, []

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        self.read.append(int(i))
        if self.delay:
            time.sleep(self.delay)
        sample = dict(self.samples[i])
        if self.augment:
            scale = 0.9 + 0.1 * float(np.random.rand()) + 0.05 * random.random()
            sample["image"] = (sample["image"] * scale + 0.02 * torch.rand_like(sample["image"])).clamp(0, 1)
        return sample


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="agmn", choices=["cpm", "agmn"])
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1, help="epochs per stage")
    p.add_argument("--train-size", type=int, default=16)
    p.add_argument("--val-size", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4, help="the global batch (split across ranks)")
    p.add_argument("--lr", type=float, default=None, help="every stage's learning rate (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--record-start", action="store_true")
    p.add_argument("--timeout", type=float, default=120.0, help="collective timeout (a hung test dies)")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # the same arithmetic in every run (and two processes share two cores)
    ctx = D.setup(device="cpu", timeout_s=args.timeout)
    dump = Path(args.out) / "test_dump"
    dump.mkdir(parents=True, exist_ok=True)
    (dump / f"pid{ctx.rank}").write_text(str(os.getpid()))
    try:
        seed = D.seed_everything(args.seed)
        first_draw = torch.rand(()).item()
        D.seed_everything(args.seed)
        model = small_model(args.model).to(getattr(torch, args.dtype))
        base = dict(image_size=64, num_subjects=3, seed=0, occlusion=0.0, progress=False)
        train = Recorded(SyntheticHands(args.train_size, split="train", **base), args.augment, args.delay)
        val = Recorded(SyntheticHands(args.val_size, split="val", **base))
        recipe = [dataclasses.replace(s, epochs=args.epochs, **({} if args.lr is None else {"lr": args.lr}))
                  for s in recipe_for(args.model)]
        settings = Settings(batch_size=args.batch_size, seed=args.seed, max_steps=args.max_steps,
                            checkpoint_every=args.checkpoint_every, device=ctx.device, progress=False)
        if args.record_start:
            torch.save({k: v.clone() for k, v in model.state_dict().items()}, dump / f"start{ctx.rank}.pt")
        result = run_recipe(model, recipe, train, val, args.out, settings, resume=args.resume,
                            log=lambda m: print(f"[rank {ctx.rank}] {m}", flush=True))
        end_draws = [torch.rand(2).tolist(), np.random.rand(2).tolist(), [random.random(), random.random()]]
        torch.save({"state_dict": model.state_dict(), "read": train.read, "seed": seed, "first_draw": first_draw,
                    "end_draws": end_draws, "world_size": ctx.world_size, "best": result["best"],
                    "stopped": result["stopped"]},
                   dump / f"rank{ctx.rank}.pt")
    finally:
        D.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
