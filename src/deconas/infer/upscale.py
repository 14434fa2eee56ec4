"""``deconas upscale``: super-resolve image files and folders with a trained network.

Every argument is checked and the whole file list built before the first image is touched, so
a typo fails at once (exit 2). In a job of several images, files that turn out unreadable are
skipped with a one-line warning each; the rest are written, and the exit code is 1 when
anything failed. A job of one named file has nothing to go on with: its failure is the error
(one line, exit 2).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm.contrib.logging import logging_redirect_tqdm

from deconas import threads as threads_mod
from deconas.infer.backends import TorchBackend, keep_freed_memory, resolve_precision
from deconas.infer.onnx_cache import onnxruntime_for_checkpoint
from deconas.infer.tiling import NonFiniteOutput, upscale_pixels
from deconas.errors import UserError, is_out_of_memory
from deconas.constants import (DEFAULT_UPSCALE_PRECISION, MAX_THREADS, OUTSCALE_RANGE, PRETRAINED_SCALE, SCALES,
                               pretrained_name)
from deconas.data.images import IMAGE_EXTENSIONS, ImageError, list_image_files, read_picture, write_image
from deconas.data.imresize import imresize
from deconas.progress import bar as progress_bar
from deconas.runtime import name_too_long, pick_device

# torch is imported only where the network runs with torch or is exported: with ONNX Runtime and
# a cached graph a run never loads it (start-up time and about 220 MB of memory).

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


def _walk(folder: Path, skip: Optional[Path]) -> List[Path]:
    """The image files of ``folder`` and of its subfolders, sorted by path; hidden folders and
    ``skip`` (the output folder, when it lies inside the input tree) are left out."""
    files: List[Path] = []
    for root, dirs, _ in os.walk(folder, onerror=lambda e: log.warning("skipped %s: %s", e.filename,
                                                                       e.strerror or e)):
        r = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or (r / d).resolve() != skip))
        try:
            files += list_image_files(r)
        except UserError as e:  # an unreadable subfolder is skipped like a bad file
            log.warning("skipped %s", e)
    return files


def collect_inputs(inputs: List[str], recursive: bool = False,
                   outdir: Optional[Path] = None) -> List[Tuple[Path, Path]]:
    """(image file, its folder relative to the named folder) for the files named directly
    (relative folder ``.``) and the image files (by extension) inside the named folders: directly
    inside, or with ``recursive`` in the whole tree, whose structure the outputs then mirror."""
    files: List[Tuple[Path, Path]] = []
    skip = outdir.resolve() if outdir is not None else None
    for name in inputs:
        p = Path(name)
        if p.is_dir():
            found = _walk(p, skip) if recursive else list_image_files(p)
            files += [(f, f.parent.relative_to(p)) for f in found]
        elif p.is_file():
            files.append((p, Path(".")))
        else:
            raise UserError(f"input {name}: no such file or folder")
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(inputs)}"
                        + ("" if recursive else " (--recursive also looks in subfolders)"))
    return files


def earlier_outputs(files: List[Path], suffix: str) -> List[Path]:
    """Files that look like this command's own results for another input beside them
    (``foo_x2.png`` next to ``foo.png``): a re-run into the input folder does not upscale them again."""
    if not suffix:
        return []
    stems = {(f.parent.resolve(), f.stem) for f in files}
    tag = f"_{suffix}"
    return [f for f in files if f.stem.endswith(tag) and (f.parent.resolve(), f.stem[:-len(tag)]) in stems]


def final_size(h: int, w: int, outscale: float) -> Tuple[int, int]:
    """``round(F x size)`` per axis, halves up (as MATLAB's round), at least one pixel."""
    return max(1, math.floor(outscale * h + 0.5)), max(1, math.floor(outscale * w + 0.5))


def network_scale(outscale: float) -> int:
    """The shipped scale for ``--outscale F``: the nearest not below F (the largest above it)."""
    return min([s for s in SCALES if s >= outscale - 1e-9] or [max(SCALES)])


def resize_to(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """MATLAB-bicubic ``imresize`` of uint8/uint16 ``a`` to ``size``, rounded (halves up) and
    clipped to its dtype (the protocol's own resize, so --outscale 2 at x2 changes nothing)."""
    if a.shape[:2] == tuple(size):
        return a
    top = np.iinfo(a.dtype).max
    y = imresize(a, output_shape=size)
    np.add(y, 0.5, out=y)
    np.clip(y, 0, top, out=y)
    return np.floor(y).astype(a.dtype)


def image_pixels(path: Path) -> int:
    """Width x height from the file's header (nothing decoded); 0 when the header is unreadable
    (the file is then skipped, with its reason, when it is read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the decompression-bomb warning: the caller compares sizes itself
            with Image.open(path) as im:
                return im.size[0] * im.size[1]
    except Exception:
        return 0


def output_paths(files: List[Tuple[Path, Path]], outdir: Path, suffix: str, ext) -> List[Path]:
    """``OUTDIR/<relative folder>/<stem>_<suffix><ext>`` for each input; two inputs mapping to one
    name is an error (rather than one silently overwriting the other)."""
    seen: Dict[Path, Path] = {}
    outs = []
    tag = f"_{suffix}" if suffix else ""
    for f, rel in files:
        e = ext or (f.suffix.lower() if f.suffix.lower() in IMAGE_EXTENSIONS else FALLBACK_EXT)
        out = outdir / rel / f"{f.stem}{tag}{e}"
        if out in seen:
            raise UserError(f"{seen[out]} and {f} would both be written to {out}; "
                            f"upscale them into different folders")
        seen[out] = f
        outs.append(out)
    return outs


def upscale_file(run, src: Path, dst: Path, scale: int, tile: Optional[int],
                 outscale: Optional[float] = None) -> int:
    """Upscale one file with backend ``run`` (then to ``outscale`` when it is not the network's
    scale), at the file's bit depth, keeping its colour profile and EXIF; returns the output's
    pixel count."""
    try:
        pic = read_picture(src)
    except ImageError as e:
        if "too large to decode safely" in str(e):  # Pillow's bomb check: the same limit as the headers'
            raise UserError(f"{src}: above Pillow's decompression-bomb limit; raise --max-pixels "
                            f"if you trust the file and have the memory") from None
        raise
    h, w = pic.pixels.shape[:2]
    size = final_size(h, w, outscale) if outscale is not None else (scale * h, scale * w)
    sr = resize_to(upscale_pixels(run, pic.pixels, tile=tile), size)
    # Alpha is a mask, not a photo: bicubic keeps its edges predictable. write_image drops
    # it (with a warning naming the file) for formats without alpha, such as JPEG.
    alpha = None if pic.alpha is None else resize_to(pic.alpha, size)
    del pic.pixels
    try:
        write_image(dst, sr, alpha, icc=pic.icc, exif=pic.exif)
    except OSError as e:  # the output folder, not this image, is the problem: stop here
        raise UserError(f"cannot write {dst}: {e.strerror or e}") from None
    return sr.shape[0] * sr.shape[1]


def _weights_dir() -> Path:
    # checkpoint.py imports torch; its WEIGHTS_DIR is used when it is loaded (tests point it elsewhere)
    ck = sys.modules.get("deconas.checkpoint")
    return Path(ck.WEIGHTS_DIR) if ck is not None else Path(__file__).parents[1] / "weights"


def open_network(checkpoint: Optional[str], scale: Optional[int], backend: str, device=None,
                 threads: Optional[int] = None, precision: Optional[str] = DEFAULT_UPSCALE_PRECISION):
    """(backend callable, scale) for ``checkpoint`` (None = the shipped network for ``scale``);
    ``precision`` as :func:`deconas.infer.backends.resolve_precision` resolves it.

    ONNX Runtime uses the cached graph of the checkpoint file, exported (with torch) only on the
    first use. Every other case, and a shipped scale that does not exist, goes through
    :func:`deconas.checkpoint.load_model`, which checks the file and says what is wrong."""
    precision, kind = resolve_precision(precision, backend, device)
    shipped = scale or PRETRAINED_SCALE
    path = _weights_dir() / pretrained_name(shipped) if checkpoint is None else Path(checkpoint)
    name, want = ("pretrained", shipped) if checkpoint is None else (checkpoint, scale)

    def load(dev=None):
        from deconas.checkpoint import load_model

        return load_model(name, scale=want, device=dev)

    if kind == "onnxruntime" and path.is_file():
        run = onnxruntime_for_checkpoint(path, lambda: load("cpu")[0], threads=threads, precision=precision)
        if want is not None and run.scale != want:
            raise UserError(f"checkpoint {path} is a x{run.scale} network, but --scale {want} was asked for")
        return run, run.scale
    if kind == "torch":
        import torch

        if threads or device == "cpu" or not torch.cuda.is_available():
            torch.set_num_threads(threads or threads_mod.resolve(None)[0])  # a count, or the free cores
            keep_freed_memory()  # this process runs the network to the end
    model, meta = load(device)
    return TorchBackend(model, precision=precision, fold=True), int(meta["scale"])


def _remove_stale_temporaries(outdir: Path, outputs: List[Path]) -> None:
    """The temporaries a killed run left for the outputs this one writes (``.NAME.*.tmp``), and only those."""
    if not outdir.is_dir():
        return
    for dst in outputs:
        for tmp in outdir.glob(f".{glob_escape(dst.name)}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


@dataclass
class UpscaleRequest:
    """What ``deconas upscale`` is asked to do (every option typed; see ``deconas upscale --help``)."""
    inputs: List[str]  # image files or folders
    output: Path  # the output folder
    checkpoint: Optional[str]  # None: the shipped network of ``scale``
    scale: Optional[int]  # None: the checkpoint's own (the shipped x2 without one)
    tile: Optional[int]  # LR tile size; 0 = whole image, None = automatic
    ext: Optional[str]  # output format; None = the input's
    overwrite: bool  # replace existing outputs (never an input)
    max_pixels: int  # refuse inputs above this many pixels, read from their headers
    device: Optional[str]
    backend: str
    threads: Optional[int]
    recursive: bool = False  # also subfolders' images, the tree mirrored under ``output``
    outscale: Optional[float] = None  # final factor (network, then MATLAB bicubic); None = the network's
    suffix: Optional[str] = None  # NAME_SUFFIX.EXT; None = x<outscale>
    precision: Optional[str] = None  # auto / fp32 / bf16 (torch) / int8 (ONNX Runtime); None = auto


@dataclass
class UpscaleReport:
    written: int  # images upscaled
    failed: List[Tuple[Path, str]]  # unreadable files, skipped, with the reason
    skipped: int  # outputs that exist already
    onto_input: int  # outputs that would replace an input
    earlier_results: List[Path]  # this command's own results among the inputs, not upscaled again
    arithmetic: str = ""  # how the network ran, e.g. "bf16 with torch", "fp32 with ONNX Runtime"


def upscale_images(req: UpscaleRequest) -> UpscaleReport:
    """Check everything, then upscale every image of ``req``; a bad file is skipped and named."""
    if req.tile is not None and req.tile < 0:
        raise UserError(f"--tile {req.tile}: must be 0 (whole image) or a positive size in pixels")
    if req.max_pixels < 1:
        raise UserError(f"--max-pixels {req.max_pixels}: must be a positive number of input pixels")
    ext = normalize_ext(req.ext) if req.ext is not None else None
    if req.outscale is not None and not (OUTSCALE_RANGE[0] <= req.outscale <= OUTSCALE_RANGE[1]):
        raise UserError(f"--outscale {req.outscale:g}: use a factor from {OUTSCALE_RANGE[0]:g} to {OUTSCALE_RANGE[1]:g}")
    if req.suffix is not None and (os.sep in req.suffix or "/" in req.suffix or req.suffix in (".", "..")):
        raise UserError(f"--suffix {req.suffix!r}: must not hold a path separator")
    outdir = Path(req.output)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"-o {outdir}: exists and is not a folder")
    found = collect_inputs(req.inputs, req.recursive, outdir)
    files = [f for f, _ in found]
    # Pillow's own bomb check (a warning, then an error at 2x) follows the limit asked for.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, req.max_pixels)
    # Sizes come from the headers, before any image is decoded or any memory is spent on it.
    for f in files:
        n = image_pixels(f)
        if n > req.max_pixels:
            raise UserError(f"{f}: {n / 1e6:.1f} Mpx is above the limit of {req.max_pixels / 1e6:.1f} Mpx "
                            f"per input image; raise it with --max-pixels if you have the memory")
    if req.threads is not None and not 1 <= req.threads <= MAX_THREADS:
        raise UserError(f"--threads {req.threads}: use 1..{MAX_THREADS} threads")
    if req.device is not None:
        pick_device(req.device)  # a bad name is one line here, before any network is loaded
    want = req.scale
    if want is None and req.outscale is not None and req.checkpoint is None:
        want = network_scale(req.outscale)
    precision = req.precision or DEFAULT_UPSCALE_PRECISION
    run, scale = open_network(req.checkpoint, want, req.backend, req.device, req.threads, precision)
    outscale = None if req.outscale is None or abs(req.outscale - scale) < 1e-9 else req.outscale
    suffix = req.suffix if req.suffix is not None else f"x{req.outscale if req.outscale is not None else scale:g}"
    inputs = {f.resolve() for f in files}  # every file named or found: none of them is ever written
    named = {Path(n).resolve() for n in req.inputs if Path(n).is_file()}
    again = {f for f in earlier_outputs(files, suffix) if f.resolve() not in named}
    found = [(f, rel) for f, rel in found if f not in again]
    files = [f for f, _ in found]
    outs = output_paths(found, outdir, suffix, ext)
    work, skipped, onto_input = [], 0, 0
    failed: List[Tuple[Path, str]] = []
    # One file named by itself: there are no others to go on with, so its failure is the error.
    single = len(req.inputs) == 1 and len(files) == 1 and Path(req.inputs[0]).is_file()

    def fail(src: Path, why: str) -> None:
        if single:
            raise UserError(why)
        failed.append((src, why))
        log.warning("skipped %s", why)

    for src, dst in zip(files, outs):
        if dst.resolve() in inputs:  # even with --overwrite: it may be the user's own file
            log.warning("skipped %s: its output %s is one of the inputs and is left as it is", src, dst)
            onto_input += 1
        elif name_too_long(dst):  # this image's problem, not the folder's: the others go on
            fail(src, f"{src}: its output name is too long for the file system")
        elif dst.exists() and not req.overwrite:
            skipped += 1
        else:
            work.append((src, dst))
    for folder in {dst.parent for _, dst in work}:
        _remove_stale_temporaries(folder, [dst for _, dst in work if dst.parent == folder])

    bar = progress_bar(work, desc="upscale", unit="img", disable=len(work) < 2)
    # While a terminal bar is drawn, warnings go through tqdm.write so they do not break it.
    drawn = not bar.disable and type(bar).__name__ == "tqdm"
    redirect = logging_redirect_tqdm(loggers=[log]) if drawn else contextlib.nullcontext()
    t0, done, out_px = time.perf_counter(), 0, 0
    tile_said = req.tile or "automatic"
    with redirect, bar:
        for src, dst in bar:
            try:
                out_px += upscale_file(run, src, dst, scale, req.tile, outscale)
                done += 1
            except ImageError as e:
                fail(src, str(e))
            except NonFiniteOutput as e:
                raise UserError(f"{req.checkpoint or 'the shipped network'}: {e}") from None
            except UserError:
                raise
            except Exception as e:
                if type(e).__name__ == "OutOfMemoryError":  # torch.cuda's, without importing torch
                    raise UserError(f"{src}: out of accelerator memory; try a smaller --tile "
                                    f"(now {tile_said})") from None
                if not is_out_of_memory(e):
                    raise
                raise UserError(f"{src}: out of memory; try a smaller --tile (now {tile_said}) "
                                f"or a lower --max-pixels") from None
            el = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{out_px / 1e6 / el:.2f} Mpx/s out", refresh=False)
    return UpscaleReport(done, failed, skipped, onto_input, sorted(again), arithmetic_of(run))


def arithmetic_of(run) -> str:
    """How a backend runs the network, for the summary line: its precision and its runtime."""
    if getattr(run, "name", None) == "onnxruntime":
        return f"{run.meta.get('precision', 'fp32')} with ONNX Runtime"
    return f"{getattr(run, 'precision', 'fp32')} with torch"
