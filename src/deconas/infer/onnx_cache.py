"""The ONNX graph of a checkpoint, exported once and cached in the user cache directory
(``$XDG_CACHE_HOME/deconas/onnx``, else platformdirs' user cache), named by the SHA-256 of the
checkpoint file, so a folder of images, or a later run, is not exported again. A checkpoint's
graph is exported in a child process, so that this one never loads torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from deconas.constants import DEFAULT_OPSET
from deconas.errors import UserError
from deconas.infer.backends import OnnxRuntimeBackend, notice_once
from deconas.infer.onnx_seal import is_sealed
from deconas.runtime import file_digest

log = logging.getLogger("deconas")

# Bumped when the exported graph changes for the same weights: old cache entries are then unused.
# 2: graphs end in their content's SHA-256 (seal). 3: the output is clamped in the graph; the
# precision is part of the name. 4: mix nodes' mean as Adds, ReLUs and concatenations shared.
# 5: mix nodes folded (deconas.infer.fold). 6: the fp32 graphs deconas runs have UPNet and the
# tail composed (an If runs the plain graph on inputs under 2R LR pixels).
EXPORT_VERSION = 6

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


def model_digest(model) -> str:
    """SHA-256 of a DeCoNASNet's structure and weights (for networks that are not a file)."""
    import torch  # the model is a torch module: torch is loaded already

    h = hashlib.sha256(f"{model.genotype}|{model.scale}|{model.channels}|{model.blocks}".encode())
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_path(digest: str, opset: int = DEFAULT_OPSET, kind: str = "ckpt", precision: str = "fp32") -> Path:
    """``kind`` ``ckpt``: ``digest`` is the checkpoint file's; ``model``: the weights' (model_digest)."""
    return cache_dir() / f"{kind}-{digest[:40]}-opset{opset}-{precision}-v{EXPORT_VERSION}.onnx"


def _open_cached(path: Path, threads) -> Optional[OnnxRuntimeBackend]:
    """The cached session, or None when there is none or it is damaged (then it is removed)."""
    if not path.is_file():
        return None
    try:
        if not is_sealed(path):
            raise ValueError("its content does not match its SHA-256")
        return OnnxRuntimeBackend(path, threads)
    except Exception as e:  # a damaged, truncated or foreign file: export again
        log.warning("cached ONNX graph %s is damaged or unreadable (%s); exporting it again", path,
                    " ".join(str(e).split())[:120])
        try:
            path.unlink()
        except OSError:
            pass
        return None


def _export_into_cache(model, path: Path, opset: int, source: Optional[str], threads,
                       precision: str = "fp32") -> OnnxRuntimeBackend:
    from deconas.infer.export import export_onnx, onnx_bytes  # torch: only when a graph must be made

    try:
        export_onnx(model, path, opset=opset, source=source, precision=precision, compose=True)
    except UserError as e:  # an unwritable cache costs the export on every run, nothing else
        notice_once("cache", f"cannot cache the ONNX graph ({e}); exporting it in memory")
        return OnnxRuntimeBackend(onnx_bytes(model, opset=opset, source=source, precision=precision, compose=True),
                                  threads)
    return OnnxRuntimeBackend(path, threads)


def onnxruntime_for_model(model, threads: Optional[int] = None, opset: int = DEFAULT_OPSET,
                          precision: str = "fp32") -> OnnxRuntimeBackend:
    """An ONNX Runtime backend for a DeCoNASNet object, through the cache (keyed by its weights)."""
    _check_precision(precision)
    path = cache_path(model_digest(model), opset, kind="model", precision=precision)
    run = _open_cached(path, threads) or _export_into_cache(model, path, opset, None, threads, precision)
    return _said(run, precision)


def _check_precision(precision: str) -> None:
    if precision not in ("fp32", "int8"):
        raise UserError(f"--precision {precision}: use fp32 or int8 on the CPU")
    if precision == "int8":
        notice_once("int8-build", "quantizing the network to int8 once (cached for later runs)")


def _said(run: OnnxRuntimeBackend, precision: str) -> OnnxRuntimeBackend:
    """``run``, with int8's measured cost said once per process."""
    if precision == "int8":
        cost = run.meta.get("int8_cost_db")
        notice_once("int8", f"int8 arithmetic: {float(cost):+.2f} dB PSNR (Y) against fp32 on the built-in "
                            f"photographs for this network; --precision fp32, the default, runs it as trained"
                    if cost is not None else "int8 arithmetic (its PSNR cost was not measured for this graph)")
    return run


def onnxruntime_for_checkpoint(path, load: Callable[[], object], threads: Optional[int] = None,
                               opset: int = DEFAULT_OPSET, precision: str = "fp32") -> OnnxRuntimeBackend:
    """An ONNX Runtime backend for a checkpoint file, keyed by the file's SHA-256. ``load()``
    builds the torch network, and is only called (importing torch) when the graph is not cached.
    ``precision`` int8: the graph is quantized on the built-in photographs the first time (about
    half a minute); its measured PSNR cost is said once."""
    _check_precision(precision)
    return _said(_for_checkpoint(path, load, threads, opset, precision), precision)


def _for_checkpoint(path, load, threads, opset: int, precision: str) -> OnnxRuntimeBackend:
    digest = file_digest(path)
    cached = cache_path(digest, opset, precision=precision)
    hit = _open_cached(cached, threads)
    if hit is not None and hit.meta.get("checkpoint_sha256") == digest:
        return hit
    if hit is not None:  # a graph of another network under this checkpoint's name: never trusted
        log.warning("cached ONNX graph %s is not of %s; exporting it again", cached, path)
        hit = None
        cached.unlink(missing_ok=True)
    if _export_in_child(path, cached, opset, digest, precision):
        return OnnxRuntimeBackend(cached, threads)
    return _export_into_cache(load(), cached, opset, digest, threads, precision)


def _export_in_child(path, cached: Path, opset: int, digest: str, precision: str = "fp32") -> bool:
    """Export into the cache in a child process, so that this one never loads torch (its ~220 MB
    would count against an upscaling job's memory). False when the cache cannot be written
    (the caller then exports in memory); a bad checkpoint is the child's one-line error."""
    code = "import sys; from deconas.infer.export import cache_worker; sys.exit(cache_worker(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, str(path), str(cached), str(opset), digest, precision],
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
