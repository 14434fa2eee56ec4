"""imresize against a direct, per-pixel evaluation of MATLAB's kernel sum (written independently
of the matrix construction in deconas.data.imresize), plus rounding."""

import math

import numpy as np
import pytest

from deconas.data.imresize import bicubic_lr, bicubic_up, imresize, modcrop, round_uint8


def keys_cubic(t):
    t = abs(t)
    if t <= 1:
        return 1.5 * t ** 3 - 2.5 * t ** 2 + 1
    if t <= 2:
        return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
    return 0.0


def mirror(j, n):
    """1-based index j folded into 1..n as MATLAB does: the sequence 1..n, n..1 repeated."""
    k = (j - 1) % (2 * n)
    return k + 1 if k < n else 2 * n - k


def axis_terms(i, n, s):
    """[(input pixel 1-based, unnormalised weight)] for output pixel i (1-based) of an axis."""
    if s < 1:
        h, width = (lambda t: s * keys_cubic(s * t)), 4 / s
    else:
        h, width = keys_cubic, 4.0
    u = i / s + 0.5 * (1 - 1 / s)
    first = math.floor(u - width / 2)
    return [(mirror(j, n), h(u - j)) for j in range(first, first + math.ceil(width) + 2)]


def reference_resize(img, s):
    h, w = img.shape
    ho, wo = math.ceil(round(s * h, 9)), math.ceil(round(s * w, 9))
    out = np.zeros((ho, wo))
    for i in range(1, ho + 1):
        ti = axis_terms(i, h, s)
        si = sum(wt for _, wt in ti)
        for k in range(1, wo + 1):
            tk = axis_terms(k, w, s)
            sk = sum(wt for _, wt in tk)
            acc = 0.0
            for r, a in ti:
                for c, b in tk:
                    acc += a * b * img[r - 1, c - 1]
            out[i - 1, k - 1] = acc / (si * sk)
    return out


SCALES = [2, 3, 4, 1 / 2, 1 / 3, 1 / 4]


@pytest.mark.parametrize("s", SCALES + [1.5, 0.7])
def test_imresize_matches_direct_kernel_sum_on_odd_sized_images(s):
    rng = np.random.default_rng(7)
    # odd sizes; downscales need enough pixels that the widened kernel reaches past both borders
    shape = (7, 5) if s > 1 else (13, 11)
    img = rng.integers(0, 256, size=shape).astype(np.float64)
    ref = reference_resize(img, s)
    got = imresize(img, s)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_colour_channels_are_resized_independently():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(12, 10, 3)).astype(np.uint8)
    out = imresize(img, 0.5)
    assert out.shape == (6, 5, 3) and out.dtype == np.float64
    for c in range(3):
        np.testing.assert_allclose(out[..., c], imresize(img[..., c], 0.5), atol=1e-12)


def test_output_size_is_ceil_of_scale_times_size():
    img = np.zeros((9, 7))
    assert imresize(img, 0.5).shape == (5, 4)
    assert imresize(img, 1 / 3).shape == (3, 3)
    assert imresize(np.zeros((255, 300)), 1 / 3).shape == (85, 100)  # no float-noise extra pixel
    assert imresize(img, 3).shape == (27, 21)


def test_output_shape_sets_per_axis_scale():
    img = np.random.default_rng(3).random((8, 6))
    np.testing.assert_allclose(imresize(img, output_shape=(16, 12)), imresize(img, 2), atol=1e-12)
    assert imresize(img, output_shape=(4, 9)).shape == (4, 9)


def test_constant_image_stays_constant():
    img = np.full((11, 9, 3), 77.0)
    for s in SCALES:
        np.testing.assert_allclose(imresize(img, s), 77.0, atol=1e-10)


def test_round_uint8_rounds_half_away_from_zero_and_clips():
    x = np.array([-3.0, 0.49, 0.5, 1.5, 2.5, 254.5, 300.0])
    assert round_uint8(x).tolist() == [0, 0, 1, 2, 3, 255, 255]


def test_modcrop_drops_bottom_and_right_remainder():
    img = np.arange(7 * 10).reshape(7, 10)
    out = modcrop(img, 3)
    assert out.shape == (6, 9)
    np.testing.assert_array_equal(out, img[:6, :9])


def test_bicubic_lr_and_up_make_protocol_sized_uint8():
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, size=(50, 41, 3), dtype=np.uint8)
    lr = bicubic_lr(hr, 4)
    assert lr.dtype == np.uint8 and lr.shape == (12, 10, 3)
    np.testing.assert_array_equal(lr, round_uint8(imresize(hr[:48, :40], 0.25)))
    up = bicubic_up(lr, 4)
    assert up.dtype == np.uint8 and up.shape == (48, 40, 3)
