"""deconas.space.ops: the operation table (docs/design.md, sections 1.3 and 2.1).

The facts, from the design page: operation k = 0, 1, 2 is conv 3x3, depthwise-separable 3x3
and dilated 3x3 at rate 3; an operation's radius is dilation * (kernel // 2); in a genotype
integer operation k's bit is worth 4, 2, 1 (most significant first).
"""

import dataclasses

import pytest
import torch
from torch import nn

from deconas.space import ops
from deconas.space.genotype import PAPER_GENOTYPE, Genotype, parse
from deconas.space.network import DeCoNASNet

# (kernel, dilation, separable) of operation k, docs/design.md section 1.3
TABLE = [(3, 1, False), (3, 1, True), (3, 3, False)]
BIT = [4, 2, 1]  # docs/design.md section 2.1


def test_the_table_holds_conv_separable_dilated_in_genotype_order():
    assert len(ops.OPS) == 3
    assert [(o.kernel, o.dilation, o.separable) for o in ops.OPS] == TABLE


def test_radius_is_dilation_times_half_the_kernel():
    assert [o.radius for o in ops.OPS] == [1, 1, 3]
    # and for specs that are not in the table (the rule, not the three values)
    spec = ops.OPS[0]
    for kernel, dilation, want in ((5, 1, 2), (5, 2, 4), (7, 3, 9), (1, 4, 0)):
        assert dataclasses.replace(spec, kernel=kernel, dilation=dilation).radius == want


def test_the_table_cannot_be_changed_by_accident():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ops.OPS[0].kernel = 5
    assert isinstance(ops.OPS, tuple)


def test_bit_weights_are_4_2_1_most_significant_first():
    assert [ops.bit_weight(k) for k in range(len(ops.OPS))] == BIT
    assert ops.NUM_VALUES == 8


@pytest.mark.parametrize("value", range(8))
def test_bits_of_and_value_of_are_the_three_bit_binary_form(value):
    want = tuple(int(c) for c in format(value, "03b"))  # Python's binary, most significant first
    assert ops.bits_of(value) == want
    assert ops.value_of(want) == value


def test_the_paper_genotype_decodes_as_the_design_pages_table():
    # docs/design.md section 2.3, the "bits (conv sep dil)" column, pair by pair
    table = [(1, 1, 1), (1, 1, 0), (1, 0, 0), (0, 1, 1), (0, 0, 0), (0, 1, 0), (0, 1, 0), (0, 1, 1), (1, 0, 0),
             (0, 0, 1)]
    assert [ops.bits_of(v) for v in parse(PAPER_GENOTYPE).cell] == table
    release = "1 1 1 1 1 0 1 0 0 0 1 1 0 0 0 0 1 0 0 1 0 0 1 1 1 0 0 0 0 1".split()
    assert [b for v in parse(PAPER_GENOTYPE).cell for b in ops.bits_of(v)] == [int(b) for b in release]


@pytest.mark.parametrize("k", range(3))
def test_a_genotype_integer_of_one_bit_activates_exactly_that_operation(k):
    g = Genotype((BIT[k],))
    assert [g.op_inputs(0, j) for j in range(3)] == [(0,) if j == k else () for j in range(3)]


def convs_of_the_single_operation(k, channels=8):
    """The Conv2d layers the network builds for a one-node cell that runs operation k only."""
    net = DeCoNASNet(Genotype((BIT[k],)), 2, channels, 1)
    node = net.dnbs[0].nodes[0]
    assert len(node.ops) == 1
    return node.ops[0], [m for m in node.ops[0].modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("k", range(3))
def test_the_network_builds_each_operation_as_the_table_says(k):
    c = 8
    kernel, dilation, separable = TABLE[k]
    _, convs = convs_of_the_single_operation(k, c)
    if separable:  # depthwise kernel x kernel (one filter per channel, no bias), then pointwise 1x1
        dw, pw = convs
        assert (dw.kernel_size, dw.dilation, dw.groups, dw.bias) == ((kernel, kernel), (dilation, dilation), c, None)
        assert (pw.kernel_size, pw.groups, pw.bias is not None) == ((1, 1), 1, True)
    else:
        (conv,) = convs
        assert (conv.kernel_size, conv.dilation, conv.groups) == ((kernel, kernel), (dilation, dilation), 1)
        assert conv.bias is not None
    for m in convs:  # 'same' padding, stride 1
        assert m.stride == (1, 1) and m.padding == (m.dilation[0] * (m.kernel_size[0] // 2),) * 2


@pytest.mark.parametrize("k", range(3))
def test_an_operations_output_pixel_sees_exactly_radius_pixels_away(k):
    op, convs = convs_of_the_single_operation(k, channels=4)
    with torch.no_grad():  # all positive weights: the ReLU passes and nothing cancels
        for p in op.parameters():
            p.uniform_(0.1, 1.0)
    n = 15
    x = torch.rand(1, 4, n, n, requires_grad=True) + 0.1
    x.retain_grad()
    op(x)[0, :, n // 2, n // 2].sum().backward()
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    reach = max((ys - n // 2).abs().max().item(), (xs - n // 2).abs().max().item())
    assert reach == ops.OPS[k].radius
    # a dilated kernel sees a sparse grid: exactly kernel x kernel input pixels
    assert len(ys) == TABLE[k][0] ** 2
