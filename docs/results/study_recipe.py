"""The study's ground truth, first step: the seed-to-seed noise of a standalone training recipe
against the spread between architectures (the study issue's step 1), through deconas' own
training. Uniform random architectures of the `cpu` space (C=16, N=3, M=4, x2), several
training seeds each (initialisation and patch order), one fixed validation split (split seed
0, 10% of the images); one row per (recipe, architecture, seed) appended to RESULTS.jsonl, so
a rerun continues where it stopped (each training also resumes from its own state).

    OMP_NUM_THREADS=1 python docs/results/study_recipe.py --train DATA/train/T91 DATA/train/BSD200 \\
        --out runs/study-recipe p48b16s1000

Several processes may share one --out (one per core, `taskset -c K`): each claims a job before
it trains it.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from deconas import config
from deconas.space.complexity import count_params
from deconas.space.genotype import Genotype, num_pairs
from deconas.space.ops import NUM_VALUES
from deconas.train import run_training

RECIPES = {  # name: (LR patch, batch, steps)
    "p48b16s1000": (48, 16, 1000),
    "p48b16s3000": (48, 16, 3000),
}


def architectures(n: int):
    """``n`` distinct uniform random architectures (every op bit a fair coin), seed 2026."""
    rng = np.random.default_rng(2026)
    out = []
    while len(out) < n:
        g = Genotype(tuple(int(v) for v in rng.integers(0, NUM_VALUES, num_pairs(4))))
        if g not in out:
            out.append(g)
    return out


def claim(out: Path) -> bool:
    """Take a job for this process (several may run on one folder, one core each): a claim file
    beside the training's folder, holding the pid; a claim whose process is gone is taken over
    (its training resumes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text() or 0)
                os.kill(pid, 0)
                return pid == os.getpid()
            except (ValueError, ProcessLookupError):
                path.unlink(missing_ok=True)
                continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--train", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--archs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    results = root / "results.jsonl"

    def done():  # read again before every job: another process may have finished some
        return {(r["recipe"], r["genotype"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())} \
            if results.exists() else set()
    gs = architectures(args.archs)
    for name in args.recipes:
        patch, batch, steps = RECIPES[name]
        # Two seeds of each architecture in turn, then the further seeds: a partial run already
        # shows seed pairs (the noise) as well as architectures (the spread).
        jobs = [(i, s) for i in range(len(gs)) for s in range(min(2, args.seeds))]
        jobs += [(i, s) for s in range(2, args.seeds) for i in range(len(gs))]
        for i, seed in jobs:
            g = gs[i]
            out = root / name / f"a{i}-s{seed}"
            if (name, str(g), seed) in done() or not claim(out):
                continue
            cfg = config.load("train-cpu", ["model.channels=16", "model.blocks=3", f"data.lr_patch={patch}",
                                            f"data.batch={batch}", f"train.steps={steps}",
                                            f"train.epoch_steps={min(500, steps)}", "train.val_every=1000000",
                                            f"seed={seed}", "plot=false", "data.val_fraction=0.1"])
            t0 = time.time()
            summary = run_training(cfg, g, args.train, None, out, resume=(out / "state.pt").is_file(),
                                   device="cpu", progress=False, split_seed=0)
            row = {"recipe": name, "lr_patch": patch, "batch": batch, "steps": steps, "arch": i,
                   "genotype": str(g), "params": count_params(g, 2, 16, 3), "seed": seed,
                   "val_psnr": summary["last_val_psnr"], "seconds": round(time.time() - t0, 1)}
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
