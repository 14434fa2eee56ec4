"""Where the network runs: ONNX Runtime on the CPU, or torch (on any device), as callables on
arrays (:data:`deconas.infer.tiling.Backend`); and which of the two ``--backend`` means here.

Nothing here imports torch at module level: with ONNX Runtime and a cached graph, ``deconas
upscale`` never loads torch (about 220 MB of memory and seconds of start-up on a small machine).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from deconas import threads as threads_mod
from deconas.constants import BACKENDS, UPSCALE_PRECISIONS
from deconas.errors import UserError
from deconas.infer.tiling import DEFAULT_OVERLAP


def have_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxRuntimeBackend:
    """An ONNX Runtime CPU session of an exported deconas graph (file path or serialized bytes)."""

    name = "onnxruntime"

    def __init__(self, model: Union[str, os.PathLike, bytes], threads: Optional[int] = None,
                 spinning: bool = False, arena: bool = False):
        """``spinning``: idle threads spin; ``arena``: the memory arena is kept between runs (both
        off by default; the benchmark compares them)."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or threads_mod.resolve(None, load_aware=False)[0]
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The arena is shrunk after every run (RunOptions below): without an arena each new input
        # shape runs about 2x slower the first time (every image of a folder of photos is a new
        # shape); with one that is never shrunk, a 512x512 window's peak (rounded up to powers of
        # two) stays held for the whole job. Measured in docs/upscale.md.
        so.enable_cpu_mem_arena = True
        # Idle threads sleep rather than spin: on a shared machine spinning steals the cores the
        # other threads need; measured no slower on 2 cores (docs/upscale.md).
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        so.log_severity_level = 3  # ORT's own warnings are about graph details, not the user's input
        src = model if isinstance(model, bytes) else str(model)
        self.source = src
        self.session = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        self.run_options = ort.RunOptions()
        if not arena:  # hand the arena's chunks back after each run: memory is one window's, not the peak's
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name
        # A deconas network's graph says its scale and radius; a bare graph (deconas profile's
        # parts of a network) has neither.
        self.scale = int(self.meta["scale"]) if "scale" in self.meta else None
        self.radius = int(self.meta["receptive_radius"]) if "receptive_radius" in self.meta else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)},
                                self.run_options)[0]


class TorchBackend:
    """A torch module on its device; arrays in and out (on the CPU). ``precision`` bf16 runs a
    copy of a deconas network made by :func:`bf16_network`; ``fold`` runs a folded copy of a
    DeCoNASNet (:mod:`deconas.infer.fold`; bf16 always does), for a network that no longer
    trains."""

    name = "torch"

    def __init__(self, model, device=None, radius: Optional[int] = None, precision: str = "fp32",
                 fold: bool = False):
        import torch  # the model is a torch module: torch is loaded already

        from deconas.infer.fold import fold_for_inference
        from deconas.space.network import DeCoNASNet

        if device is not None:
            model = model.to(device)
        # The network's own radius: the composed upsampler's strips would count as more convs.
        self.radius = (getattr(model, "receptive_radius", None) or DEFAULT_OVERLAP) if radius is None else radius
        if (fold or precision == "bf16") and isinstance(model, DeCoNASNet):
            model = fold_for_inference(model, upsampler=True)
        self.model = model.eval()
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.scale = int(getattr(model, "scale", 0) or 0)
        self.precision = precision
        if precision == "bf16":
            self.model = bf16_network(self.model)
        elif precision != "fp32":
            raise UserError(f"--precision {precision} does not run with torch; use fp32 or bf16")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            if self.precision == "bf16":  # oneDNN's fast bf16 convolutions are the NHWC ones
                t = t.contiguous(memory_format=torch.channels_last)
            y = self.model(t)
            if not self.scale:
                self.scale = y.shape[-2] // x.shape[-2]
            return y.float().cpu().numpy()


def bf16_network(model):
    """A copy of a deconas network whose body computes in bf16 (channels_last), with its first
    convolution (sfe1, which reads the image) and the tail (which writes it; with UPNet where
    they are composed) in fp32, with the weights as trained: a bf16 output would be rounded to
    steps of 1/256 near white, coarser than the uint8 result, and both convs have 3 image
    channels on one side, so fp32 costs them little. Measured in docs/upscale.md: at most 0.002 dB from fp32 on Set5 and Set14."""
    import copy

    import torch

    class Cast(torch.nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.dtype = dtype

        def forward(self, x):
            return x.to(self.dtype)

    class SumPool(torch.nn.Module):
        """Global average pooling as a sum: torch's bf16 mean over a channels_last map is six
        times slower than its sum (docs/upscale.md)."""

        def forward(self, x):
            return x.sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3])

    if not (hasattr(model, "sfe1") and hasattr(model, "tail")):
        raise UserError(f"--precision bf16: {type(model).__name__} is not a deconas network; use fp32")
    # What writes the image: the tail, or UPNet and the tail composed (deconas.infer.fold).
    writer = "upsample" if isinstance(model.tail, torch.nn.Identity) else "tail"
    m = copy.deepcopy(model).eval()  # folded already where TorchBackend made it
    first = copy.deepcopy(model.sfe1).float()  # never rounded to bf16
    last = copy.deepcopy(getattr(model, writer)).float()
    m = m.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    m.sfe1 = torch.nn.Sequential(first.to(memory_format=torch.channels_last), Cast(torch.bfloat16))
    setattr(m, writer, torch.nn.Sequential(Cast(torch.float32), last.to(memory_format=torch.channels_last)))
    for mod in m.modules():
        body = getattr(mod, "body", None)
        if isinstance(body, torch.nn.Sequential) and isinstance(body[0], torch.nn.AdaptiveAvgPool2d):
            body[0] = SumPool()  # channel attention's pooling
    from deconas.infer.buffered import BufferedNetwork

    folded = all(node.summed or not node.ops for dnb in m.dnbs for node in dnb.nodes)
    return BufferedNetwork(m) if folded else m  # a folded network runs on buffers


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of giving it back to the kernel,
    for torch running a network on the CPU.

    A network's feature maps are tens of MB each, above glibc's mmap threshold, so by default
    every one is a fresh mapping whose pages fault in (zeroed) on first touch: on 2 cores that
    made a bf16 concat of three 16 MB maps take 14 ms instead of 2.5 ms, and the upscale of six
    512x512 photos 1.3 times as long (docs/upscale.md). With mmap off and trimming pushed out,
    freed blocks are reused and the process keeps its peak memory until it exits,
    which suits a command that runs one network to the end. ONNX Runtime is left alone: its
    allocations grew the heap four-fold that way. Returns whether it applied (glibc only)."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return all(mallopt(k, v) == 1 for k, v in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30)))


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has AMX-BF16 tiles (Linux's cpuinfo flag), where oneDNN's bf16
    convolutions run several times as fast as fp32 (benchmarks/bench_upscale.py). CPUs with
    only AVX512-BF16 were not measured, so ``auto`` keeps fp32 there."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def resolve_precision(precision: Optional[str], backend: str, device=None) -> Tuple[str, str]:
    """(precision, backend kind) for ``--precision`` and ``--backend``: ``auto`` (or None) is
    bf16 with torch on a CPU with AMX-BF16 (unless ``--backend onnxruntime`` was asked for),
    else fp32 where :func:`resolve_backend` puts it; bf16 runs with torch, int8 with ONNX
    Runtime, and asking for either elsewhere is one line."""
    p = precision or "auto"
    if p not in UPSCALE_PRECISIONS:
        raise UserError(f"--precision {p!r}: use one of {', '.join(UPSCALE_PRECISIONS)}")
    kind = resolve_backend(backend, device)
    dev = None if device is None else str(device)
    on_cpu = kind == "onnxruntime" or (dev.startswith("cpu") if dev is not None else not _cuda_available())
    if p == "auto":
        return ("bf16", "torch") if on_cpu and backend != "onnxruntime" and native_bf16() else ("fp32", kind)
    if p == "bf16":
        if backend == "onnxruntime":
            raise UserError("--precision bf16 runs with torch; drop --backend onnxruntime or use --precision fp32")
        if on_cpu and not native_bf16():  # without AVX-512 torch's bf16 conv is a slow fallback
            notice_once("bf16-slow", "--precision bf16: this CPU has no AMX-BF16, where bf16 was measured "
                                     "faster than fp32 (without AVX-512 it is several times slower); "
                                     "--precision auto runs fp32 here")
        return p, "torch"
    if p == "int8" and kind != "onnxruntime":
        raise UserError(f"--precision int8 runs with ONNX Runtime on the CPU; this run uses {kind} "
                        f"(drop --backend torch / --device, or use --precision fp32)")
    return p, kind


def _cuda_available() -> bool:
    """Whether torch can use CUDA, without importing a CPU-only torch (which has no CUDA library
    to look for): ``auto`` on a CPU machine then never loads torch at all."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    if lib.is_dir() and not any(lib.glob("libtorch_cuda*")) and not any(lib.glob("torch_cuda*")):
        return False
    import torch

    return torch.cuda.is_available()


_notified = set()


def notice_once(key: str, text: str) -> None:
    if key not in _notified:
        _notified.add(key)
        print(f"deconas: {text}", file=sys.stderr)


def resolve_backend(name: str, device=None) -> str:
    """``auto`` -> onnxruntime on the CPU, torch on CUDA (or wherever ``device`` is not the CPU);
    when onnxruntime is not installed, torch with one notice. An explicit choice is checked."""
    if name not in BACKENDS:
        raise UserError(f"--backend {name!r}: use one of {', '.join(BACKENDS)}")
    dev = None if device is None else str(device)
    on_cpu = (dev is None and not _cuda_available()) or (dev is not None and dev.startswith("cpu"))
    if name == "onnxruntime":
        if not have_onnxruntime():
            raise UserError("--backend onnxruntime: onnxruntime is not installed (pip install onnxruntime)")
        if dev is not None and not dev.startswith("cpu"):  # no --device: the CPU, even beside a GPU
            raise UserError(f"--backend onnxruntime runs on the CPU; drop --device {dev} or use --backend torch")
        return name
    if name == "torch" or not on_cpu:
        return "torch"
    if not have_onnxruntime():
        notice_once("no-ort", "onnxruntime is not installed, running the network with torch "
                     "(pip install onnxruntime for faster CPU upscaling)")
        return "torch"
    return "onnxruntime"
