"""The building blocks of DeCoNASNet: the three mix-node operations and channel attention.

Every operation starts with a ReLU on its (concatenated) input, as in the authors' release.
"""

from __future__ import annotations

import torch
from torch import nn


def conv(cin: int, cout: int, k: int = 3, dilation: int = 1, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    """'Same' convolution (stride 1)."""
    return nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, groups=groups, bias=bias)


class ConvOp(nn.Sequential):
    """k=0: ReLU -> conv 3x3, (n*C) -> C."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.ReLU(), conv(cin, cout, 3))


class SepConvOp(nn.Sequential):
    """k=1: ReLU -> depthwise 3x3 (multiplier 1, no bias) -> pointwise 1x1 (n*C) -> C."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.ReLU(), conv(cin, cin, 3, groups=cin, bias=False), conv(cin, cout, 1))


class DilConvOp(nn.Sequential):
    """k=2: ReLU -> dilated conv 3x3, rate 3, (n*C) -> C."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.ReLU(), conv(cin, cout, 3, dilation=3))


OP_CLASSES = (ConvOp, SepConvOp, DilConvOp)


class ChannelAttention(nn.Module):
    """RCAN's channel attention: GAP -> 1x1 C->C/r -> ReLU -> 1x1 C/r->C -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), conv(channels, hidden, 1), nn.ReLU(), conv(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling (ESPCN): conv C -> s*s*C then pixel shuffle; x4 as two x2 stages."""

    def __init__(self, channels: int, scale: int):
        layers = []
        for s in upsampler_stages(scale):
            layers += [conv(channels, s * s * channels, 3), nn.PixelShuffle(s)]
        super().__init__(*layers)


def upsampler_stages(scale: int) -> list:
    return [2, 2] if scale == 4 else [scale]
