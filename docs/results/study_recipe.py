"""The study's ground truth, first step: the seed-to-seed noise of a standalone training recipe
against the spread between architectures (the study issue's step 1), through deconas' own
training. Uniform random architectures of the `cpu` space (C=16, N=3, M=4, x2), several
training seeds each (initialisation and patch order), one fixed validation split (split seed
0, 10% of the images); one row per (recipe, architecture, seed) appended to RESULTS.jsonl, so
a rerun continues where it stopped (each training also resumes from its own state).

    OMP_NUM_THREADS=1 python docs/results/study_recipe.py --train DATA/train/T91 DATA/train/BSD200 \\
        --out runs/study-recipe p48b16s1000

Several processes may share one --out (one per core, `taskset -c K`): each claims a job before
it trains it. ``--report ROWS.jsonl`` prints each recipe's figures from finished rows and trains
nothing:

    python docs/results/study_recipe.py --report docs/results/study-recipe.jsonl
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from deconas import config
from deconas.search import stats
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


def report(path: Path) -> None:
    """Per recipe: the (architecture x seed) table, the one-way seed noise against the spread of
    the architectures' means (the criterion), and the two-way figures of the complete rows."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for name in RECIPES:
        mine = [r for r in rows if r["recipe"] == name]
        if not mine:
            continue
        archs, seeds = sorted({r["arch"] for r in mine}), sorted({r["seed"] for r in mine})
        cell = {(r["arch"], r["seed"]): r["val_psnr"] for r in mine}
        print(f"\n{name}: {len(mine)} trainings")
        print("arch  params   " + "  ".join(f"seed {s:<4}" for s in seeds) + "  mean")
        for a in archs:
            vals = [cell.get((a, s)) for s in seeds]
            got = [v for v in vals if v is not None]
            p = next(r["params"] for r in mine if r["arch"] == a)
            print(f"{a:<5} {p:<8,} " + "  ".join(f"{v:9.4f}" if v is not None else "        -" for v in vals)
                  + f"  {np.mean(got):.4f}")
        one = stats.seed_noise({a: [cell[(a, s)] for s in seeds if (a, s) in cell] for a in archs})
        print(f"one-way: seed std {one['seed_std_db']:.4f} dB, std of the architectures' means "
              f"{one['between_std_db']:.4f} dB, ratio {one['ratio']:.2f} (criterion: <= 0.33)")
        full = [s for s in seeds if all((a, s) in cell for a in archs)]
        if len(full) >= 2:
            two = stats.arch_by_seed([[cell[(a, s)] for s in full] for a in archs])
            print(f"two-way over seeds {full}: seed effect std {two['seed_effect_std_db']:.4f} dB, residual "
                  f"(architecture x seed) {two['residual_std_db']:.4f} dB; architecture std "
                  f"{two['arch_std_db']:.4f} dB (upper 95% {two['arch_std_upper95_db']:.4f} dB), "
                  f"F {two['arch_f']:.2f}, p {two['arch_p']:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", help=f"of {list(RECIPES)} (default: all)")
    ap.add_argument("--train", nargs="+")
    ap.add_argument("--out")
    ap.add_argument("--archs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--report", metavar="ROWS_JSONL", help="print the figures of finished rows; train nothing")
    args = ap.parse_args()
    if args.report:
        return report(Path(args.report))
    if not args.train or not args.out:
        ap.error("--train and --out are needed to train")
    args.recipes = args.recipes or list(RECIPES)
    if set(args.recipes) - set(RECIPES):
        ap.error(f"unknown recipe in {args.recipes}: use {list(RECIPES)}")
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
