"""int8 and bf16 against fp32 for each shipped network: speed and the PSNR cost on Set5/Set14.

The int8 graph is the one ``deconas upscale --precision int8`` builds (static QDQ, per-channel
weights, calibrated on the built-in photographs), run by ONNX Runtime as fp32 is; bf16 is
torch's, as ``--precision bf16`` (and ``auto`` on a CPU with AMX-BF16) runs it: the body in
bf16 channels_last, the first and last convolutions in fp32, with the allocator kept as the
upscale command keeps it (timed after the ONNX Runtime rows, which it would change). Speed: the
network alone on one LR input of ``--side`` pixels a side, median of ``--repeats`` runs each,
and each one's ratio to the roofline (the network's Mult-Adds at the faster of torch's NCHW and
channels_last fp32 dense 3x3 conv rates, measured in this run). PSNR: Y channel, crop = scale,
whole images, as ``deconas eval`` computes it.

    python benchmarks/bench_precision.py                     # data from ../shared/data/benchmark
    python benchmarks/bench_precision.py --benchmark DIR/Set5 DIR/Set14 --scales 2 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from deconas.checkpoint import load_model
from deconas.constants import MAX_DEFAULT_COST_DB
from deconas.data.images import iter_folder
from deconas.data.imresize import bicubic_lr, modcrop
from deconas.infer.backends import OnnxRuntimeBackend, TorchBackend, keep_freed_memory
from deconas.infer.export import onnx_bytes
from deconas.infer.quantize import calibration_patches, quantize_int8
from deconas.infer.tiling import upscale_pixels
from deconas.metrics import psnr_y
from deconas.space.complexity import cost

from bench_upscale import conv_rate  # the same roofline as the upscale benchmark (this folder)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmark"


def median_time(run, x, repeats: int) -> float:
    run(x)  # the first run of a shape plans its kernels
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def psnr_of(run, folder: Path, scale: int) -> float:
    vals = []
    for _, hr in iter_folder(folder):
        hr = modcrop(hr, scale)
        vals.append(psnr_y(upscale_pixels(run, bicubic_lr(hr, scale), tile=0), hr, scale))
    return float(np.mean(vals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", nargs="+", type=Path,
                    default=[DEFAULT_DATA / "Set5", DEFAULT_DATA / "Set14"])
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--precisions", nargs="+", default=["int8", "bf16"], choices=["int8", "bf16"])
    ap.add_argument("--side", type=int, default=256, help="LR side of the timed input")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).random((1, 3, args.side, args.side), dtype=np.float32)
    models = {s: load_model("pretrained", scale=s, device="cpu")[0] for s in args.scales}
    rows = {}  # (scale, precision) -> (seconds, roofline seconds, PSNRs)

    def measure(s, name, run):
        m = models[s]
        macs = cost(m.genotype, s, m.channels, m.blocks, hr_size=(s * args.side, s * args.side)).mult_adds
        t = median_time(run, x, args.repeats)
        rows[s, name] = (t, macs / conv_rate(), [psnr_of(run, d, s) for d in args.benchmark])

    for s in args.scales:  # ONNX Runtime first: the bf16 runs change the allocator for good
        fp32 = onnx_bytes(models[s])
        measure(s, "fp32", OnnxRuntimeBackend(fp32, threads=args.threads))
        if "int8" in args.precisions:
            int8 = quantize_int8(fp32, calibration_patches(None, s))
            measure(s, "int8", OnnxRuntimeBackend(int8, threads=args.threads))
    if "bf16" in args.precisions:
        keep_freed_memory()
        for s in args.scales:
            measure(s, "bf16", TorchBackend(models[s], precision="bf16"))

    print(f"{'scale':>5} {'precision':>9} {'time':>8} {'x roofline':>10} {'speed-up':>8} "
          + " ".join(f"{d.name + ' PSNR':>11} {'cost':>7}" for d in args.benchmark)
          + f"  may be the default (loses at most {MAX_DEFAULT_COST_DB} dB)", flush=True)
    for s in args.scales:
        base, _, ref = rows[s, "fp32"]
        for name in ["fp32", *args.precisions]:
            t, roof, psnrs = rows[s, name]
            ok = all(p - r >= -MAX_DEFAULT_COST_DB for p, r in zip(psnrs, ref))
            print(f"{s:>5} {name:>9} {t:7.3f}s {t / roof:9.2f}x {base / t:7.2f}x "
                  + " ".join(f"{p:11.4f} {p - r:+7.4f}" for p, r in zip(psnrs, ref))
                  + f"  {'yes' if ok else 'no'}", flush=True)


if __name__ == "__main__":
    main()
