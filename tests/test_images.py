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


def test_cmyk_jpeg_reads_as_rgb(tmp_path):
    a = photo()
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
    got, alpha = read_image(tmp_path / "c.jpg")
    assert got.shape == a.shape and got.dtype == np.uint8 and alpha is None
    # Pillow's CMYK is 255 - RGB with no black; what comes back is the photo, up to JPEG's loss.
    assert np.abs(got.astype(int) - a).mean() < 4


def test_a_float_tiff_is_refused_naming_the_file_and_its_format(tmp_path):
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), "F").save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match=r"f\.tif.*'F'"):
        read_image(tmp_path / "f.tif")


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


def rounded_16_to_8(v):
    """The rounding the 16-bit paths promise, computed here by hand: v * 255 / 65535 = v / 257, half up."""
    return np.floor(np.asarray(v, np.float64) / 257 + 0.5).astype(np.uint8)


def write_pypng(path, rows, **kw):
    """A PNG written by pypng, an encoder independent of the code under test."""
    import png

    rows = np.asarray(rows)
    planes = (1 if kw.get("greyscale", True) else 3) + bool(kw.get("alpha", False))
    with open(path, "wb") as f:
        png.Writer(rows.shape[1] // planes, rows.shape[0], **kw).write(f, rows.tolist())
    return path


@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_grey_with_alpha_png_is_read_scaled_and_rounded(tmp_path, interlace):
    # Pillow opens this format as RGBA and cannot decode it; deconas reads it all the same
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 65536, (9, 11))
    alpha = rng.integers(0, 65536, (9, 11))
    grey[0, :4] = [0, 128, 129, 42000]  # 0, 0.498 -> 0, 0.502 -> 1, 163.4 -> 163 (not the high byte 164)
    alpha[0, :3] = [65535, 32896, 32895]  # 255, 128 (half up), 128
    rows = np.stack([grey, alpha], axis=2).reshape(9, 22)
    f = write_pypng(tmp_path / "la16.png", rows, greyscale=True, alpha=True, bitdepth=16, interlace=interlace)
    got, al = read_image(f, warn=False)
    assert got.dtype == al.dtype == np.uint8 and got.shape == al.shape == (9, 11)
    np.testing.assert_array_equal(got, rounded_16_to_8(grey))
    np.testing.assert_array_equal(al, rounded_16_to_8(alpha))
    assert got[0, :4].tolist() == [0, 0, 1, 163] and al[0, :3].tolist() == [255, 128, 128]


@pytest.mark.parametrize("kind", ["rgb16", "rgba16", "grey16", "grey8+alpha", "grey2", "palette", "grey palette"])
def test_pngs_of_every_kind_written_by_pypng_read_as_their_pixel_values(tmp_path, kind):
    rng = np.random.default_rng(5)
    h, w = 6, 7
    if kind in ("rgb16", "rgba16"):
        c = 3 if kind == "rgb16" else 4
        v = rng.integers(0, 65536, (h, w, c))
        f = write_pypng(tmp_path / "x.png", v.reshape(h, w * c), greyscale=False, alpha=c == 4, bitdepth=16)
        want, want_alpha = rounded_16_to_8(v[..., :3]), (rounded_16_to_8(v[..., 3]) if c == 4 else None)
    elif kind == "grey16":
        v = rng.integers(0, 65536, (h, w))
        f = write_pypng(tmp_path / "x.png", v, greyscale=True, bitdepth=16)
        want, want_alpha = rounded_16_to_8(v), None
    elif kind == "grey8+alpha":
        v = rng.integers(0, 256, (h, w, 2))
        f = write_pypng(tmp_path / "x.png", v.reshape(h, w * 2), greyscale=True, alpha=True, bitdepth=8)
        want, want_alpha = v[..., 0], v[..., 1]
    elif kind == "grey2":
        v = rng.integers(0, 4, (h, w))
        f = write_pypng(tmp_path / "x.png", v, greyscale=True, bitdepth=2)
        want, want_alpha = v * 85, None  # levels 0..3 are 0, 85, 170, 255
    else:
        grey = kind == "grey palette"
        pal = [(i * 20, i * 20, i * 20) if grey else (i * 20, 255 - i * 9, (i * 77) % 256) for i in range(12)]
        idx = rng.integers(0, 12, (h, w))
        f = write_pypng(tmp_path / "x.png", idx, palette=pal, bitdepth=4)
        want, want_alpha = np.asarray(pal)[idx], None
        if grey:
            want = want[..., 0]
    got, alpha = read_image(f, warn=False)
    np.testing.assert_array_equal(got, want)
    assert (alpha is None) == (want_alpha is None)
    if want_alpha is not None:
        np.testing.assert_array_equal(alpha, want_alpha)


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_16bit_grey_with_alpha_png_follows_its_exif_orientation(tmp_path):
    v = np.arange(2 * 3 * 2).reshape(2, 3, 2) * 3000
    data = write_pypng(tmp_path / "a.png", v.reshape(2, 6), greyscale=True, alpha=True, bitdepth=16).read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    at = data.index(b"IDAT") - 4  # the eXIf chunk goes before the image data
    (tmp_path / "r.png").write_bytes(data[:at] + _png_chunk(b"eXIf", exif.tobytes()) + data[at:])
    got, alpha = read_image(tmp_path / "r.png", warn=False)
    np.testing.assert_array_equal(got, np.rot90(rounded_16_to_8(v[..., 0]), -1))
    np.testing.assert_array_equal(alpha, np.rot90(rounded_16_to_8(v[..., 1]), -1))


def test_a_damaged_16bit_grey_with_alpha_png_is_an_image_error_never_partial_pixels(tmp_path):
    v = np.random.default_rng(6).integers(0, 65536, (8, 16))
    data = write_pypng(tmp_path / "ok.png", v, greyscale=True, alpha=True, bitdepth=16).read_bytes()
    idat = data.index(b"IDAT")
    cuts = sorted({idat + 4, idat + 20, len(data) - 30, len(data) - 13, len(data) - 5})
    flipped = bytearray(data)
    flipped[idat + 30] ^= 0xFF  # inside the compressed data: the chunk's CRC no longer matches
    for i, bad in enumerate([data[:c] for c in cuts] + [bytes(flipped)]):
        f = tmp_path / f"bad{i}.png"
        f.write_bytes(bad)
        with pytest.raises(ImageError, match=f"bad{i}.png") as e:
            read_image(f)
        assert "\n" not in str(e.value)


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


def test_numpy_orientation_transposes_match_pillows_for_every_exif_orientation():
    from deconas.data.images import _NP_TRANSPOSE, _ORIENT

    a = photo(7, 12)
    for orientation, t in _ORIENT.items():
        assert np.array_equal(_NP_TRANSPOSE[t](a), np.asarray(Image.fromarray(a).transpose(t))), orientation


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("planes", [1, 2, 3, 4])
def test_16_bit_files_round_trip_exactly_with_their_colour_profile(tmp_path, ext, planes):
    from deconas.data.images import read_picture, write_image

    rng = np.random.default_rng(planes)
    a = rng.integers(0, 65536, (9, 13, planes), dtype=np.uint16)
    pixels = a[..., 0] if planes <= 2 else a[..., :3]
    alpha = a[..., -1] if planes in (2, 4) else None
    icc = bytes(range(256)) * 2
    write_image(tmp_path / f"x{ext}", pixels, alpha, icc=icc)
    back = read_picture(tmp_path / f"x{ext}")
    assert back.pixels.dtype == np.uint16 and np.array_equal(back.pixels, pixels)
    assert (back.alpha is None) == (alpha is None) and (alpha is None or np.array_equal(back.alpha, alpha))
    assert back.icc == icc
    eight, _ = read_image(tmp_path / f"x{ext}", warn=False)  # the 8-bit reader rounds as before
    assert np.array_equal(eight, np.floor(pixels / 257.0 + 0.5).astype(np.uint8))


def test_exif_orientation_of_a_16_bit_png_is_applied_and_reset_in_what_is_kept(tmp_path):
    import png

    from deconas.data.images import read_picture

    a = np.random.default_rng(0).integers(0, 65536, (5, 8, 3), dtype=np.uint16)
    buf = tmp_path / "raw.png"
    with open(buf, "wb") as f:
        png.Writer(8, 5, greyscale=False, bitdepth=16).write(f, a.reshape(5, -1))
    exif = Image.Exif()
    exif[0x0112] = 8
    chunks = list(png.Reader(filename=str(buf)).chunks())
    with open(tmp_path / "turned.png", "wb") as f:
        png.write_chunks(f, chunks[:1] + [(b"eXIf", exif.tobytes()[6:])] + chunks[1:])
    pic = read_picture(tmp_path / "turned.png")
    assert np.array_equal(pic.pixels, np.rot90(a, 1))  # EXIF 8: turned 90 degrees anticlockwise to show
    kept = Image.Exif()
    kept.load(pic.exif)
    assert kept[0x0112] == 1


def test_eight_bit_formats_keep_the_profile_and_exif_and_reduce_16_bits_with_a_warning(tmp_path, caplog):
    from deconas.data.images import read_picture, write_image

    exif = Image.Exif()
    exif[0x010F] = "deconas-test"  # Make
    icc = b"\x00" * 300
    a16 = np.full((4, 4, 3), 257 * 200, np.uint16)
    with caplog.at_level(logging.WARNING, logger="deconas"):
        write_image(tmp_path / "x.jpg", a16, icc=icc, exif=exif.tobytes())
    assert any("8 bits" in r.getMessage() for r in caplog.records)
    back = read_picture(tmp_path / "x.jpg")
    assert back.pixels.dtype == np.uint8 and back.icc == icc
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept[0x010F] == "deconas-test"
