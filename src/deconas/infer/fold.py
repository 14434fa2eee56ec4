"""A derived network rewritten for inference: the same function with fewer operations.

Two exact identities of a mix node, applied to a copy of the network (the trained one and its
checkpoint are left as they are):

- **A separable op folded into a plain conv.** A separable op is a depthwise ``k`` x ``k``
  filter per channel then a pointwise 1x1 conv: together a dense ``k`` x ``k`` conv whose weight
  is ``P[o, i] * D[i]``. Where the node's plain conv of the same kernel and dilation reads every
  input the separable op reads (both after the same ReLU), that weight is added to the conv's
  weight on those inputs' channels, its bias to the conv's bias, and the separable op is gone:
  no extra Mult-Adds, two convolutions and an addition fewer.
- **The mean's 1/n folded into the weights.** A mix node averages its n operations; scaling each
  operation's last weights and bias by 1/n makes the average a plain sum.

- **The local residual folded into LFF.** LFF is a 1x1 conv over inputs that include the
  block's input x; adding the identity to its weights on x's channels makes ``LFF(...) + x`` one
  convolution.

In the shipped genotype (7,6,4,3,0,2,2,3,4,1) the first identity removes two of the cell's ten
operations (nodes 0 and 1).

Where torch runs the network (not in exported graphs), :func:`fold_for_inference` with
``upsampler=True`` also replaces UPNet and the tail by :class:`ComposedUpsampler`.

Weights are composed in float64 and stored in the network's dtype, so outputs differ from the
unfolded network's by float rounding only.
"""

from __future__ import annotations

import copy

import torch

from deconas.space.layers import Op
from deconas.space.network import DeCoNASNet


def fold_for_inference(model: DeCoNASNet, upsampler: bool = False) -> DeCoNASNet:
    """An evaluation-mode copy of ``model`` with its mix nodes and local residuals folded, and
    with ``upsampler`` its UPNet and tail composed (module docstring)."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for dnb in net.dnbs:
            for node in dnb.nodes:
                _fold_node(node, net.channels)
            _fold_residual(dnb, net.channels)
        # Non-finite weights are left for the checks downstream, which refuse what they output.
        if upsampler and all(bool(torch.isfinite(p).all()) for p in (*net.upsample.parameters(),
                                                                       *net.tail.parameters())):
            net.upsample = ComposedUpsampler(net.upsample, net.tail, net.scale)
            net.tail = torch.nn.Identity()
    return net


def _fold_residual(dnb, channels: int) -> None:
    if dnb.residual_in_lff or 0 not in dnb.lff_inputs:  # FF search may leave x out of LFF
        return
    slot = dnb.lff_inputs.index(0)
    w = dnb.lff.weight[:, slot * channels:(slot + 1) * channels, 0, 0]
    w.add_(torch.eye(channels, dtype=w.dtype, device=w.device))
    dnb.residual_in_lff = True


def _fold_node(node, channels: int) -> None:
    n = len(node.ops)
    if n == 0 or node.summed:
        return
    ops, inputs = list(node.ops), [list(i) for i in node.op_inputs]
    for s in [i for i, op in enumerate(ops) if op.spec.separable]:
        target = next((c for c, op in enumerate(ops) if op is not None and not op.spec.separable
                       and (op.spec.kernel, op.spec.dilation) == (ops[s].spec.kernel, ops[s].spec.dilation)
                       and set(inputs[s]) <= set(inputs[c])), None)
        if target is None:
            continue
        _add_separable(ops[target].conv, ops[s], [inputs[target].index(j) for j in inputs[s]], channels)
        ops[s] = None
    keep = [i for i, op in enumerate(ops) if op is not None]
    for i in keep:  # the mean's 1/n, in each remaining operation's last layer
        last = ops[i].pw if ops[i].spec.separable else ops[i].conv
        last.weight.mul_(1.0 / n)
        last.bias.mul_(1.0 / n)
    node.ops = torch.nn.ModuleList(ops[i] for i in keep)
    node.op_inputs = [inputs[i] for i in keep]
    node.summed = True


def _add_separable(conv: torch.nn.Conv2d, sep: Op, slots, channels: int) -> None:
    """Add separable op ``sep``, as a dense conv, to ``conv``'s weight on the input channels of
    ``slots`` (the positions, in ``conv``'s concatenated input, of ``sep``'s inputs)."""
    dw = sep.dw.weight.double()  # (cin, 1, k, k)
    pw = sep.pw.weight.double()[:, :, 0, 0]  # (cout, cin)
    dense = pw[:, :, None, None] * dw[:, 0][None]  # (cout, cin, k, k)
    w = conv.weight.double()
    for part, slot in enumerate(slots):
        w[:, slot * channels:(slot + 1) * channels] += dense[:, part * channels:(part + 1) * channels]
    conv.weight.copy_(w.to(conv.weight.dtype))
    conv.bias.add_(sep.pw.bias)


class ComposedUpsampler(torch.nn.Module):
    """UPNet and the tail as one convolution at LR resolution, then a pixel shuffle.

    Nothing nonlinear lies between UPNet's convolutions, its pixel shuffles and the tail, so
    together they are one linear map from the C-channel LR features to the image: a conv of
    radius R at LR, C -> 3 s^2 channels, whose kernel is read off the originals' response to
    impulses (in float64). It has a fraction of their Mult-Adds (at x2, C = 32: a quarter; at x4
    a fifth) and never makes the C-channel map at HR. It differs from them only where they pad with
    zeros inside, at the image's border: there the outer R LR pixels are computed by the
    originals, kept here, on strips along each side."""

    def __init__(self, upsample: torch.nn.Module, tail: torch.nn.Module, scale: int):
        super().__init__()
        self.upsample, self.tail, self.scale = upsample, tail, scale
        weight, bias = _compose(upsample, tail, scale)
        r = weight.shape[-1] // 2
        ref = tail.weight
        self.conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], 2 * r + 1, padding=r).to(ref.device)
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(bias)
        self.conv.to(ref.dtype)
        self.radius = r
        self.shuffle = torch.nn.PixelShuffle(scale)

    def original(self, y: torch.Tensor) -> torch.Tensor:
        return self.tail(self.upsample(y))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h, w = y.shape[-2:]
        strip = 2 * self.radius + 1  # the ring's pixels and everything they read
        if min(h, w) <= 2 * strip:
            return self.original(y)
        out = self.shuffle(self.conv(y))
        ring = self.scale * self.radius
        if ring == 0:  # nothing reaches across pixels: no padding to differ at
            return out
        # Assembled by concatenation, not slice assignment, so that an exported graph holds it:
        # full-width strips at the top and bottom, the sides' strips between them.
        top = self.original(y[..., :strip, :])[..., :ring, :]
        bottom = self.original(y[..., -strip:, :])[..., -ring:, :]
        left = self.original(y[..., :, :strip])[..., ring:-ring, :ring]
        right = self.original(y[..., :, -strip:])[..., ring:-ring, -ring:]
        middle = torch.cat([left, out[..., ring:-ring, ring:-ring], right], dim=-1)
        return torch.cat([top, middle, bottom], dim=-2)


def _compose(upsample: torch.nn.Module, tail: torch.nn.Module, scale: int):
    """(weight, bias) of the LR convolution equal to ``tail(upsample(.))`` away from borders."""
    up, last = copy.deepcopy(upsample).double().cpu(), copy.deepcopy(tail).double().cpu()
    c, s, size, mid = last.in_channels, scale, 9, 4  # an impulse in the middle of 9 x 9 (reach <= 3)
    with torch.no_grad():
        bias = last(up(torch.zeros(1, c, size, size, dtype=torch.float64)))[0]  # (3, s*size, s*size)
        # The linear part from copies without biases, not as a difference with the response to
        # zeros: a difference leaves rounding (~1e-16) everywhere, which a reach test would read
        # as taps, and how much depends on the CPU's convolution kernels.
        for m in (*up.modules(), last):
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
        impulses = torch.zeros(c, c, size, size, dtype=torch.float64)
        impulses[torch.arange(c), torch.arange(c), mid, mid] = 1.0
        resp = last(up(impulses))  # (c, 3, s*size, s*size): exactly 0 beyond the reach
    # out[k, s*i + a, s*j + b] at LR (i, j) is channel k*s*s + a*s + b of the LR conv's output.
    blocks = resp.reshape(c, 3, size, s, size, s).permute(0, 1, 3, 5, 2, 4).reshape(c, 3 * s * s, size, size)
    reach = blocks.abs().amax(dim=(0, 1)) > 0
    rows, cols = reach.any(1).nonzero().flatten(), reach.any(0).nonzero().flatten()
    r = int(max(mid - rows.min(), rows.max() - mid, mid - cols.min(), cols.max() - mid)) if reach.any() else 0
    if r >= mid:
        raise ValueError(f"UPNet and the tail reach {r} LR pixels, more than the probe holds")
    # The response at LR (mid - dy, mid - dx) is the kernel's tap (r + dy, r + dx): flip it.
    window = blocks[:, :, mid - r:mid + r + 1, mid - r:mid + r + 1].flip(-1, -2)
    weight = window.permute(1, 0, 2, 3).contiguous()  # (3 s^2, c, 2r + 1, 2r + 1)
    b = bias.reshape(3, size, s, size, s).permute(0, 2, 4, 1, 3).reshape(3 * s * s, size, size)[:, mid, mid]
    return weight, b
