"""The shared-weight supernet computes exactly the standalone DeCoNASNet of the sampled genotype."""

import random

import pytest
import torch
from torch.nn import functional as F

from deconas.space import complexity
from deconas.space.genotype import Genotype, all_ones, num_pairs
from deconas.search.supernet import SuperNet, take_chunks


def random_genotype(rnd, nodes, blocks, ff):
    cell = tuple(rnd.randrange(8) for _ in range(num_pairs(nodes)))
    if not ff:
        return Genotype(cell)
    return Genotype(cell, tuple(rnd.randrange(2) for _ in range(nodes)), tuple(rnd.randrange(2) for _ in range(blocks)))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("ff", [False, True])
def test_supernet_equals_standalone_network_loaded_with_its_slices(scale, ff):
    torch.manual_seed(scale)
    rnd = random.Random(10 * scale + ff)
    nodes, blocks = 3, 2
    net = SuperNet(scale, channels=4, blocks=blocks, nodes=nodes)
    x = torch.rand(2, 3, 9, 7)
    genotypes = [random_genotype(rnd, nodes, blocks, ff) for _ in range(6)]
    genotypes += [Genotype((0,) * num_pairs(nodes)), all_ones(nodes, ff, blocks)]
    for g in genotypes:
        alone = net.extract_standalone(g)
        assert (net(x, g) - alone(x)).abs().max().item() <= 1e-5, str(g)


@pytest.mark.parametrize("ff", [False, True])
def test_sampled_parameter_count_equals_analytic_count(ff):
    rnd = random.Random(5)
    net = SuperNet(2, channels=8, blocks=3, nodes=4)
    for _ in range(10):
        g = random_genotype(rnd, 4, 3, ff)
        alone = net.extract_standalone(g)
        assert sum(p.numel() for p in alone.parameters()) == net.num_params(g) == complexity.count_params(g, 2, 8, 3)
    # the largest network is the whole supernet minus nothing: its count is params_max
    assert net.max_params(ff) == complexity.max_params(4, 2, 8, 3, ff)


def test_gradients_reach_only_the_selected_input_slices():
    torch.manual_seed(0)
    net = SuperNet(2, channels=4, blocks=1, nodes=3)
    g = Genotype((0, 4, 0, 0, 0, 0))  # node 1's conv reads x_in only
    F.l1_loss(net(torch.rand(1, 3, 6, 6), g), torch.rand(1, 3, 12, 12)).backward()
    w = net.dnbs[0].nodes[1].ops[0].conv.weight.grad
    assert w[:, :4].abs().sum() > 0 and torch.all(w[:, 4:] == 0)
    assert net.dnbs[0].nodes[1].ops[1].dw.weight.grad is None  # unused op: untouched


def test_take_chunks_joins_runs_of_inputs_in_order():
    w = torch.arange(2 * 8).reshape(2, 8)
    assert torch.equal(take_chunks(w, (0, 1, 3), 2, 1), torch.cat([w[:, 0:4], w[:, 6:8]], 1))
    assert torch.equal(take_chunks(w, (2,), 2, 1), w[:, 4:6])


def test_mismatched_genotype_is_refused():
    net = SuperNet(2, channels=4, blocks=1, nodes=3)
    with pytest.raises(ValueError):
        net(torch.rand(1, 3, 6, 6), Genotype((7,)))
