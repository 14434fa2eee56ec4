"""``deconas export``: a checkpoint as an ONNX graph with dynamic batch, height and width.

The exporter is torch's TorchScript-based one (``dynamo=False``): it ships with every torch
this project supports, needs nothing else installed, and exports DeCoNASNet (no data-dependent
control flow) in about a second. torch >= 2.9 defaults to the torch.export-based exporter,
which needs the separate onnxscript package and brings nothing here.

The graph's metadata (ONNX ``metadata_props``) carries what deconas needs to run it without
the checkpoint: genotype, scale, channels (C), blocks (N), nodes (M), receptive_radius (the
tile overlap in LR pixels), precision, the deconas version and the checkpoint's SHA-256; its last
entry, content_sha256, is the SHA-256 of every byte before it (:func:`deconas.infer.onnx_seal.seal`).

The output is clamped to [0, 1] inside the graph: hosts such as chaiNNer convert the output to
pixels without clipping. Precisions: fp32; fp16 (weights and arithmetic in half precision, for
GPU hosts; input and output stay float32, so a host feeds it the same array); int8 (ONNX
Runtime's static QDQ quantization of the fp32 graph, :mod:`deconas.infer.quantize`).
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
from deconas.constants import DEFAULT_OPSET, DEFAULT_PRECISION, OPSETS, PRECISIONS, PRETRAINED_SCALE
from deconas.errors import UserError
from deconas.infer.fold import ComposedUpsampler, fold_for_inference
from deconas.infer.onnx_seal import seal
from deconas.runtime import atomic_write, file_digest
from deconas.space.network import DeCoNASNet, receptive_radius

FORMAT = "deconas-onnx-1"
INPUT, OUTPUT = "lr", "sr"


def _metadata(model, source: Optional[str], precision: str) -> dict:
    meta = {"format": FORMAT, "deconas_version": __version__, "genotype": str(model.genotype),
            "scale": str(model.scale), "channels": str(model.channels), "blocks": str(model.blocks),
            "nodes": str(model.genotype.nodes), "receptive_radius": str(receptive_radius(model)),
            "precision": precision,
            "input": "LR RGB in [0, 1], (batch, 3, height, width) float32",
            "output": "SR RGB clamped to [0, 1], (batch, 3, scale*height, scale*width) float32"}
    if source:
        meta["checkpoint_sha256"] = source
    return meta


class Clamped(torch.nn.Module):
    """The exported function: the network in its weights' dtype, its output as float32 in [0, 1]."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        dtype = next(self.net.parameters()).dtype
        return self.net(x.to(dtype)).float().clamp(0.0, 1.0)


def _traced(model, opset: int, half: bool, fold: bool = True, upsampler: bool = False):
    """(the ONNX graph, the network it was traced from: folded where ``fold``)."""
    net = model.float().eval().cpu()
    if fold and isinstance(net, DeCoNASNet):
        net = fold_for_inference(net, upsampler=upsampler)  # a copy: the same function in fewer operations
    if half:
        import copy

        net = copy.deepcopy(net).half()  # the caller's network stays fp32
    buf = io.BytesIO()
    # Any size: with dynamic axes the graph does not depend on the example's.
    example = torch.rand(1, 3, 20, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes are not the user's concern
        torch.onnx.export(Clamped(net), (example,), buf, dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=True,
                          dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"},
                                        OUTPUT: {0: "batch", 2: "out_height", 3: "out_width"}})
    return onnx.load_from_string(buf.getvalue()), net


def onnx_bytes(model, opset: int = DEFAULT_OPSET, source: Optional[str] = None,
               precision: str = DEFAULT_PRECISION, calib=None, fold: bool = True,
               compose: bool = False) -> bytes:
    """The serialized, sealed ONNX graph of a DeCoNASNet (dynamic batch/height/width).
    ``calib``: int8 only, the calibration LR patches (None: from the built-in photographs).
    ``fold``: export the folded network (:mod:`deconas.infer.fold`; False for comparisons).
    ``compose`` (fp32): UPNet and the tail as one LR convolution too (:func:`_with_small_branch`),
    for the graphs deconas runs itself; exported files keep the plain graph, which any host runs."""
    if opset not in OPSETS:
        raise UserError(f"--opset {opset}: use {OPSETS.start}..{OPSETS.stop - 1}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    proto, _ = _traced(model, opset, half=precision == "fp16", fold=fold)
    if compose and fold and precision == "fp32" and isinstance(model, DeCoNASNet):
        composed, net = _traced(model, opset, half=False, upsampler=True)
        if isinstance(net.upsample, ComposedUpsampler):  # (not where the weights are not finite)
            proto = _with_small_branch(composed, proto, 2 * net.upsample.radius)
    meta = _metadata(model, source, precision)
    if precision == "int8":
        from deconas.infer.quantize import calibration_patches, int8_cost, quantize_int8

        patches = calibration_patches(None, model.scale) if calib is None else calib
        fp32 = proto.SerializeToString()
        int8 = quantize_int8(fp32, patches)
        meta["int8_cost_db"] = f"{int8_cost(fp32, int8, model.scale):.3f}"
        meta["int8_cost_on"] = "PSNR (Y) against fp32, centres of the built-in photographs"
        proto = onnx.load_from_string(int8)
        del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "deconas"
    onnx.checker.check_model(proto)
    return seal(proto.SerializeToString())


def _with_small_branch(composed: onnx.ModelProto, plain: onnx.ModelProto, min_side: int) -> onnx.ModelProto:
    """One graph that runs ``composed`` (the composed upsampler) and, on inputs with a side under
    ``min_side`` LR pixels, ``plain``: an ONNX ``If`` on the input's size. The composed upsampler's
    border strips cover the whole image below that size, and a traced graph cannot keep its
    Python test (``ComposedUpsampler.forward``). Each branch holds its own weights, so ONNX
    Runtime prepacks them as it does in a plain graph."""
    from onnx import TensorProto, helper

    def branch(graph: onnx.GraphProto, prefix: str) -> onnx.GraphProto:
        keep = {INPUT, ""}
        name = lambda v: v if v in keep else prefix + v  # noqa: E731
        nodes = []
        for node in graph.node:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            n.name = prefix + node.name
            n.input[:] = [name(v) for v in node.input]
            n.output[:] = [name(v) for v in node.output]
            nodes.append(n)
        weights = []
        for t in graph.initializer:
            w = onnx.TensorProto()
            w.CopyFrom(t)
            w.name = prefix + t.name
            weights.append(w)
        out = helper.make_tensor_value_info(name(OUTPUT), TensorProto.FLOAT, None)
        return helper.make_graph(nodes, prefix.strip("/"), [], [out], initializer=weights)

    g = composed.graph
    # Shape then Slice (not Shape's start/end, opset 15 and later): every opset deconas exports
    nodes = [helper.make_node("Shape", [INPUT], ["shape"]),
             helper.make_node("Slice", ["shape", "hw_start", "hw_end"], ["hw"]),
             helper.make_node("ReduceMin", ["hw"], ["side"], keepdims=0),
             helper.make_node("Less", ["side", "min_side"], ["small"]),
             helper.make_node("If", ["small"], [OUTPUT], then_branch=branch(plain.graph, "small/"),
                              else_branch=branch(g, "composed/"))]
    graph = helper.make_graph(nodes, g.name, list(g.input), list(g.output),
                              initializer=[helper.make_tensor("min_side", TensorProto.INT64, [], [min_side]),
                                           helper.make_tensor("hw_start", TensorProto.INT64, [1], [2]),
                                           helper.make_tensor("hw_end", TensorProto.INT64, [1], [4])])
    model = helper.make_model(graph, opset_imports=list(composed.opset_import))
    model.ir_version = composed.ir_version
    return model


def export_onnx(model, path, opset: int = DEFAULT_OPSET, source: Optional[str] = None,
                precision: str = DEFAULT_PRECISION, calib=None, compose: bool = False) -> Path:
    """Write the ONNX graph of ``model`` to ``path`` atomically."""
    data = onnx_bytes(model, opset=opset, source=source, precision=precision, calib=calib, compose=compose)
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


def export_checkpoint(checkpoint: Optional[str], scale: Optional[int], output, opset: int, overwrite: bool,
                      precision: str = DEFAULT_PRECISION, calib=None) -> dict:
    """Write the ONNX graph of ``checkpoint`` (None: the shipped network of ``scale``) to
    ``output``; returns what was written (the network's metadata and receptive radius).
    ``calib``: int8 only, folders of HR images to calibrate on (None: the built-in photographs)."""
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
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if calib is not None and precision != "int8":
        raise UserError(f"--calib: only int8 is calibrated (this export is {precision})")
    shipped = scale or PRETRAINED_SCALE
    src = pretrained_path(shipped) if checkpoint is None else Path(checkpoint)
    model, meta = load_model("pretrained" if checkpoint is None else checkpoint,
                             scale=shipped if checkpoint is None else scale, device="cpu")
    if src.resolve() == out.resolve():
        raise UserError(f"-o {out}: is the checkpoint itself")
    refuse_non_finite(model, src)
    patches = None
    if precision == "int8":
        from deconas.infer.quantize import calibration_patches

        patches = calibration_patches(calib, model.scale)  # a bad folder fails here, before any work
    export_onnx(model, out, opset=opset, source=file_digest(src), precision=precision, calib=patches)
    info = {**meta, "radius": receptive_radius(model), "opset": opset, "input": INPUT, "precision": precision}
    if precision == "int8":
        graph_meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
        info["int8_cost_db"] = float(graph_meta["int8_cost_db"])
    return info


def cache_worker(argv) -> int:
    """``CHECKPOINT CACHE_FILE OPSET SHA256 PRECISION``: load and export (run by the backend in a
    child process). Exit 2 with the error line for a bad checkpoint, 3 when the file cannot be written."""
    path, out, opset, digest, precision = argv
    try:
        model = load_model(path, device="cpu")[0]
    except UserError as e:
        print(e, file=sys.stderr)
        return 2
    except MemoryError:
        print(f"checkpoint {path}: out of memory while loading it", file=sys.stderr)
        return 2
    try:
        export_onnx(model, out, opset=int(opset), source=digest, precision=precision, compose=True)
    except UserError as e:
        print(e, file=sys.stderr)
        return 3
    return 0
