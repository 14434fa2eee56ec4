import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deconas import checkpoint
from deconas.cli import main
from deconas.data.imresize import bicubic_up


def rng_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


def run(*argv):
    return main(["upscale", *map(str, argv)])


@pytest.mark.slow
def test_greyscale_input_gives_a_greyscale_output_of_twice_the_size(tmp_path, ckpt):
    src = save(tmp_path / "g.png", rng_image((12, 10)))
    assert run(src, "-o", tmp_path / "out", "--checkpoint", ckpt) == 0
    with Image.open(tmp_path / "out" / "g_x2.png") as im:
        assert im.mode == "L" and im.size == (20, 24)


@pytest.mark.parametrize("mode,shape", [("RGBA", (12, 10, 4)), ("LA", (12, 10, 2))])
def test_alpha_channel_is_upscaled_with_bicubic_and_kept(tmp_path, ckpt, mode, shape):
    pixels = rng_image(shape)
    src = save(tmp_path / "a.png", pixels, mode)
    assert run(src, "-o", tmp_path, "--checkpoint", ckpt) == 0
    with Image.open(tmp_path / "a_x2.png") as im:
        assert im.mode == mode and im.size == (20, 24)
        out = np.asarray(im)
    assert np.array_equal(out[..., -1], bicubic_up(pixels[..., -1], 2))


def test_jpeg_output_of_an_rgba_input_drops_alpha_with_a_warning(tmp_path, ckpt, caplog):
    src = save(tmp_path / "a.png", rng_image((12, 10, 4)), "RGBA")
    with caplog.at_level(logging.WARNING, logger="deconas"):
        assert run(src, "-o", tmp_path, "--ext", "jpg", "--checkpoint", ckpt) == 0
    with Image.open(tmp_path / "a_x2.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB"
    assert any("a_x2.jpg" in r.getMessage() and "alpha" in r.getMessage() for r in caplog.records)


def test_output_extension_chooses_the_format_and_defaults_to_the_inputs(tmp_path, ckpt):
    a = save(tmp_path / "a.bmp", rng_image((8, 8, 3)))
    b = save(tmp_path / "b.PNG", rng_image((8, 8, 3)))
    assert run(a, b, "-o", tmp_path / "same", "--checkpoint", ckpt) == 0
    assert run(a, "-o", tmp_path / "webp", "--ext", ".WebP", "--checkpoint", ckpt) == 0
    for path, fmt in [("same/a_x2.bmp", "BMP"), ("same/b_x2.png", "PNG"), ("webp/a_x2.webp", "WEBP")]:
        with Image.open(tmp_path / path) as im:
            assert im.format == fmt and im.size == (16, 16)


def test_tiled_and_whole_image_outputs_agree(tmp_path, ckpt):
    src = save(tmp_path / "p.png", rng_image((30, 41, 3)))
    assert run(src, "-o", tmp_path / "tiled", "--tile", "8", "--checkpoint", ckpt) == 0
    assert run(src, "-o", tmp_path / "whole", "--tile", "0", "--checkpoint", ckpt) == 0
    tiled = np.asarray(Image.open(tmp_path / "tiled" / "p_x2.png"), dtype=int)
    whole = np.asarray(Image.open(tmp_path / "whole" / "p_x2.png"), dtype=int)
    assert tiled.shape == (60, 82, 3) and np.abs(tiled - whole).max() <= 1  # rounding only


@pytest.mark.slow
def test_folder_with_one_corrupt_file_writes_the_others_names_it_and_exits_1(tmp_path, ckpt):
    d = tmp_path / "in"
    d.mkdir()
    save(d / "colour.png", rng_image((9, 7, 3)))
    save(d / "grey.jpg", rng_image((9, 7)))
    save(d / "alpha.webp", rng_image((9, 7, 4)), "RGBA")
    (d / "broken.png").write_bytes(open(d / "colour.png", "rb").read()[:60])  # truncated
    (d / "notes.txt").write_text("not an image, not counted")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "deconas.cli", "upscale", str(d), "-o", str(out),
                        "--checkpoint", str(ckpt)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert p.returncode == 1
    assert sorted(f.name for f in out.iterdir()) == ["alpha_x2.webp", "colour_x2.png", "grey_x2.jpg"]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.png" in lines[0] and "Traceback" not in p.stderr
    assert "upscaled 3 of 4 images; 1 failed" in p.stdout


@pytest.mark.parametrize("argv,says", [
    (["missing.png"], "missing.png"),
    (["IN", "--tile", "-1"], "--tile -1"),
    (["IN", "--ext", "gif"], "--ext 'gif'"),
    (["IN", "--scale", "3"], "x2 network"),
])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, ckpt, capsys, argv, says):
    src = save(tmp_path / "ok.png", rng_image((6, 6, 3)))
    argv = [str(src) if a == "IN" else str(tmp_path / a) if a.endswith(".png") else a for a in argv]
    assert run(*argv, "-o", tmp_path / "out", "--checkpoint", ckpt) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "out").exists()


def test_two_inputs_that_would_share_an_output_name_are_refused(tmp_path, ckpt, capsys):
    a = save(tmp_path / "x.png", rng_image((6, 6, 3)))
    b = save(tmp_path / "x.bmp", rng_image((6, 6, 3)))
    assert run(a, b, "-o", tmp_path / "out", "--ext", "png", "--checkpoint", ckpt) == 2
    assert "x_x2.png" in capsys.readouterr().err


def test_without_checkpoint_the_shipped_network_for_the_scale_is_used(tmp_path, ckpt, monkeypatch, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "deconas_x2.safetensors").write_bytes(ckpt.read_bytes())
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", weights)
    src = save(tmp_path / "p.png", rng_image((6, 6, 3)))
    assert run(src, "-o", tmp_path / "out") == 0  # --scale defaults to 2
    assert (tmp_path / "out" / "p_x2.png").is_file()
    assert run(src, "-o", tmp_path / "out", "--scale", "4") == 2
    assert "no pretrained network for x4" in capsys.readouterr().err


def test_a_16bit_grey_with_alpha_png_upscales_to_grey_with_its_alpha(tmp_path, ckpt):
    import png  # pypng writes the file: an encoder independent of the reader under test

    rng = np.random.default_rng(3)
    grey, alpha = rng.integers(0, 65536, (6, 5)), rng.integers(0, 65536, (6, 5))
    with open(tmp_path / "la16.png", "wb") as f:
        png.Writer(5, 6, greyscale=True, alpha=True, bitdepth=16).write(
            f, np.stack([grey, alpha], axis=2).reshape(6, 10).tolist())
    assert run(tmp_path / "la16.png", "-o", tmp_path / "out", "--checkpoint", ckpt, "--backend", "torch") == 0
    with Image.open(tmp_path / "out" / "la16_x2.png") as im:
        assert im.mode == "LA" and im.size == (10, 12)
        out = np.asarray(im)
    alpha8 = np.floor(alpha / 257 + 0.5).astype(np.uint8)  # the 16-bit rounding, by hand
    assert np.array_equal(out[..., 1], bicubic_up(alpha8, 2))
