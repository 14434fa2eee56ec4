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
from typing import Optional, Union

import numpy as np

from deconas import threads as threads_mod
from deconas.constants import BACKENDS
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
    """A torch module on its device; arrays in and out (on the CPU)."""

    name = "torch"

    def __init__(self, model, device=None, radius: Optional[int] = None):
        import torch  # the model is a torch module: torch is loaded already

        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.scale = int(getattr(model, "scale", 0) or 0)
        self.radius = (getattr(model, "receptive_radius", None) or DEFAULT_OVERLAP) if radius is None else radius

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            y = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
            if not self.scale:
                self.scale = y.shape[-2] // x.shape[-2]
            return y.float().cpu().numpy()


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
