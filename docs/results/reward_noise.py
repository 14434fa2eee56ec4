"""Reward noise of a finished search, for the reward itself and for the advantage under both
baselines, on the same architectures and the same reward batches (what ``deconas study``
measures before it trains anything): ``--archs`` uniform random architectures, each scored on
``--batches`` fresh reward batches of the search's size.

    python docs/results/reward_noise.py RUN_DIR --archs 16 --batches 20
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from deconas.constants import SEED_NOISE
from deconas.search.study import SharedScorer, uniform_genotype


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--archs", type=int, default=16)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    scorer = SharedScorer(Path(args.run_dir))
    rng = np.random.default_rng(args.seed)
    genotypes = [uniform_genotype(scorer.cfg.model.nodes, rng) for _ in range(args.archs)]
    print(json.dumps(scorer.reward_noise(genotypes, args.batches, seed=args.seed + SEED_NOISE), indent=1))


if __name__ == "__main__":
    main()
