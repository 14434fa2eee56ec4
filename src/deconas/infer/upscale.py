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
import sys
import time
import warnings
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from deconas import threads as threads_mod
from deconas.infer.backends import TorchBackend, resolve_backend
from deconas.infer.onnx_cache import onnxruntime_for_checkpoint
from deconas.infer.tiling import NonFiniteOutput, upscale_uint8
from deconas.errors import UserError, is_out_of_memory
from deconas.constants import MAX_THREADS, PRETRAINED_SCALE, pretrained_name
from deconas.data.images import IMAGE_EXTENSIONS, ImageError, list_image_files, read_image, write_image
from deconas.data.imresize import bicubic_up
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


def earlier_outputs(files: List[Path], scale: int) -> List[Path]:
    """Files that look like this command's own results for another input beside them
    (``foo_x2.png`` next to ``foo.png``): a re-run into the input folder does not upscale them again."""
    stems = {(f.parent.resolve(), f.stem) for f in files}
    tag = f"_x{scale}"
    return [f for f in files if f.stem.endswith(tag) and (f.parent.resolve(), f.stem[:-len(tag)]) in stems]


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


def upscale_file(run, src: Path, dst: Path, scale: int, tile: Optional[int]) -> int:
    """Upscale one file with backend ``run``; returns the output's pixel count."""
    # warn=False: the alpha channel is not set aside here, it is upscaled and kept
    try:
        pixels, alpha = read_image(src, warn=False)
    except ImageError as e:
        if "too large to decode safely" in str(e):  # Pillow's bomb check: the same limit as the headers'
            raise UserError(f"{src}: above Pillow's decompression-bomb limit; raise --max-pixels "
                            f"if you trust the file and have the memory") from None
        raise
    sr = upscale_uint8(run, pixels, tile=tile)
    del pixels
    if alpha is not None:
        # Alpha is a mask, not a photo: bicubic keeps its edges predictable. write_image drops
        # it (with a warning naming the file) for formats without alpha, such as JPEG.
        alpha = bicubic_up(alpha, scale)
    try:
        write_image(dst, sr, alpha)
    except OSError as e:  # the output folder, not this image, is the problem: stop here
        raise UserError(f"cannot write {dst}: {e.strerror or e}") from None
    return sr.shape[0] * sr.shape[1]


def _weights_dir() -> Path:
    # checkpoint.py imports torch; its WEIGHTS_DIR is used when it is loaded (tests point it elsewhere)
    ck = sys.modules.get("deconas.checkpoint")
    return Path(ck.WEIGHTS_DIR) if ck is not None else Path(__file__).parents[1] / "weights"


def open_network(checkpoint: Optional[str], scale: Optional[int], backend: str, device=None,
                 threads: Optional[int] = None):
    """(backend callable, scale) for ``checkpoint`` (None = the shipped network for ``scale``).

    ONNX Runtime uses the cached graph of the checkpoint file, exported (with torch) only on the
    first use. Every other case, and a shipped scale that does not exist, goes through
    :func:`deconas.checkpoint.load_model`, which checks the file and says what is wrong."""
    kind = resolve_backend(backend, device)
    shipped = scale or PRETRAINED_SCALE
    path = _weights_dir() / pretrained_name(shipped) if checkpoint is None else Path(checkpoint)
    name, want = ("pretrained", shipped) if checkpoint is None else (checkpoint, scale)

    def load(dev=None):
        from deconas.checkpoint import load_model

        return load_model(name, scale=want, device=dev)

    if kind == "onnxruntime" and path.is_file():
        run = onnxruntime_for_checkpoint(path, lambda: load("cpu")[0], threads=threads)
        if want is not None and run.scale != want:
            raise UserError(f"checkpoint {path} is a x{run.scale} network, but --scale {want} was asked for")
        return run, run.scale
    if kind == "torch":
        import torch

        if threads or device == "cpu" or not torch.cuda.is_available():
            torch.set_num_threads(threads or threads_mod.resolve(None)[0])  # a count, or the free cores
    model, meta = load(device)
    return TorchBackend(model), int(meta["scale"])


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


@dataclass
class UpscaleReport:
    written: int  # images upscaled
    failed: List[Tuple[Path, str]]  # unreadable files, skipped, with the reason
    skipped: int  # outputs that exist already
    onto_input: int  # outputs that would replace an input
    earlier_results: List[Path]  # this command's own results among the inputs, not upscaled again


def upscale_images(req: UpscaleRequest) -> UpscaleReport:
    """Check everything, then upscale every image of ``req``; a bad file is skipped and named."""
    if req.tile is not None and req.tile < 0:
        raise UserError(f"--tile {req.tile}: must be 0 (whole image) or a positive size in pixels")
    if req.max_pixels < 1:
        raise UserError(f"--max-pixels {req.max_pixels}: must be a positive number of input pixels")
    ext = normalize_ext(req.ext) if req.ext is not None else None
    files = collect_inputs(req.inputs)
    outdir = Path(req.output)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"-o {outdir}: exists and is not a folder")
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
    run, scale = open_network(req.checkpoint, req.scale, req.backend, req.device, req.threads)
    inputs = {f.resolve() for f in files}  # every file named or found: none of them is ever written
    named = {Path(n).resolve() for n in req.inputs if Path(n).is_file()}
    again = [f for f in earlier_outputs(files, scale) if f.resolve() not in named]
    files = [f for f in files if f not in again]
    outs = output_paths(files, outdir, scale, ext)
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
    _remove_stale_temporaries(outdir, [dst for _, dst in work])

    bar = tqdm(work, desc="upscale", unit="img", disable=True if len(work) < 2 else None,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
    # While the bar is drawn, warnings go through tqdm.write so they do not break it.
    redirect = logging_redirect_tqdm(loggers=[log]) if not bar.disable else contextlib.nullcontext()
    t0, done, out_px = time.perf_counter(), 0, 0
    tile_said = req.tile or "automatic"
    with redirect, bar:
        for src, dst in bar:
            try:
                out_px += upscale_file(run, src, dst, scale, req.tile)
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
            bar.set_postfix_str(f"{done / el:.2f} img/s, {out_px / 1e6 / el:.2f} Mpx/s out", refresh=False)
    return UpscaleReport(done, failed, skipped, onto_input, again)
