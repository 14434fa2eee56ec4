"""Time the bicubic evaluation (the protocol end to end) of 100 images of 1024x768 at x2.

    python benchmarks/bench_eval_bicubic.py [--images 100] [--scale 2] [--keep DIR]

The images are made deterministically from real photographs (scikit-image's sample photos):
each is a resized, shifted, possibly flipped 1024x768 crop of one photo, written as PNG to a
temporary folder.  The timed part is ``deconas.evaluate.evaluate`` on that folder: reading
every PNG, MATLAB-bicubic LR and upscale, PSNR and SSIM on Y.  A per-stage breakdown of a few
images follows.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deconas.data.datasets import builtin_images
from deconas.evaluate import evaluate, format_table
from deconas.data.images import read_image
from deconas.data.imresize import bicubic_lr, bicubic_up, modcrop
from deconas.metrics import psnr_ssim_y

W, H = 1024, 768


def make_images(folder: Path, n: int) -> None:
    photos = [a for _, a in builtin_images()]
    rng = np.random.default_rng(0)
    for i in range(n):
        src = Image.fromarray(photos[i % len(photos)])
        zoom = max(W / src.width, H / src.height) * (1.0 + 0.5 * rng.random())
        big = src.resize((int(np.ceil(src.width * zoom)), int(np.ceil(src.height * zoom))), Image.BICUBIC)
        x0 = int(rng.integers(0, big.width - W + 1))
        y0 = int(rng.integers(0, big.height - H + 1))
        im = big.crop((x0, y0, x0 + W, y0 + H))
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im.save(folder / f"img{i:03d}.png", compress_level=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--keep", metavar="DIR", help="write the images here (and reuse them if present)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp) / "bench"
        folder.mkdir(parents=True, exist_ok=True)
        if len(list(folder.glob("*.png"))) != args.images:
            t = time.perf_counter()
            make_images(folder, args.images)
            print(f"made {args.images} images of {W}x{H} in {time.perf_counter() - t:.1f} s")

        s = args.scale
        t, c = time.perf_counter(), time.process_time()
        res = evaluate(lambda lr: bicubic_up(lr, s), [folder], s, progress=False)
        total, cpu = time.perf_counter() - t, time.process_time() - c
        print(format_table(res))
        # CPU time next to wall time: on a shared machine the wall time includes waiting for a core
        print(f"evaluate(): {args.images} images {W}x{H} x{s}: {total:.1f} s wall, {cpu:.1f} s CPU "
              f"({1000 * total / args.images:.0f} ms per image); load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")

        stages = dict.fromkeys(["read", "bicubic_lr", "bicubic_up", "psnr_ssim_y"], 0.0)
        files = sorted(folder.glob("*.png"))[:5]
        for f in files:
            t = time.perf_counter(); hr = modcrop(read_image(f)[0], s); stages["read"] += time.perf_counter() - t
            t = time.perf_counter(); lr = bicubic_lr(hr, s); stages["bicubic_lr"] += time.perf_counter() - t
            t = time.perf_counter(); sr = bicubic_up(lr, s); stages["bicubic_up"] += time.perf_counter() - t
            t = time.perf_counter(); psnr_ssim_y(sr, hr, s); stages["psnr_ssim_y"] += time.perf_counter() - t
        print("per image: " + ", ".join(f"{k} {1000 * v / len(files):.0f} ms" for k, v in stages.items()))


if __name__ == "__main__":
    main()
