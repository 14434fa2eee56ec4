"""DeCoNASNet (paper Fig. 1-2; docs/design.md, section 1): SFENet -> N densely connected
DNBs -> GFF -> UPNet.

The genotype fixes the graph when the module is built, so ``forward`` has no
data-dependent control flow (the loops run over structure only) and traces/exports cleanly.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from deconas.constants import SCALES
from deconas.space.genotype import Genotype
from deconas.space.layers import ChannelAttention, Op, Upsampler, conv, current_names, mean_of
from deconas.space.ops import K


class MixNode(nn.Module):
    """Node m: each active operation k reads the concatenation of its selected inputs;
    output = CA(ReLU(mean of the active operations)), or CA(ReLU(previous)) when none is active.
    ``summed``: the operations' weights carry the mean's 1/n already (deconas.infer.fold), so
    their outputs are added."""

    def __init__(self, genotype: Genotype, node: int, channels: int):
        super().__init__()
        self.node = node
        self.op_inputs: List[List[int]] = []
        ops = []
        for k in range(K):
            idx = list(genotype.op_inputs(node, k))
            if idx:
                self.op_inputs.append(idx)
                ops.append(Op(k, len(idx) * channels, channels))
        self.ops = nn.ModuleList(ops)
        self.relu = nn.ReLU()
        self.ca = ChannelAttention(channels)
        self.summed = False

    def forward(self, feats: List[torch.Tensor], active: Optional[List[torch.Tensor]] = None,
                cats: Optional[Dict[Tuple[int, ...], torch.Tensor]] = None) -> torch.Tensor:
        """``feats``: the block's input and the earlier nodes' outputs. Every operation starts with
        a ReLU of its concatenated inputs; ``active`` holds ``feats`` with that ReLU applied and
        ``cats`` the concatenations made so far, shared by the block's nodes (the DNB passes
        them), so each is computed once per block rather than once per operation."""
        if len(self.ops) == 0:
            return self.ca(self.relu(feats[-1]))  # feats[-1] is the previous node (or x_in)
        active = [self.relu(f) for f in feats] if active is None else active
        cats = {} if cats is None else cats
        outs = []
        for op, idx in zip(self.ops, self.op_inputs):
            key = tuple(idx)
            if key not in cats:
                cats[key] = active[idx[0]] if len(idx) == 1 else torch.cat([active[j] for j in idx], 1)
            outs.append(op.convolve(cats[key]))
        return self.ca(self.relu(mean_of(outs, divide=not self.summed)))


class DNB(nn.Module):
    """Densely connected network block: M mix nodes, then LFF (1x1 conv) plus the local residual.
    ``residual_in_lff``: LFF's weights carry the residual already (deconas.infer.fold)."""

    def __init__(self, genotype: Genotype, channels: int):
        super().__init__()
        self.nodes = nn.ModuleList(MixNode(genotype, m, channels) for m in range(genotype.nodes))
        self.lff_inputs = list(genotype.lff_inputs())
        self.lff = conv(len(self.lff_inputs) * channels, channels, 1)
        self.residual_in_lff = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A node's output is CA(ReLU(.)) >= 0, so its ReLU is itself: only the block's input
        # needs one, taken once for every operation that reads it.
        feats, active, cats = [x], [torch.relu(x)], {}
        for node in self.nodes:
            y = node(feats, active, cats)
            feats.append(y)
            active.append(y)
        y = self.lff(torch.cat([feats[i] for i in self.lff_inputs], 1))
        return y if self.residual_in_lff else y + x


def check_size(scale: int, channels: int, blocks: int) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale {scale} is not supported; expected one of {SCALES}")
    if blocks < 1 or channels < 1:
        raise ValueError(f"blocks ({blocks}) and channels ({channels}) must be positive")


class DenseNetwork(nn.Module):
    """What DeCoNASNet and the supernet share (docs/design.md, section 1.2): SFENet (``sfe1``,
    ``sfe2``), the dense block connections after DNBs 0..N-2 (``dense``), GFF (``gff``: a 1x1
    conv over ``gff_width`` x C channels, then a 3x3 conv), the upsampler and the tail. A
    subclass supplies the DNBs and how a DNB and GFF's 1x1 conv read their inputs."""

    def _build(self, scale: int, channels: int, blocks: int, make_dnb: Callable[[], nn.Module], gff_width: int) -> None:
        self.scale, self.channels, self.blocks = scale, channels, blocks
        c = channels
        # The order of construction is the order of random initialisation (a seed gives the
        # same network as before) and of the parameters (a resumed optimizer's state).
        self.sfe1 = conv(3, c, 3)  # x_grl, the global residual
        self.sfe2 = conv(c, c, 3)  # F0
        self.dnbs = nn.ModuleList(make_dnb() for _ in range(blocks))
        # Dense block connection after blocks 0..N-2: 1x1 over concat(F0, B0..Bd).
        self.dense = nn.ModuleList(conv((d + 2) * c, c, 1) for d in range(blocks - 1))
        self.gff = nn.Sequential(conv(gff_width * c, c, 1), conv(c, c, 3))
        self.upsample = Upsampler(c, scale)
        self.tail = conv(c, 3, 3)

    def _run(self, lr: torch.Tensor, block: Callable, gff_1x1: Callable) -> torch.Tensor:
        """``block(dnb, x)`` runs one DNB; ``gff_1x1(feats)`` is GFF's 1x1 conv over F0, B0, B1, ..."""
        x_grl = self.sfe1(lr)
        feats = [self.sfe2(x_grl)]  # F0, B0, B1, ...
        x = feats[0]
        for d, dnb in enumerate(self.dnbs):
            feats.append(block(dnb, x))
            if d < len(self.dense):
                x = self.dense[d](torch.cat(feats, 1))
        y = self.gff[1](gff_1x1(feats)) + x_grl
        return self.tail(self.upsample(y))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Also takes the tensor names of earlier versions (:func:`deconas.space.layers.current_names`)."""
        return super().load_state_dict(current_names(state_dict), strict=strict, assign=assign)


class DeCoNASNet(DenseNetwork):
    """The child network of DeCoNAS for one genotype.

    ``channels`` C, ``blocks`` N; the number of mix nodes M comes from the genotype.
    Input: LR RGB in [0, 1], (B, 3, H, W). Output: (B, 3, sH, sW), not clamped.
    """

    def __init__(self, genotype: Genotype, scale: int, channels: int, blocks: int):
        super().__init__()
        check_size(scale, channels, blocks)
        self.genotype = genotype
        self.gff_inputs = list(genotype.gff_inputs(blocks))
        self._build(scale, channels, blocks, lambda: DNB(genotype, channels), len(self.gff_inputs))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self._run(lr, lambda dnb, x: dnb(x),
                         lambda feats: self.gff[0](torch.cat([feats[i] for i in self.gff_inputs], 1)))

    @property
    def receptive_radius(self) -> int:
        """How many LR pixels away an output pixel sees (:func:`receptive_radius`): the overlap
        tiles need."""
        return receptive_radius(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def receptive_radius(model: nn.Module) -> Optional[int]:
    """How many LR pixels away an output pixel can see, from the network's structure; None
    when ``model`` is not a :class:`DeCoNASNet`.

    A node's radius is the largest of (operation radius + radius of what it reads) over its
    active operations, so it follows the longest chain of nodes through the cell; 1x1 fusions
    add nothing. Upsampler and tail convolutions are counted as one LR pixel each (an upper
    bound: at HR resolution they reach less).
    """
    if not isinstance(model, DeCoNASNet):
        return None
    r = 2  # sfe1 and sfe2, 3x3 each
    for dnb in model.dnbs:  # the same cell in every block, but walk them anyway
        feats = [r]
        for node in dnb.nodes:
            if len(node.ops) == 0:
                feats.append(feats[-1])
                continue
            feats.append(max(op.spec.radius + max(feats[j] for j in idx)
                             for op, idx in zip(node.ops, node.op_inputs)))
        # The block's output is LFF(what it reads) + x_in; the dense connection after it reads
        # every block output so far, the deepest being this one.
        r = max(feats[i] for i in (0, *dnb.lff_inputs))
    r += 1  # GFF 3x3
    r += sum(1 for m in model.upsample.modules() if isinstance(m, nn.Conv2d))
    return r + 1  # tail 3x3
