"""The latency table's prediction against measured whole-network latency.

Profiles the search space (``deconas profile``'s table, same runtime, threads and input size),
then times the whole network of ``--genotypes`` uniform random genotypes of the space through
the same runtime, and prints predicted against measured milliseconds, the median and the worst
absolute relative error.

    python benchmarks/bench_latency.py --config cpu --size 128 --threads 1
"""

import argparse
import statistics
import sys

import numpy as np
import torch

from deconas import config
from deconas.infer.profile import Timer, profile
from deconas.search.strategies import make_strategy
from deconas.space.latency import predict_latency
from deconas.space.network import DeCoNASNet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--size", type=int, default=128, help="LR input size (square)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--genotypes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = config.load(args.config)
    m = cfg.model
    table = profile(cfg.scale, m.channels, m.blocks, m.nodes, (args.size, args.size), "cpu", args.threads,
                    args.repeats, progress=lambda what: print(f"profiling {what}", file=sys.stderr))
    draw = make_strategy(config.apply_overrides(cfg, ["search.strategy=random"]), "cpu")
    rng = np.random.default_rng(args.seed)
    timer = Timer("cpu", args.threads, args.repeats)
    errors = []
    print(f"{cfg.scale}x C={m.channels} N={m.blocks} M={m.nodes}, {args.size}x{args.size} LR, "
          f"ONNX Runtime, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'genotype':<24} {'predicted ms':>12} {'measured ms':>12} {'error':>8}")
    for _ in range(args.genotypes):
        g = draw.uniform(rng)
        pred = predict_latency(g, table)
        meas = timer.network(DeCoNASNet(g, cfg.scale, m.channels, m.blocks), (1, 3, args.size, args.size))
        errors.append(abs(pred - meas) / meas)
        print(f"{str(g):<24} {pred:12.2f} {meas:12.2f} {100 * (pred - meas) / meas:+7.1f}%")
    print(f"median absolute relative error {100 * statistics.median(errors):.1f}%, "
          f"worst {100 * max(errors):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
