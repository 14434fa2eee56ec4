"""PSNR and SSIM on luma, exactly as SR papers compute them (docs/design.md, section 4).

* Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 from 0..255 RGB, not rounded; a greyscale
  image is measured on its grey level itself.
* ``border`` (= the scale) pixels are cropped from every side before either metric.
* PSNR with peak 255.  SSIM as Wang et al.'s ``ssim_index.m``: 11x11 Gaussian window with
  sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, ``filter2(..., 'valid')``, mean of the SSIM map.

SSIM is computed here with a separable 11-tap filter on the cropped Y planes (all five local
statistics in one stacked array), which is several times faster than
``skimage.metrics.structural_similarity`` on large images.  The two are the same computation:
skimage with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255`` filters with an 11-tap Gaussian (truncate 3.5 -> radius 5) and averages
the map after cropping 5 pixels from each side, i.e. over exactly MATLAB's 'valid' region.
The tests check both equalities (against skimage, and against a direct 2-D ``convolve2d``
'valid' implementation).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

__all__ = ["rgb_to_y", "psnr_y", "ssim_y", "psnr_ssim_y", "ssim", "gaussian_window_1d"]

K1, K2, L = 0.01, 0.03, 255.0
WIN, SIGMA = 11, 1.5


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma (BT.601, studio range 16..235) as float64, not rounded; grey (H, W) is returned as is."""
    a = np.asarray(img)
    if a.ndim == 2:
        return a.astype(np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        return a[..., 0].astype(np.float64)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"expected a (H, W) grey or (H, W, 3) RGB image, got shape {a.shape}")
    a = a[..., :3].astype(np.float64)
    return 16.0 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0


def _y_pair(sr, hr, border: int):
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR shapes differ: {sr.shape} vs {hr.shape}")
    b = int(border)
    if b > 0:  # crop first: converting the border to Y would be wasted work
        sr, hr = sr[b:-b, b:-b], hr[b:-b, b:-b]
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    if ys.size == 0:
        raise ValueError(f"image {hr.shape[:2]} is empty after cropping {b} border pixels")
    return ys, yh


def psnr_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR (dB, peak 255) between the Y channels with ``border`` pixels cropped; inf if identical."""
    ys, yh = _y_pair(sr, hr, border)
    mse = float(np.mean((ys - yh) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(L * L / mse)


def gaussian_window_1d(size: int = WIN, sigma: float = SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB's ``fspecial('gaussian', size, sigma)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


_ROWS = 32  # SSIM works on bands of output rows so that its temporaries stay in cache


def _ssim_sum(y1: np.ndarray, y2: np.ndarray) -> float:
    """Sum of the SSIM map over the 'valid' positions of the 11x11 window."""
    h, w = y1.shape
    g = gaussian_window_1d()
    r = WIN // 2
    c1, c2 = (K1 * L) ** 2, (K2 * L) ** 2
    total = 0.0
    for r0 in range(0, h - 2 * r, _ROWS):
        r1 = min(r0 + _ROWS, h - 2 * r)
        a, b = y1[r0:r1 + 2 * r], y2[r0:r1 + 2 * r]  # the input rows these output rows see
        st = np.empty((5,) + a.shape)
        st[0], st[1] = a, b
        np.multiply(a, a, out=st[2])
        np.multiply(b, b, out=st[3])
        np.multiply(a, b, out=st[4])
        # filter, keeping only positions whose whole window is inside ('valid'): the border
        # mode of correlate1d then never matters
        f = correlate1d(st, g, axis=2, mode="constant")[:, :, r:w - r]
        f = correlate1d(f, g, axis=1, mode="constant")[:, r:-r]
        mu1, mu2, e11, e22, e12 = f
        mu12 = mu1 * mu2
        mu11 = mu1 * mu1
        mu22 = mu2 * mu2
        num = (2 * mu12 + c1) * (2 * (e12 - mu12) + c2)
        den = (mu11 + mu22 + c1) * ((e11 - mu11) + (e22 - mu22) + c2)
        total += float(np.sum(num / den))
    return total


def ssim(y1: np.ndarray, y2: np.ndarray) -> float:
    """Mean SSIM of two 2-D float arrays (values 0..255) over the 'valid' region of the 11x11 window."""
    y1 = np.ascontiguousarray(y1, dtype=np.float64)
    y2 = np.ascontiguousarray(y2, dtype=np.float64)
    if y1.shape != y2.shape or y1.ndim != 2:
        raise ValueError(f"ssim expects two 2-D arrays of one shape, got {y1.shape} and {y2.shape}")
    h, w = y1.shape
    if h < WIN or w < WIN:
        raise ValueError(f"SSIM needs at least {WIN}x{WIN} pixels after the border crop, got {h}x{w}")
    return _ssim_sum(y1, y2) / ((h - WIN + 1) * (w - WIN + 1))


def ssim_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM between the Y channels with ``border`` pixels cropped (docs/design.md, section 4)."""
    ys, yh = _y_pair(sr, hr, border)
    return ssim(ys, yh)


def psnr_ssim_y(sr: np.ndarray, hr: np.ndarray, border: int):
    """``(psnr_y, ssim_y)`` computing the Y planes once (what an evaluation loop wants)."""
    ys, yh = _y_pair(sr, hr, border)
    mse = float(np.mean((ys - yh) ** 2))
    return (math.inf if mse == 0 else 10.0 * math.log10(L * L / mse)), ssim(ys, yh)
