"""What the search maximises: the reward PSNR of an architecture on a batch of validation
patches, and the reward itself, PSNR minus the CB penalty (``alpha`` x the architecture's cost
over the space's largest network's: parameters, Mult-Adds or predicted latency) plus the
policy's entropy bonus.

Reward PSNR: the supernet output is clamped to [0, 1] and rounded to 8-bit levels, then PSNR
on Y (BT.601, as :mod:`deconas.metrics`) with ``scale`` pixels of border cropped, computed per
patch in one batched torch expression and averaged over the patches. A grey source image
enters as three equal channels g, so its reward PSNR is measured on Y = 16 + 219/255 * g of
those channels: errors are scaled by 219/255, which reads 20 * log10(255/219) = 1.32 dB higher
than PSNR on the grey values themselves. The reward only compares architectures, so the
offset does not matter there.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from deconas.errors import UserError
from deconas.space import complexity
from deconas.space.genotype import Genotype, all_ones
from deconas.space.latency import predict_latency


def quantized_y(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> Y (BT.601, 16..235) of the 8-bit-rounded image, float64."""
    q = x.clamp(0, 1).mul(255).round().double()
    return 16.0 + (65.481 * q[:, 0] + 128.553 * q[:, 1] + 24.966 * q[:, 2]) / 255.0


def psnr_y_batch(sr: torch.Tensor, hr: torch.Tensor, border: int) -> torch.Tensor:
    """Per-image PSNR on Y with ``border`` pixels cropped (the SR protocol), shape (B,)."""
    ys, yh = quantized_y(sr), quantized_y(hr)
    if border:
        ys, yh = ys[:, border:-border, border:-border], yh[:, border:-border, border:-border]
    mse = (ys - yh).pow(2).mean((1, 2)).clamp_min(1e-10)
    return 10.0 * torch.log10(255.0 ** 2 / mse)


def reward_of(psnr: float, cost: float, cost_max: float, alpha: float, entropy: float = 0.0,
              entropy_weight: float = 0.0) -> float:
    """R = PSNR - alpha * cost / cost_max + entropy_weight * entropy: the CB penalty (alpha = 0 is
    CB0, 2 is CB1) on the architecture's :class:`Penalty` cost. Derive ranks by it without the
    entropy term (no policy is being trained there)."""
    return psnr - alpha * cost / cost_max + entropy_weight * entropy


class Penalty:
    """The cost the CB penalty counts (``search.penalty``), and that of the space's largest
    network (every bit set), which normalises it: parameters, Mult-Adds (for a 1280x720 output),
    or the latency predicted from a ``deconas profile`` table (``search.latency_table``)."""

    def __init__(self, kind: str, scale: int, channels: int, blocks: int, nodes: int, ff: bool,
                 latency_table: Optional[dict] = None):
        if kind == "latency" and latency_table is None:
            raise UserError("search.penalty=latency needs search.latency_table (made by 'deconas profile')")
        self.kind, self.table = kind, latency_table
        self.scale, self.channels, self.blocks = scale, channels, blocks
        self._memo: Dict[Genotype, float] = {}
        self.max = self(all_ones(nodes, ff, blocks))

    def __call__(self, g: Genotype) -> float:
        v = self._memo.get(g)
        if v is None:
            if self.kind == "latency":
                v = predict_latency(g, self.table)
            else:
                c = complexity.cost(g, self.scale, self.channels, self.blocks)
                v = float(c.params if self.kind == "params" else c.mult_adds)
            if len(self._memo) > 100_000:
                self._memo.clear()
            self._memo[g] = v
        return v
