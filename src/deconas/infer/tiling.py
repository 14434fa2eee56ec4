"""The tiler: an 8- or 16-bit image through any backend, tile by tile, into a preallocated result
of the same depth.

Tiling. The image is cut into a grid of nearly equal *cores* of at most ``tile`` LR pixels a
side; each core is run with ``overlap`` pixels of real image context on every side (more on
one side where the other hits the image border, so every window has the same size) and only
the core's part of the output is kept. With ``overlap`` at least the network's receptive-field
radius (:func:`deconas.space.network.receptive_radius`), every convolution sees exactly what it
sees in whole-image inference, including the zero padding at the true image borders.

The one thing tiling cannot reproduce is channel attention: its global average pool sees a
window, not the whole image, so tiles are close to but not bit-equal with whole-image output
(measured in docs/upscale.md; the acceptance bound is 0.01 dB). Larger tiles only help (the
attention statistics get closer to the image's).

A backend is a callable ``(B, 3, h, w) float32 in [0, 1] -> (B, 3, s*h, s*w) float32`` with
``scale`` and ``radius`` attributes (:mod:`deconas.infer.backends`). Nothing here imports torch.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import numpy as np

from deconas.errors import UserError

# The window (tile + overlap) area above which an image is tiled by default, in LR pixels.
# Measured with benchmarks/bench_upscale.py on 2 cores (docs/upscale.md): ONNX Runtime's time per
# pixel is nearly flat from 256x256 windows up, so the limit is set by memory (about 2.7 kB per
# window pixel for the C=32 network) and by the overlap: a 512x512 image runs whole (no overlap
# cost); a large one runs in windows of at most 512x512.
WINDOW_PIXELS = 512 * 512

# BT.601 luma, as PIL's RGB -> L: what a greyscale result is read back with.
LUMA = (0.299, 0.587, 0.114)

# For networks that are not DeCoNASNet (so the radius is unknown): a generous margin.
DEFAULT_OVERLAP = 24

Backend = Callable[[np.ndarray], np.ndarray]


class NonFiniteOutput(UserError):
    """A network whose output holds NaN or inf (the caller names the checkpoint)."""


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
    top = np.float32(np.iinfo(lr.dtype).max)
    win = lr[y0:y1, x0:x1]
    if win.ndim == 2:
        win = np.broadcast_to(win, (3, *win.shape))
    else:
        win = win.transpose(2, 0, 1)
    return np.ascontiguousarray(win, dtype=np.float32) / top


def _to_pixels(y: np.ndarray, grey: bool, dtype=np.uint8) -> np.ndarray:
    """(3, h, w) float network output -> ``dtype`` (h, w, 3), or (h, w) BT.601 luma for a grey input.
    The order (luma, clamp, x max, round half to even) is that of the whole-image torch path."""
    if grey:
        y = y[0] * np.float32(LUMA[0]) + y[1] * np.float32(LUMA[1]) + y[2] * np.float32(LUMA[2])
    else:
        y = y.transpose(1, 2, 0)
    y = np.clip(y, 0, 1)
    y *= np.float32(np.iinfo(dtype).max)
    return np.rint(y, out=y).astype(dtype)


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


def upscale_pixels(backend: Backend, lr: np.ndarray, tile: Optional[int] = None, overlap: Optional[int] = None,
                  batch: Optional[int] = None, self_ensemble: bool = False) -> np.ndarray:
    """Super-resolve a uint8 or uint16 image (H, W) or (H, W, 3) into a preallocated result of its dtype.

    Each tile's output is clamped, rounded and written into the result as soon as it is computed:
    apart from the input and the result, memory holds one batch of windows and their outputs,
    whatever the image size. ``tile``: core size in LR pixels (0 = whole image, None = by
    :func:`auto_tile`); ``overlap``: context pixels around each core (default: the backend's
    receptive radius); ``batch``: windows per call (default: :func:`auto_batch`).
    """
    if lr.dtype not in (np.uint8, np.uint16) or not (lr.ndim == 2 or (lr.ndim == 3 and lr.shape[2] == 3)):
        raise ValueError(f"expected a uint8 or uint16 (H, W) or (H, W, 3) array, got {lr.dtype} {lr.shape}")
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
    out = np.empty((s * h, s * w) if grey else (s * h, s * w, 3), lr.dtype)
    windows = [(ys, xs) for ys in spans(h, tile, overlap) for xs in spans(w, tile, overlap)]
    (_, _, wy0, wy1), (_, _, wx0, wx1) = windows[0]
    if batch is None:
        batch = auto_batch((wy1 - wy0, wx1 - wx0))
    for i in range(0, len(windows), 1 if self_ensemble else batch):
        chunk = windows[i:i + (1 if self_ensemble else batch)]
        x = np.stack([_to_input(lr, wy0, wy1, wx0, wx1) for (_, _, wy0, wy1), (_, _, wx0, wx1) in chunk])
        y = _run_ensemble(backend, x)[None] if self_ensemble else backend(x)
        if not np.isfinite(y).all():  # clipping would turn it into a black or white image, silently
            raise NonFiniteOutput("the network's output holds NaN or inf: its weights are not usable "
                                  "(a diverged or damaged checkpoint)")
        if y.shape[-2:] != (s * x.shape[-2], s * x.shape[-1]):
            raise ValueError(f"backend output {tuple(y.shape)} is not a x{s} upscaling of {tuple(x.shape)}")
        for ((ya, yb, wy0, _), (xa, xb, wx0, _)), yi in zip(chunk, y):
            core = yi[:, s * (ya - wy0):s * (yb - wy0), s * (xa - wx0):s * (xb - wx0)]
            out[s * ya:s * yb, s * xa:s * xb] = _to_pixels(core, grey, lr.dtype)
    return out


def rgb_to_grey_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 with the same BT.601 luma weights as :func:`upscale_pixels`
    (for code that has the network's rounded RGB output of a greyscale input)."""
    y = rgb.astype(np.float64) @ np.asarray(LUMA)
    return np.clip(np.round(y), 0, 255).astype(np.uint8)
