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
from typing import Iterator, List, Optional, Tuple

import numpy as np
import png  # pypng: the PNGs Pillow cannot decode
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from deconas.errors import UserError
from deconas.runtime import atomic_write

__all__ = ["ImageError", "IMAGE_EXTENSIONS", "read_image", "write_image", "list_image_files", "iter_folder"]

log = logging.getLogger("deconas")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_SAVE_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                ".tiff": "TIFF", ".webp": "WEBP"}
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True},
                 "TIFF": {"compression": "tiff_lzw"}, "PNG": {}, "BMP": {}}
_KEEPS_ALPHA = {"PNG", "WEBP", "TIFF"}


# EXIF orientation -> the Pillow transpose that undoes it (as ImageOps.exif_transpose uses)
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


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


def _decode(path: Path) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Decode completely; return (uint8 pixels (H,W) or (H,W,3), uint8 alpha or None)."""
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
                a8 = _to_uint8_from_16(v)
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
                return _to_uint8_from_16(np.asarray(im)), None
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


def _decode_png(path: Path) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
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
        a = _to_uint8_from_16(a)
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
        x = np.ascontiguousarray(x)
        return x if orientation is None else np.asarray(Image.fromarray(x).transpose(orientation))
    return oriented(pixels), (None if alpha is None else oriented(alpha))


def read_image(path, *, warn: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Read one image: ``(pixels uint8 (H, W) or (H, W, 3), alpha uint8 (H, W) or None)``.

    Raises :class:`ImageError` (one line, naming the file) for a missing, empty, corrupt,
    truncated or non-image file.  ``warn``: log a warning when an alpha channel that is not
    fully opaque is set aside (it is returned either way).
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a folder, not an image file")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file (0 bytes)")
    try:
        pixels, alpha = _decode(p)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"{p}: permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{p}: too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as e:
        decoded = _decode_png(p)  # a valid PNG that Pillow cannot decode; None: Pillow's reason stands
        if decoded is None:
            if isinstance(e, UnidentifiedImageError):
                raise ImageError(f"{p}: not an image file (or a format Pillow cannot read)") from None
            msg = " ".join(str(e).split()) or type(e).__name__
            raise ImageError(f"{p}: corrupt or truncated image ({msg})") from None
        pixels, alpha = decoded
    if pixels.size == 0:
        raise ImageError(f"{p}: image has no pixels ({pixels.shape})")
    if alpha is not None and warn and alpha.min() < 255:  # a fully opaque alpha loses nothing: no noise
        log.warning("%s: alpha channel set aside (colour is processed without it)", p)
    return np.ascontiguousarray(pixels), alpha


def write_image(path, pixels: np.ndarray, alpha: Optional[np.ndarray] = None) -> None:
    """Write uint8 ``pixels`` ((H, W) or (H, W, 3)) and optional alpha; format from the extension.

    Atomic (temporary file, then rename).  Formats without alpha (JPEG, BMP) drop it with a warning.
    """
    p = Path(path)
    fmt = _SAVE_FORMAT.get(p.suffix.lower())
    if fmt is None:
        raise UserError(f"{p}: unknown image extension {p.suffix!r} (use one of {', '.join(IMAGE_EXTENSIONS)})")
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8 pixels, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"write_image expects (H, W) or (H, W, 3) pixels, got {a.shape}")
    if alpha is not None:
        alpha = np.asarray(alpha, dtype=np.uint8)
        if alpha.shape != a.shape[:2]:
            raise ValueError(f"alpha shape {alpha.shape} does not match pixels {a.shape[:2]}")
        if fmt not in _KEEPS_ALPHA:
            log.warning("%s: %s cannot store alpha; it is dropped", p, fmt)
            alpha = None
    if alpha is not None:
        a = np.dstack([a, alpha])
        im = Image.fromarray(a, "LA" if a.shape[2] == 2 else "RGBA")
    else:
        im = Image.fromarray(a, "L" if a.ndim == 2 else "RGB")
    atomic_write(p, lambda tmp: im.save(tmp, format=fmt, **_SAVE_OPTIONS[fmt]))


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
