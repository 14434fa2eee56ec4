"""``deconas profile``: the latency table of a search space on this machine, for the ``latency``
penalty (:mod:`deconas.space.latency` holds the model it fills in).

Every part of a network is timed alone, as an ONNX graph in ONNX Runtime on the CPU (the
runtime ``deconas upscale`` deploys), or as a torch module on CUDA when ``--device cuda``: one
input of the configured size, batch 1, the median of ``repeats`` runs after a warm-up. The
runtime's own per-call overhead (a graph that does nothing) is taken out of every part and
counted once. ``fixed`` is what the whole network of the empty cell measures beyond what its
parts predict, so SFENet, the dense connections, GFF's 3x3 conv, upsampler and tail, and
whatever the parts alone do not show, are in it.
"""

from __future__ import annotations

import io
import statistics
import time
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from deconas.infer.backends import OnnxRuntimeBackend
from deconas.infer.export import onnx_bytes
from deconas.space.genotype import Genotype, num_pairs
from deconas.space.latency import FORMAT, predict_latency
from deconas.space.layers import ChannelAttention, Op, conv
from deconas.space.network import DeCoNASNet
from deconas.space.ops import OPS


class _OpPart(nn.Module):
    """Operation ``k`` reading ``j`` inputs (ReLU, then the op on j x C channels)."""

    def __init__(self, k: int, j: int, c: int):
        super().__init__()
        self.op = Op(k, j * c, c)

    def forward(self, x):
        return self.op(x)


class _Node(nn.Module):
    """What a mix node costs beyond its operations: ReLU and channel attention."""

    def __init__(self, c: int):
        super().__init__()
        self.ca = ChannelAttention(c)

    def forward(self, x):
        return self.ca(torch.relu(x))


class _Lff(nn.Module):
    """LFF's 1x1 conv over ``j`` inputs, plus the local residual."""

    def __init__(self, j: int, c: int):
        super().__init__()
        self.c, self.conv = c, conv(j * c, c, 1)

    def forward(self, x):
        return self.conv(x) + x[:, :self.c]


class _Nothing(nn.Module):
    def forward(self, x):
        return x * 1.0


class _Concat(nn.Module):
    """Joining ``j`` feature maps of C channels (what an op, LFF and GFF read), timed as the
    concatenation of j views of one input."""

    def __init__(self, j: int):
        super().__init__()
        self.j = j

    def forward(self, x):
        return torch.cat([x + i for i in range(self.j)], 1)


class _Mean(nn.Module):
    """The mean of ``n`` operations' outputs (a node with several active ops)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        return torch.stack([x + i for i in range(self.n)], 0).mean(0)


class Timer:
    """Median milliseconds of one module's forward at one input shape, on the chosen runtime."""

    def __init__(self, device: str, threads: Optional[int], repeats: int):
        self.device, self.threads, self.repeats = device, threads, max(3, repeats)

    def _median(self, run) -> float:
        for _ in range(2):
            run()
        ts = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            run()
            ts.append(time.perf_counter() - t0)
        return 1000 * statistics.median(ts)

    def network(self, model: DeCoNASNet, shape) -> float:
        if self.device == "cpu":
            return self._ort(onnx_bytes(model), shape)
        return self._cuda(model, shape)

    def module(self, module: nn.Module, shape) -> float:
        if self.device == "cpu":
            module = module.eval()
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (torch.rand(*shape),), buf, dynamo=False, opset_version=17,
                                  input_names=["x"], output_names=["y"])
            return self._ort(buf.getvalue(), shape)
        return self._cuda(module, shape)

    def _ort(self, graph: bytes, shape) -> float:
        run = OnnxRuntimeBackend(graph, self.threads)
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        return self._median(lambda: run(x))

    @torch.no_grad()
    def _cuda(self, module: nn.Module, shape) -> float:
        module = module.to(self.device).eval()
        x = torch.rand(*shape, device=self.device)

        def run():
            module(x)
            torch.cuda.synchronize()
        return self._median(run)


def profile(scale: int, channels: int, blocks: int, nodes: int, size: Tuple[int, int], device: str = "cpu",
            threads: Optional[int] = None, repeats: int = 20, progress=None) -> dict:
    """The latency table (docs/search.md, "The latency table") of the space at LR ``size``."""
    torch.manual_seed(0)
    h, w, c = size[0], size[1], channels
    timer = Timer(device, threads, repeats)
    tick = progress or (lambda what: None)
    overhead = timer.module(_Nothing(), (1, c, h, w))
    part = lambda module, inputs: max(0.0, timer.module(module, (1, inputs * c, h, w)) - overhead)  # noqa: E731
    table = {"format": FORMAT, "runtime": "onnxruntime-cpu" if device == "cpu" else f"torch-{device}",
             "threads": threads, "input": [h, w], "scale": scale, "channels": c, "blocks": blocks, "nodes": nodes,
             "unit": "ms", "repeats": timer.repeats, "overhead": overhead, "op": {}}
    for k, op in enumerate(OPS):
        tick(f"op {op.key}")
        table["op"][op.key] = [part(_OpPart(k, j, c), j) for j in range(1, nodes + 1)]
    tick("node")
    table["node"] = part(_Node(c), 1)
    # Joining and averaging, net of the j (or n) elementwise adds that make their inputs.
    add = part(_Concat(1), 1)
    table["concat"] = [0.0] + [max(0.0, part(_Concat(j), 1) - j * add) for j in range(2, max(nodes, blocks) + 2)]
    table["mean"] = [0.0] + [max(0.0, part(_Mean(n), 1) - n * add) for n in range(2, len(OPS) + 1)]
    tick("lff")
    table["lff"] = [part(_Lff(j, c), j) for j in range(1, nodes + 2)]
    tick("gff")
    table["gff"] = [part(conv(j * c, c, 1), j) for j in range(1, blocks + 2)]
    tick("fixed")
    empty = Genotype((0,) * num_pairs(nodes))
    table["fixed"] = 0.0
    measured = timer.network(DeCoNASNet(empty, scale, c, blocks), (1, 3, h, w))
    table["fixed"] = max(0.0, measured - predict_latency(empty, table))
    return table
