"""Running a trained network on whole images: tiled inference and the x8 self-ensemble.

Tiling. The image is cut into a grid of nearly equal *cores* of at most ``tile`` LR pixels a
side; each core is run with ``overlap`` pixels of real image context on every side (more on
one side where the other hits the image border, so every window has the same size) and only
the core's part of the output is kept. With ``overlap`` at least the network's receptive-field
radius (:func:`receptive_radius`), every convolution sees exactly what it sees in whole-image
inference, including the zero padding at the true image borders.

The one thing tiling cannot reproduce is channel attention: its global average pool sees a
window, not the whole image, so tiles are close to but not bit-equal with whole-image output.
Measured on skimage's astronaut (256x256 LR -> 512x512, x2), overlap = receptive radius:
a tiny network built to output a real upscaling (PSNR 26 dB, perturbed body with
content-dependent attention; tests/test_inference.py) moves by 2e-4 dB of PSNR against the
photo with tile 128 (tiled vs whole 87 dB); random networks (7,6,4 C=8 N=2 and the paper
genotype C=32 N=4) agree with whole-image output to 73-79 dB at tiles 64 and 128. The
acceptance bound is 0.01 dB; without overlap the same photo test moves by 0.3 dB. Larger
tiles only help (the attention statistics get closer to the image's); the CLI's default
windows are 512x512 (deconas.backend.WINDOW_PIXELS).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .backend import LUMA, make_backend, spans, upscale_uint8
from .network import DeCoNASNet
# For networks that are not DeCoNASNet (so the radius is unknown): a generous margin.
DEFAULT_OVERLAP = 24


def rgb_to_grey_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 with the same BT.601 luma weights as :func:`upscale_array`
    (for code that has the network's rounded RGB output of a greyscale input)."""
    y = rgb.astype(np.float64) @ np.asarray(LUMA)
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def receptive_radius(model: nn.Module) -> Optional[int]:
    """How many LR pixels away an output pixel can see, from the network's structure; None
    when ``model`` is not a :class:`DeCoNASNet`.

    A node's radius is the largest of (operation radius + radius of what it reads) over its
    active operations, so it follows the longest chain of nodes through the cell; 1x1 fusions
    add nothing. Upsampler and tail convolutions are counted as one LR pixel each (an upper
    bound: at HR resolution they reach less).
    """
    if not isinstance(model, DeCoNASNet):
        return None
    r = 2  # sfe1 and sfe2, 3x3 each
    for dnb in model.dnbs:  # the same cell in every block, but walk them anyway
        feats = [r]
        for node in dnb.nodes:
            if len(node.ops) == 0:
                feats.append(feats[-1])
                continue
            feats.append(max(op.spec.radius + max(feats[j] for j in idx)
                             for op, idx in zip(node.ops, node.op_inputs)))
        # The block's output is LFF(what it reads) + x_in; the dense connection after it reads
        # every block output so far, the deepest being this one.
        r = max(feats[i] for i in (0, *dnb.lff_inputs))
    r += 1  # GFF 3x3
    r += sum(1 for m in model.upsample.modules() if isinstance(m, nn.Conv2d))
    return r + 1  # tail 3x3


def default_overlap(model: nn.Module) -> int:
    r = receptive_radius(model)
    return DEFAULT_OVERLAP if r is None else r


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _spans(size: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) along one axis: :func:`deconas.backend.spans`
    (one tiling rule for the tensor and the streaming paths)."""
    return spans(size, tile, overlap)


def _scale_of(model: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    s = getattr(model, "scale", None)
    if s is None:
        s = out.shape[-2] // inp.shape[-2]
    if out.shape[-2] != s * inp.shape[-2] or out.shape[-1] != s * inp.shape[-1]:
        raise ValueError(f"model output {tuple(out.shape)} is not an integer upscaling of {tuple(inp.shape)}")
    return int(s)


def _run_tiled(model: nn.Module, lr: torch.Tensor, tile: int, overlap: int, device: torch.device) -> torch.Tensor:
    h, w = lr.shape[-2:]
    if tile <= 0 or (h <= tile and w <= tile):
        x = lr.to(device)
        y = model(x)
        _scale_of(model, x, y)
        return y.to(lr.device)
    out = None
    for ya, yb, wy0, wy1 in _spans(h, tile, overlap):
        for xa, xb, wx0, wx1 in _spans(w, tile, overlap):
            x = lr[..., wy0:wy1, wx0:wx1].to(device)
            y = model(x)
            s = _scale_of(model, x, y)
            if out is None:
                # Assembled on the input's device, so a big output needs no accelerator memory.
                out = torch.empty(*lr.shape[:-2], s * h, s * w, dtype=y.dtype, device=lr.device)
            out[..., s * ya:s * yb, s * xa:s * xb] = \
                y[..., s * (ya - wy0):s * (yb - wy0), s * (xa - wx0):s * (xb - wx0)].to(lr.device)
    return out


# The 8 symmetries of the square as (transpose, flip rows, flip cols); each is its own
# inverse except transpose+flip, whose inverse applies the flips first.
_DIHEDRAL = [(t, fr, fc) for t in (False, True) for fr in (False, True) for fc in (False, True)]


def _forward_sym(x: torch.Tensor, t: bool, fr: bool, fc: bool) -> torch.Tensor:
    if t:
        x = x.transpose(-2, -1)
    dims = [d for d, f in ((-2, fr), (-1, fc)) if f]
    return x.flip(dims) if dims else x


def _inverse_sym(x: torch.Tensor, t: bool, fr: bool, fc: bool) -> torch.Tensor:
    dims = [d for d, f in ((-2, fr), (-1, fc)) if f]
    if dims:
        x = x.flip(dims)
    return x.transpose(-2, -1) if t else x


def upscale_tensor(model: nn.Module, lr: torch.Tensor, tile: int = 0, overlap: Optional[int] = None,
                   self_ensemble: bool = False) -> torch.Tensor:
    """Super-resolve ``lr`` (B, 3, H, W) float in [0, 1]; returns (B, 3, sH, sW), not clamped,
    on ``lr``'s device (the network runs on its own device).

    ``tile`` > 0: cores of at most ``tile`` LR pixels a side, each run with ``overlap`` context
    pixels (default: the network's receptive-field radius). ``self_ensemble``: the mean of the
    outputs for the 8 flips/transpositions of the input, each transformed back (EDSR's x8).
    """
    if lr.dim() != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) tensor, got {tuple(lr.shape)}")
    if tile < 0:
        raise ValueError(f"tile must be >= 0, got {tile}")
    if overlap is None:
        overlap = default_overlap(model)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if not self_ensemble:
                return _run_tiled(model, lr, tile, overlap, device)
            acc = None
            for sym in _DIHEDRAL:
                y = _inverse_sym(_run_tiled(model, _forward_sym(lr, *sym), tile, overlap, device), *sym)
                acc = y.clone() if acc is None else acc.add_(y)  # clone: y may be a view of the model output
            return acc / len(_DIHEDRAL)
    finally:
        model.train(was_training)


def upscale_array(model, lr: np.ndarray, tile: Optional[int] = 0, self_ensemble: bool = False,
                  device=None, backend: str = "torch", overlap: Optional[int] = None,
                  batch: Optional[int] = None) -> np.ndarray:
    """Super-resolve a uint8 image (H, W) or (H, W, 3); returns uint8 in the same layout.

    A greyscale image goes in as three equal channels and comes back as the BT.601 luma of the
    (nearly grey) output, which is what converting the RGB result to grey would give.

    ``model``: a torch module, or a backend from :func:`deconas.backend.make_backend` (reuse one
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
    return upscale_uint8(run, np.ascontiguousarray(lr), tile=tile, overlap=overlap, batch=batch,
                         self_ensemble=self_ensemble)
