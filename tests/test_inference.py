import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from torch import nn

from deconas.data.imresize import bicubic_lr
from deconas.infer.backends import TorchBackend
from deconas.infer.inference import upscale_array
from deconas.infer.tiling import WINDOW_PIXELS, spans
from deconas.space.genotype import PAPER_GENOTYPE, parse
from deconas.space.network import DeCoNASNet, MixNode, receptive_radius


def psnr(a, b):
    """PSNR in dB of two uint8 images."""
    return 10 * np.log10(255.0 ** 2 / ((a.astype(np.float64) - b) ** 2).mean())


def levels_apart(a, b):
    """(largest difference in levels, how many values differ) of two uint8 images."""
    d = np.abs(a.astype(int) - b)
    return int(d.max()), int((d > 0).sum())


def tiny_net(genotype="7,6,4", blocks=2, channels=8, seed=0):
    torch.manual_seed(seed)
    net = DeCoNASNet(parse(genotype), scale=2, channels=channels, blocks=blocks).eval()
    with torch.no_grad():
        # Perturb every weight so that nothing is near its initialisation's symmetry, and make
        # channel attention strongly content dependent: the gates then differ between a tile
        # and the whole image, which is the one thing tiling cannot reproduce exactly.
        for name, p in net.named_parameters():
            p.add_(torch.randn_like(p) * p.abs().mean())
            if ".ca." in name:
                p.mul_(5)
    return net


def without_attention(net):
    for m in net.modules():
        if isinstance(m, MixNode):
            m.ca = nn.Identity()
    return net


class Nearest(nn.Module):
    """An upscaler that commutes with flips and transpositions."""

    scale = 2

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")


@pytest.fixture(scope="module")
def astronaut_lr():
    hr = data.astronaut()  # 512 x 512 RGB photo
    return bicubic_lr(hr, 2), hr  # both uint8 (H, W, 3)


def photo_net(gain=0.3):
    """A tiny DeCoNASNet whose output is a real upscaling of the photo, as a trained network's is:
    sfe1, the upsampler and the tail carry the LR image through (nearest neighbour, then a 3x3
    box blur) and the perturbed body adds a residual of about a trained network's size (std
    ~0.03), through content-dependent channel attention. A random network's output is so far
    from the photo that a PSNR difference against it would hardly move."""
    net = tiny_net()
    with torch.no_grad():
        net.sfe1.weight[:3] = 0
        net.sfe1.bias[:3] = 0
        up = net.upsample[0]
        up.weight[:12] = 0
        up.bias[:12] = 0
        net.tail.weight.zero_()
        net.tail.bias.zero_()
        for c in range(3):
            net.sfe1.weight[c, c, 1, 1] = 1
            up.weight[4 * c:4 * c + 4, c, 1, 1] = 1  # pixel shuffle: channel 4c+k -> colour c, sub-pixel k
            net.tail.weight[c, c] = 1 / 9
        net.gff[1].weight.mul_(gain)
        net.gff[1].bias.mul_(gain)
    return net


def to_uint8_image(t):
    return t[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def as_input(img):
    """uint8 (H, W, 3) -> (1, 3, H, W) float32 in [0, 1], as the tiler feeds a backend."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def rounded(y):
    """The independent expectation: a float result clamped, scaled and rounded as a whole."""
    return y[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def whole_image(net, img):
    """The network on the whole image with torch, rounded: what tiling must reproduce."""
    with torch.no_grad():
        return rounded(net(as_input(img)))


def ensemble_mean(net, img):
    """EDSR's x8 self-ensemble computed independently of the tiler (rotations and a flip, not
    its transpose-and-flips): the mean of the 8 outputs, each transformed back, rounded."""
    x = as_input(img)
    outs = []
    with torch.no_grad():
        for k in range(4):
            for flip in (False, True):
                xt = torch.rot90(x, k, (2, 3))
                xt = xt.flip(3) if flip else xt
                y = net(xt)
                y = y.flip(3) if flip else y
                outs.append(torch.rot90(y, -k, (2, 3)))
    return rounded(torch.stack(outs).mean(0))


def test_tiled_output_matches_whole_image_within_0_01_db_on_a_photo(astronaut_lr):
    lr, hr = astronaut_lr
    net = photo_net()
    r = receptive_radius(net)
    whole = upscale_array(net, lr, tile=0)
    assert psnr(whole, hr) > 25  # a plausible upscaling, not noise
    gap = lambda y: abs(psnr(y, hr) - psnr(whole, hr))  # noqa: E731
    tiled = upscale_array(net, lr, tile=128, overlap=r)  # 2 x 2 tiles, overlap from the receptive field
    assert tiled.shape == whole.shape == (512, 512, 3)
    assert gap(tiled) < 0.01  # measured: 1.3e-4 dB
    # Tiled and whole differ only by channel attention's view of a tile instead of the image:
    # a rounding flip here and there. measured: 6,478 of 786,432 values (0.82%) one level apart,
    # none more (overlap 4: 8,452; overlap 1: up to 5 levels).
    most, n = levels_apart(tiled, whole)
    assert most <= 1 and n <= 0.01 * whole.size
    # ... and the check has teeth: tiles without context overlap show seams.
    assert gap(upscale_array(net, lr, tile=128, overlap=0)) > 0.1  # measured: 0.32 dB


def test_tiled_output_of_a_random_network_stays_close_to_whole_image_output(astronaut_lr):
    net = tiny_net()
    lr = astronaut_lr[0][:160, :200]
    whole = upscale_array(net, lr, tile=0)
    tiled = upscale_array(net, lr, tile=64, overlap=receptive_radius(net))
    # measured: 1,070 of 384,000 values (0.28%) one level apart, none more (77% of a random
    # network's output is clipped at 0 or 255); overlap 6: 1,683, overlap 2: up to 40 levels
    most, n = levels_apart(tiled, whole)
    assert most <= 1 and n <= 0.004 * whole.size


def test_tiling_is_exact_up_to_float_rounding_when_there_is_no_channel_attention():
    torch.manual_seed(1)
    net = without_attention(tiny_net(PAPER_GENOTYPE, blocks=1))
    r = receptive_radius(net)
    for _ in range(2):
        img = to_uint8_image(torch.rand(1, 3, 37, 45))  # odd sizes
        whole = upscale_array(net, img, tile=0)
        for tile in (12, 25):
            # measured: no value differs; a one-level flip at a rounding boundary would be float
            # rounding, more is a tiling error (overlap 0: 3,000-7,000 values, up to 157 levels)
            most, n = levels_apart(upscale_array(net, img, tile=tile, overlap=r), whole)
            assert most <= 1 and n <= 2


def test_a_torch_backend_overlaps_tiles_by_the_receptive_radius():
    # the default overlap of upscale_array / upscale_pixels for a DeCoNASNet: less context than
    # this would change the output of every tile's border pixels
    net = DeCoNASNet(parse(PAPER_GENOTYPE), scale=2, channels=4, blocks=4)
    assert TorchBackend(net).radius == receptive_radius(net) == 37
    assert TorchBackend(Nearest()).radius > 0  # not a DeCoNASNet: a generous margin


@pytest.mark.parametrize("genotype", ["7,6,4", PAPER_GENOTYPE, "7,6,4|01|11"])
def test_receptive_radius_is_the_reach_of_an_output_pixel(genotype):
    net = without_attention(DeCoNASNet(parse(genotype), scale=2, channels=4, blocks=2))
    with torch.no_grad():  # all positive: every ReLU passes and no path cancels another
        for p in net.parameters():
            p.uniform_(0.01, 0.1)
    n = 101
    x = torch.rand(1, 3, n, n, requires_grad=True)
    net(x)[0, :, n, n].sum().backward()  # the HR pixel at the LR centre (50, 50)
    ys, xs = np.nonzero(x.grad[0].abs().sum(0).numpy())
    reach = max(abs(ys - n // 2).max(), abs(xs - n // 2).max())
    assert reach == receptive_radius(net)


def test_paper_network_with_four_blocks_sees_37_lr_pixels():
    # sfe 2 + 4 blocks x 8 (longest chain: dil 3 + sep 1 + ... see receptive_radius) + GFF, upsampler, tail
    assert receptive_radius(DeCoNASNet(parse(PAPER_GENOTYPE), scale=2, channels=4, blocks=4)) == 37


def test_tile_cores_cover_the_axis_once_and_windows_keep_one_size():
    for size, tile, overlap in [(100, 32, 5), (7, 3, 10), (257, 256, 37), (64, 64, 3), (1000, 438, 37)]:
        axis = spans(size, tile, overlap)
        assert axis[0][0] == 0 and axis[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(axis, axis[1:]))
        assert all(b - a <= tile for a, b, _, _ in axis)
        for a, b, w0, w1 in axis:
            assert 0 <= w0 <= a and b <= w1 <= size
            # full context on each side unless the image border comes first
            assert a - w0 >= min(overlap, a) and w1 - b >= min(overlap, size - b)
        # one window size for every tile (so they batch): the largest core plus the overlap, shifted
        # inward at a border, not cut
        biggest = max(b - a for a, b, _, _ in axis)
        assert {w1 - w0 for _, _, w0, w1 in axis} == {min(size, biggest + 2 * overlap)}


def test_self_ensemble_of_a_flip_equivariant_upscaler_changes_nothing():
    torch.manual_seed(2)
    # not square, not symmetric: a wrong inverse transform shows
    img = to_uint8_image(torch.rand(1, 3, 9, 14))
    plain = upscale_array(Nearest(), img)
    assert np.array_equal(plain, img.repeat(2, 0).repeat(2, 1))
    # the mean of 8 equal float outputs is exact, so the uint8 result is too
    assert np.array_equal(upscale_array(Nearest(), img, self_ensemble=True), plain)
    # non-square windows of 3 x 4: each transposed window goes back to its own place
    # (nearest neighbour needs no context)
    assert np.array_equal(upscale_array(Nearest(), img, tile=4, overlap=0, self_ensemble=True), plain)


def test_self_ensemble_averages_the_eight_flips_and_transpositions():
    net = tiny_net(blocks=1)
    torch.manual_seed(6)
    img = to_uint8_image(torch.rand(1, 3, 10, 13))
    expected = ensemble_mean(net, img)
    out = upscale_array(net, img, self_ensemble=True)
    # measured: equal (float sums in another order could flip a value at a rounding boundary);
    # the plain output is 930 of 1,560 values away, up to 192 levels
    most, n = levels_apart(out, expected)
    assert most <= 1 and n <= 2


def test_grey_in_grey_out_and_rgb_in_rgb_out():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    up = lambda a: np.repeat(np.repeat(a, 2, 0), 2, 1)  # noqa: E731
    g = upscale_array(Nearest(), grey)
    c = upscale_array(Nearest(), rgb, tile=3)
    assert g.dtype == c.dtype == np.uint8
    assert np.array_equal(g, up(grey)) and np.array_equal(c, up(rgb))


def test_real_network_on_a_grey_image_gives_a_grey_image_of_twice_the_size():
    grey = data.camera()[:40, :30]
    out = upscale_array(tiny_net(blocks=1), grey, tile=16)
    assert out.shape == (80, 60) and out.dtype == np.uint8


def test_rejects_arrays_that_are_not_8_bit_images():
    with pytest.raises(ValueError):
        upscale_array(Nearest(), np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        upscale_array(Nearest(), np.zeros((4, 4, 4), np.uint8))


# The streaming uint8 path (upscale_array) and the backends.


def test_streamed_tiles_give_the_rounded_whole_image_result():
    torch.manual_seed(4)
    net = without_attention(tiny_net(PAPER_GENOTYPE, blocks=1))  # tiling is exact without attention
    img = to_uint8_image(torch.rand(1, 3, 45, 38))
    whole = whole_image(net, img)
    for tile, batch in [(0, None), (16, 1), (16, None), (20, 3)]:  # whole, one by one, batched
        out = upscale_array(net, img, tile=tile, batch=batch)
        assert out.shape == (90, 76, 3) and out.dtype == np.uint8
        # measured: equal for every tiling (overlap 0: 6,179 of 20,520 values, up to 165 levels)
        assert np.abs(out.astype(int) - whole).max() <= 1 and (out == whole).mean() > 0.999


def test_streamed_self_ensemble_is_the_rounded_mean_of_the_eight_transformed_outputs():
    net = without_attention(tiny_net(blocks=1, seed=5))
    img = to_uint8_image(torch.rand(1, 3, 21, 30))
    expected = ensemble_mean(net, img)
    for tile in (0, 12):
        out = upscale_array(net, img, tile=tile, self_ensemble=True)
        # measured: equal for both (the plain output: 5,551 of 7,560 values away; tile 12 with
        # overlap 0: 3,268, up to 102 levels)
        assert np.abs(out.astype(int) - expected).max() <= 1 and (out == expected).mean() > 0.999


class NumpyNearest:
    """A backend (numpy in, numpy out) that records the windows it is given."""

    scale, radius = 2, 3

    def __init__(self):
        self.shapes = []

    def __call__(self, x):
        self.shapes.append(x.shape)
        return x.repeat(2, axis=2).repeat(2, axis=3)


def test_streaming_holds_no_full_size_float_image():
    import tracemalloc

    img = np.random.default_rng(0).integers(0, 256, (800, 600, 3), dtype=np.uint8)
    run = NumpyNearest()
    tracemalloc.start()
    out = upscale_array(run, img, tile=100, batch=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(out, img.repeat(2, 0).repeat(2, 1))
    # the uint8 result is 2.9 MB; a float32 result alone would be 11.5 MB
    assert peak < out.nbytes + 2_000_000, peak
    assert max(s[2] * s[3] for s in run.shapes) == 106 * 106  # windows, never the image


def test_default_tiling_runs_small_images_whole_and_large_ones_in_bounded_windows():
    run = NumpyNearest()
    upscale_array(run, np.zeros((512, 512, 3), np.uint8), tile=None)
    assert run.shapes == [(1, 3, 512, 512)]  # one window: no overlap to pay for
    run.shapes.clear()
    upscale_array(run, np.zeros((1500, 1000), np.uint8), tile=None)
    assert len(run.shapes) > 4 and all(s[2] * s[3] <= WINDOW_PIXELS for s in run.shapes)


@pytest.fixture(scope="module")
def shipped():
    from deconas.checkpoint import load_model

    return load_model("pretrained", scale=2)[0]


def test_onnxruntime_and_torch_agree_on_at_least_99_9_percent_of_pixels(shipped, astronaut_lr):
    lr = astronaut_lr[0][40:136, 60:180]  # 96 x 120 of the photo
    a = upscale_array(shipped, lr, tile=0, backend="torch")
    b = upscale_array(shipped, lr, tile=0, backend="onnxruntime")
    assert a.shape == b.shape == (192, 240, 3)
    assert (a == b).mean() >= 0.999 and np.abs(a.astype(int) - b).max() <= 1


def test_tiled_onnxruntime_is_within_0_01_db_of_whole_image_torch_on_a_photo(astronaut_lr, tmp_path):
    lr, hr = astronaut_lr
    net = photo_net()
    whole = upscale_array(net, lr, tile=0, backend="torch")
    tiled = upscale_array(net, lr, tile=128, backend="onnxruntime")  # 2 x 2 tiles
    assert psnr(whole, hr) > 25 and abs(psnr(tiled, hr) - psnr(whole, hr)) < 0.01
