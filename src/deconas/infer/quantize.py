"""int8 graphs: ONNX Runtime's static quantization of an exported fp32 graph.

QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized operator: any ONNX
host can read it, and ONNX Runtime fuses the pairs into integer kernels), weights int8 per
output channel, activations uint8 per tensor with ranges calibrated on LR patches: bicubic
(MATLAB) downscalings of HR photographs, the inputs the network sees in use.

The input and the clamped output keep the exact grid of 8-bit pixels (scale 1/255, zero
point 0), so quantizing them loses nothing an 8-bit image has. Every int8 graph carries its own
measured cost (:func:`int8_cost`, in its metadata), which ``deconas upscale --precision int8``
prints; the cost on Set5 and Set14 per shipped network is in docs/upscale.md
(``python benchmarks/bench_precision.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from deconas.constants import SEED_CALIB
from deconas.errors import UserError

# Calibration: this many LR patches of this size (about 1.5 s of fp32 inference on one core).
CALIB_PATCHES = 48
CALIB_SIZE = 64
# The cost check: the centre of each built-in photograph, this many HR pixels a side.
COST_CROP = 384


def calibration_patches(folders: Optional[Sequence] = None, scale: int = 2, count: int = CALIB_PATCHES,
                        size: int = CALIB_SIZE) -> List[np.ndarray]:
    """``count`` float32 (1, 3, size, size) LR patches in [0, 1], from the HR images of
    ``folders`` (None: the built-in photographs), spread evenly over the images, at positions
    drawn with a fixed seed (the same images give the same int8 graph)."""
    from deconas.data.datasets import builtin_images, load_hr_images
    from deconas.data.imresize import bicubic_lr, modcrop

    if folders is None:
        images = [img for _, img in builtin_images()]
    else:
        images = []
        for d in folders:  # a folder that is missing or holds no image is its one-line error
            images += [img for _, img in load_hr_images(d, purpose="train")]
    lrs = []
    for img in images:
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        lr = bicubic_lr(modcrop(img, scale), scale)
        if min(lr.shape[:2]) >= size:
            lrs.append(lr)
    if not lrs:
        where = "the built-in photographs" if folders is None else ", ".join(map(str, folders))
        raise UserError(f"--calib {where}: no colour image of at least {size * scale}x{size * scale} pixels "
                        f"to calibrate on")
    rng = np.random.default_rng(SEED_CALIB)
    patches = []
    for i in range(count):
        lr = lrs[i % len(lrs)]
        y = int(rng.integers(0, lr.shape[0] - size + 1))
        x = int(rng.integers(0, lr.shape[1] - size + 1))
        p = lr[y:y + size, x:x + size].astype(np.float32) / 255.0
        patches.append(np.ascontiguousarray(p.transpose(2, 0, 1)[None]))
    return patches


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of patches."""

    def __init__(self, name: str, patches: List[np.ndarray]):
        self.name, self.items = name, iter(patches)

    def get_next(self):
        x = next(self.items, None)
        return None if x is None else {self.name: x}

    def rewind(self):  # not needed for one calibration pass; part of the protocol
        pass


def _pixel_grid(model_path: str) -> dict:
    """Quantization overrides: the graph's input and output on the 8-bit pixel grid."""
    import onnx

    m = onnx.load(model_path, load_external_data=False)
    grid = [{"scale": np.array(1.0 / 255.0, np.float32), "zero_point": np.array(0, np.uint8)}]
    return {m.graph.input[0].name: grid, m.graph.output[0].name: grid}


def quantize_int8(fp32: bytes, patches: List[np.ndarray]) -> bytes:
    """The int8 QDQ graph of the fp32 graph ``fp32`` (serialized), calibrated on ``patches``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="deconas-int8-") as tmp:
        src, pre, out = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        Path(src).write_bytes(fp32)
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        import onnx

        name = onnx.load(pre, load_external_data=False).graph.input[0].name
        quantize_static(pre, out, _Reader(name, patches), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"TensorQuantOverrides": _pixel_grid(pre)})
        return Path(out).read_bytes()


def int8_cost(fp32: bytes, int8: bytes, scale: int) -> float:
    """PSNR (Y, crop = scale) of the int8 graph minus that of the fp32 graph, in dB, averaged over
    the centres of the built-in photographs (bicubic LR, as the protocol makes it); negative
    when int8 is worse. Both graphs run in ONNX Runtime, so this is the cost a user pays."""
    from deconas.data.datasets import builtin_images
    from deconas.data.imresize import bicubic_lr, modcrop
    from deconas.infer.backends import OnnxRuntimeBackend
    from deconas.infer.tiling import upscale_pixels
    from deconas.metrics import psnr_y

    runs = [OnnxRuntimeBackend(g) for g in (fp32, int8)]
    for r in runs:  # graphs without deconas' metadata yet: say what it will say
        r.scale, r.radius = scale, 0
    diffs = []
    for _, img in builtin_images():
        if img.ndim == 2:
            continue
        h, w = img.shape[:2]
        c = min(COST_CROP, h, w)
        hr = modcrop(img[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c], scale)
        lr = bicubic_lr(hr, scale)
        a, b = (psnr_y(upscale_pixels(r, lr, tile=0), hr, scale) for r in runs)
        diffs.append(b - a)
    return float(np.mean(diffs))
