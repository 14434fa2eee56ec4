"""Where the network runs (torch or ONNX Runtime) and the tiler that streams tiles into a uint8 image.

Nothing here imports torch at module level: with ONNX Runtime and a cached graph, ``deconas
upscale`` never loads torch (about 220 MB of memory and seconds of start-up on a small machine).

Backends are callables ``(B, 3, h, w) float32 in [0, 1] -> (B, 3, s*h, s*w) float32``, with
``scale`` and ``radius`` (the receptive-field radius in LR pixels, the tiles' overlap).

The ONNX graph of a checkpoint is exported once and cached in the user cache directory
(``$XDG_CACHE_HOME/deconas/onnx``, else platformdirs' user cache), named by the SHA-256 of the
checkpoint file, so a folder of images, or a later run, is not exported again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np

from .errors import UserError

log = logging.getLogger("deconas")

BACKENDS = ("auto", "torch", "onnxruntime")
# Bumped when the exported graph changes for the same weights: old cache entries are then unused.
EXPORT_VERSION = 1
DEFAULT_OPSET = 17
OPSETS = range(11, 21)  # what torch's TorchScript exporter writes (21+ needs the dynamo exporter)

# The window (tile + overlap) area above which an image is tiled by default, in LR pixels.
# Measured with benchmarks/bench_upscale.py on 2 cores (docs/upscale.md): ONNX Runtime's time per
# pixel is nearly flat from 256x256 windows up, so the limit is set by memory (about 2.7 kB per
# window pixel for the C=32 network) and by the overlap: a 512x512 image runs whole (no overlap
# cost); a large one runs in windows of at most 512x512.
WINDOW_PIXELS = 512 * 512

# BT.601 luma, as PIL's RGB -> L: what a greyscale result is read back with.
LUMA = (0.299, 0.587, 0.114)

Backend = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Tiling

def spans(size: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) along one axis.

    Cores are nearly equal (a thin last tile would have poor attention statistics); every
    window has the same size (so the tiles of an image batch): the largest core plus ``overlap``
    on both sides, shifted inward at the borders. ``tile`` <= 0 or >= ``size``: one window.
    """
    if tile <= 0 or size <= tile:
        return [(0, size, 0, size)]
    n = math.ceil(size / tile)
    cuts = [round(i * size / n) for i in range(n + 1)]
    want = min(size, max(b - a for a, b in zip(cuts[:-1], cuts[1:])) + 2 * overlap)
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        w0 = min(max(0, a - overlap), size - want)
        out.append((a, b, w0, w0 + want))
    return out


def auto_tile(h: int, w: int, overlap: int, window_pixels: int = WINDOW_PIXELS) -> int:
    """The default tile: 0 (whole image) when the image fits one window of ``window_pixels``,
    else the core size whose windows (core + 2 x overlap) are at most that area."""
    if h * w <= window_pixels:
        return 0
    return max(16, int(math.isqrt(window_pixels)) - 2 * overlap)


def auto_batch(window: Tuple[int, int], window_pixels: int = WINDOW_PIXELS) -> int:
    """Windows run together: as many as fit the same memory as one default window."""
    return max(1, window_pixels // max(1, window[0] * window[1]))


def _to_input(lr: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """(3, h, w) float32 in [0, 1] of one window (a grey image as three equal channels)."""
    win = lr[y0:y1, x0:x1]
    if win.ndim == 2:
        win = np.broadcast_to(win, (3, *win.shape))
    else:
        win = win.transpose(2, 0, 1)
    return np.ascontiguousarray(win, dtype=np.float32) / np.float32(255)


def _to_uint8(y: np.ndarray, grey: bool) -> np.ndarray:
    """(3, h, w) float network output -> uint8 (h, w, 3), or (h, w) BT.601 luma for a grey input.
    The order (luma, clamp, x255, round half to even) is that of the whole-image torch path."""
    if grey:
        y = y[0] * np.float32(LUMA[0]) + y[1] * np.float32(LUMA[1]) + y[2] * np.float32(LUMA[2])
    else:
        y = y.transpose(1, 2, 0)
    y = np.clip(y, 0, 1)
    y *= np.float32(255)
    return np.rint(y, out=y).astype(np.uint8)


# The 8 symmetries of the square on (..., H, W) arrays as (transpose, flip rows, flip cols).
_DIHEDRAL = [(t, fr, fc) for t in (False, True) for fr in (False, True) for fc in (False, True)]


def _sym(x: np.ndarray, t: bool, fr: bool, fc: bool, inverse: bool = False) -> np.ndarray:
    def flips(a):
        if fr:
            a = a[..., ::-1, :]
        if fc:
            a = a[..., ::-1]
        return a
    tr = (lambda a: a.swapaxes(-2, -1)) if t else (lambda a: a)
    return tr(flips(x)) if inverse else flips(tr(x))


def _run_ensemble(backend: Backend, x: np.ndarray) -> np.ndarray:
    """Mean of the outputs for the 8 flips/transpositions of ``x`` (1, 3, h, w), each transformed
    back (EDSR's x8); the 4 of each orientation run as one batch."""
    acc = None
    for t in (False, True):
        syms = [s for s in _DIHEDRAL if s[0] == t]
        ys = backend(np.ascontiguousarray(np.concatenate([_sym(x, *s) for s in syms])))
        for s, y in zip(syms, ys):
            y = _sym(y, *s, inverse=True)
            acc = y.copy() if acc is None else np.add(acc, y, out=acc)
    return acc / np.float32(len(_DIHEDRAL))


def upscale_uint8(backend: Backend, lr: np.ndarray, tile: Optional[int] = None, overlap: Optional[int] = None,
                  batch: Optional[int] = None, self_ensemble: bool = False) -> np.ndarray:
    """Super-resolve a uint8 image (H, W) or (H, W, 3) into a preallocated uint8 result.

    Each tile's output is clamped, rounded and written into the result as soon as it is computed:
    apart from the input and the result, memory holds one batch of windows and their outputs,
    whatever the image size. ``tile``: core size in LR pixels (0 = whole image, None = by
    :func:`auto_tile`); ``overlap``: context pixels around each core (default: the backend's
    receptive radius); ``batch``: windows per call (default: :func:`auto_batch`).
    """
    if lr.dtype != np.uint8 or not (lr.ndim == 2 or (lr.ndim == 3 and lr.shape[2] == 3)):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) array, got {lr.dtype} {lr.shape}")
    s = int(backend.scale)
    overlap = getattr(backend, "radius", None) if overlap is None else overlap
    if overlap is None:
        raise ValueError("overlap is unknown for this backend; pass it")
    h, w = lr.shape[:2]
    if tile is None:
        tile = auto_tile(h, w, overlap)
    if tile < 0 or overlap < 0:
        raise ValueError(f"tile and overlap must be >= 0, got {tile}, {overlap}")
    grey = lr.ndim == 2
    out = np.empty((s * h, s * w) if grey else (s * h, s * w, 3), np.uint8)
    windows = [(ys, xs) for ys in spans(h, tile, overlap) for xs in spans(w, tile, overlap)]
    (_, _, wy0, wy1), (_, _, wx0, wx1) = windows[0]
    if batch is None:
        batch = auto_batch((wy1 - wy0, wx1 - wx0))
    for i in range(0, len(windows), 1 if self_ensemble else batch):
        chunk = windows[i:i + (1 if self_ensemble else batch)]
        x = np.stack([_to_input(lr, wy0, wy1, wx0, wx1) for (_, _, wy0, wy1), (_, _, wx0, wx1) in chunk])
        y = _run_ensemble(backend, x)[None] if self_ensemble else backend(x)
        if y.shape[-2:] != (s * x.shape[-2], s * x.shape[-1]):
            raise ValueError(f"backend output {tuple(y.shape)} is not a x{s} upscaling of {tuple(x.shape)}")
        for ((ya, yb, wy0, _), (xa, xb, wx0, _)), yi in zip(chunk, y):
            core = yi[:, s * (ya - wy0):s * (yb - wy0), s * (xa - wx0):s * (xb - wx0)]
            out[s * ya:s * yb, s * xa:s * xb] = _to_uint8(core, grey)
    return out


# ---------------------------------------------------------------------------------------------
# Backends

def default_threads() -> int:
    """Intra-op threads: OMP_NUM_THREADS when set, torch's setting when torch is already loaded
    (so one process keeps one policy), else the CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


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
        so.intra_op_num_threads = threads or default_threads()
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
        self.scale = int(self.meta["scale"])
        self.radius = int(self.meta["receptive_radius"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)},
                                self.run_options)[0]


class TorchBackend:
    """A torch module on its device; arrays in and out (on the CPU)."""

    name = "torch"

    def __init__(self, model, device=None, radius: Optional[int] = None):
        import torch

        from .inference import default_overlap

        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.scale = int(getattr(model, "scale", 0) or 0)
        self.radius = default_overlap(model) if radius is None else radius

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


def _notice_once(key: str, text: str) -> None:
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
        if not on_cpu:
            raise UserError(f"--backend onnxruntime runs on the CPU; drop --device {dev} or use --backend torch")
        return name
    if name == "torch" or not on_cpu:
        return "torch"
    if not have_onnxruntime():
        _notice_once("no-ort", "onnxruntime is not installed, running the network with torch "
                     "(pip install onnxruntime for faster CPU upscaling)")
        return "torch"
    return "onnxruntime"


# ---------------------------------------------------------------------------------------------
# The ONNX cache

def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deconas/onnx`` when XDG_CACHE_HOME is set (on every platform, so tests
    and users can point it anywhere), else the platform's user cache directory."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "deconas" / "onnx"
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("deconas")) / "onnx"
    except ImportError:
        return Path.home() / ".cache" / "deconas" / "onnx"


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_digest(model) -> str:
    """SHA-256 of a DeCoNASNet's structure and weights (for networks that are not a file)."""
    h = hashlib.sha256(f"{model.genotype}|{model.scale}|{model.channels}|{model.blocks}".encode())
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def cache_path(digest: str, opset: int = DEFAULT_OPSET, kind: str = "ckpt") -> Path:
    """``kind`` ``ckpt``: ``digest`` is the checkpoint file's; ``model``: the weights' (model_digest)."""
    return cache_dir() / f"{kind}-{digest[:40]}-opset{opset}-v{EXPORT_VERSION}.onnx"


def _open_cached(path: Path, threads) -> Optional[OnnxRuntimeBackend]:
    """The cached session, or None when there is none or it is damaged (then it is removed)."""
    if not path.is_file():
        return None
    try:
        return OnnxRuntimeBackend(path, threads)
    except Exception as e:  # a truncated or foreign file: export again
        log.warning("cached ONNX graph %s is unreadable (%s); exporting it again", path,
                    " ".join(str(e).split())[:120])
        try:
            path.unlink()
        except OSError:
            pass
        return None


def _export_into_cache(model, path: Path, opset: int, source: Optional[str], threads) -> OnnxRuntimeBackend:
    from .export import export_onnx, onnx_bytes

    try:
        export_onnx(model, path, opset=opset, source=source)
    except UserError as e:  # an unwritable cache costs the export on every run, nothing else
        _notice_once("cache", f"cannot cache the ONNX graph ({e}); exporting it in memory")
        return OnnxRuntimeBackend(onnx_bytes(model, opset=opset, source=source), threads)
    return OnnxRuntimeBackend(path, threads)


def onnxruntime_for_model(model, threads: Optional[int] = None, opset: int = DEFAULT_OPSET) -> OnnxRuntimeBackend:
    """An ONNX Runtime backend for a DeCoNASNet object, through the cache (keyed by its weights)."""
    path = cache_path(model_digest(model), opset, kind="model")
    return _open_cached(path, threads) or _export_into_cache(model, path, opset, None, threads)


def onnxruntime_for_checkpoint(path, load: Callable[[], object], threads: Optional[int] = None,
                               opset: int = DEFAULT_OPSET) -> OnnxRuntimeBackend:
    """An ONNX Runtime backend for a checkpoint file, keyed by the file's SHA-256. ``load()``
    builds the torch network, and is only called (importing torch) when the graph is not cached."""
    digest = file_digest(path)
    cached = cache_path(digest, opset)
    hit = _open_cached(cached, threads)
    if hit is not None:
        return hit
    if _export_in_child(path, cached, opset, digest):
        return OnnxRuntimeBackend(cached, threads)
    return _export_into_cache(load(), cached, opset, digest, threads)


def _export_in_child(path, cached: Path, opset: int, digest: str) -> bool:
    """Export into the cache in a child process, so that this one never loads torch (its ~220 MB
    would count against an upscaling job's memory). False when the cache cannot be written
    (the caller then exports in memory); a bad checkpoint is the child's one-line error."""
    import subprocess

    code = "import sys; from deconas.export import cache_worker; sys.exit(cache_worker(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, str(path), str(cached), str(opset), digest],
                       capture_output=True, text=True)
    if r.returncode == 0 and cached.is_file():
        return True
    lines = r.stderr.strip().splitlines()
    if r.returncode == 2 and lines:  # the checkpoint's own error, said once
        raise UserError(lines[-1])
    if r.returncode not in (0, 3):
        log.warning("exporting the ONNX graph in a child process failed (%s); exporting here",
                    lines[-1][:160] if lines else f"exit code {r.returncode}")
    return False


def make_backend(model, backend: str = "auto", device=None, threads: Optional[int] = None) -> Backend:
    """A backend for a network object: a DeCoNASNet runs on ONNX Runtime where ``backend``
    resolves to it; any other torch module runs with torch; a backend is returned as it is."""
    if isinstance(model, (OnnxRuntimeBackend, TorchBackend)) or not hasattr(model, "parameters"):
        return model  # already a backend (any callable on arrays with a scale)
    from .network import DeCoNASNet

    kind = resolve_backend(backend, device if device is not None else _model_device_name(model))
    if kind == "onnxruntime":
        if not isinstance(model, DeCoNASNet):
            if backend == "onnxruntime":
                raise UserError(f"--backend onnxruntime: {type(model).__name__} is not a DeCoNASNet; use torch")
            return TorchBackend(model, device)
        return onnxruntime_for_model(model, threads)
    return TorchBackend(model, device)


def _model_device_name(model) -> Optional[str]:
    for p in model.parameters():
        return str(p.device)
    return "cpu"
