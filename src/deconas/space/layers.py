"""The torch layers of DeCoNASNet: the mix-node operation (built from the operation table
:data:`deconas.space.ops.OPS`), channel attention and the upsampler (docs/design.md,
section 1.3), and the mapping of earlier versions' tensor names.

Every operation starts with a ReLU on its (concatenated) input, as in the authors' release.
"""

from __future__ import annotations

import re

from typing import List

import torch
from torch import nn
from torch.nn import functional as F

from deconas.space.ops import OPS

CA_REDUCTION = 4  # channel attention's bottleneck: C -> C/4 -> C (RCAN's r, the release's 4)


def conv(cin: int, cout: int, k: int = 3, dilation: int = 1, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    """'Same' convolution (stride 1)."""
    return nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, groups=groups, bias=bias)


class Op(nn.Module):
    """Operation ``k`` of ``OPS``, ``cin`` -> ``cout`` channels: submodules ``conv``, or ``dw``
    (depthwise) and ``pw`` (pointwise) for the separable one. The supernet builds it with
    every possible input's channels and convolves with slices of its weights."""

    def __init__(self, k: int, cin: int, cout: int):
        super().__init__()
        self.k, self.spec = k, OPS[k]
        s = self.spec
        if s.separable:
            self.dw = conv(cin, cin, s.kernel, s.dilation, groups=cin, bias=False)
            self.pw = conv(cin, cout, 1)
        else:
            self.conv = conv(cin, cout, s.kernel, s.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convolve(F.relu(x))

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The operation after its ReLU, for callers that hold the activated input already."""
        return self.pw(self.dw(x)) if self.spec.separable else self.conv(x)


# Names written before the operations' submodules had names: a standalone op was an
# nn.Sequential (ReLU, conv) or (ReLU, depthwise, pointwise), so "ops.i.1" / "ops.i.2";
# the supernet called its halves "depthwise" and "pointwise".
_POSITIONAL = re.compile(r"^(.*\.ops\.\d+\.)([12])\.(weight|bias)$")
_SUPERNET = re.compile(r"\.ops\.(\d+)\.(depthwise|pointwise)\.")


def current_names(state: dict) -> dict:
    """``state`` with tensor names of earlier versions mapped to today's (others unchanged)."""
    out = {}
    for k, v in state.items():
        m = _POSITIONAL.match(k)
        if m:
            pre, pos, what = m.groups()
            separable = pre + "2.weight" in state  # only the separable op had a third layer
            k = pre + ("pw" if pos == "2" else "dw" if separable else "conv") + "." + what
        else:
            k = _SUPERNET.sub(lambda g: f".ops.{g.group(1)}.{'dw' if g.group(2) == 'depthwise' else 'pw'}.", k)
        out[k] = v
    return out


def mean_of(outs: List[torch.Tensor], divide: bool = True) -> torch.Tensor:
    """A mix node's mean of its active operations, as a sum: exported, that is Adds and a Div,
    where ``torch.stack(outs).mean(0)`` became Unsqueeze + Concat + ReduceMean, which ONNX
    Runtime runs far slower (measured in docs/upscale.md). ``divide`` False: the sum alone."""
    y = outs[0]
    for o in outs[1:]:
        y = y + o
    return y if len(outs) == 1 or not divide else y / len(outs)


class ChannelAttention(nn.Module):
    """RCAN's channel attention: GAP -> 1x1 C->C/r -> ReLU -> 1x1 C/r->C -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = CA_REDUCTION):
        super().__init__()
        hidden = ca_hidden(channels, reduction)
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), conv(channels, hidden, 1), nn.ReLU(), conv(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


def ca_hidden(channels: int, reduction: int = CA_REDUCTION) -> int:
    return max(1, channels // reduction)


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling (ESPCN): conv C -> s*s*C then pixel shuffle; x4 as two x2 stages."""

    def __init__(self, channels: int, scale: int):
        layers = []
        for s in upsampler_stages(scale):
            layers += [conv(channels, s * s * channels, 3), nn.PixelShuffle(s)]
        super().__init__(*layers)


def upsampler_stages(scale: int) -> list:
    return [2, 2] if scale == 4 else [scale]
