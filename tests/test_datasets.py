"""Dataset layouts, protocol LR pairs, the deterministic hold-out split and the built-in images."""

import numpy as np
import pytest

from deconas.data.datasets import builtin_images, find_hr_folder, holdout_split, load_hr_images, load_pairs
from deconas.errors import UserError
from deconas.data.images import write_image
from deconas.data.imresize import bicubic_lr


def img(h, w, seed=0, grey=False):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w) if grey else (h, w, 3), dtype=np.uint8)


def test_plain_folder_of_images_is_its_own_hr_folder(tmp_path):
    write_image(tmp_path / "a.png", img(8, 8))
    assert find_hr_folder(tmp_path) == tmp_path


def test_benchmark_layout_with_hr_subfolder(tmp_path):
    (tmp_path / "Set5" / "LR_bicubic" / "X2").mkdir(parents=True)
    write_image(tmp_path / "Set5" / "HR" / "baby.png", img(8, 8))
    assert find_hr_folder(tmp_path / "Set5") == tmp_path / "Set5" / "HR"
    assert [n for n, _ in load_hr_images(tmp_path / "Set5")] == ["baby.png"]


def test_div2k_root_gives_train_hr_for_training_and_valid_hr_for_eval(tmp_path):
    write_image(tmp_path / "DIV2K_train_HR" / "0001.png", img(8, 8))
    write_image(tmp_path / "DIV2K_valid_HR" / "0801.png", img(8, 8))
    (tmp_path / "DIV2K_train_LR_bicubic").mkdir()
    assert find_hr_folder(tmp_path) == tmp_path / "DIV2K_train_HR"
    assert find_hr_folder(tmp_path, purpose="train") == tmp_path / "DIV2K_train_HR"
    assert find_hr_folder(tmp_path, purpose="eval") == tmp_path / "DIV2K_valid_HR"


def test_div2k_root_with_only_one_split_uses_it(tmp_path):
    write_image(tmp_path / "DIV2K_valid_HR" / "0801.png", img(8, 8))
    assert find_hr_folder(tmp_path, purpose="train") == tmp_path / "DIV2K_valid_HR"


def test_folder_without_images_or_known_layout_is_a_user_error(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(UserError, match="HR/"):
        find_hr_folder(tmp_path)
    with pytest.raises(UserError, match="no such folder"):
        find_hr_folder(tmp_path / "missing")


def test_load_pairs_modcrops_hr_and_makes_protocol_lr(tmp_path):
    write_image(tmp_path / "c.png", img(26, 31, seed=1))
    write_image(tmp_path / "g.png", img(13, 17, seed=2, grey=True))
    pairs = load_pairs(tmp_path, 3)
    assert [n for n, _, _ in pairs] == ["c.png", "g.png"]
    name, hr, lr = pairs[0]
    assert hr.shape == (24, 30, 3) and lr.shape == (8, 10, 3) and lr.dtype == np.uint8
    np.testing.assert_array_equal(lr, bicubic_lr(img(26, 31, seed=1)[:24, :30], 3))
    _, hr_g, lr_g = pairs[1]
    assert hr_g.shape == (12, 15) and lr_g.shape == (4, 5)  # grey stays 2-D


def test_holdout_split_is_deterministic_and_disjoint():
    items = [(f"im{i:02d}", i) for i in range(20)]
    tr, va = holdout_split(list(reversed(items)), 0.2, seed=3)
    tr2, va2 = holdout_split(items, 0.2, seed=3)
    assert (tr, va) == (tr2, va2)  # input order does not matter
    assert len(va) == 4 and len(tr) == 16
    assert sorted(tr + va) == items
    assert holdout_split(items, 0.2, seed=4)[1] != va


def test_holdout_split_keeps_one_in_each_part_when_possible():
    assert [len(p) for p in holdout_split([("a", 0), ("b", 1)], 0.01)] == [1, 1]
    assert [len(p) for p in holdout_split([("a", 0), ("b", 1)], 0.9)] == [1, 1]
    assert holdout_split([("a", 0)], 0.5) == ([("a", 0)], [])
    assert holdout_split(["b", "a", "c"], 0.0) == (["a", "b", "c"], [])


def test_builtin_images_are_skimage_colour_photographs():
    items = builtin_images()
    names = [n for n, _ in items]
    assert "astronaut.png" in names and len(items) >= 5
    for _, a in items:
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3


def test_selfexsr_image_srf_layout_reads_only_hr_files_of_the_scale(tmp_path):
    for s in (2, 4):
        d = tmp_path / "Set5" / f"image_SRF_{s}"
        write_image(d / f"img_001_SRF_{s}_HR.png", img(16, 16, seed=s))
        write_image(d / f"img_001_SRF_{s}_LR.png", img(16 // s, 16 // s))
        write_image(d / f"img_001_SRF_{s}_bicubic.png", img(16, 16))
    assert find_hr_folder(tmp_path / "Set5", scale=4) == tmp_path / "Set5" / "image_SRF_4"
    assert find_hr_folder(tmp_path / "Set5") == tmp_path / "Set5" / "image_SRF_2"
    items = load_hr_images(tmp_path / "Set5", scale=4)
    assert [n for n, _ in items] == ["img_001_SRF_4_HR.png"]
    np.testing.assert_array_equal(items[0][1], img(16, 16, seed=4))
