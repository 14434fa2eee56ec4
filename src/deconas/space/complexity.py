"""Parameters and Mult-Adds of a DeCoNASNet, computed from the genotype alone (no network built).

Mult-Adds follow the convention of SR papers' tables (CARN, FALSR): multiply-accumulates of
the convolution weights for an output of 1280x720 HR pixels; biases, activations, pooling
and the element-wise sums are not counted. Channel attention's 1x1 convs run on a 1x1 map.
"""

from __future__ import annotations

from dataclasses import dataclass

from deconas.space.genotype import Genotype, all_ones
from deconas.space.layers import ca_hidden, upsampler_stages
from deconas.space.ops import OPS

HR_SIZE = (720, 1280)  # (H, W) of the HR output the Mult-Adds are quoted for


@dataclass
class Cost:
    params: int = 0
    mult_adds: float = 0.0

    def add_conv(self, cin: int, cout: int, k: int, pixels: float, groups: int = 1, bias: bool = True):
        w = cin // groups * cout * k * k
        self.params += w + (cout if bias else 0)
        self.mult_adds += w * pixels


def cost(genotype: Genotype, scale: int, channels: int, blocks: int, hr_size=HR_SIZE) -> Cost:
    c, n = channels, blocks
    lr_pixels = hr_size[0] * hr_size[1] / scale ** 2
    out = Cost()
    out.add_conv(3, c, 3, lr_pixels)  # SFE1
    out.add_conv(c, c, 3, lr_pixels)  # SFE2
    cell = Cost()
    for m in range(genotype.nodes):
        for k, op in enumerate(OPS):
            nin = len(genotype.op_inputs(m, k)) * c
            if nin == 0:
                continue
            if op.separable:
                cell.add_conv(nin, nin, op.kernel, lr_pixels, groups=nin, bias=False)  # depthwise
                cell.add_conv(nin, c, 1, lr_pixels)  # pointwise
            else:
                cell.add_conv(nin, c, op.kernel, lr_pixels)
        hidden = ca_hidden(c)
        cell.add_conv(c, hidden, 1, 1)  # channel attention on the pooled 1x1 map
        cell.add_conv(hidden, c, 1, 1)
    cell.add_conv(len(genotype.lff_inputs()) * c, c, 1, lr_pixels)  # LFF
    out.params += n * cell.params
    out.mult_adds += n * cell.mult_adds
    for d in range(n - 1):
        out.add_conv((d + 2) * c, c, 1, lr_pixels)  # dense block connections
    out.add_conv(len(genotype.gff_inputs(n)) * c, c, 1, lr_pixels)  # GFF
    out.add_conv(c, c, 3, lr_pixels)
    pixels = lr_pixels
    for s in upsampler_stages(scale):
        out.add_conv(c, s * s * c, 3, pixels)
        pixels *= s * s
    out.add_conv(c, 3, 3, hr_size[0] * hr_size[1])
    return out


def count_params(genotype: Genotype, scale: int, channels: int, blocks: int) -> int:
    return cost(genotype, scale, channels, blocks).params


def max_params(nodes: int, scale: int, channels: int, blocks: int, ff: bool) -> int:
    """n_cm of the CB penalty: the parameters of the most complex network in the space."""
    return count_params(all_ones(nodes, ff, blocks), scale, channels, blocks)
