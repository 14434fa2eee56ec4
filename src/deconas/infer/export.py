"""``deconas export``: a checkpoint as an ONNX graph with dynamic batch, height and width.

The exporter is torch's TorchScript-based one (``dynamo=False``): it ships with every torch
this project supports, needs nothing else installed, and exports DeCoNASNet (no data-dependent
control flow) in about a second. torch >= 2.9 defaults to the torch.export-based exporter,
which needs the separate onnxscript package and brings nothing here.

The graph's metadata (ONNX ``metadata_props``) carries what deconas needs to run it without
the checkpoint: genotype, scale, channels (C), blocks (N), nodes (M), receptive_radius (the
tile overlap in LR pixels), the deconas version and the checkpoint's SHA-256; its last entry,
content_sha256, is the SHA-256 of every byte before it (:func:`deconas.infer.onnx_seal.seal`).
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path
from typing import Optional

import onnx
import torch

from deconas import __version__
from deconas.checkpoint import load_model, pretrained_path
from deconas.constants import DEFAULT_OPSET, OPSETS, PRETRAINED_SCALE
from deconas.errors import UserError
from deconas.infer.onnx_seal import seal
from deconas.runtime import atomic_write, file_digest
from deconas.space.network import receptive_radius

FORMAT = "deconas-onnx-1"
INPUT, OUTPUT = "lr", "sr"


def _metadata(model, source: Optional[str]) -> dict:
    meta = {"format": FORMAT, "deconas_version": __version__, "genotype": str(model.genotype),
            "scale": str(model.scale), "channels": str(model.channels), "blocks": str(model.blocks),
            "nodes": str(model.genotype.nodes), "receptive_radius": str(receptive_radius(model)),
            "input": "LR RGB in [0, 1], (batch, 3, height, width) float32",
            "output": "SR RGB, not clamped, (batch, 3, scale*height, scale*width) float32"}
    if source:
        meta["checkpoint_sha256"] = source
    return meta


def onnx_bytes(model, opset: int = DEFAULT_OPSET, source: Optional[str] = None) -> bytes:
    """The serialized ONNX graph of a DeCoNASNet (fp32, dynamic batch/height/width)."""
    if opset not in OPSETS:
        raise UserError(f"--opset {opset}: use {OPSETS.start}..{OPSETS.stop - 1}")
    model = model.float().eval().cpu()
    buf = io.BytesIO()
    # Any size: with dynamic axes the graph does not depend on the example's.
    example = torch.rand(1, 3, 20, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes are not the user's concern
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=True,
                          dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"},
                                        OUTPUT: {0: "batch", 2: "out_height", 3: "out_width"}})
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in _metadata(model, source).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "deconas"
    onnx.checker.check_model(proto)
    return seal(proto.SerializeToString())


def export_onnx(model, path, opset: int = DEFAULT_OPSET, source: Optional[str] = None) -> Path:
    """Write the ONNX graph of ``model`` to ``path`` atomically."""
    data = onnx_bytes(model, opset=opset, source=source)
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


@torch.no_grad()
def refuse_non_finite(model, src: Path) -> None:
    """A network whose weights or output (on a fixed probe image) hold NaN or inf is refused,
    naming the checkpoint: exported, it would give black images wherever it is used."""
    bad = next((name for name, t in model.state_dict().items() if not bool(torch.isfinite(t).all())), None)
    probe = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    if bad is not None or not bool(torch.isfinite(model(probe)).all()):
        where = f"tensor {bad} holds NaN or inf" if bad else "the network's output holds NaN or inf"
        raise UserError(f"checkpoint {src}: {where}: its weights are not usable (a diverged or damaged "
                        f"checkpoint); nothing exported")


def export_checkpoint(checkpoint: Optional[str], scale: Optional[int], output, opset: int, overwrite: bool) -> dict:
    """Write the ONNX graph of ``checkpoint`` (None: the shipped network of ``scale``) to
    ``output``; returns what was written (the network's metadata and receptive radius)."""
    out = Path(output)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"-o {out}: the output must be a .onnx file")
    if out.is_dir():
        raise UserError(f"-o {out}: is a folder")
    if opset not in OPSETS:
        raise UserError(f"--opset {opset}: use {OPSETS.start}..{OPSETS.stop - 1} "
                        f"(torch's TorchScript exporter; default {DEFAULT_OPSET})")
    if out.exists() and not overwrite:
        raise UserError(f"-o {out}: exists; pass --overwrite to replace it")
    shipped = scale or PRETRAINED_SCALE
    src = pretrained_path(shipped) if checkpoint is None else Path(checkpoint)
    model, meta = load_model("pretrained" if checkpoint is None else checkpoint,
                             scale=shipped if checkpoint is None else scale, device="cpu")
    if src.resolve() == out.resolve():
        raise UserError(f"-o {out}: is the checkpoint itself")
    refuse_non_finite(model, src)
    export_onnx(model, out, opset=opset, source=file_digest(src))
    return {**meta, "radius": receptive_radius(model), "opset": opset, "input": INPUT}


def cache_worker(argv) -> int:
    """``CHECKPOINT CACHE_FILE OPSET SHA256``: load and export (run by the backend in a child
    process). Exit 2 with the error line for a bad checkpoint, 3 when the file cannot be written."""
    path, out, opset, digest = argv
    try:
        model = load_model(path, device="cpu")[0]
    except UserError as e:
        print(e, file=sys.stderr)
        return 2
    except MemoryError:
        print(f"checkpoint {path}: out of memory while loading it", file=sys.stderr)
        return 2
    try:
        export_onnx(model, out, opset=int(opset), source=digest)
    except UserError as e:
        print(e, file=sys.stderr)
        return 3
    return 0
