"""Architectures trained per second: the search's child steps under torchrun, P processes x 1
thread, against 1 process x 1 thread (issue #12's bound on a 2-core machine: >= 1.6x).

    python benchmarks/bench_search_ddp.py --train ../shared/data/train/T91
    python benchmarks/bench_search_ddp.py --paper-costs      # per-step costs at the paper's size

The launcher alternates the two set-ups ``--repeats`` times (so a change of load on the
machine hits both alike); each launch times ``--windows`` windows of ``--steps`` child steps of
the ``cpu`` preset (C=16, N=3, M=4, 16 patches of 24x24) after a warm-up, the ranks
synchronised before and after each window. A child step trains one architecture per process.
It prints every window, the medians, their ratio and /proc/loadavg before and after.
Process start-up and data loading are not timed.

``--paper-costs`` measures, in one process on this CPU, what docs/search.md's cost projection
needs besides the child step (timed by bench_supernet_step.py): the reward forward pass of
the search-paper preset (10 LR patches of 48x48), the controller's sample + teacher-forced
update, and the size of the supernet's gradient all-reduce.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def worker(args) -> None:
    import torch

    from deconas import config, distributed
    from deconas.search.loop import Search
    from deconas.search.runs import load_search_data

    torch.set_num_threads(1)
    distributed.setup("cpu")
    rank, world = distributed.rank(), distributed.world_size()
    cfg = config.load("cpu", [f"seed={args.seed}"])
    train, val, _ = load_search_data(cfg, args.train, None)
    search = Search(cfg, train, val, torch.device("cpu"), rank, world)
    search.supernet.train()
    for _ in range(args.warmup):
        search.child_step()
    child = []
    for _ in range(args.windows):
        distributed.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            search.child_step()
        distributed.barrier()
        child.append(time.perf_counter() - t0)
    search.supernet.eval()
    ctrl = []
    for _ in range(max(1, args.windows // 2)):
        distributed.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            search.controller_step(True)
        distributed.barrier()
        ctrl.append(time.perf_counter() - t0)
    if rank == 0:
        print("RESULT " + json.dumps({"world": world, "steps": args.steps, "child_s": child, "ctrl_s": ctrl}))
    distributed.cleanup()


def launch(nproc: int, args) -> dict:
    wargs = ["--worker", "--steps", str(args.steps), "--windows", str(args.windows), "--warmup", str(args.warmup),
             "--seed", str(args.seed)] + (["--train", args.train] if args.train else [])
    cmd = [sys.executable, str(HERE), *wargs] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), str(HERE), *wargs]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench: {nproc}-process launch failed:\n{r.stderr[-3000:]}")
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def paper_costs(args) -> None:
    import torch

    from deconas import config
    from deconas.search.reward import psnr_y_batch
    from deconas.search.runs import build_controller, build_supernet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config.load("search-paper")
    s = cfg.search
    sn, ctrl = build_supernet(cfg).eval(), build_controller(cfg)
    opt = torch.optim.Adam(ctrl.parameters(), lr=s.controller_lr)
    vp, vb, scale = s.val_patch, s.val_batch, cfg.scale
    lr, hr = torch.rand(vb, 3, vp, vp), torch.rand(vb, 3, vp * scale, vp * scale)
    fwd, pol = [], []
    for i in range(args.repeats + 1):
        with torch.no_grad():
            g = ctrl.sample().genotype
        t0 = time.perf_counter()
        with torch.no_grad():
            psnr_y_batch(sn(lr, g), hr, scale).mean().item()
        t1 = time.perf_counter()
        with torch.no_grad():
            g2 = ctrl.sample().genotype
        loss = -(ctrl.evaluate(g).log_prob * 0.1 + ctrl.evaluate(g2).log_prob * -0.1) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i:  # the first is a warm-up
            fwd.append(t1 - t0)
            pol.append(t2 - t1)
    n = sum(p.numel() for p in sn.parameters())
    print(f"search-paper preset on this CPU, {args.threads} thread(s); loadavg {_loadavg()}")
    print(f"reward forward ({vb} x {vp}x{vp} LR): median {statistics.median(fwd) * 1e3:,.0f} ms over {len(fwd)}")
    print(f"controller: sample + 2 teacher-forced samples' update: median {statistics.median(pol) * 1e3:,.1f} ms")
    print(f"supernet parameters {n:,} -> all-reduce buffer {n * 4 / 2 ** 20:,.1f} MiB (float32) per child step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default=None, help="training images (default: built-in)")
    ap.add_argument("--steps", type=int, default=20, help="child steps per timed window")
    ap.add_argument("--windows", type=int, default=4, help="timed windows per launch")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="launches of each set-up, alternating")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="--paper-costs: torch threads")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--paper-costs", action="store_true")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.paper_costs:
        return paper_costs(args)
    print(f"loadavg before: {_loadavg()}  ({os.cpu_count()} CPUs)")
    rates = {1: [], args.nproc: []}
    ctrl_rates = {1: [], args.nproc: []}
    for rep in range(args.repeats):
        for p in (1, args.nproc):
            r = launch(p, args)
            got = [p * r["steps"] / t for t in r["child_s"]]
            rates[p] += got
            ctrl_rates[p] += [p * r["steps"] / t for t in r["ctrl_s"]]
            print(f"repeat {rep + 1}: {p} process(es) x 1 thread: "
                  + ", ".join(f"{x:.2f}" for x in got) + " architectures trained/s", flush=True)
    med = {p: statistics.median(v) for p, v in rates.items()}
    cmed = {p: statistics.median(v) for p, v in ctrl_rates.items()}
    print(f"loadavg after:  {_loadavg()}")
    print(f"child steps, median architectures trained per second: 1 x 1 thread {med[1]:.2f}; "
          f"{args.nproc} x 1 thread {med[args.nproc]:.2f}; ratio {med[args.nproc] / med[1]:.2f}")
    print(f"controller steps, median architectures scored per second: 1 x 1 thread {cmed[1]:.2f}; "
          f"{args.nproc} x 1 thread {cmed[args.nproc]:.2f}; ratio {cmed[args.nproc] / cmed[1]:.2f}")


if __name__ == "__main__":
    main()
