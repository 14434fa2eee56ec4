"""Cost of one supernet training step vs the standalone DeCoNASNet of the same genotype.

One step = forward + L1 loss + backward + Adam step, on the same batch. The two are timed
alternately (so machine load hits both alike) and the medians are compared; the issue asks
for supernet / standalone <= 1.2.

    python benchmarks/bench_supernet_step.py                     # C=32, N=4, M=4, 16 x 48x48
    python benchmarks/bench_supernet_step.py --channels 64 --patch 64 --repeats 5   # paper size
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from deconas.config import Config, Model, Search
from deconas.search.runs import build_controller
from deconas.space.genotype import parse
from deconas.search.supernet import SuperNet


def step_fn(model, opt, lr, hr, genotype=None):
    def step():
        sr = model(lr) if genotype is None else model(lr, genotype)
        loss = F.l1_loss(sr, hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=48, help="LR patch size")
    ap.add_argument("--repeats", type=int, default=9, help="timed steps of each (median)")
    ap.add_argument("--genotype", default=None, help="default: sampled from a fresh controller")
    ap.add_argument("--ff", action="store_true", help="feature-fusion search on (FF1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if args.genotype:
        g = parse(args.genotype, nodes=args.nodes, blocks=args.blocks)
    else:
        space = Config(scale=args.scale, model=Model(args.channels, args.blocks, args.nodes), search=Search(ff=args.ff))
        g = build_controller(space).sample().genotype
    sup = SuperNet(args.scale, args.channels, args.blocks, args.nodes).to(dev)
    alone = sup.extract_standalone(g).to(dev)
    lr = torch.rand(args.batch, 3, args.patch, args.patch, device=dev)
    hr = torch.rand(args.batch, 3, args.patch * args.scale, args.patch * args.scale, device=dev)
    s_step = step_fn(sup, torch.optim.Adam(sup.parameters(), 1e-4), lr, hr, g)
    a_step = step_fn(alone, torch.optim.Adam(alone.parameters(), 1e-4), lr, hr)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up: allocator, Adam state
        s_step(), a_step()
    ts, ta = [], []
    for _ in range(args.repeats):
        ts.append(timed(lambda: (s_step(), sync())))
        ta.append(timed(lambda: (a_step(), sync())))
    ms, ma = statistics.median(ts), statistics.median(ta)
    ratio = ms / ma
    print(f"genotype {g}  C={args.channels} N={args.blocks} M={args.nodes} x{args.scale} "
          f"batch {args.batch}x{args.patch}x{args.patch}  threads {torch.get_num_threads()}")
    print(f"supernet params {sum(p.numel() for p in sup.parameters()):,}  "
          f"standalone params {sum(p.numel() for p in alone.parameters()):,}")
    print(f"supernet step   median {ms * 1e3:8.1f} ms  ({args.repeats} runs)")
    print(f"standalone step median {ma * 1e3:8.1f} ms")
    print(f"ratio supernet/standalone = {ratio:.3f}  ({'OK' if ratio <= 1.2 else 'ABOVE'} the 1.2 limit)")
    return ratio


if __name__ == "__main__":
    main()
