"""Image loading on the odd files real folders hold; every odd file is made here in tmp_path."""

import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from deconas.errors import UserError
from deconas.data.images import (IMAGE_EXTENSIONS, ImageError, iter_folder, list_image_files, read_image,
                            write_image)


def photo(h=24, w=32, seed=0):
    """A smooth-ish colour image (compresses like a photo, unlike noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 255 / (h + w)], axis=2)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def write_png16(path, a):
    """A minimal 16-bit PNG encoder (Pillow cannot write 16-bit colour PNGs)."""
    h, w = a.shape[:2]
    ch = 1 if a.ndim == 2 else a.shape[2]
    bpp = 2 * ch
    rows = []
    for r in range(h):  # alternate filter types 0 (none) and 1 (Sub) so unfiltering is exercised
        b = np.frombuffer(a[r].astype(">u2").tobytes(), np.uint8).astype(np.int16)
        if r % 2:
            b[bpp:] = (b[bpp:] - b[:-bpp]) % 256
        rows.append(bytes([r % 2]) + b.astype(np.uint8).tobytes())
    raw = b"".join(rows)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2, 4: 6}[ch], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff", ".webp"])
def test_lossless_formats_round_trip_rgb_exactly(tmp_path, ext):
    a = photo()
    f = tmp_path / f"x{ext}"
    write_image(f, a)
    got, alpha = read_image(f)
    assert alpha is None and got.dtype == np.uint8
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".JPG"])
def test_jpeg_reads_as_rgb_close_to_original(tmp_path, ext):
    a = photo(seed=1)
    f = tmp_path / f"x{ext}"
    write_image(f, a)
    got, alpha = read_image(f)
    assert got.shape == a.shape and alpha is None
    assert np.abs(got.astype(int) - a).mean() < 6


def test_greyscale_stays_two_dimensional(tmp_path):
    g = photo()[..., 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    got, alpha = read_image(tmp_path / "g.png")
    assert got.ndim == 2 and alpha is None
    np.testing.assert_array_equal(got, g)


def test_one_bit_image_reads_as_grey_0_or_255(tmp_path):
    Image.fromarray(photo()[..., 0] > 128).save(tmp_path / "b.png")
    got, _ = read_image(tmp_path / "b.png")
    assert got.ndim == 2 and set(np.unique(got)) <= {0, 255}


def test_rgba_alpha_is_set_aside_with_a_warning(tmp_path, caplog):
    a = photo()
    alpha = np.full(a.shape[:2], 200, np.uint8)
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(tmp_path / "t.png")
    with caplog.at_level(logging.WARNING, logger="deconas"):
        got, al = read_image(tmp_path / "t.png")
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(al, alpha)
    assert "t.png" in caplog.text and "alpha" in caplog.text


def test_grey_with_alpha_keeps_grey_and_returns_alpha(tmp_path):
    g = photo()[..., 1]
    al = np.full(g.shape, 10, np.uint8)
    Image.fromarray(np.dstack([g, al]), "LA").save(tmp_path / "la.png")
    got, alpha = read_image(tmp_path / "la.png", warn=False)
    np.testing.assert_array_equal(got, g)
    np.testing.assert_array_equal(alpha, al)


def test_palette_image_becomes_rgb(tmp_path):
    a = photo()
    Image.fromarray(a).quantize(16).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P"
        want = np.asarray(im.convert("RGB"))
    got, alpha = read_image(tmp_path / "p.png")
    assert got.shape == a.shape and alpha is None
    np.testing.assert_array_equal(got, want)


def test_palette_of_greys_becomes_grey(tmp_path):
    im = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) % 4, "P")
    im.putpalette([0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255])
    im.save(tmp_path / "pg.png")
    got, _ = read_image(tmp_path / "pg.png")
    assert got.ndim == 2
    np.testing.assert_array_equal(got, (np.arange(64).reshape(8, 8) % 4) * 85)


def test_16bit_grey_png_is_scaled_and_rounded(tmp_path):
    v = np.array([[0, 128, 129, 257], [32896, 32895, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")
    got, _ = read_image(tmp_path / "g16.png")
    assert got.dtype == np.uint8 and got.ndim == 2
    np.testing.assert_array_equal(got, np.floor(v / 257 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png_is_scaled_and_rounded_not_truncated(tmp_path, channels):
    v = np.random.default_rng(9).integers(0, 65536, size=(5, 7, channels)).astype(np.uint16)
    v[0, 0, 0] = 42000  # high byte 164, but 42000 / 257 = 163.4 -> 163
    write_png16(tmp_path / "c16.png", v)
    got, alpha = read_image(tmp_path / "c16.png", warn=False)
    want = np.floor(v / 257 + 0.5).astype(np.uint8)
    assert got.dtype == np.uint8 and got.shape == (5, 7, 3)
    np.testing.assert_array_equal(got, want[..., :3])
    if channels == 4:
        np.testing.assert_array_equal(alpha, want[..., 3])


def test_16bit_rgb_tiff_is_scaled_and_rounded(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    v = np.array([[[0, 128, 129], [257, 32896, 65535]]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", v, photometric="rgb")
    got, _ = read_image(tmp_path / "c16.tif")
    np.testing.assert_array_equal(got, np.floor(v / 257 + 0.5).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    a = photo(20, 30)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    im.save(tmp_path / "r.jpg", exif=exif, quality=98)
    got, _ = read_image(tmp_path / "r.jpg")
    assert got.shape == (30, 20, 3)
    want = np.rot90(a, -1)
    assert np.abs(got.astype(int) - want).mean() < 6


def _truncated(tmp_path, ext):
    a = photo(64, 64, seed=3)
    full = tmp_path / f"full{ext}"
    write_image(full, a)
    data = full.read_bytes()
    bad = tmp_path / f"trunc{ext}"
    bad.write_bytes(data[: len(data) // 2])
    return bad


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_raises_image_error_naming_it(tmp_path, ext):
    bad = _truncated(tmp_path, ext)
    with pytest.raises(ImageError, match="trunc") as e:
        read_image(bad)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, UserError)


def test_zero_byte_file_raises_image_error(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png"):
        read_image(tmp_path / "empty.png")


def test_text_file_named_png_raises_image_error(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    with pytest.raises(ImageError, match="notes.png"):
        read_image(tmp_path / "notes.png")


def test_corrupt_png_body_raises_image_error(tmp_path):
    write_image(tmp_path / "ok.png", photo())
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[60:90] = b"\xff" * 30  # inside the compressed IDAT stream
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_write_image_keeps_alpha_in_png_and_is_atomic(tmp_path):
    a, al = photo(), np.full((24, 32), 7, np.uint8)
    write_image(tmp_path / "sub" / "o.png", a, al)
    got, alpha = read_image(tmp_path / "sub" / "o.png", warn=False)
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(alpha, al)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["o.png"]  # no temp file left


def test_write_image_rejects_unknown_extension(tmp_path):
    with pytest.raises(UserError, match="x.xyz"):
        write_image(tmp_path / "x.xyz", photo())


def test_list_image_files_is_sorted_by_extension_and_not_recursive(tmp_path):
    for n in ["b.PNG", "a.jpg", "c.webp", "d.txt", ".hidden.png"]:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"x")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
    assert ".png" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS


def test_folder_scan_skips_corrupt_file_with_warning_and_summary(tmp_path, caplog):
    write_image(tmp_path / "a.png", photo())
    write_image(tmp_path / "c.bmp", photo(seed=2))
    (tmp_path / "b.png").write_text("garbage")
    with caplog.at_level(logging.WARNING, logger="deconas"):
        items = list(iter_folder(tmp_path))
    assert [n for n, _ in items] == ["a.png", "c.bmp"]
    assert "b.png" in caplog.text
    assert f"skipped 1 of 3 files in {tmp_path}" in caplog.text


def test_folder_without_readable_images_is_a_user_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(UserError, match=str(tmp_path.name)):
        list(iter_folder(tmp_path, warn=False))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no image files"):
        list(iter_folder(empty))
    with pytest.raises(UserError, match="no such folder"):
        list(iter_folder(tmp_path / "missing"))
