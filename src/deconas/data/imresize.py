"""MATLAB-compatible bicubic ``imresize`` for numpy images.

Every SR benchmark number is computed on LR images made by MATLAB's ``imresize(HR, 1/s,
'bicubic')``; PIL, OpenCV and torch's ``interpolate`` all differ from it by tenths of a dB.
What MATLAB does, per axis (it is separable and linear, so the axis order does not matter
beyond rounding noise of ~1e-13):

* cubic kernel with a = -0.5 (Keys);
* when downscaling (scale < 1) the kernel is widened by 1/scale (antialiasing);
* output pixel ``x`` (1-based) sits at input coordinate ``u = x / scale + (1 - 1/scale) / 2``;
  it takes the ``ceil(width) + 2`` input pixels from ``floor(u - width / 2)`` on, with the
  kernel weights normalised to sum to one;
* out-of-range input indices are mirrored with the edge pixel repeated
  (``[1..n, n..1]`` periodically);
* output size is ``ceil(scale * size)``.

An axis is therefore a fixed (out_len x in_len) matrix, applied as a sparse matrix (a few
taps per row: cheap for big images).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

__all__ = ["imresize", "round_uint8", "modcrop", "bicubic_lr", "bicubic_up"]


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _out_len(in_len: int, scale: float) -> int:
    # ceil(scale * n), but a product that misses an integer by float noise (n * (1/3)) counts as it
    v = scale * in_len
    r = round(v)
    return int(r) if abs(v - r) < 1e-9 * max(1.0, abs(v)) else int(math.ceil(v))


def _contributions(in_len: int, out_len: int, scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (out_len, taps): 0-based mirrored input indices and their weights."""
    width = 4.0
    if scale < 1:  # antialiasing: the kernel stretched by 1/scale (its gain cancels in the normalisation)
        kernel = lambda t: scale * _cubic(scale * t)  # noqa: E731
        width = width / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based, may fall outside 1..in_len
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    return idx0, w


@lru_cache(maxsize=256)
def _matrix(in_len: int, out_len: int, scale: float) -> "scipy.sparse.csr_matrix":
    import scipy.sparse  # here: a tenth of a second that upscale without --outscale never needs

    idx, w = _contributions(in_len, out_len, scale)
    rows = np.repeat(np.arange(out_len), idx.shape[1])
    # duplicates (mirrored taps landing on the same pixel) are summed by the constructor
    m = scipy.sparse.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(out_len, in_len))
    m.sum_duplicates()
    m.eliminate_zeros()
    return m


def _plan(shape_hw, scale, output_shape):
    """Per axis (in_len, out_len, scale). With output_shape the scale of an axis is out / in (as MATLAB)."""
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    plan = []
    for ax, n in enumerate(shape_hw):
        if n < 1:
            raise ValueError(f"cannot resize an image with a zero-length axis: {tuple(shape_hw)}")
        if output_shape is not None:
            m = int(output_shape[ax])
            if m < 1:
                raise ValueError(f"output_shape must be positive, got {tuple(output_shape)}")
            plan.append((int(n), m, m / n))
        else:
            s = float(scale)
            if not s > 0:
                raise ValueError(f"scale must be positive, got {scale}")
            plan.append((int(n), _out_len(n, s), s))
    return plan


def imresize(img: np.ndarray, scale: Optional[float] = None,
             output_shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of an (H, W) or (H, W, C) array.

    Returns float64, not rounded or clipped; values stay in the input's units (0..255 for uint8).
    Exactly one of ``scale`` (same for both axes) and ``output_shape`` ``(H_out, W_out)``.
    """
    a = np.asarray(img)
    if a.ndim not in (2, 3):
        raise ValueError(f"imresize expects (H, W) or (H, W, C), got shape {a.shape}")
    (h, ho, sh), (w, wo, sw) = _plan(a.shape[:2], scale, output_shape)
    a = a.astype(np.float64, copy=False)
    rest = a.shape[2:]
    # The H pass is a sparse matmul on the (H, W*C) view as stored; the W pass needs the image
    # transposed to (W, H*C) and back, and those copies are the costly part: so run the W pass
    # while the image is at its smaller size (first when upscaling W, last when downscaling).
    for axis in (("w", "h") if sw > 1 else ("h", "w")):
        if axis == "h" and (h, ho, sh) != (ho, ho, 1.0):
            a = (_matrix(h, ho, sh) @ a.reshape(h, -1)).reshape((ho,) + a.shape[1:])
        elif axis == "w" and (w, wo, sw) != (wo, wo, 1.0):
            n = a.shape[0]
            b = np.ascontiguousarray(np.swapaxes(a, 0, 1)).reshape(w, -1)  # (W, H*C)
            b = (_matrix(w, wo, sw) @ b).reshape((wo, n) + rest)
            a = np.ascontiguousarray(np.swapaxes(b, 0, 1))
    return np.ascontiguousarray(a)


def round_uint8(x) -> np.ndarray:
    """MATLAB's double -> uint8: clip to 0..255, round half away from zero."""
    a = np.array(x, dtype=np.float64)  # a copy: the steps below work in place
    # floor(clip(a) + 0.5) in three passes: after + 0.5 and clipping to [0, 255] the value is
    # non-negative, where the truncation of astype is floor
    np.add(a, 0.5, out=a)
    np.clip(a, 0.0, 255.0, out=a)
    return a.astype(np.uint8)


def modcrop(img, scale: int):
    """Crop H and W (the first two axes) down to multiples of ``scale`` (bottom/right are dropped)."""
    s = int(scale)
    h, w = img.shape[0], img.shape[1]
    return img[: h - h % s, : w - w % s]


def bicubic_lr(hr_uint8: np.ndarray, scale: int) -> np.ndarray:
    """The protocol's LR image: MATLAB ``imresize(modcrop(HR), 1/s, 'bicubic')`` as uint8."""
    hr = modcrop(np.asarray(hr_uint8), scale)
    return round_uint8(imresize(hr, 1.0 / scale))


def bicubic_up(lr_uint8: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB ``imresize(LR, s, 'bicubic')`` as uint8."""
    return round_uint8(imresize(np.asarray(lr_uint8), float(scale)))
