"""Reading and writing images the way real folders hold them.

``read_image`` returns 8-bit pixels in one of two shapes: ``(H, W)`` for greyscale (the
protocol evaluates a grey image on its grey level, not on the luma of three equal channels)
and ``(H, W, 3)`` for colour.  Alpha is never mixed into the pixels: it comes back separately
(with a warning unless it is fully opaque, because SR and its metrics ignore it).  Palette images become RGB (grey when
the palette is grey), 16-bit images are scaled to 8 bits with rounding, EXIF orientation is
applied; PNGs that Pillow cannot decode (16-bit grey with alpha) are read with pypng.  Anything
that does not decode completely -- corrupt, truncated, empty, not an image -- is an
:class:`ImageError` naming the file; ``iter_folder`` skips such files with a warning each and a
summary line.

Warnings go through the ``logging`` logger ``deconas`` (plain one-line messages on stderr when
nothing is configured, and capturable in tests).
"""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
import png  # pypng: the PNGs Pillow cannot decode
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from deconas.errors import UserError
from deconas.runtime import atomic_write

__all__ = ["ImageError", "IMAGE_EXTENSIONS", "Picture", "read_image", "read_picture", "write_image",
           "list_image_files", "iter_folder"]

log = logging.getLogger("deconas")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_SAVE_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                ".tiff": "TIFF", ".webp": "WEBP"}
# PNG at zlib level 1, OpenCV's default (what Real-ESRGAN writes): a 1024x1024 photo encodes
# about 4x faster than at Pillow's default 6, for about 13% more bytes (docs/upscale.md).
PNG_LEVEL = 1
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True},
                 "TIFF": {"compression": "tiff_lzw"}, "PNG": {"compress_level": PNG_LEVEL}, "BMP": {}}
_KEEPS_ALPHA = {"PNG", "WEBP", "TIFF"}


# EXIF orientation -> the Pillow transpose that undoes it (as ImageOps.exif_transpose uses)
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


# The same transposes on numpy arrays (any dtype, so 16-bit colour too; checked against Pillow in the tests)
_NP_TRANSPOSE = {Image.Transpose.FLIP_LEFT_RIGHT: lambda a: a[:, ::-1], Image.Transpose.FLIP_TOP_BOTTOM: lambda a: a[::-1],
                 Image.Transpose.ROTATE_90: lambda a: np.rot90(a, 1), Image.Transpose.ROTATE_180: lambda a: np.rot90(a, 2),
                 Image.Transpose.ROTATE_270: lambda a: np.rot90(a, 3), Image.Transpose.TRANSPOSE: lambda a: a.swapaxes(0, 1),
                 Image.Transpose.TRANSVERSE: lambda a: np.rot90(a, 2).swapaxes(0, 1)}


class ImageError(UserError):
    """A file that is not a complete, decodable image."""


def _to_uint8_from_16(a: np.ndarray) -> np.ndarray:
    # 0..65535 -> 0..255 by v * 255 / 65535, rounded (half up; the values are non-negative)
    return np.floor(np.clip(a.astype(np.float64), 0, 65535) * (255.0 / 65535.0) + 0.5).astype(np.uint8)


def _rawmode(tile) -> Optional[str]:
    args = tile.args
    raw = args[0] if isinstance(args, tuple) and args else args
    return raw if isinstance(raw, str) else None


def _is_16bit_colour(im: Image.Image) -> bool:
    """Pillow decodes 16-bit RGB(A) to 8 bits by keeping the high byte; spot such files before load."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    return all((_rawmode(t) or "").endswith((";16B", ";16L")) for t in im.tile)


def _low_bytes(path: Path, orientation) -> np.ndarray:
    """Decode a 16-bit colour file a second time with the byte order swapped: Pillow's unpacker
    then keeps each sample's low byte instead of its high byte (the unfiltering, which works on
    whole pixels of bytes, is the same), so high * 256 + low is the full 16-bit value."""
    swap = {"B": "L", "L": "B"}
    with Image.open(path) as im:
        tiles = []
        for t in im.tile:
            raw = _rawmode(t)
            new = raw[:-1] + swap[raw[-1]]
            tiles.append(t._replace(args=new if isinstance(t.args, str) else (new,) + tuple(t.args[1:])))
        im.tile = tiles
        im.load()
        if orientation is not None:
            im = im.transpose(orientation)
        return np.asarray(im)


def _decode(path: Path, keep16: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Decode completely; return (uint8 pixels (H,W) or (H,W,3), uint8 alpha or None).
    ``keep16``: a 16-bit file comes back as uint16 (pixels and alpha) instead."""
    narrow = (lambda a: a.astype(np.uint16)) if keep16 else _to_uint8_from_16
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not come back half grey
    with warnings.catch_warnings():
        # Pillow warns (rather than fails) on a few damaged files, e.g. corrupt EXIF; those are
        # handled below or decode fine.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, before it is decoded
        with Image.open(path) as im:
            wide = _is_16bit_colour(im)
            frames = getattr(im, "n_frames", 1)
            if frames > 1:  # an animation or a multi-page file: said, not silently cut
                log.warning("%s: %d frames; only the first is used", path, frames)
            im.load()  # Pillow decodes lazily: force the whole file through the decoder now
            try:
                orientation = _ORIENT.get(im.getexif().get(0x0112, 1))
                im = ImageOps.exif_transpose(im)
            except Exception:  # unreadable EXIF: keep the stored orientation
                orientation = None
            mode = im.mode

            if wide:
                v = np.asarray(im).astype(np.uint16) * 256 + _low_bytes(path, orientation)
                a8 = narrow(v)
                return a8[..., :3].copy(), (a8[..., 3].copy() if a8.shape[2] == 4 else None)

            if mode == "P":
                has_alpha = "transparency" in im.info
                pal = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
                grey = len(pal) > 0 and bool(np.all(pal[:, 0] == pal[:, 1]) and np.all(pal[:, 1] == pal[:, 2]))
                im = im.convert(("LA" if grey else "RGBA") if has_alpha else ("L" if grey else "RGB"))
                mode = im.mode
            if mode == "PA":
                im = im.convert("RGBA")
                mode = "RGBA"

            if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                return narrow(np.clip(np.asarray(im), 0, 65535)), None
            if mode == "1":
                return np.asarray(im.convert("L")), None
            if mode == "L":
                return np.asarray(im).copy(), None
            if mode == "LA":
                a = np.asarray(im)
                return a[..., 0].copy(), a[..., 1].copy()
            if mode in ("RGBA", "RGBa"):
                a = np.asarray(im.convert("RGBA"))
                return a[..., :3].copy(), a[..., 3].copy()
            if mode == "RGB":
                return np.asarray(im).copy(), None
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                return np.asarray(im.convert("RGB")).copy(), None
            raise ImageError(f"{path}: unsupported pixel format {mode!r} (use 8/16-bit grey or RGB)")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_raw_size(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Bytes of the decompressed image data: per row a filter byte and the packed samples, per
    Adam7 pass when interlaced (a pass with no columns or no rows has no rows at all)."""
    def rows(w, h):
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits_per_pixel + 7) // 8)
    if not interlaced:
        return rows(width, height)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    return sum(rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in passes)


def _decode_png(path: Path, keep16: bool = False) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """Decode a PNG with pypng, for the valid files Pillow cannot decode (16-bit grey+alpha:
    Pillow opens it as RGBA and has no unpacker for it).  Same result as the Pillow paths: 8 bits
    per sample (16-bit rounded as ``_to_uint8_from_16``), grey as (H, W), alpha apart, EXIF
    orientation applied.  None when the file is not a PNG or is a palette PNG (Pillow decodes
    every valid one, so its own reason stands); an :class:`ImageError` saying why when pypng
    cannot decode it either."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return None
    except OSError:  # unreadable now: Pillow's reason stands
        return None

    def damaged(why):
        if isinstance(why, png.Error) and why.args:  # its str() starts with the class name
            why = why.args[0]
        return ImageError(f"{path}: corrupt or truncated image ({' '.join(str(why).split())})")

    try:
        r = png.Reader(filename=str(path))
        r.preamble()  # IHDR and the chunks before the first IDAT, CRCs checked
        if r.colormap:
            return None
        limit = Image.MAX_IMAGE_PIXELS
        if limit and r.width * r.height > limit:  # the same refusal as Pillow's bomb check
            raise ImageError(f"{path}: too large to decode safely ({r.width}x{r.height} pixels)")
        # pypng inflates each IDAT chunk without an output limit: measure the inflated size first,
        # in bounded pieces, so that a small file cannot make it allocate more than the image.
        expected = _png_raw_size(r.width, r.height, r.planes * r.bitdepth, bool(r.interlace))
        inflate, total, exif = zlib.decompressobj(), 0, None
        for kind, data in png.Reader(filename=str(path)).chunks():  # from the start: eXIf may precede IDAT
            if kind == b"IDAT":
                while data and total <= expected:
                    total += len(inflate.decompress(data, 1 << 20))
                    data = inflate.unconsumed_tail
            elif kind == b"eXIf":
                exif = data
        if total <= expected:  # then all input is consumed and at most a few bytes are pending
            total += len(inflate.flush())
        if total != expected or not inflate.eof:
            raise damaged(f"more image data than its {r.width}x{r.height} header holds" if total > expected
                          else "its image data ends early")
        width, height, rows, info = png.Reader(filename=str(path)).read()
        planes, depth = info["planes"], info["bitdepth"]
        a = np.empty((height, width * planes), np.uint16 if depth > 8 else np.uint8)
        n = 0
        for n, row in enumerate(rows, 1):
            a[n - 1] = row
        if n != height:
            raise damaged(f"{n} rows where its header says {height}")
    except (png.Error, zlib.error, OSError, ValueError, EOFError, IndexError, TypeError, struct.error) as e:
        raise damaged(e) from None
    a = a.reshape(height, width, planes)
    if depth == 16:
        a = a if keep16 else _to_uint8_from_16(a)
    elif depth < 8:  # 1, 2 or 4 bits: 255 / (2**depth - 1) is a whole number
        a = (a * (255 // (2 ** depth - 1))).astype(np.uint8)
    pixels = a[..., 0] if planes <= 2 else a[..., :3]
    alpha = a[..., planes - 1] if planes in (2, 4) else None
    orientation = None
    if exif is not None:
        try:
            ex = Image.Exif()
            ex.load(exif)
            orientation = _ORIENT.get(ex.get(0x0112, 1))
        except Exception:  # unreadable EXIF: keep the stored orientation (as the Pillow path does)
            orientation = None

    def oriented(x):
        return np.ascontiguousarray(x if orientation is None else _NP_TRANSPOSE[orientation](x))
    return oriented(pixels), (None if alpha is None else oriented(alpha))


@dataclass
class Picture:
    """An image as a file holds it, for tools that write it back (``deconas upscale``): pixels
    and alpha at the file's depth (uint8, or uint16 for 16-bit files), EXIF orientation applied,
    and the colour profile and EXIF (orientation reset to 1) to carry into the output."""
    pixels: np.ndarray  # (H, W) or (H, W, 3), uint8 or uint16
    alpha: Optional[np.ndarray]  # (H, W), the pixels' dtype, or None
    icc: Optional[bytes] = None
    exif: Optional[bytes] = None

    @property
    def maxval(self) -> int:
        return 65535 if self.pixels.dtype == np.uint16 else 255


def _decode_tiff16(path: Path, keep16: bool) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """A 16-bit grey or RGB TIFF (with or without alpha, any compression) through tifffile, which
    decodes what Pillow cannot (compressed 16-bit colour, 16-bit grey+alpha); None for every other
    TIFF (Pillow reads those). The Orientation tag is applied as Pillow's EXIF orientation is."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as t:
            page = t.pages[0]
            if page.bitspersample != 16 or page.photometric not in (0, 1, 2) or page.dtype != np.uint16:
                return None
            limit = Image.MAX_IMAGE_PIXELS
            if limit and page.imagewidth * page.imagelength > limit:  # before anything is decoded
                raise ImageError(f"{path}: too large to decode safely "
                                 f"({page.imagewidth}x{page.imagelength} pixels)")
            a = page.asarray()
            tag = page.tags.get(274)
            orientation = _ORIENT.get(tag.value if tag is not None else 1)
    except ImageError:
        raise
    except Exception:  # not a TIFF tifffile can read: Pillow's turn, and its reason
        return None
    if a.ndim == 3 and page.axes.startswith("S"):  # planar: samples first
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        return None
    if orientation is not None:
        a = _NP_TRANSPOSE[orientation](a)
    a = np.ascontiguousarray(a) if keep16 else _to_uint8_from_16(a)
    planes = a.shape[2]
    pixels = a[..., 0] if planes <= 2 else a[..., :3]
    return np.ascontiguousarray(pixels), (a[..., planes - 1].copy() if planes in (2, 4) else None)


def _read(path, warn: bool, keep16: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a folder, not an image file")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file (0 bytes)")
    try:
        wide = _decode_tiff16(p, keep16) if p.suffix.lower() in (".tif", ".tiff") else None
        pixels, alpha = wide if wide is not None else _decode(p, keep16)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"{p}: permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{p}: too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as e:
        decoded = _decode_png(p, keep16)  # a valid PNG that Pillow cannot decode; None: Pillow's reason stands
        if decoded is None:
            if isinstance(e, UnidentifiedImageError):
                raise ImageError(f"{p}: not an image file (or a format Pillow cannot read)") from None
            msg = " ".join(str(e).split()) or type(e).__name__
            raise ImageError(f"{p}: corrupt or truncated image ({msg})") from None
        pixels, alpha = decoded
    if pixels.size == 0:
        raise ImageError(f"{p}: image has no pixels ({pixels.shape})")
    if alpha is not None and warn and alpha.min() < np.iinfo(alpha.dtype).max:
        log.warning("%s: alpha channel set aside (colour is processed without it)", p)
    return np.ascontiguousarray(pixels), alpha


def read_image(path, *, warn: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Read one image: ``(pixels uint8 (H, W) or (H, W, 3), alpha uint8 (H, W) or None)``.

    Raises :class:`ImageError` (one line, naming the file) for a missing, empty, corrupt,
    truncated or non-image file.  ``warn``: log a warning when an alpha channel that is not
    fully opaque is set aside (it is returned either way).
    """
    return _read(path, warn, keep16=False)


def _metadata(path: Path) -> Tuple[Optional[bytes], Optional[bytes]]:
    """(ICC profile, EXIF with its orientation reset to 1) of a file that decoded; None where absent
    or unreadable (metadata never stops an image). A TIFF's tags are its own layout, not EXIF to
    carry into another format: only its profile is kept."""
    icc = exif = None
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as t:
                tag = t.pages[0].tags.get(34675)  # InterColorProfile
                return (bytes(tag.value) if tag is not None and tag.value else None), None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                icc = im.info.get("icc_profile") or None
                ex = im.getexif()
                if len(ex):
                    if 0x0112 in ex:
                        ex[0x0112] = 1  # the pixels are turned already: a viewer must not turn them again
                    exif = ex.tobytes()
    except Exception:
        pass
    return icc, exif


def read_picture(path) -> Picture:
    """Read one image at its own depth, with its colour profile and EXIF (see :class:`Picture`);
    errors as :func:`read_image`."""
    pixels, alpha = _read(path, warn=False, keep16=True)
    icc, exif = _metadata(Path(path))
    return Picture(pixels, alpha, icc, exif)


_EXIF_HEADER = b"Exif\x00\x00"  # Pillow's EXIF bytes start with it; PNG's eXIf chunk does not
_KEEPS_16 = {"PNG", "TIFF"}
_KEEPS_ICC = {"PNG", "JPEG", "WEBP", "TIFF"}


def _png_chunk_insert(data: bytes, icc: Optional[bytes], exif: Optional[bytes]) -> List[Tuple[bytes, bytes]]:
    """The chunks of PNG ``data`` with iCCP and eXIf added after IHDR (where the PNG spec puts them)."""
    chunks = list(png.Reader(bytes=data).chunks())
    extra = []
    if icc:
        extra.append((b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        extra.append((b"eXIf", exif[len(_EXIF_HEADER):] if exif.startswith(_EXIF_HEADER) else exif))
    return chunks[:1] + extra + chunks[1:]


def _save_png16(tmp: str, a: np.ndarray, icc, exif) -> None:
    import io

    h, w = a.shape[:2]
    planes = 1 if a.ndim == 2 else a.shape[2]
    buf = io.BytesIO()
    png.Writer(w, h, greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=16,
               compression=PNG_LEVEL).write(
        buf, a.reshape(h, w * planes))
    with open(tmp, "wb") as f:
        png.write_chunks(f, _png_chunk_insert(buf.getvalue(), icc, exif))


def _save_tiff16(tmp: str, a: np.ndarray, icc) -> None:
    import tifffile

    planes = 1 if a.ndim == 2 else a.shape[2]
    tifffile.imwrite(tmp, a, photometric="minisblack" if planes in (1, 2) else "rgb",
                     extrasamples=("unassalpha",) if planes in (2, 4) else None,
                     compression="zlib", iccprofile=icc)


def write_image(path, pixels: np.ndarray, alpha: Optional[np.ndarray] = None, *,
                icc: Optional[bytes] = None, exif: Optional[bytes] = None) -> None:
    """Write ``pixels`` ((H, W) or (H, W, 3), uint8, or uint16 for 16 bits per sample) and optional
    alpha (the same dtype); format from the extension. ``icc``, ``exif``: the colour profile and
    EXIF to store, where the format has a place for them (not BMP; no EXIF in a 16-bit TIFF).

    Atomic (temporary file, then rename).  Formats without alpha (JPEG, BMP) drop it with a
    warning, and 8-bit formats reduce 16-bit pixels to 8 bits with one.
    """
    p = Path(path)
    fmt = _SAVE_FORMAT.get(p.suffix.lower())
    if fmt is None:
        raise UserError(f"{p}: unknown image extension {p.suffix!r} (use one of {', '.join(IMAGE_EXTENSIONS)})")
    a = np.asarray(pixels)
    if a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image expects uint8 or uint16 pixels, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"write_image expects (H, W) or (H, W, 3) pixels, got {a.shape}")
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != a.shape[:2] or alpha.dtype != a.dtype:
            raise ValueError(f"alpha {alpha.dtype} {alpha.shape} does not match pixels {a.dtype} {a.shape[:2]}")
        if fmt not in _KEEPS_ALPHA:
            log.warning("%s: %s cannot store alpha; it is dropped", p, fmt)
            alpha = None
    if a.dtype == np.uint16 and fmt not in _KEEPS_16:
        log.warning("%s: %s stores 8 bits per sample; the 16-bit result is reduced to 8 bits", p, fmt)
        a = _to_uint8_from_16(a)
        alpha = None if alpha is None else _to_uint8_from_16(alpha)
    if alpha is not None:
        a = np.dstack([a, alpha])
    if a.dtype == np.uint16:
        if fmt == "PNG":
            atomic_write(p, lambda tmp: _save_png16(tmp, a, icc, exif))
        else:
            atomic_write(p, lambda tmp: _save_tiff16(tmp, a, icc))
        return
    im = Image.fromarray(a, {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[2] if a.ndim == 3 else 1])
    opts = dict(_SAVE_OPTIONS[fmt])
    if icc and fmt in _KEEPS_ICC:
        opts["icc_profile"] = icc
    if exif and fmt in _KEEPS_ICC:
        opts["exif"] = exif
    atomic_write(p, lambda tmp: im.save(tmp, format=fmt, **opts))


def list_image_files(folder) -> List[Path]:
    """Image files (by extension, case-insensitive) directly in ``folder``, sorted by name.

    Hidden files (``.name``, e.g. macOS ``._x.png`` resource forks) are not images and are left out.
    """
    d = Path(folder)
    if not d.exists():
        raise UserError(f"{d}: no such folder")
    if not d.is_dir():
        raise UserError(f"{d}: not a folder")
    try:
        return sorted((f for f in d.iterdir()
                       if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file()),
                      key=lambda f: f.name)
    except OSError as e:
        raise UserError(f"{d}: cannot list the folder ({e.strerror or e})") from None


def iter_folder(folder, warn: bool = True, files: Optional[List[Path]] = None) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(file name, pixels)`` for every readable image in ``folder`` (alpha dropped), one
    at a time so a large set never has to fit in memory.

    Unreadable files are skipped, each with a warning, then one summary warning
    ``skipped K of N files in DIR``.  A folder without any readable image is a UserError
    (raised at the end, after the warnings).  ``files``: the folder's image files if already listed.
    """
    d = Path(folder)
    files = list_image_files(d) if files is None else files
    if not files:
        raise UserError(f"{d}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    read, skipped = 0, 0
    for f in files:
        try:
            pixels, _ = read_image(f, warn=warn)
        except ImageError as e:
            skipped += 1
            if warn:
                log.warning("skipping %s", e)
            continue
        read += 1
        yield f.name, pixels
    if skipped and warn:
        log.warning("skipped %d of %d files in %s", skipped, len(files), d)
    if not read:
        raise UserError(f"{d}: none of its {len(files)} image files could be read")
