"""Running a network on whole images: the backend for a network object, and one call from a
uint8 image to a uint8 result (what training's validation, ``deconas eval``, ``deconas run``
and the study use); tiling and the x8 self-ensemble are :mod:`deconas.infer.tiling`'s."""

from __future__ import annotations

from typing import Optional

import numpy as np

from deconas.errors import UserError
from deconas.infer.backends import OnnxRuntimeBackend, TorchBackend, resolve_precision
from deconas.infer.onnx_cache import onnxruntime_for_model
from deconas.infer.tiling import DEFAULT_OVERLAP, Backend, upscale_pixels
from deconas.space.network import DeCoNASNet


def make_backend(model, backend: str = "auto", device=None, threads: Optional[int] = None,
                 precision: str = "fp32") -> Backend:
    """A backend for a network object: a DeCoNASNet runs on ONNX Runtime where ``backend``
    resolves to it; any other torch module runs with torch; a backend is returned as it is.
    ``precision`` as :func:`deconas.infer.backends.resolve_precision` (int8: ONNX Runtime, bf16:
    torch)."""
    if isinstance(model, (OnnxRuntimeBackend, TorchBackend)) or not hasattr(model, "parameters"):
        return model  # already a backend (any callable on arrays with a scale)
    precision, kind = resolve_precision(precision, backend,
                                        device if device is not None else _model_device_name(model))
    if precision != "fp32" and not isinstance(model, DeCoNASNet):
        raise UserError(f"--precision {precision}: {type(model).__name__} is not a DeCoNASNet; use fp32")
    if kind == "onnxruntime":
        if not isinstance(model, DeCoNASNet):
            if backend == "onnxruntime":
                raise UserError(f"--backend onnxruntime: {type(model).__name__} is not a DeCoNASNet; use torch")
            return TorchBackend(model, device)
        return onnxruntime_for_model(model, threads, precision=precision)
    return TorchBackend(model, device, precision=precision)


def _model_device_name(model) -> Optional[str]:
    for p in model.parameters():
        return str(p.device)
    return "cpu"


def upscale_array(model, lr: np.ndarray, tile: Optional[int] = 0, self_ensemble: bool = False,
                  device=None, backend: str = "torch", overlap: Optional[int] = None,
                  batch: Optional[int] = None) -> np.ndarray:
    """Super-resolve a uint8 image (H, W) or (H, W, 3); returns uint8 in the same layout.

    A greyscale image goes in as three equal channels and comes back as the BT.601 luma of the
    (nearly grey) output, which is what converting the RGB result to grey would give.

    ``model``: a torch module, or a backend from :func:`deconas.infer.inference.make_backend` (reuse one
    for many images: making an ONNX Runtime session costs a fraction of a second). ``backend``:
    ``torch`` (default: the network as it is now, e.g. during training), ``onnxruntime`` or
    ``auto`` (ONNX Runtime on the CPU, torch on CUDA; the exported graph is cached by the weights'
    hash). ``tile``: core size in LR pixels, 0 = whole image, None = whole up to 512x512 else
    windows of at most that. Tiles are rounded into a preallocated uint8 result as they come, so
    no full-size float image is held. ``device``: move a torch model there first.
    """
    if lr.dtype != np.uint8 or not (lr.ndim == 2 or (lr.ndim == 3 and lr.shape[2] == 3)):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) array, got {lr.dtype} {lr.shape}")
    run = make_backend(model, backend, device=device)
    if overlap is None and getattr(run, "radius", None) is None:
        overlap = DEFAULT_OVERLAP
    if not run.scale:  # a module without a scale attribute: learn it from a tiny input
        run(np.zeros((1, 3, 4, 4), np.float32))
    return upscale_pixels(run, np.ascontiguousarray(lr), tile=tile, overlap=overlap, batch=batch,
                         self_ensemble=self_ensemble)
