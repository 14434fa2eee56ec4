"""Thread counts under contention: ``threads: auto`` against every fixed count, beside 0, 1
and 2 competing CPU-bound processes that this benchmark starts and stops itself.

Two workloads, each timed in a fresh subprocess (so auto measures the free cores as a command
would at its start):
- ``train``: one training step of the ``train-cpu`` network (C=16, N=2, batch 16 of 32x32
  LR patches, L1, Adam), median of ``--steps`` steps after two warm-up steps;
- ``upscale``: the shipped x2 network on a 512x512 photo, opened as ``deconas upscale`` opens it
  (its default precision and backend: bf16 with torch on a CPU with AMX-BF16, else fp32 with
  ONNX Runtime), whole image, median of ``--repeats`` runs after one warm-up.

    python benchmarks/bench_contention.py                    # both workloads, 0/1/2 competitors
    python benchmarks/bench_contention.py --workloads train --competitors 0 1
    python benchmarks/bench_contention.py --commands train run   # whole commands, idle and beside one

Prints the median per (competitors, threads) and auto's ratio to the best fixed count. With
``--commands``: the wall time of ``deconas train`` (the train-cpu preset, 150 steps, built-in
images) and of ``deconas run`` (no arguments: the README's first command), each idle and then
beside one competing process, with their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SPIN = "while True: pass"


def worker(kind: str, setting: str, steps: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from deconas import threads

    # As the commands do: training counts the free cores, ONNX Runtime every usable one.
    n, source = threads.resolve(int(setting) if setting.isdigit() else setting, load_aware=kind == "train")
    torch.set_num_threads(n)
    times = []
    if kind == "train":
        from deconas import config
        from deconas.space.genotype import parse
        from deconas.space.network import DeCoNASNet

        cfg = config.load("train-cpu")
        m, d = cfg.model, cfg.data
        torch.manual_seed(0)
        net = DeCoNASNet(parse("7,6,4,3,0,2,2,3,4,1"), scale=2, channels=m.channels, blocks=m.blocks)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        x, y = torch.rand(d.batch, 3, d.lr_patch, d.lr_patch), torch.rand(d.batch, 3, 2 * d.lr_patch, 2 * d.lr_patch)
        for i in range(steps + 2):
            t = time.perf_counter()
            loss = torch.nn.functional.l1_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:
                times.append(time.perf_counter() - t)
    else:
        from deconas.infer.tiling import upscale_pixels
        from deconas.infer.upscale import arithmetic_of, open_network

        # the network as deconas upscale opens it: its default precision and backend here, its
        # thread count (a fixed one, or auto's), the allocator it sets for torch
        run, _ = open_network(None, 2, "auto", threads=int(setting) if setting.isdigit() else None)
        if run.name == "torch":
            n, source = torch.get_num_threads(), source if setting.isdigit() else "auto (load-aware)"
        img = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
        for i in range(repeats + 1):
            t = time.perf_counter()
            upscale_pixels(run, img)
            if i >= 1:
                times.append(time.perf_counter() - t)
        source += f", {arithmetic_of(run)}"
    return {"threads": n, "from": source, "median_s": statistics.median(times)}


def measure(kind: str, setting: str, args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, setting, "--steps", str(args.steps),
                          "--repeats", str(args.repeats)], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def commands(names) -> None:
    import tempfile

    argv = {"train": ["train", "--genotype", "7,6,4,3,0,2,2,3,4,1", "train.steps=150", "train.epoch_steps=50"],
            "run": ["run"]}
    print(f"{len(os.sched_getaffinity(0))} CPUs; wall seconds of whole commands (defaults: threads auto)")
    for name in names:
        walls = []
        for k in (0, 1):
            spin = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(k)]
            try:
                time.sleep(1.0)
                with tempfile.TemporaryDirectory() as tmp:
                    t = time.perf_counter()
                    out = subprocess.run([sys.executable, "-m", "deconas.cli", *argv[name], "--out", f"{tmp}/r"],
                                         capture_output=True, text=True,
                                         env={k_: v for k_, v in os.environ.items() if k_ != "OMP_NUM_THREADS"})
                    walls.append(time.perf_counter() - t)
                if out.returncode:
                    raise SystemExit(out.stderr[-2000:])
            finally:
                for p in spin:
                    p.kill()
                    p.wait()
        print(f"  deconas {' '.join(argv[name])}: idle {walls[0]:.1f} s, beside one busy process {walls[1]:.1f} s "
              f"({walls[1] / walls[0]:.2f}x)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["train", "upscale"], choices=["train", "upscale"])
    ap.add_argument("--competitors", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--commands", nargs="+", choices=["train", "run"], help="time whole deconas commands instead")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.steps, args.repeats)))
        return
    if args.commands:
        commands(args.commands)
        return
    cpus = len(os.sched_getaffinity(0))
    fixed = [str(n) for n in range(1, cpus + 1)]
    print(f"{cpus} CPUs; load {os.getloadavg()[0]:.2f} at the start")
    for kind in args.workloads:
        print(f"\n{kind}: median seconds per {'step' if kind == 'train' else '512x512 image'}")
        print("  competitors  " + "  ".join(f"{s:>8}" for s in ["auto"] + fixed) + "   auto/best")
        for k in args.competitors:
            spin = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(k)]
            try:
                time.sleep(1.0)  # let them take their cores
                res = {s: measure(kind, s, args) for s in ["auto"] + fixed}
            finally:
                for p in spin:
                    p.kill()
                    p.wait()
            best = min(res[s]["median_s"] for s in fixed)
            cells = [f"{res['auto']['median_s']:6.3f}({res['auto']['threads']})"] + \
                    [f"{res[s]['median_s']:8.3f}" for s in fixed]
            print(f"  {k:>11}  " + "  ".join(cells) + f"   {res['auto']['median_s'] / best:8.2f}", flush=True)


if __name__ == "__main__":
    main()
