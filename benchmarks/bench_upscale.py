"""Time of upscaling one image, whole vs tiled.

A DeCoNASNet of the paper genotype (random weights: speed does not depend on them) upscales a
--size LR image (skimage's astronaut, 512x512 by default) by x2. Each setting is run
``--repeats`` times, the settings interleaved so machine load hits them alike; the median is
printed (wall clock and this process's CPU time: on a shared machine the CPU time is the
steadier figure), with the tiled output's PSNR against the whole-image output.

    python benchmarks/bench_upscale.py                          # C=32, N=4, 512x512, x2, median of 3
    python benchmarks/bench_upscale.py --threads 1 --tiles 0 64 128 256 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from skimage import data

from deconas.genotype import PAPER_GENOTYPE, parse
from deconas.inference import receptive_radius, upscale_tensor
from deconas.network import DeCoNASNet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--size", type=int, default=512, help="LR side in pixels")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--tiles", type=int, nargs="+", default=[0, 128, 256], help="0 = whole image")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    dev = torch.device(args.device)
    net = DeCoNASNet(parse(PAPER_GENOTYPE), scale=args.scale, channels=args.channels, blocks=args.blocks).to(dev).eval()
    photo = torch.from_numpy(np.ascontiguousarray(data.astronaut())).permute(2, 0, 1)[None].float() / 255
    lr = torch.nn.functional.interpolate(photo, size=(args.size, args.size), mode="bilinear", align_corners=False)

    def once(tile):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        y = upscale_tensor(net, lr, tile=tile)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t, time.process_time() - c), y

    once(min(t for t in args.tiles if t > 0) if any(args.tiles) else 0)  # warm-up (allocator, kernels)
    times = {t: [] for t in args.tiles}  # (wall, CPU time of this process) per run
    outs = {}
    for _ in range(args.repeats):
        for tile in args.tiles:
            s, outs[tile] = once(tile)
            times[tile].append(s)

    print(f"paper genotype C={args.channels} N={args.blocks} x{args.scale}, {args.size}x{args.size} LR, "
          f"overlap {receptive_radius(net)} px, {torch.get_num_threads()} threads, {args.device}; "
          f"median of {args.repeats}")
    whole = outs.get(0)
    for tile in args.tiles:
        wall = statistics.median(w for w, _ in times[tile])
        cpu = statistics.median(c for _, c in times[tile])
        line = f"  {'whole image' if tile == 0 else f'tile {tile}':>12}: {wall:7.2f} s wall, {cpu:7.2f} s CPU"
        if whole is not None and tile:
            mse = ((outs[tile] - whole) ** 2).mean().item()
            line += f"   vs whole: {10 * np.log10(1 / mse) if mse else float('inf'):.1f} dB"
        print(line)


if __name__ == "__main__":
    main()
