"""deconas.data.patches.PatchSampler: aligned LR/HR training patches.

The images here encode their own coordinates (red = row, green = column, blue = which image),
so every patch says where it was cut from and the checks need no knowledge of the sampler's
random draws.
"""

import io

import numpy as np
import pytest
import torch

from deconas.data.patches import PatchSampler
from deconas.errors import UserError


def coord_image(h, w, tag=0):
    """uint8 (h, w, 3): red = row, green = column, blue = tag (h, w <= 256)."""
    assert h <= 256 and w <= 256
    a = np.empty((h, w, 3), np.uint8)
    a[..., 0] = np.arange(h)[:, None]
    a[..., 1] = np.arange(w)[None, :]
    a[..., 2] = tag
    return a


def coord_pair(lr_h, lr_w, scale, tag=0):
    """(hr, lr): LR pixel (i, j) holds (i, j); HR pixel (Y, X) holds (Y, X). HR pixel (Y, X) lies
    in LR pixel (Y // scale, X // scale), as in the real pairs (HR = scale x LR)."""
    return coord_image(lr_h * scale, lr_w * scale, tag), coord_image(lr_h, lr_w, tag)


def as_uint8(t):
    """(B, 3, h, w) float in [0, 1] -> uint8 (B, h, w, 3), checking the values are exact levels."""
    a = t.permute(0, 2, 3, 1).numpy() * 255
    assert np.allclose(a, np.round(a), atol=1e-3)
    return np.round(a).astype(np.uint8)


# The 8 symmetries of the square, applied to an (h, w, ...) array.
SYMMETRIES = [(flip, k) for flip in (False, True) for k in range(4)]


def apply_sym(a, flip, k):
    return np.rot90(a[:, ::-1] if flip else a, k)


def which_symmetry(patch, source):
    """The symmetries that turn ``source`` into ``patch``."""
    return [s for s in SYMMETRIES if np.array_equal(apply_sym(source, *s), patch)]


def source_corner(lr_patch):
    """Top-left (row, column) of the LR region a patch was cut from, whatever its rotation."""
    return int(lr_patch[..., 0].min()), int(lr_patch[..., 1].min())


def test_sample_shapes_dtype_and_range():
    hr, lr = coord_pair(30, 40, 3)
    s = PatchSampler([(hr, lr)], scale=3, lr_patch=8, batch=5, seed=0)
    x, y = s.sample()
    assert x.dtype == y.dtype == torch.float32
    assert tuple(x.shape) == (5, 3, 8, 8) and tuple(y.shape) == (5, 3, 24, 24)
    assert x.min() >= 0 and x.max() <= 1 and y.min() >= 0 and y.max() <= 1
    assert len(s) == 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_without_augmentation_the_hr_patch_is_exactly_the_scale_x_region_of_the_lr_patchs_source(scale):
    lr_h, lr_w, p = 37, 29, 7
    pairs = [coord_pair(lr_h, lr_w, scale, tag=0), coord_pair(20, 45, scale, tag=1)]
    s = PatchSampler(pairs, scale=scale, lr_patch=p, batch=16, seed=3, augment=False)
    for _ in range(5):
        xs, ys = (as_uint8(t) for t in s.sample())
        for lp, hp in zip(xs, ys):
            tag = int(lp[0, 0, 2])
            hr, lr = pairs[tag]
            i, j = int(lp[0, 0, 0]), int(lp[0, 0, 1])  # the LR patch's top-left source pixel
            assert np.array_equal(lp, lr[i:i + p, j:j + p])
            assert np.array_equal(hp, hr[scale * i:scale * (i + p), scale * j:scale * (j + p)])
            assert (hp[..., 2] == tag).all()  # the HR patch comes from the same image


@pytest.mark.parametrize("scale", [2, 3])
def test_augmentation_applies_the_same_flip_and_rotation_to_both_patches(scale):
    p = 6
    hr, lr = coord_pair(25, 31, scale)
    s = PatchSampler([(hr, lr)], scale=scale, lr_patch=p, batch=32, seed=1, augment=True)
    seen = set()
    for _ in range(4):
        xs, ys = (as_uint8(t) for t in s.sample())
        for lp, hp in zip(xs, ys):
            i, j = source_corner(lp)
            syms = which_symmetry(lp, lr[i:i + p, j:j + p])
            assert len(syms) == 1  # coordinate images have no symmetry of their own
            seen.add(syms[0])
            src = hr[scale * i:scale * (i + p), scale * j:scale * (j + p)]
            assert np.array_equal(hp, apply_sym(src, *syms[0]))
    assert len(seen) == 8  # 128 patches: every flip/rotation occurs (each missing with p < 1e-7)


def test_without_augmentation_no_patch_is_flipped_or_rotated():
    hr, lr = coord_pair(20, 20, 2)
    s = PatchSampler([(hr, lr)], scale=2, lr_patch=5, batch=64, seed=2, augment=False)
    xs, _ = (as_uint8(t) for t in s.sample())
    for lp in xs:
        i, j = source_corner(lp)
        assert which_symmetry(lp, lr[i:i + 5, j:j + 5]) == [(False, 0)]


def test_crops_reach_every_position_including_the_last_row_and_column():
    # LR 9 x 7 with 6 x 6 patches: top-left rows 0..3 and columns 0..1 are the valid crops
    hr, lr = coord_pair(9, 7, 2)
    s = PatchSampler([(hr, lr)], scale=2, lr_patch=6, batch=64, seed=0, augment=False)
    corners = {source_corner(lp) for lp in as_uint8(s.sample()[0])}
    assert corners == {(i, j) for i in range(4) for j in range(2)}


def test_an_image_of_exactly_the_patch_size_is_used_whole():
    hr, lr = coord_pair(8, 8, 4)
    s = PatchSampler([(hr, lr)], scale=4, lr_patch=8, batch=3, seed=0, augment=False)
    xs, ys = (as_uint8(t) for t in s.sample())
    assert all(np.array_equal(lp, lr) for lp in xs) and all(np.array_equal(hp, hr) for hp in ys)


def test_the_same_seed_draws_the_same_patches_and_another_seed_others():
    pairs = [coord_pair(40, 50, 2, 0), coord_pair(30, 60, 2, 1)]
    a, b, c = (PatchSampler(pairs, 2, 10, 8, seed=sd) for sd in (7, 7, 8))
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = a.sample(), b.sample(), c.sample()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)


def test_state_dict_resumes_the_same_stream_even_after_a_weights_only_round_trip():
    pairs = [coord_pair(40, 50, 3, 0), coord_pair(33, 35, 3, 1)]
    run = PatchSampler(pairs, 3, 9, 4, seed=11)
    for _ in range(3):
        run.sample()
    buf = io.BytesIO()
    torch.save(run.state_dict(), buf)  # as a resume state is written
    expected = [run.sample() for _ in range(3)]  # the uninterrupted run goes on
    buf.seek(0)
    resumed = PatchSampler(pairs, 3, 9, 4, seed=999)  # a fresh sampler, another seed
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for x, y in expected:
        x2, y2 = resumed.sample()
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_images_are_picked_in_proportion_to_their_area():
    # LR areas 20 x 20 = 400 and 40 x 30 = 1200: a quarter of the patches from the first
    pairs = [coord_pair(20, 20, 2, 0), coord_pair(40, 30, 2, 1)]
    s = PatchSampler(pairs, 2, 4, 500, seed=5, augment=False)
    tags = np.concatenate([as_uint8(s.sample()[0])[:, 0, 0, 2] for _ in range(8)])
    share = (tags == 0).mean()  # binomial, n = 4000: sd 0.0068
    assert abs(share - 0.25) < 0.035


def test_a_grey_pair_trains_as_three_equal_channels():
    hr, lr = coord_pair(12, 12, 2)
    s = PatchSampler([(hr[..., 0], lr[..., 0])], 2, 4, 6, seed=0)
    x, y = s.sample()
    for t in (x, y):
        assert t.shape[1] == 3 and torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 0], t[:, 2])


def test_images_smaller_than_the_patch_are_skipped_and_none_large_enough_is_a_user_error():
    small, big = coord_pair(7, 20, 2, 0), coord_pair(12, 12, 2, 1)  # 7 rows < 8
    s = PatchSampler([small, big], 2, 8, 10, seed=0)
    assert len(s) == 1
    assert (as_uint8(s.sample()[0])[..., 2] == 1).all()  # every patch from the large one
    with pytest.raises(UserError, match="lr_patch"):
        PatchSampler([small, coord_pair(20, 5, 2)], 2, 8, 10)


def test_an_hr_image_that_is_not_scale_times_the_lr_is_refused():
    hr, lr = coord_pair(12, 12, 2)
    with pytest.raises(ValueError, match="scale"):
        PatchSampler([(hr[:-1], lr)], 2, 8, 4)
