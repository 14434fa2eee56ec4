"""``deconas eval``: the standard SR evaluation (docs/design.md, section 4) on benchmark folders.

For every HR image: crop to a multiple of the scale, make LR with MATLAB bicubic (rounded to
uint8), upscale it (bicubic or a network), and measure PSNR and SSIM on Y with ``scale``
border pixels cropped (and, with ``rgb``, PSNR over the R, G and B values, same crop).
Per-dataset values are means over images, as in every SR table.  Several upscalers can be
measured in one pass over the images (:func:`evaluate_methods`), which is what ``--compare``
and ``--report`` need: every image is read and degraded once, and seen by all of them together.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from deconas.data.datasets import _HR_SUBFOLDERS, find_hr_folder, hr_files
from deconas.errors import UserError
from deconas.data.images import IMAGE_EXTENSIONS, iter_folder, read_image, write_image
from deconas.data.imresize import bicubic_lr, bicubic_up, modcrop
from deconas.metrics import L, WIN, psnr_ssim_y
from deconas.checkpoint import load_model
from deconas.constants import DEFAULT_PRECISION
from deconas.progress import bar as progress_bar
from deconas.infer.inference import make_backend, upscale_array
from deconas.infer.tiling import NonFiniteOutput
from deconas.runtime import atomic_write_text, name_too_long, pick_device

__all__ = ["evaluate", "evaluate_methods", "psnr_rgb", "format_table", "bicubic_upscaler", "network_upscaler",
           "save_json"]

log = logging.getLogger("deconas")

PROTOCOL = ("HR modcropped to the scale; LR = MATLAB imresize(HR, 1/s, 'bicubic') rounded to uint8; "
            "PSNR/SSIM on Y (BT.601) with s border pixels cropped; SSIM 11x11 Gaussian sigma 1.5")
PROTOCOL_RGB = "; PSNR on RGB: mean squared error over all R, G, B values with the same s-pixel border crop"


def psnr_rgb(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR (dB, peak 255) over every channel value with ``border`` pixels cropped from each side:
    the RGB PSNR of SR tables (BasicSR's ``calculate_psnr`` without ``test_y_channel``).  A grey
    image is measured on its one channel, which equals R = G = B.  inf if identical."""
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR shapes differ: {sr.shape} vs {hr.shape}")
    b = int(border)
    if b > 0:
        sr, hr = sr[b:-b, b:-b], hr[b:-b, b:-b]
    if sr.size == 0:
        raise ValueError(f"image {hr.shape[:2]} is empty after cropping {b} border pixels")
    mse = float(np.mean((sr.astype(np.float64) - hr.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(L * L / mse)


def _dataset_name(given: Path, hr_folder: Path) -> str:
    """What the table calls a set: the folder the user named, or its parent for Set5/HR style paths."""
    given = Path(given)
    if given.is_file():
        return given.stem
    name = given.resolve().name
    if name in _HR_SUBFOLDERS or name.startswith("image_SRF_"):
        name = given.resolve().parent.name
    return name or str(hr_folder)


def _images_of(d: Path, scale: int, warn: bool):
    """(hr folder, number of files, iterator of (name, pixels)) for a folder or a single image file."""
    if d.is_file():
        if d.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UserError(f"{d}: not an image file or folder (image extensions: {', '.join(IMAGE_EXTENSIONS)})")

        def one():
            yield d.name, read_image(d, warn=warn)[0]
        return d.parent, 1, one()
    hr = find_hr_folder(d, purpose="eval", scale=scale)
    files = hr_files(hr)
    if not files:
        raise UserError(f"{hr}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return hr, len(files), iter_folder(hr, warn=warn, files=files)


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Iterate ``items`` in a background thread, ``depth`` ahead: decoding the next image (Pillow
    releases the GIL) overlaps with measuring the current one.  Exceptions come through in order."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for it in items:
                while not stop.is_set():
                    try:
                        q.put((it, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # handed to the consumer, raised there
            q.put((None, e))

    t = threading.Thread(target=work, name="deconas-prefetch", daemon=True)
    t.start()
    try:
        while True:
            it, err = q.get()
            if err is not None:
                raise err
            if it is done:
                return
            yield it
    finally:
        stop.set()


def _save_targets(benchmark_dirs, scale: int, save_dir, overwrite: bool) -> None:
    """Before any image is evaluated: every SR image ``save_dir`` would get has a name of its own,
    none is an input, and none replaces a file this run did not make (unless ``overwrite``)."""
    inputs, seen = set(), {}
    plan = []
    for given in benchmark_dirs:
        given = Path(given)
        if not given.exists():
            raise UserError(f"{given}: no such folder")
        hr = given.parent if given.is_file() else find_hr_folder(given, purpose="eval", scale=scale)
        files = [given] if given.is_file() else hr_files(hr)
        inputs |= {f.resolve() for f in files}
        name = _dataset_name(given, hr)
        plan += [(f, Path(save_dir) / name / (f.stem + ".png")) for f in files]
    for f, target in plan:
        key = target.resolve()
        if key in seen:
            raise UserError(f"--save-images: {seen[key]} and {f} would both be saved as {target}; "
                            f"save them in separate runs")
        seen[key] = f
        if key in inputs:
            raise UserError(f"--save-images: {target} is one of the images being evaluated; pick another folder")
        if target.exists() and not overwrite:
            raise UserError(f"--save-images: {target} exists; pass --overwrite to replace it, or pick another folder")
        if name_too_long(target):  # found now, not after the images before it were evaluated
            raise UserError(f"--save-images: the name of {target} is too long for the file system")


def evaluate(upscale_fn: Callable[[np.ndarray], np.ndarray], benchmark_dirs: Iterable, scale: int,
             save_dir=None, progress: bool = True, overwrite: bool = False, rgb: bool = False) -> Dict:
    """Evaluate ``upscale_fn(lr_uint8) -> sr_uint8`` on each benchmark folder at ``scale``.

    Returns ``{"scale", "protocol", "seconds", "datasets": [{"name", "folder", "images", "psnr",
    "ssim", "per_image": [{"name", "psnr", "ssim"}], "skipped": [...]}]}``; with ``rgb`` the
    datasets and their images have a ``"psnr_rgb"`` too.  ``save_dir``: write each SR image to
    ``save_dir/<dataset>/<image stem>.png``.
    """
    return evaluate_methods([upscale_fn], benchmark_dirs, scale, save_dir=save_dir, progress=progress,
                            overwrite=overwrite, rgb=rgb)[0]


def _measure(sr: np.ndarray, hr: np.ndarray, s: int, rgb: bool) -> Dict:
    psnr, ssim = psnr_ssim_y(sr, hr, s)
    row = {"psnr": psnr, "ssim": ssim}
    if rgb:
        row["psnr_rgb"] = psnr_rgb(sr, hr, s)
    return row


def evaluate_methods(upscale_fns: Sequence[Callable[[np.ndarray], np.ndarray]], benchmark_dirs: Iterable,
                     scale: int, save_dir=None, progress: bool = True, overwrite: bool = False,
                     rgb: bool = False, on_image: Optional[Callable] = None) -> List[Dict]:
    """:func:`evaluate` for several upscalers in one pass: one result per upscaler, in order.

    ``save_dir`` saves the first upscaler's images.  ``on_image(set_index, set_name, image_name,
    hr, srs, rows)`` is called for every measured image with the modcropped HR, the SR image of
    each upscaler and each one's per-image values (what ``--report`` draws its crops from), so
    that no image has to be kept after it was measured.
    """
    s = int(scale)
    if s < 1:
        raise UserError(f"scale must be a positive integer, got {scale}")
    fns = list(upscale_fns)
    if not fns:
        raise ValueError("evaluate_methods needs at least one upscaler")
    benchmark_dirs = list(benchmark_dirs)
    if save_dir is not None:
        _save_targets(benchmark_dirs, s, save_dir, overwrite)
    t0 = time.perf_counter()
    protocol = PROTOCOL + (PROTOCOL_RGB if rgb else "")
    outs = [{"scale": s, "protocol": protocol, "datasets": []} for _ in fns]
    for set_index, given in enumerate(benchmark_dirs):
        given = Path(given)
        if not given.exists():
            raise UserError(f"{given}: no such folder")
        hr_folder, n_files, items = _images_of(given, s, warn=True)
        items = _prefetch(items)
        name = _dataset_name(given, hr_folder)
        per_image, skipped = [[] for _ in fns], []
        bar = progress_bar(total=n_files, desc=f"{name} x{s}", unit="img", leave=False,
                           disable=not progress or n_files < 10)
        try:
            for img_name, hr in items:
                bar.update(1)
                w, h = hr.shape[1], hr.shape[0]
                hr = modcrop(hr, s)
                if min(hr.shape[:2]) - 2 * s < WIN:  # SSIM needs an 11x11 window inside the crop
                    log.warning("skipping %s/%s: %dx%d is too small for x%d evaluation (at least %d pixels a "
                                "side: SSIM's %d-pixel window inside the %d-pixel border)",
                                name, img_name, w, h, s, WIN + 2 * s + (-(WIN + 2 * s)) % s, WIN, s)
                    skipped.append(img_name)
                    continue
                lr = bicubic_lr(hr, s)
                srs, rows = [], []
                for fn, measured in zip(fns, per_image):
                    sr = np.asarray(fn(lr))
                    if sr.shape != hr.shape or sr.dtype != np.uint8:
                        raise UserError(f"{name}/{img_name}: the upscaler returned {sr.dtype} {sr.shape}, "
                                        f"expected uint8 {hr.shape}")
                    row = {"name": img_name, **_measure(sr, hr, s, rgb)}
                    measured.append(row)
                    srs.append(sr)
                    rows.append(row)
                if save_dir is not None:
                    target = Path(save_dir) / name / (Path(img_name).stem + ".png")
                    try:
                        write_image(target, srs[0])
                    except OSError as e:
                        raise UserError(f"--save-images: cannot write {target} ({e.strerror or e})") from None
                    except UserError as e:
                        raise UserError(f"--save-images: {e}") from None
                if on_image is not None:
                    on_image(set_index, name, img_name, hr, srs, rows)
        finally:
            bar.close()
        if not per_image[0]:
            raise UserError(f"{given}: no image large enough to evaluate at x{s}")
        for out, measured in zip(outs, per_image):
            ds = {"name": name, "folder": str(hr_folder), "images": len(measured),
                  "psnr": float(np.mean([r["psnr"] for r in measured])),
                  "ssim": float(np.mean([r["ssim"] for r in measured]))}
            if rgb:
                ds["psnr_rgb"] = float(np.mean([r["psnr_rgb"] for r in measured]))
            ds.update(per_image=measured, skipped=skipped)
            out["datasets"].append(ds)
    seconds = time.perf_counter() - t0
    for out in outs:
        out["seconds"] = seconds  # the wall time of the one pass that measured them all
    return outs


def format_table(result: Dict, method: str = "Bicubic") -> str:
    """A Table II style block: one row per dataset, PSNR with 2 and SSIM with 4 decimals (and an
    RGB PSNR column when the result has one)."""
    rgb = any("psnr_rgb" in d for d in result["datasets"])
    rows = [(d["name"], str(d["images"]), f"{d['psnr']:.2f}", f"{d['ssim']:.4f}")
            + ((f"{d['psnr_rgb']:.2f}",) if rgb else ()) for d in result["datasets"]]
    head = ("Dataset", "Images", "PSNR", "SSIM") + (("PSNR RGB",) if rgb else ())
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join([f"{r[0]:<{w[0]}}"] + [f"{v:>{n}}" for v, n in zip(r[1:], w[1:])])  # noqa: E731
    on = "PSNR dB / SSIM on Y" + (", PSNR dB on RGB" if rgb else "")
    title = f"{method} x{result['scale']}  ({on}, border {result['scale']})"
    return "\n".join([title, line(head), "  ".join("-" * x for x in w)] + [line(r) for r in rows])


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # identical images give PSNR inf; JSON has no literal for it
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    return x


def bicubic_upscaler(scale: int) -> Callable[[np.ndarray], np.ndarray]:
    """The baseline row: MATLAB bicubic up, rounded to uint8."""
    return lambda lr: bicubic_up(lr, scale)


def network_upscaler(checkpoint: str, scale: Optional[int], device: Optional[str], backend: str = "torch",
                     tile: int = 0, self_ensemble: bool = False,
                     precision: str = DEFAULT_PRECISION) -> Tuple[Callable, int, str]:
    """(upscale_fn, scale, method name) for a checkpoint (or ``'pretrained'``) at ``scale``
    (None: the network's own), run on one backend made once for every image (an ONNX Runtime
    session and its cached graph are made once)."""
    if tile < 0:
        raise UserError(f"--tile must be 0 or positive, got {tile}")
    dev = pick_device(device)
    model, meta = load_model(checkpoint, scale=scale, device=dev)
    method = "pretrained" if checkpoint == "pretrained" else Path(checkpoint).name
    if self_ensemble:
        method += " (self-ensemble)"
    if precision != DEFAULT_PRECISION:
        method += f" ({precision})"
    run = make_backend(model, backend, device=dev, precision=precision)

    def upscale_fn(lr):
        try:
            return upscale_array(run, lr, tile=tile, self_ensemble=self_ensemble)
        except NonFiniteOutput as e:
            raise UserError(f"{checkpoint}: {e}") from None
    return upscale_fn, int(scale or meta["scale"]), method


def save_json(result: Dict, path) -> None:
    """``result`` as JSON at ``path`` (atomically; inf, which JSON lacks, as a string)."""
    atomic_write_text(path, json.dumps(_jsonable(result), indent=2) + "\n")
