import pytest
import torch
from hypothesis import given, settings, strategies as st

from deconas.space import complexity
from deconas.space.genotype import PAPER_GENOTYPE, Genotype, all_ones, num_pairs, parse
from deconas.space.network import DeCoNASNet, count_params


@pytest.mark.parametrize("scale, expected", [(2, 1_693_251), (3, 1_877_891), (4, 1_840_963)])
def test_paper_network_has_spec_parameter_count(scale, expected):
    g = parse(PAPER_GENOTYPE)
    assert count_params(DeCoNASNet(g, scale, 64, 4)) == expected
    assert complexity.count_params(g, scale, 64, 4) == expected


def test_largest_network_in_space_has_spec_parameter_count():
    assert count_params(DeCoNASNet(all_ones(4), 2, 64, 4)) == 3_537_987
    assert complexity.max_params(4, 2, 64, 4, False) == 3_537_987


def test_release_checkpoint_size_is_ours_plus_unused_dense_conv():
    # SPEC: the paper's 1,713K = our network + the release's unused 1x1 conv (5*64*64 + 64).
    assert complexity.count_params(parse(PAPER_GENOTYPE), 2, 64, 4) + 5 * 64 * 64 + 64 == 1_713_795


genotypes = st.integers(1, 5).flatmap(lambda m: st.tuples(
    st.lists(st.integers(0, 7), min_size=num_pairs(m), max_size=num_pairs(m)),
    st.one_of(st.none(), st.lists(st.integers(0, 1), min_size=m, max_size=m)),
    st.integers(1, 4), st.sampled_from([2, 3, 4]), st.sampled_from([4, 8, 12, 20]), st.data()))


@settings(max_examples=60, deadline=None)
@given(genotypes)
def test_analytic_parameter_count_equals_built_module(case):
    cell, lff, n, scale, c, data = case
    gff = None if lff is None else tuple(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    g = Genotype(tuple(cell), None if lff is None else tuple(lff), gff)
    assert complexity.count_params(g, scale, c, n) == count_params(DeCoNASNet(g, scale, c, n))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_is_exactly_scale_times_odd_input(scale):
    net = DeCoNASNet(parse(PAPER_GENOTYPE + "|0101|010"), scale, channels=8, blocks=3)
    y = net(torch.rand(2, 3, 17, 23))
    assert y.shape == (2, 3, 17 * scale, 23 * scale)


def test_node_without_operations_passes_previous_node_through():
    # Node 1 has no active operation: it is CA(ReLU(node 0)); zeroing node 1's CA gate
    # proves it reads node 0 and not x_in.
    g = Genotype((4, 0, 0))
    net = DeCoNASNet(g, 2, channels=4, blocks=1)
    dnb = net.dnbs[0]
    assert len(dnb.nodes[1].ops) == 0
    x = torch.randn(1, 4, 6, 6)
    n0 = dnb.nodes[0]([x])
    assert torch.allclose(dnb.nodes[1]([x, n0]), dnb.nodes[1].ca(torch.relu(n0)))


def test_mix_node_averages_its_operations():
    g = Genotype((7,))
    net = DeCoNASNet(g, 2, channels=4, blocks=1)
    node = net.dnbs[0].nodes[0]
    x = torch.randn(1, 4, 8, 8)
    mean = (node.ops[0](x) + node.ops[1](x) + node.ops[2](x)) / 3
    assert torch.allclose(node([x]), node.ca(torch.relu(mean)), atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_network_traces_for_export():
    net = DeCoNASNet(parse(PAPER_GENOTYPE), 2, channels=8, blocks=2).eval()
    x = torch.rand(1, 3, 12, 10)
    traced = torch.jit.trace(net, x)
    x2 = torch.rand(1, 3, 9, 15)  # a traced graph must not have baked in the first input's size
    assert torch.allclose(traced(x2), net(x2), atol=1e-6)
