"""PSNR/SSIM on Y against independent computations: a transliteration of MATLAB's ssim_index
with scipy.signal.convolve2d 'valid', and scikit-image's SSIM with the protocol's options."""

import math

import numpy as np
import pytest
from scipy.signal import convolve2d
from skimage.metrics import structural_similarity

from deconas.metrics import psnr_y, rgb_to_y, ssim, ssim_y


def matlab_ssim_index(img1, img2):
    """Wang et al.'s ssim_index.m, step by step: fspecial gaussian 11/1.5, filter2 'valid'."""
    x = np.arange(11) - 5.0
    xx, yy = np.meshgrid(x, x)
    win = np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.5 ** 2))
    win /= win.sum()
    win = np.rot90(win, 2)  # filter2 is correlation; convolve2d with the flipped window
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = convolve2d(img1, win, "valid"), convolve2d(img2, win, "valid")
    s1 = convolve2d(img1 * img1, win, "valid") - mu1 ** 2
    s2 = convolve2d(img2 * img2, win, "valid") - mu2 ** 2
    s12 = convolve2d(img1 * img2, win, "valid") - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s1 + s2 + c2))
    return m.mean()


def pair(shape, seed=0, noise=12):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, size=shape).astype(np.uint8)
    sr = np.clip(hr.astype(int) + rng.normal(0, noise, shape).round(), 0, 255).astype(np.uint8)
    return sr, hr


def test_rgb_to_y_uses_bt601_studio_range_unrounded():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 37]]], dtype=np.uint8)
    y = rgb_to_y(px)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0], [16.0, 235.0, 16 + 65.481, 16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 37) / 255])


def test_grey_image_is_measured_on_its_grey_level():
    g = np.arange(20, dtype=np.uint8).reshape(4, 5)
    np.testing.assert_array_equal(rgb_to_y(g), g.astype(np.float64))
    sr, hr = pair((30, 28))
    mse = np.mean((sr[2:-2, 2:-2].astype(float) - hr[2:-2, 2:-2]) ** 2)
    assert psnr_y(sr, hr, 2) == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-12)


def test_psnr_crops_border_and_uses_peak_255():
    sr, hr = pair((20, 24, 3), seed=1)
    ys, yh = rgb_to_y(sr)[3:-3, 3:-3], rgb_to_y(hr)[3:-3, 3:-3]
    want = 10 * math.log10(255 ** 2 / np.mean((ys - yh) ** 2))
    assert psnr_y(sr, hr, 3) == pytest.approx(want, abs=1e-12)
    hr2 = hr.copy()
    hr2[0, :] = 0  # changes only inside the cropped border: no effect
    assert psnr_y(sr, hr2, 3) == pytest.approx(want, abs=1e-12)


def test_identical_images_give_infinite_psnr_and_ssim_one():
    _, hr = pair((32, 32, 3))
    assert psnr_y(hr, hr, 2) == math.inf
    assert ssim_y(hr, hr, 2) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape,border", [((31, 27), 2), ((40, 33, 3), 3), ((25, 50, 3), 4)])
def test_ssim_matches_direct_matlab_ssim_index(shape, border):
    sr, hr = pair(shape, seed=sum(shape))
    ys, yh = rgb_to_y(sr)[border:-border, border:-border], rgb_to_y(hr)[border:-border, border:-border]
    assert ssim_y(sr, hr, border) == pytest.approx(matlab_ssim_index(ys, yh), abs=1e-12)


@pytest.mark.parametrize("shape", [(31, 27), (48, 40)])
def test_skimage_ssim_with_protocol_options_averages_the_same_valid_region(shape):
    sr, hr = pair(shape, seed=5, noise=30)
    ys, yh = rgb_to_y(sr)[2:-2, 2:-2], rgb_to_y(hr)[2:-2, 2:-2]
    sk = structural_similarity(ys, yh, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                               data_range=255)
    assert sk == pytest.approx(ssim(ys, yh), abs=1e-12)
    assert sk == pytest.approx(matlab_ssim_index(ys, yh), abs=1e-12)


def test_shape_mismatch_and_too_small_images_are_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_y(np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8), 2)
    with pytest.raises(ValueError, match="11x11"):
        ssim_y(np.zeros((14, 14), np.uint8), np.zeros((14, 14), np.uint8), 2)
