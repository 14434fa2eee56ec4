"""``deconas upscale``: super-resolve image files and folders with a trained network.

Every argument is checked and the whole file list built before the first image is touched, so
a typo fails at once (exit 2). Files that turn out unreadable are skipped with a one-line
warning each; the rest are written, and the exit code is 1 when anything failed.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .checkpoint import load_model
from .errors import UserError
from .images import IMAGE_EXTENSIONS, ImageError, list_image_files, read_image, write_image
from .imresize import bicubic_up
from .inference import upscale_array

log = logging.getLogger("deconas")

# An explicit input file whose extension cannot be written back (a .gif, say) is written as PNG.
FALLBACK_EXT = ".png"


def normalize_ext(ext: str) -> str:
    e = ext.strip().lower()
    e = e if e.startswith(".") else "." + e
    if e not in IMAGE_EXTENSIONS:
        raise UserError(f"--ext {ext!r}: unknown image format (use one of "
                        f"{', '.join(x[1:] for x in IMAGE_EXTENSIONS)})")
    return e


def collect_inputs(inputs: List[str]) -> List[Path]:
    """Image files named directly, plus the image files (by extension) directly inside folders."""
    files: List[Path] = []
    for name in inputs:
        p = Path(name)
        if p.is_dir():
            files += list_image_files(p)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"input {name}: no such file or folder")
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(inputs)}")
    return files


def output_paths(files: List[Path], outdir: Path, scale: int, ext) -> List[Path]:
    """``OUTDIR/<stem>_x{scale}<ext>`` for each input; two inputs mapping to one name is an error
    (rather than one silently overwriting the other)."""
    seen: Dict[Path, Path] = {}
    outs = []
    for f in files:
        e = ext or (f.suffix.lower() if f.suffix.lower() in IMAGE_EXTENSIONS else FALLBACK_EXT)
        out = outdir / f"{f.stem}_x{scale}{e}"
        if out in seen:
            raise UserError(f"{seen[out]} and {f} would both be written to {out}; "
                            f"upscale them into different folders")
        seen[out] = f
        outs.append(out)
    return outs


def upscale_file(model, src: Path, dst: Path, scale: int, tile: int) -> None:
    # warn=False: the alpha channel is not set aside here, it is upscaled and kept
    pixels, alpha = read_image(src, warn=False)
    sr = upscale_array(model, pixels, tile=tile)
    if alpha is not None:
        # Alpha is a mask, not a photo: bicubic keeps its edges predictable. write_image drops
        # it (with a warning naming the file) for formats without alpha, such as JPEG.
        alpha = bicubic_up(alpha, scale)
    try:
        write_image(dst, sr, alpha)
    except OSError as e:  # the output folder, not this image, is the problem: stop here
        raise UserError(f"cannot write {dst}: {e.strerror or e}") from None


def cli_upscale(args) -> int:
    if args.tile < 0:
        raise UserError(f"--tile {args.tile}: must be 0 (whole image) or a positive size in pixels")
    ext = normalize_ext(args.ext) if args.ext is not None else None
    files = collect_inputs(args.inputs)
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"-o {outdir}: exists and is not a folder")

    if args.checkpoint is None:
        model, meta = load_model("pretrained", scale=args.scale or 2, device=args.device)
    else:
        model, meta = load_model(args.checkpoint, scale=args.scale, device=args.device)
    scale = int(meta["scale"])
    outs = output_paths(files, outdir, scale, ext)

    failed: List[Tuple[Path, str]] = []
    bar = tqdm(list(zip(files, outs)), desc="upscale", unit="img", disable=True if len(files) < 2 else None)
    # While the bar is drawn, warnings go through tqdm.write so they do not break it.
    redirect = logging_redirect_tqdm(loggers=[log]) if not bar.disable else contextlib.nullcontext()
    with redirect, bar:
        for src, dst in bar:
            try:
                upscale_file(model, src, dst, scale, args.tile)
            except ImageError as e:
                failed.append((src, str(e)))
                log.warning("skipped %s", e)
            except torch.cuda.OutOfMemoryError:
                raise UserError(f"{src}: out of accelerator memory; try a smaller --tile "
                                f"(now {args.tile or 'whole image'})") from None
    n = len(files)
    print(f"upscaled {n - len(failed)} of {n} images; {len(failed)} failed")
    return 1 if failed else 0
