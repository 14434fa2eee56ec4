"""deconas.infer.tiling, where tests/test_inference.py does not go: the default tile and batch
against hand computations, exact tile cuts, how windows are batched, the grey read-back and
the refusals. (Tiled vs whole-image output, self-ensemble and streaming memory are
test_inference.py's.)"""

import math

import numpy as np
import pytest
from PIL import Image

from deconas.infer.tiling import WINDOW_PIXELS, auto_batch, auto_tile, rgb_to_grey_uint8, spans, upscale_pixels


class Recorder:
    """A x2 nearest-neighbour backend (numpy in, numpy out) that records each call's input shape."""

    scale = 2

    def __init__(self, radius=3, out=None):
        self.radius, self.out, self.calls = radius, out, []

    def __call__(self, x):
        self.calls.append(x.shape)
        y = x.repeat(2, axis=2).repeat(2, axis=3)
        return self.out(y) if self.out else y


def test_window_pixels_is_a_512_by_512_window():
    assert WINDOW_PIXELS == 512 * 512


@pytest.mark.parametrize("h, w, overlap, window, want", [
    (512, 512, 37, WINDOW_PIXELS, 0),      # fits one window: whole image
    (256, 1024, 37, WINDOW_PIXELS, 0),     # same area, another shape
    (513, 512, 37, WINDOW_PIXELS, 438),    # one pixel more: 512 - 2 * 37
    (4000, 3000, 0, WINDOW_PIXELS, 512),
    (4000, 3000, 250, WINDOW_PIXELS, 16),  # 512 - 500 = 12, but never below 16
    (100, 100, 3, 1000, 25),               # isqrt(1000) = 31, 31 - 6
    (32, 32, 3, 1000, 25),                 # 1024 > 1000
    (31, 32, 3, 1000, 0),                  # 992 <= 1000
])
def test_auto_tile_matches_a_hand_computation(h, w, overlap, window, want):
    assert auto_tile(h, w, overlap, window) == want


@pytest.mark.parametrize("h, w, overlap", [(513, 512, 37), (3000, 2000, 37), (1500, 1000, 0), (800, 3000, 100)])
def test_default_tile_windows_stay_within_the_window_area(h, w, overlap):
    tile = auto_tile(h, w, overlap)
    for ys in spans(h, tile, overlap):
        for xs in spans(w, tile, overlap):
            assert (ys[3] - ys[2]) * (xs[3] - xs[2]) <= WINDOW_PIXELS


@pytest.mark.parametrize("window, want", [((512, 512), 1), ((256, 256), 4), ((100, 50), 52), ((29, 29), 311),
                                          ((600, 600), 1), ((1, 1), WINDOW_PIXELS)])
def test_auto_batch_is_the_windows_that_fit_one_default_window(window, want):
    # 262144 // (h * w), at least 1
    assert auto_batch(window) == want
    assert auto_batch((10, 10), window_pixels=250) == 2


def test_spans_cuts_nearly_equal_cores_by_hand():
    # 100 px in tiles of at most 32: ceil(100 / 32) = 4 cores of 25; windows of 25 + 2 x 5 = 35,
    # shifted inward at both borders
    assert spans(100, 32, 5) == [(0, 25, 0, 35), (25, 50, 20, 55), (50, 75, 45, 80), (75, 100, 65, 100)]
    # 10 px in tiles of 4: 3 cores, cuts at round(10/3) = 3 and round(20/3) = 7 -> 3, 4, 3
    assert spans(10, 4, 1) == [(0, 3, 0, 6), (3, 7, 2, 8), (7, 10, 4, 10)]
    # a window larger than the axis is the axis
    assert spans(10, 4, 9) == [(0, 3, 0, 10), (3, 7, 0, 10), (7, 10, 0, 10)]


@pytest.mark.parametrize("size", [1, 5, 17, 100, 257, 1001])
@pytest.mark.parametrize("tile", [0, 1, 3, 16, 64, 256])
def test_spans_uses_the_fewest_cores_of_at_most_tile_pixels_and_they_differ_by_at_most_one(size, tile):
    axis = spans(size, tile, 4)
    cores = [b - a for a, b, _, _ in axis]
    assert len(axis) == (1 if tile <= 0 or size <= tile else math.ceil(size / tile))
    assert sum(cores) == size and max(cores) - min(cores) <= 1


def test_a_tile_of_zero_or_at_least_the_image_is_one_window():
    for tile in (0, -3, 40, 41):
        assert spans(40, tile, 7) == [(0, 40, 0, 40)]


def test_windows_are_run_in_batches_of_auto_batch_or_of_batch():
    img = np.zeros((100, 100, 3), np.uint8)
    run = Recorder(radius=2)
    out = upscale_pixels(run, img, tile=30)  # 4 x 4 cores of 25, windows of 29 x 29: batch 311
    assert run.calls == [(16, 3, 29, 29)] and out.shape == (200, 200, 3)
    run = Recorder(radius=2)
    upscale_pixels(run, img, tile=30, batch=5)
    assert [c[0] for c in run.calls] == [5, 5, 5, 1]
    run = Recorder(radius=2)
    upscale_pixels(run, img, tile=30, overlap=0, batch=100)  # overlap given: windows are the cores
    assert run.calls == [(16, 3, 25, 25)]


def test_the_backends_radius_is_the_default_overlap():
    run = Recorder(radius=6)
    upscale_pixels(run, np.zeros((40, 40), np.uint8), tile=20, batch=1)
    assert run.calls == [(1, 3, 32, 32)] * 4  # 20 + 2 x 6, shifted inward at the borders


def test_output_is_clamped_to_0_255():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    up = img.repeat(2, 0).repeat(2, 1).astype(np.float64) / 255
    out = upscale_pixels(Recorder(out=lambda y: y * 3 - 1), img, tile=4)  # far outside [0, 1]
    want = np.rint(np.clip(up * 3 - 1, 0, 1) * 255)
    assert np.abs(out.astype(int) - want).max() <= 1 and (out == want).mean() > 0.99
    assert set(np.unique(out[want == 0])) == {0} and set(np.unique(out[want == 255])) == {255}


def test_a_grey_image_comes_back_as_the_bt601_luma_of_the_rgb_output():
    # the backend colours the grey input differently per channel; the result is the luma of that
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (13, 10), dtype=np.uint8)
    tint = np.array([1.0, 0.6, 0.2], np.float32)[None, :, None, None]
    out = upscale_pixels(Recorder(out=lambda y: y * tint), grey, tile=5)
    v = grey.repeat(2, 0).repeat(2, 1).astype(np.float64) / 255
    want = np.rint(np.clip((0.299 * 1.0 + 0.587 * 0.6 + 0.114 * 0.2) * v, 0, 1) * 255)
    assert out.shape == (26, 20) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - want).max() <= 1 and (out == want).mean() > 0.99


def test_rgb_to_grey_uint8_agrees_with_pils_convert_l():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    ours = rgb_to_grey_uint8(rgb)
    assert ours.dtype == np.uint8 and ours.shape == (256, 256)
    d = np.abs(ours.astype(int) - pil)
    # PIL rounds a 16-bit fixed-point sum: a rare one-level difference at a rounding boundary
    assert d.max() <= 1 and (d > 0).mean() < 0.002


def test_rgb_to_grey_uint8_by_hand():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    # 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.114 * 255 = 29.1, 2.99 + 11.74 + 3.42 = 18.15
    assert rgb_to_grey_uint8(px).tolist() == [[0, 255, 76, 150, 29, 18]]
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)[None]
    assert rgb_to_grey_uint8(greys)[0].tolist() == list(range(256))  # a grey pixel keeps its value


def test_refusals():
    run = Recorder()
    with pytest.raises(ValueError, match="uint8"):
        upscale_pixels(run, np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        upscale_pixels(run, np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match=">= 0"):
        upscale_pixels(run, np.zeros((4, 4), np.uint8), tile=-1)
    with pytest.raises(ValueError, match=">= 0"):
        upscale_pixels(run, np.zeros((4, 4), np.uint8), overlap=-2)

    class NoRadius:
        scale = 2

        def __call__(self, x):
            return x.repeat(2, axis=2).repeat(2, axis=3)

    with pytest.raises(ValueError, match="overlap"):
        upscale_pixels(NoRadius(), np.zeros((4, 4), np.uint8))
    assert upscale_pixels(NoRadius(), np.zeros((4, 4), np.uint8), overlap=0).shape == (8, 8)
    with pytest.raises(ValueError, match="x2 upscaling"):
        upscale_pixels(Recorder(out=lambda y: y[..., :-1]), np.zeros((6, 6, 3), np.uint8))
