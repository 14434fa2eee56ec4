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
    lines = [ln for ln in p.stderr.strip().splitlines() if not ln.startswith("upscale: ")]  # the progress line
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


def test_a_16bit_grey_with_alpha_png_upscales_to_16bit_grey_with_its_alpha(tmp_path, ckpt):
    import png  # pypng writes the file: an encoder independent of the reader under test

    rng = np.random.default_rng(3)
    grey, alpha = rng.integers(0, 65536, (6, 5)), rng.integers(0, 65536, (6, 5))
    with open(tmp_path / "la16.png", "wb") as f:
        png.Writer(5, 6, greyscale=True, alpha=True, bitdepth=16).write(
            f, np.stack([grey, alpha], axis=2).reshape(6, 10).tolist())
    assert run(tmp_path / "la16.png", "-o", tmp_path / "out", "--checkpoint", ckpt, "--backend", "torch") == 0
    from deconas.data.imresize import imresize

    w, h, rows, info = png.Reader(filename=str(tmp_path / "out" / "la16_x2.png")).read()
    assert (w, h, info["planes"], info["bitdepth"], info["greyscale"]) == (10, 12, 2, 16, True)
    out = np.array([list(r) for r in rows]).reshape(12, 10, 2)
    want = np.clip(np.floor(imresize(alpha.astype(np.float64), 2.0) + 0.5), 0, 65535)  # MATLAB bicubic, 16 bits
    assert np.array_equal(out[..., 1], want)


def _icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_recursive_mirrors_the_tree_keeps_16_bit_icc_and_orientation_and_skips_a_bad_file(tmp_path, ckpt, capsys,
                                                                                           caplog):
    import png

    from deconas.data.images import read_picture

    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / ".hidden").mkdir()
    top = save(src / "top.png", rng_image((10, 12, 3), 1))
    save(src / ".hidden" / "h.png", rng_image((8, 8, 3)))  # hidden folders are not walked
    eight = rng_image((9, 11, 3), 2)
    rows = (eight.astype(np.uint16) * 257).reshape(9, -1)  # 16-bit values on the 8-bit grid: same network input
    with open(src / "sub" / "wide.png", "wb") as f:
        png.Writer(11, 9, greyscale=False, bitdepth=16).write(f, rows)
    stored = rng_image((8, 14, 3), 3)  # stored landscape; EXIF 6 says: turn it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    icc = _icc()
    Image.fromarray(stored).save(src / "sub" / "deeper" / "photo.jpg", quality=98, icc_profile=icc,
                                 exif=exif.tobytes())
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="deconas"):
        assert run(src, "-o", out, "--recursive", "--checkpoint", ckpt) == 1  # one bad file: named, the rest done
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    caplog.clear()
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert made == ["sub/deeper/photo_x2.jpg", "sub/wide_x2.png", "top_x2.png"]

    wide = read_picture(out / "sub" / "wide_x2.png")
    assert wide.pixels.dtype == np.uint16 and wide.pixels.shape == (18, 22, 3)
    assert png.Reader(filename=str(out / "sub" / "wide_x2.png")).read()[3]["bitdepth"] == 16
    save(tmp_path / "eight.png", eight)
    assert run(tmp_path / "eight.png", "-o", tmp_path / "ref", "--checkpoint", ckpt) == 0
    ref8 = np.asarray(Image.open(tmp_path / "ref" / "eight_x2.png")).astype(np.int32)
    assert np.abs(wide.pixels.astype(np.int32) / 257.0 - ref8).max() <= 0.51  # the 8-bit result, finer
    assert np.any(wide.pixels % 257 != 0)  # and really 16 bits deep, not 8 bits scaled

    photo = read_picture(out / "sub" / "deeper" / "photo_x2.jpg")
    assert photo.icc == icc  # byte-equal
    with Image.open(out / "sub" / "deeper" / "photo_x2.jpg") as im:
        assert im.getexif().get(0x0112) == 1  # applied, then reset: no viewer turns it again
    assert photo.pixels.shape == (28, 16, 3)
    save(tmp_path / "turned.png", np.rot90(stored, 3).copy())  # what EXIF 6 shows
    assert run(tmp_path / "turned.png", "-o", tmp_path / "ref", "--checkpoint", ckpt) == 0
    want = np.asarray(Image.open(tmp_path / "ref" / "turned_x2.png")).astype(np.int32)
    right = np.abs(photo.pixels.astype(np.int32) - want).mean()
    wrong = np.abs(photo.pixels.astype(np.int32) - np.rot90(want, 2)).mean()
    assert right < 8 < wrong  # JPEG's loss, against the wrong turn

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="deconas"):
        assert run(src, "-o", out, "--recursive", "--checkpoint", ckpt) == 1
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    assert "3 skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_outscale_gives_exactly_round_f_times_the_size_from_the_network_then_matlab_bicubic(tmp_path, ckpt):
    from deconas.data.imresize import imresize

    src = save(tmp_path / "a.png", rng_image((13, 10, 3), 4))
    assert run(src, "-o", tmp_path / "x2", "--checkpoint", ckpt) == 0
    net = np.asarray(Image.open(tmp_path / "x2" / "a_x2.png"))
    for f, size in ((1.5, (20, 15)), (3.5, (46, 35))):  # 19.5 -> 20, 45.5 -> 46: halves up
        assert run(src, "-o", tmp_path / "f", "--outscale", f, "--checkpoint", ckpt) == 0
        with Image.open(tmp_path / "f" / f"a_x{f:g}.png") as im:
            assert im.size == (size[1], size[0])
            got = np.asarray(im)
        want = np.clip(np.floor(imresize(net, output_shape=size) + 0.5), 0, 255)
        assert np.array_equal(got, want)


def test_outputs_default_to_results_and_suffix_names_them(tmp_path, ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "a.png", rng_image((8, 8, 3)))
    assert run("a.png", "--checkpoint", ckpt) == 0
    assert (tmp_path / "results" / "a_x2.png").is_file()
    assert run("a.png", "-o", "plain", "--suffix", "", "--checkpoint", ckpt) == 0
    assert (tmp_path / "plain" / "a.png").is_file()
    assert run("a.png", "-o", "named", "--suffix", "sr", "--checkpoint", ckpt) == 0
    assert (tmp_path / "named" / "a_sr.png").is_file()
    # Into its own folder with no suffix the output would be the input: left as it is.
    before = (tmp_path / "a.png").read_bytes()
    run("a.png", "-o", ".", "--suffix", "", "--checkpoint", ckpt)
    assert (tmp_path / "a.png").read_bytes() == before


@pytest.mark.parametrize("argv, needle", [(["--outscale", "9"], "--outscale 9"), (["--outscale", "0.5"], "--outscale"),
                                          (["--outscale", "nan"], "--outscale"), (["--suffix", "a/b"], "--suffix")])
def test_a_bad_outscale_or_suffix_is_one_line_and_writes_nothing(tmp_path, ckpt, capsys, argv, needle):
    src = save(tmp_path / "a.png", rng_image((8, 8, 3)))
    assert run(src, "-o", tmp_path / "o", "--checkpoint", ckpt, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_int8_upscaling_is_close_to_fp32_says_its_cost_once_and_needs_onnxruntime(tmp_path, ckpt, capsys,
                                                                                  monkeypatch):
    from deconas.infer import backends

    monkeypatch.setattr(backends, "_notified", set())  # notices are once per process: as in a fresh one
    src = save(tmp_path / "a.png", rng_image((24, 20, 3), 5))
    assert run(src, "-o", tmp_path / "fp32", "--checkpoint", ckpt) == 0
    assert run(src, "-o", tmp_path / "int8", "--checkpoint", ckpt, "--precision", "int8") == 0
    err = capsys.readouterr().err
    assert err.count("dB PSNR (Y) against fp32") == 1
    a = np.asarray(Image.open(tmp_path / "fp32" / "a_x2.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "int8" / "a_x2.png")).astype(int)
    assert 0 < np.abs(a - b).mean() < 3
    assert run(src, "-o", tmp_path / "t", "--checkpoint", ckpt, "--precision", "int8", "--backend", "torch") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ONNX Runtime" in err


@pytest.mark.parametrize("amx", [True, False])
def test_bf16_upscaling_stays_within_a_hundredth_of_a_db_of_fp32_and_auto_takes_it_only_with_amx(
        tmp_path, monkeypatch, capsys, amx):
    from deconas.data.datasets import builtin_images
    from deconas.data.imresize import bicubic_lr
    from deconas.infer import backends
    from deconas.metrics import psnr_y

    hr = dict(builtin_images())["astronaut.png"][96:192, 160:256]  # 96 x 96: a face
    src = save(tmp_path / "lr.png", bicubic_lr(hr, 2))
    monkeypatch.setattr(backends, "native_bf16", lambda: amx)
    out = {}
    said = {}
    for p in ("fp32", "bf16", None):
        d = tmp_path / (p or "auto")
        capsys.readouterr()
        assert run(src, "-o", d, "--scale", "2", *(["--precision", p] if p else [])) == 0
        said[p] = capsys.readouterr().out
        out[p] = np.asarray(Image.open(d / "lr_x2.png"))
    assert "(fp32 with ONNX Runtime)" in said["fp32"] and "(bf16 with torch)" in said["bf16"]
    assert ("(bf16 with torch)" if amx else "(fp32 with ONNX Runtime)") in said[None]
    assert abs(psnr_y(out["bf16"], hr, 2) - psnr_y(out["fp32"], hr, 2)) <= 0.01
    diff = np.abs(out["bf16"].astype(int) - out["fp32"])
    assert diff.max() <= 3 and (diff == 0).mean() >= 0.8  # most pixels equal, the rest a level or so off
    assert np.array_equal(out[None], out["bf16" if amx else "fp32"])
