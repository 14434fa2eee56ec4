"""Throughput of one training step of `deconas train`, against the machine's dense-conv limit.

One step = forward (optionally under bf16 autocast) + L1 loss + backward + Adam step on a
batch of LR patches, exactly as train.py does it. Settings compared: fp32 or bf16 autocast,
NCHW or channels_last, torch thread count, LR patch size. Settings are timed round-robin
(so machine load hits them alike) and medians reported.

The limit: a step costs about 3x the forward Mult-Adds (forward, grad of input, grad of
weights). The dense 3x3 conv rate (64 -> 64 channels, 128x128, forward+backward) measured
in the same run turns that into the fastest step this machine could do; `limit` is
step time / that.

    python benchmarks/bench_train_step.py                          # paper genotype, C=32, N=4
    python benchmarks/bench_train_step.py --channels 24 --blocks 3 --quick
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from torch.nn import functional as F

from deconas.space.complexity import cost
from deconas.space.genotype import parse
from deconas.space.network import DeCoNASNet


def conv_rate(dtype: str, repeats: int) -> float:
    """Mult-Adds per second of a dense 3x3 conv, forward + backward (3 convs' worth)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(4, 64, 128, 128, requires_grad=True)
    macs = 3 * 64 * 64 * 9 * 4 * 128 * 128

    def once():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            y = conv(x)
        y.float().sum().backward()

    once()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        ts.append(time.perf_counter() - t)
    return macs / statistics.median(ts)


def make_step(g, args, dtype, layout, patch):
    torch.manual_seed(0)
    model = DeCoNASNet(g, scale=args.scale, channels=args.channels, blocks=args.blocks)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr = torch.rand(args.batch, 3, patch, patch).contiguous(memory_format=fmt)
    hr = torch.rand(args.batch, 3, patch * args.scale, patch * args.scale)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            sr = model(lr)
        loss = F.l1_loss(sr.float(), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genotype", default="7,6,4,3,0,2,2,3,4,1")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patches", type=int, nargs="+", default=[48], help="LR patch sizes")
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"])
    ap.add_argument("--repeats", type=int, default=5, help="timed steps of each setting (median)")
    ap.add_argument("--quick", action="store_true", help="3 repeats")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else args.repeats
    g = parse(args.genotype)
    settings = list(itertools.product(args.threads, args.dtypes, args.layouts, args.patches))
    steps = {}
    times = {s: [] for s in settings}
    for s in settings:
        torch.set_num_threads(s[0])
        steps[s] = make_step(g, args, s[1], s[2], s[3])
        steps[s]()  # warm-up (allocations, oneDNN primitive creation)
    for _ in range(reps):
        for s in settings:
            torch.set_num_threads(s[0])
            t = time.perf_counter()
            steps[s]()
            times[s].append(time.perf_counter() - t)
    print(f"genotype {g}  C={args.channels} N={args.blocks} x{args.scale}  batch {args.batch}  "
          f"({reps} timed steps each, median)")
    print(f"{'threads':>7} {'dtype':>5} {'layout':>13} {'patch':>5} {'s/step':>7} {'steps/s':>7} "
          f"{'LR kpx/s':>8} {'x limit':>7}")
    rates = {}
    for s in settings:
        threads, dtype, layout, patch = s
        key = (threads, dtype)
        if key not in rates:
            torch.set_num_threads(threads)
            rates[key] = conv_rate(dtype, reps)
        med = statistics.median(times[s])
        c = cost(g, args.scale, args.channels, args.blocks, hr_size=(patch * args.scale, patch * args.scale))
        limit = 3 * c.mult_adds * args.batch / rates[key]
        print(f"{threads:>7} {dtype:>5} {layout:>13} {patch:>5} {med:>7.3f} {1 / med:>7.2f} "
              f"{args.batch * patch * patch / med / 1e3:>8.1f} {med / limit:>7.2f}")
    for (threads, dtype), r in rates.items():
        print(f"dense 3x3 conv rate, {threads} thread(s) {dtype}: {r / 1e9:.1f} GMAC/s")


if __name__ == "__main__":
    main()
