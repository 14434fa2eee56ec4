"""A folded DeCoNASNet (:mod:`deconas.infer.fold`) run on channels-last buffers, for torch on
the CPU, where its bf16 copy runs.

The 1x1 convolutions over concatenations (LFF, the dense connections, GFF) cost a copy of every
map they read before any arithmetic: on 2 cores the concatenations took a fifth to a quarter of
the bf16 network's time (docs/upscale.md). Here every node's output is written into its block's
buffer (x_in, n0, n1, ...) and every block's output into one buffer (F0, B0, B1, ...) as they are
made; in channels-last memory a run of slots of such a buffer is a matrix with a row stride, so
those 1x1 convolutions are matrix products that read it in place. Only the 3x3 operations that
read several inputs still concatenate them. On the CPU, a mix node's sum of its operations and
its ReLU happen inside the operations' last convolutions (oneDNN's fused convolutions, the ones
torch's compiler emits), not as passes over memory of their own.

Outputs equal the network's up to float rounding (the order of additions differs).
"""

from __future__ import annotations

import functools
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

CL = torch.channels_last


class BufferedNetwork(nn.Module):
    """``net``: a folded DeCoNASNet (mix nodes summed), in channels_last; input channels_last."""

    def __init__(self, net: nn.Module):
        super().__init__()
        if not all(node.summed or not node.ops for dnb in net.dnbs for node in dnb.nodes):
            raise ValueError("BufferedNetwork runs a folded network (deconas.infer.fold.fold_for_inference)")
        self.net = net
        self.scale, self.channels = net.scale, net.channels

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        n, c = self.net, self.channels
        x_grl = n.sfe1(lr)
        f0 = n.sfe2(x_grl)
        blocks = _empty(f0, (len(n.dnbs) + 1) * c)  # F0, B0, B1, ...
        _slot(blocks, 0, 1, c).copy_(f0)
        cell = _empty(f0, (len(n.dnbs[0].nodes) + 1) * c)  # x_in, n0, n1, ... of the block
        _slot(cell, 0, 1, c).copy_(f0)
        for d, dnb in enumerate(n.dnbs):
            self._block(dnb, cell, _slot(blocks, d + 1, d + 2, c))
            if d < len(n.dense):  # the next block's input, written where it reads it
                width, cell = cell.shape[1], None  # this block's buffer is free for the next one
                cell = _empty(f0, width)
                _matmul_1x1(n.dense[d], [(0, d + 2)], blocks, c, out=_slot(cell, 0, 1, c))
        g = _matmul_1x1(n.gff[0], _runs(n.gff_inputs), blocks, c)
        y = _conv(n.gff[1], g, add=x_grl)
        return n.tail(n.upsample(y))

    def _block(self, dnb, cell: torch.Tensor, out: torch.Tensor) -> None:
        """DNB ``dnb`` on the block input in slot 0 of ``cell``, its nodes' outputs written into
        the slots after it, its output (LFF, with the residual) into ``out``."""
        c = self.channels
        x = _slot(cell, 0, 1, c)
        active = [torch.clamp_min(x, 0, out=_empty(x, c))]  # x_in's ReLU; nodes are >= 0 already
        active += [_slot(cell, m + 1, m + 2, c) for m in range(len(dnb.nodes))]
        inputs: Dict[Tuple[int, ...], torch.Tensor] = {}  # what operations read, made once
        for m, node in enumerate(dnb.nodes):
            if len(node.ops) == 0:
                y = active[0] if m == 0 else torch.relu(active[m])  # ReLU of the previous node (or x_in)
            else:
                y = None
                for k, (op, idx) in enumerate(zip(node.ops, node.op_inputs)):
                    key = tuple(idx)
                    if key not in inputs:
                        parts = [active[j] for j in idx]
                        inputs[key] = (parts[0].contiguous(memory_format=CL) if len(parts) == 1
                                       else torch.cat(parts, 1, out=_empty(x, len(parts) * c)))
                    src = op.dw(inputs[key]) if op.spec.separable else inputs[key]
                    # the sum of the operations and its ReLU, inside the last convolution of each
                    y = _conv(op.pw if op.spec.separable else op.conv, src, add=y, relu=k == len(node.ops) - 1)
            torch.mul(y, node.ca.body(y), out=active[m + 1])
        _matmul_1x1(dnb.lff, _runs(dnb.lff_inputs), cell, c, out=out)  # LFF reads x_in raw
        if not dnb.residual_in_lff:
            _matrix(out).add_(_matrix(x))


def _conv(conv: nn.Conv2d, x: torch.Tensor, add=None, relu: bool = False) -> torch.Tensor:
    """``conv(x)``, plus ``add``, then the ReLU: in one oneDNN primitive on the CPU (the
    additions and the ReLU are then no passes over memory of their own), else in steps."""
    if x.device.type == "cpu" and _fused_convolutions(x.dtype):
        args = (conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu" if relu else "none", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(x, add, *args, "add", 1.0, "relu" if relu else None, [], "")
    y = conv(x) if add is None else conv(x).add_(add)
    return y.relu_() if relu else y


@functools.lru_cache(maxsize=None)
def _fused_convolutions(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch has oneDNN's fused convolutions (the ops its compiler emits on the CPU)
    for ``dtype`` and they compute what the plain ones do, checked once on a small case (oneDNN's
    bf16 primitives need AVX-512 or AVX-NE-CONVERT; without them torch refuses)."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        g = torch.Generator().manual_seed(0)
        conv = nn.Conv2d(4, 4, 3, padding=2, dilation=2).eval().to(dtype)
        x, other = (torch.randn(1, 4, 6, 5, generator=g).to(dtype).contiguous(memory_format=CL) for _ in range(2))
        tol = 1e-5 if dtype == torch.float32 else 5e-2
        with torch.no_grad():
            args = (conv.weight, conv.bias, [2, 2], [1, 1], [2, 2], 1)
            got = op.binary(x, other, *args, "add", 1.0, "relu", [], "")
            want = torch.relu(conv(x) + other)
            plain = op(x, *args, "none", [], "")
        return bool(torch.allclose(got.float(), want.float(), atol=tol)
                    and torch.allclose(plain.float(), conv(x).float(), atol=tol))
    except (AttributeError, RuntimeError):
        return False


def _products(bias: torch.Tensor, terms, out=None) -> torch.Tensor:
    """bias + sum of a @ b over ``terms`` (pairs of matrices), accumulated in one result."""
    (a, b), rest = terms[0], terms[1:]
    acc = torch.addmm(bias, a, b) if out is None else torch.addmm(bias, a, b, out=out)
    for a, b in rest:
        acc.addmm_(a, b)
    return acc


def _empty(like: torch.Tensor, channels: int) -> torch.Tensor:
    """A channels-last map of ``like``'s batch, size, dtype and device with ``channels`` channels."""
    b, _, h, w = like.shape
    return torch.empty((b, channels, h, w), dtype=like.dtype, device=like.device, memory_format=CL)


def _runs(slots) -> List[Tuple[int, int]]:
    """Sorted slot numbers as runs of consecutive ones, [lo, hi): [0, 1, 2, 4] -> [(0, 3), (4, 5)]."""
    runs: List[Tuple[int, int]] = []
    for s in sorted(slots):
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], s + 1)
        else:
            runs.append((s, s + 1))
    return runs


def _slot(buffer: torch.Tensor, lo: int, hi: int, c: int) -> torch.Tensor:
    """Slots [lo, hi) of a buffer of c-channel maps: a channel slice (a strided view)."""
    return buffer[:, lo * c:hi * c]


def _columns(weight: torch.Tensor, lo: int, hi: int, c: int) -> torch.Tensor:
    return weight[:, lo * c:hi * c]


def _matrix(t: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, C, H, W) tensor or channel slice as a (B*H*W, C) matrix view (no copy:
    ``view`` refuses where a copy would be needed)."""
    return t.permute(0, 2, 3, 1).view(-1, t.shape[1])


def _matmul_1x1(conv: nn.Conv2d, runs: List[Tuple[int, int]], buffer: torch.Tensor, c: int,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """1x1 ``conv`` over the concatenation of the buffer's slot runs (in order), as matrix
    products accumulated in one result: into ``out`` (a map or a slot), else a new map."""
    b, _, h, w = buffer.shape
    weight, terms, col = conv.weight[:, :, 0, 0], [], 0
    for lo, hi in runs:
        terms.append((_matrix(_slot(buffer, lo, hi, c)), _columns(weight, col, col + hi - lo, c).t()))
        col += hi - lo
    if out is not None:
        _products(conv.bias, terms, out=_matrix(out))
        return out
    return _products(conv.bias, terms).view(b, h, w, -1).permute(0, 3, 1, 2)
