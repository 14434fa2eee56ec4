"""Upscaling speed against the roofline, and peak memory, as a user runs ``deconas upscale``.

The roofline is the network's Mult-Adds at the fp32 dense 3x3 convolution rate torch reaches
on this machine (64 -> 64 channels, 256x256, batch 1, torch's default threads, the faster of
NCHW and channels_last), measured in this process between the timed runs; a ratio of 1.0 means
the network ran as fast as one big fp32 dense conv. Where the defaults compute in bf16 (a CPU
with AMX-BF16), the same conv's bf16 rate is printed beside it: the limit of that arithmetic.

    python benchmarks/bench_upscale.py                 # 6 photos of 512x512 at x2 through the CLI
    python benchmarks/bench_upscale.py --memory 3000x2000 6000x4000   # peak RSS of one image each
    python benchmarks/bench_upscale.py --windows 256 330 512 --backends onnxruntime torch torch-bf16
    python benchmarks/bench_upscale.py --windows 512 --repeats 9 --backends torch-bf16 torch-bf16-unfused \
        torch-bf16-unbuffered torch-bf16-uncomposed torch-bf16-unfolded   # the rewrite, step by step
    python benchmarks/bench_upscale.py --layers 512    # each convolution of the network alone

CLI runs are subprocesses (wall time includes process start, reading and writing PNG), with
the shipped x2 network and the CLI's defaults. ``cold``: an empty ONNX cache (the graph is
exported first where ONNX Runtime runs it); ``warm``: the cache the cold run left; ``fp32``:
``--precision fp32`` (ONNX Runtime) with the warm cache. The machine's load average is printed
beside every figure: on a shared machine wall times are upper bounds, the ratio to the roofline
measured in the same run is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deconas.space.complexity import cost
from deconas.space.genotype import parse

GENOTYPE, C, N = "7,6,4,3,0,2,2,3,4,1", 32, 4  # the shipped network


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def conv_rate(repeats: int = 5, dtype=torch.float32) -> float:
    """Mult-Adds per second of a dense 3x3 conv, 64 -> 64 channels, 256x256, in the faster of the
    two memory layouts (NCHW and channels_last: which one is faster depends on the machine),
    best of ``repeats`` each: the machine's limit (fp32, the roofline; bf16 is printed beside it
    for the runs that use it)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(dtype)
    best = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        c = conv.to(memory_format=layout)
        x = torch.rand(1, 64, 256, 256, dtype=dtype).contiguous(memory_format=layout)
        with torch.inference_mode():
            c(x)
            for _ in range(repeats):
                t = time.perf_counter()
                c(x)
                best = min(best, time.perf_counter() - t)
    return 64 * 64 * 9 * 256 * 256 / best


def macs(h: int, w: int, scale: int = 2) -> float:
    """Mult-Adds of the shipped network for an h x w LR input."""
    return cost(parse(GENOTYPE), scale, C, N, hr_size=(scale * h, scale * w)).mult_adds


def photos(folder: Path, n: int, h: int, w: int) -> list:
    """``n`` different photographs (scikit-image's), resized to w x h RGB PNGs."""
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
             "motorcycle_left", "cat", "retina"]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        a = getattr(data, names[i % len(names)])()
        im = Image.fromarray(a).convert("RGB").resize((w, h), Image.BICUBIC)
        p = folder / f"photo{i}.png"
        im.save(p)
        out.append(p)
    return out


def run_cli(argv, env) -> tuple:
    """(wall seconds, peak RSS in MB) of one ``deconas`` subprocess."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "deconas.cli", *argv], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"deconas {' '.join(argv)} failed: {err.strip()[-400:]}")
    return wall, ru.ru_maxrss / 1024


KINDS = {  # what each timed run is: (ONNX cache emptied first, extra options)
    "cold": (True, []),  # the defaults, nothing cached (the ONNX graph exported where it is used)
    "warm": (False, []),  # the defaults again
    "fp32": (False, ["--precision", "fp32"]),  # fp32 (ONNX Runtime), warm cache
}


def bench_cli(args) -> None:
    from deconas.infer.backends import resolve_precision

    tmp = Path(tempfile.mkdtemp(prefix="bench-upscale-"))
    h = w = args.size
    photos(tmp / "in", args.images, h, w)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
    work = args.images * macs(h, w)
    extra = args.extra or []
    defaults = resolve_precision(None, "auto")
    print(f"{args.images} photos of {w}x{h} at x2, shipped network ({GENOTYPE}, C={C}, N={N}); "
          f"{work / 1e9:.0f} G Mult-Adds; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"defaults here: precision {'/'.join(defaults)}; "
          f"command: deconas upscale DIR -o OUT --scale 2 {' '.join(extra)}")
    # The bf16 rate only where the defaults compute in bf16: without AMX-BF16 or AVX-512 torch's
    # bf16 conv is a slow fallback (minutes per measurement), and no default runs on it.
    bf16 = defaults[0] == "bf16"
    rates, rows = [conv_rate()], []
    for rep in range(args.repeats):
        for kind in args.kinds:
            cold, opts = KINDS[kind]
            if cold:
                subprocess.run(["rm", "-rf", str(tmp / "cache")], check=True)
            out = tmp / f"out-{kind}-{rep}"
            before = load()
            wall, rss = run_cli(["upscale", str(tmp / "in"), "-o", str(out), "--scale", "2", *opts, *extra], env)
            rate = conv_rate()
            rate16 = conv_rate(dtype=torch.bfloat16) if bf16 else None
            rates.append(rate)
            # each run against the roofline measured right after it
            rows.append((kind, wall, wall / (work / rate), rss, before, rate16 and wall / (work / rate16)))
            also = (f"; bf16 dense conv {rate16 / 1e9:.0f} GMAC/s, {wall / (work / rate16):.2f}x that"
                    if rate16 else "")
            print(f"  {kind:>5}: {wall:6.2f} s wall = {wall / (work / rate):.2f}x the roofline "
                  f"({rate / 1e9:.1f} GMAC/s -> {work / rate:.2f} s{also}); peak RSS {rss:.0f} MB; "
                  f"load {before}", flush=True)
    for kind in args.kinds:
        r = [x[2] for x in rows if x[0] == kind]
        also = f"; {statistics.median(x[5] for x in rows if x[0] == kind):.2f}x the bf16 dense conv" if bf16 else ""
        print(f"{kind}: median {statistics.median(r):.2f}x, best {min(r):.2f}x the roofline "
              f"(median wall {statistics.median(x[1] for x in rows if x[0] == kind):.2f} s; roofline median "
              f"{statistics.median(rates) / 1e9:.1f} GMAC/s{also})")


def bench_memory(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-upscale-mem-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
    for spec in args.memory:
        w, h = (int(v) for v in spec.lower().split("x"))
        src = photos(tmp / f"in-{spec}", 1, h, w)[0]
        for kind in ("cold", "warm"):
            if kind == "cold":
                subprocess.run(["rm", "-rf", str(tmp / "cache")], check=True)
            before = load()
            wall, rss = run_cli(["upscale", str(src), "-o", str(tmp / f"out-{spec}-{kind}"), "--scale", "2",
                                 "--overwrite", *(args.extra or [])], env)
            print(f"{w}x{h} at x2 ({kind} cache): peak RSS {rss:.0f} MB, {wall:.1f} s wall; load {before}",
                  flush=True)


BACKENDS = ["onnxruntime", "torch", "torch-bf16",  # as deconas upscale runs each
            # the inference rewrite (deconas.infer.fold, deconas.infer.buffered) undone step by step:
            "torch-bf16-unfused",  # buffers without oneDNN's fused convolutions
            "torch-bf16-unbuffered",  # folded and composed, without the buffers
            "torch-bf16-uncomposed",  # folded, with UPNet and the tail as they are
            "torch-bf16-unfolded",
            "onnxruntime-uncomposed",  # folded, UPNet and the tail as they are (deconas export's graph)
            "onnxruntime-unfolded"]  # the network as trained


class _Unfused:
    """A backend whose network runs with oneDNN's fused convolutions turned off."""

    def __init__(self, run):
        self.run = run

    def __call__(self, x):
        from unittest import mock

        import deconas.infer.buffered as buffered

        with mock.patch.object(buffered, "_fused_convolutions", lambda dtype=None: False):
            return self.run(x)


def bench_windows(args) -> None:
    """The network alone on one window of each size, per backend (and batched windows): the
    backends' runs alternate, so a drift of the machine's speed reaches each of them alike."""
    from deconas.infer.backends import OnnxRuntimeBackend, TorchBackend, bf16_network
    from deconas.infer.buffered import BufferedNetwork
    from deconas.infer.export import onnx_bytes
    from deconas.infer.fold import fold_for_inference
    from deconas.infer.onnx_cache import onnxruntime_for_checkpoint
    from deconas.checkpoint import load_model, pretrained_path

    model = load_model("pretrained", scale=2)[0]
    if any(b.startswith("torch") for b in args.backends):
        from deconas.infer.backends import keep_freed_memory

        keep_freed_memory()  # as deconas upscale does where torch runs on the CPU

    def bf16(net):
        run = TorchBackend(model, precision="bf16")
        run.model = net
        return run

    runs = {}
    for b in args.backends:
        if b == "torch":
            runs[b] = TorchBackend(model, fold=True)
        elif b == "torch-bf16":
            runs[b] = TorchBackend(model, precision="bf16")
        elif b == "torch-bf16-unfused":
            runs[b] = _Unfused(TorchBackend(model, precision="bf16"))
        elif b == "torch-bf16-unbuffered":
            buffered = bf16_network(fold_for_inference(model, upsampler=True))
            runs[b] = bf16(buffered.net if isinstance(buffered, BufferedNetwork) else buffered)
        elif b == "torch-bf16-uncomposed":
            runs[b] = bf16(bf16_network(fold_for_inference(model)))
        elif b == "torch-bf16-unfolded":
            runs[b] = bf16(bf16_network(model))
        elif b == "onnxruntime-uncomposed":
            runs[b] = OnnxRuntimeBackend(onnx_bytes(model))
        elif b == "onnxruntime-unfolded":
            runs[b] = OnnxRuntimeBackend(onnx_bytes(model, fold=False))
        else:
            ort_run = onnxruntime_for_checkpoint(pretrained_path(2), lambda: model)  # the user cache
            runs["onnxruntime"] = ort_run
            if args.spin:  # the settings the backend turns off, for comparison
                src = ort_run.source
                runs["ort-spin"] = OnnxRuntimeBackend(src, spinning=True)
                runs["ort-arena"] = OnnxRuntimeBackend(src, arena=True)
    rng = np.random.default_rng(0)
    print(f"network alone, {torch.get_num_threads()} threads; {args.repeats} alternated rounds; "
          f"ratios to the first backend are medians of the rounds' ratios")
    for side in args.windows:
        for batch in args.batches:
            x = rng.random((batch, 3, side, side), dtype=np.float32)
            times = {name: [] for name in runs}
            for run in runs.values():
                run(x[:1, :, :16, :16])
                run(x)  # the first run at a shape sets up its kernels
            for _ in range(args.repeats):
                for name, run in runs.items():
                    t = time.perf_counter()
                    run(x)
                    times[name].append(time.perf_counter() - t)
            rate = conv_rate(3)
            first = next(iter(times.values()))
            for name, ts in times.items():
                med = statistics.median(ts)
                rel = statistics.median(a / b for a, b in zip(ts, first))
                print(f"  {name:>22} {batch} x {side}x{side}: median {med:6.3f} s (best {min(ts):.3f}) = "
                      f"{med / (batch * macs(side, side) / rate):.2f}x the roofline ({rate / 1e9:.1f} GMAC/s); "
                      f"{rel:.3f}x the first; load {load()}", flush=True)


def bench_layers(args) -> None:
    """Each convolution of the shipped network (folded, as deconas upscale runs it) timed alone on
    its own input shape at one window, in the faster layout, fp32 and (with AMX-BF16) bf16: what a conv-by-conv
    engine could reach at best, before any memory-bound work (concatenations, ReLU, channel
    attention, additions) is counted."""
    from deconas.checkpoint import load_model
    from deconas.infer.backends import keep_freed_memory
    from deconas.infer.fold import fold_for_inference

    keep_freed_memory()
    net = fold_for_inference(load_model("pretrained", scale=2)[0])
    side = args.layers
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape)))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        net(torch.rand(1, 3, side, side))
    for h in hooks:
        h.remove()
    work = macs(side, side)
    from deconas.infer.backends import native_bf16

    # bf16 only where it is native (elsewhere torch's bf16 conv is a slow fallback no default uses)
    for dtype in (torch.float32, torch.bfloat16) if native_bf16() else (torch.float32,):
        total, by_kind = 0.0, {}
        rate = conv_rate(dtype=torch.float32)
        for m, shape in shapes:
            best = float("inf")
            for layout in (torch.contiguous_format, torch.channels_last):
                c = copy_conv(m, dtype, layout)
                x = torch.rand(shape).to(dtype).contiguous(memory_format=layout)
                with torch.inference_mode():
                    c(x)
                    for _ in range(args.repeats):
                        t = time.perf_counter()
                        c(x)
                        best = min(best, time.perf_counter() - t)
            kind = ("depthwise" if m.groups > 1 else f"{m.kernel_size[0]}x{m.kernel_size[1]}"
                    + (f" dil {m.dilation[0]}" if m.dilation[0] > 1 else ""))
            by_kind[kind] = by_kind.get(kind, 0.0) + best
            total += best
        print(f"{str(dtype).split('.')[-1]}: {len(shapes)} convolutions alone at {side}x{side}: {total:.3f} s = "
              f"{total / (work / rate):.2f}x the fp32 roofline ({rate / 1e9:.1f} GMAC/s -> {work / rate:.3f} s); "
              + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])), flush=True)


def copy_conv(m: torch.nn.Conv2d, dtype, layout) -> torch.nn.Conv2d:
    c = torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding, dilation=m.dilation,
                        groups=m.groups, bias=m.bias is not None).eval()
    c.load_state_dict(m.state_dict())
    return c.to(dtype).to(memory_format=layout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--size", type=int, default=512, help="side of each photo in LR pixels")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS),
                    help="cold/warm: the defaults with an empty/filled ONNX cache; fp32: --precision fp32, warm")
    ap.add_argument("--memory", nargs="+", metavar="WxH", help="peak RSS of one WxH image at x2 instead")
    ap.add_argument("--windows", type=int, nargs="+", help="time the network alone on these window sides")
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "torch", "torch-bf16"], choices=BACKENDS,
                    help="with --windows; torch-bf16-un*: the inference rewrite undone step by step")
    ap.add_argument("--batches", type=int, nargs="+", default=[1])
    ap.add_argument("--layers", type=int, metavar="SIDE",
                    help="time each convolution of the network alone at a SIDE x SIDE window instead")
    ap.add_argument("--spin", action="store_true", help="also time ONNX Runtime with spinning threads and with its arena")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, help="more options for deconas upscale")
    args = ap.parse_args()
    if args.memory:
        bench_memory(args)
    elif args.layers:
        bench_layers(args)
    elif args.windows:
        bench_windows(args)
    else:
        bench_cli(args)


if __name__ == "__main__":
    main()
