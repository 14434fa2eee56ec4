"""The shared-weight supernet of the search (ENAS weight sharing; docs/design.md, section 3).

One weight tensor per (block, mix node, op), sized for all of the node's possible inputs:
node m of a DNB may read x_in and nodes 0..m-1, so its conv holds (m+1)*C input channels
(the separable op: a (m+1)*C depthwise filter bank and a (m+1)*C -> C pointwise conv).
Likewise the LFF 1x1 conv holds (M+1)*C inputs and the GFF 1x1 conv (N+1)*C. A sampled
architecture concatenates only its selected inputs and uses the matching C-channel chunks
of these weights (``F.conv2d`` with the sliced weight), so a forward pass computes exactly
the sampled DeCoNASNet and nothing else. The stem, the dense block connections (fixed,
docs/design.md, section 1), channel attention, the GFF's 3x3 conv and the upsampler are
ordinary layers shared by every architecture.

Slicing: the selected input indices are grouped into runs of consecutive indices; each run
is one ``narrow`` (a view), and several runs are joined with one ``torch.cat``. Nothing is
indexed with tensors, so a step costs the sampled network's convolutions plus a copy of a
few small weight chunks (see benchmarks/bench_supernet_step.py).

Initialisation: PyTorch's default for each full-size conv (uniform, bound 1/sqrt(fan_in)
of the full tensor), a stand-in for the paper's variance-scaling init.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from deconas.space import complexity
from deconas.space.genotype import Genotype
from deconas.space.layers import ChannelAttention, Op, conv, mean_of
from deconas.space.network import DeCoNASNet, DenseNetwork, check_size
from deconas.space.ops import K


@lru_cache(maxsize=4096)
def _runs(idx: Tuple[int, ...]) -> Tuple[Tuple[int, int], ...]:
    """(start, length) of each run of consecutive indices: (0, 1, 3) -> ((0, 2), (3, 1))."""
    runs = []
    for i in idx:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return tuple((a, n) for a, n in runs)


def take_chunks(w: torch.Tensor, idx: Sequence[int], chunk: int, dim: int) -> torch.Tensor:
    """The chunks ``idx`` (each ``chunk`` wide) of ``w`` along ``dim``, in order."""
    parts = [w.narrow(dim, a * chunk, n * chunk) for a, n in _runs(tuple(idx))]
    # A narrowed input-channel range is a strided view; oneDNN convolutions are markedly
    # slower on those (forward and backward), so hand them a contiguous copy.
    return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, dim)


def _cat(feats: List[torch.Tensor], idx: Sequence[int]) -> torch.Tensor:
    return feats[idx[0]] if len(idx) == 1 else torch.cat([feats[j] for j in idx], 1)


class SharedOp(Op):
    """Operation k of one mix node, with weights for all ``n_inputs`` possible inputs."""

    def __init__(self, k: int, n_inputs: int, channels: int):
        super().__init__(k, n_inputs * channels, channels)
        self.channels = channels

    def forward(self, x: torch.Tensor, idx: Tuple[int, ...]) -> torch.Tensor:
        """``x`` is the concatenation of the selected inputs ``idx``."""
        c, s = self.channels, self.spec
        x = F.relu(x)
        if s.separable:
            x = F.conv2d(x, take_chunks(self.dw.weight, idx, c, 0), None, padding=s.radius, dilation=s.dilation,
                         groups=x.shape[1])
            return F.conv2d(x, take_chunks(self.pw.weight, idx, c, 1), self.pw.bias)
        return F.conv2d(x, take_chunks(self.conv.weight, idx, c, 1), self.conv.bias, padding=s.radius,
                        dilation=s.dilation)

    def sliced_state(self, idx: Tuple[int, ...]) -> Dict[str, torch.Tensor]:
        """This op's weights for inputs ``idx``, as the standalone :class:`deconas.space.layers.Op` holds them."""
        c = self.channels
        if self.spec.separable:
            return {"dw.weight": take_chunks(self.dw.weight, idx, c, 0),
                    "pw.weight": take_chunks(self.pw.weight, idx, c, 1), "pw.bias": self.pw.bias}
        return {"conv.weight": take_chunks(self.conv.weight, idx, c, 1), "conv.bias": self.conv.bias}


class SharedMixNode(nn.Module):
    def __init__(self, node: int, channels: int):
        super().__init__()
        self.ops = nn.ModuleList(SharedOp(k, node + 1, channels) for k in range(K))
        self.ca = ChannelAttention(channels)

    def forward(self, feats: List[torch.Tensor], active: Tuple[Tuple[int, Tuple[int, ...]], ...]) -> torch.Tensor:
        if not active:
            return self.ca(F.relu(feats[-1]))  # no op: ReLU of the previous node (or x_in), as DeCoNASNet
        outs = [self.ops[k](_cat(feats, idx), idx) for k, idx in active]
        y = mean_of(outs)
        return self.ca(F.relu(y))


class SharedDNB(nn.Module):
    def __init__(self, nodes: int, channels: int):
        super().__init__()
        self.channels = channels
        self.nodes = nn.ModuleList(SharedMixNode(m, channels) for m in range(nodes))
        self.lff = conv((nodes + 1) * channels, channels, 1)

    def forward(self, x: torch.Tensor, plan: "_Plan") -> torch.Tensor:
        feats = [x]
        for node, active in zip(self.nodes, plan.nodes):
            feats.append(node(feats, active))
        w = take_chunks(self.lff.weight, plan.lff, self.channels, 1)
        return F.conv2d(_cat(feats, plan.lff), w, self.lff.bias) + x


class _Plan:
    """What a genotype selects, worked out once per genotype (cached)."""

    def __init__(self, g: Genotype, blocks: int):
        self.nodes = tuple(tuple((k, g.op_inputs(m, k)) for k in range(K) if g.op_inputs(m, k))
                           for m in range(g.nodes))
        self.lff = g.lff_inputs()
        self.gff = g.gff_inputs(blocks)


class SuperNet(DenseNetwork):
    """All DeCoNASNets of one search space (C channels, N blocks, M nodes, scale s) at once.

    ``forward(lr, genotype)`` runs the sampled architecture on the shared weights;
    ``extract_standalone(genotype)`` copies its slices into a :class:`DeCoNASNet`.
    """

    def __init__(self, scale: int, channels: int, blocks: int, nodes: int):
        super().__init__()
        check_size(scale, channels, blocks)
        self.nodes = nodes
        # GFF's 1x1 conv holds all N+1 inputs; a genotype uses its chunks (FF1 searches them).
        self._build(scale, channels, blocks, lambda: SharedDNB(nodes, channels), blocks + 1)
        self._plans: Dict[Genotype, _Plan] = {}

    def _plan(self, g: Genotype) -> _Plan:
        plan = self._plans.get(g)
        if plan is None:
            if g.nodes != self.nodes:
                raise ValueError(f"genotype {g} has M={g.nodes} nodes; this supernet has M={self.nodes}")
            plan = self._plans[g] = _Plan(g, self.blocks)
            if len(self._plans) > 100_000:  # long searches: keep the cache bounded
                self._plans.clear()
        return plan

    def forward(self, lr: torch.Tensor, genotype: Genotype) -> torch.Tensor:
        plan = self._plan(genotype)
        gff = self.gff[0]
        return self._run(lr, lambda dnb, x: dnb(x, plan), lambda feats: F.conv2d(
            _cat(feats, plan.gff), take_chunks(gff.weight, plan.gff, self.channels, 1), gff.bias))

    def num_params(self, genotype: Genotype) -> int:
        """Trainable parameters of the sampled architecture (analytic, deconas.space.complexity)."""
        return complexity.count_params(genotype, self.scale, self.channels, self.blocks)

    def max_params(self, ff: bool) -> int:
        """n_cm of the CB penalty: the largest network of the space."""
        return complexity.max_params(self.nodes, self.scale, self.channels, self.blocks, ff)

    @torch.no_grad()
    def standalone_state_dict(self, genotype: Genotype) -> Dict[str, torch.Tensor]:
        """The state_dict of ``DeCoNASNet(genotype, ...)`` made of this supernet's slices (copies)."""
        plan = self._plan(genotype)
        c = self.channels
        own = self.state_dict()
        out = {}
        for name in ("sfe1", "sfe2", "dense", "gff.1", "upsample", "tail"):
            out.update({k: v for k, v in own.items() if k.startswith(name + ".")})
        for d, dnb in enumerate(self.dnbs):
            for m, (node, active) in enumerate(zip(dnb.nodes, plan.nodes)):
                pre = f"dnbs.{d}.nodes.{m}."
                for i, (k, idx) in enumerate(active):  # DeCoNASNet keeps only active ops, in op order
                    out.update({f"{pre}ops.{i}.{n}": t for n, t in node.ops[k].sliced_state(idx).items()})
                out.update({pre + "ca." + n: t for n, t in node.ca.state_dict().items()})
            out[f"dnbs.{d}.lff.weight"] = take_chunks(dnb.lff.weight, plan.lff, c, 1)
            out[f"dnbs.{d}.lff.bias"] = dnb.lff.bias
        out["gff.0.weight"] = take_chunks(self.gff[0].weight, plan.gff, c, 1)
        out["gff.0.bias"] = self.gff[0].bias
        return {k: v.detach().clone() for k, v in out.items()}

    def extract_standalone(self, genotype: Genotype) -> DeCoNASNet:
        """A standalone DeCoNASNet of ``genotype`` holding copies of the shared weights."""
        net = DeCoNASNet(genotype, scale=self.scale, channels=self.channels, blocks=self.blocks)
        net.load_state_dict(self.standalone_state_dict(genotype), strict=True)
        return net.to(next(self.parameters()).device)
