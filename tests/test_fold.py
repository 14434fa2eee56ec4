"""The inference fold: a separable op folded into the plain conv that reads its inputs, the
mean's 1/n folded into the weights; the unfolded network is the oracle."""

import onnx
import pytest
import torch
from hypothesis import given, settings, strategies as st

from deconas.infer.export import onnx_bytes
from deconas.infer.fold import ComposedUpsampler, fold_for_inference
from deconas.space.genotype import PAPER_GENOTYPE, Genotype, num_pairs, parse
from deconas.space.network import DeCoNASNet

genotypes = st.integers(1, 4).flatmap(lambda m: st.tuples(
    st.lists(st.integers(0, 7), min_size=num_pairs(m), max_size=num_pairs(m)),
    st.one_of(st.none(), st.lists(st.integers(0, 1), min_size=m, max_size=m)),
    st.integers(1, 3), st.sampled_from([2, 3, 4]), st.integers(0, 2 ** 31 - 1), st.data()))


def randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight and bias drawn at a scale where all of them matter (biases are 0-ish at init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net.eval()


def drawn_case(case) -> tuple[torch.nn.Module, torch.Tensor]:
    """A drawn cell (with or without feature-fusion bits) as a randomised network, and its input."""
    cell, lff, n, scale, seed, data = case
    gff = None if lff is None else tuple(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    net = randomised(DeCoNASNet(Genotype(tuple(cell), None if lff is None else tuple(lff), gff), scale, 8, n), seed)
    return net, torch.rand(2, 3, 11, 13, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=40, deadline=None)
@given(genotypes)
def test_a_folded_network_computes_what_the_network_computes(case):
    net, x = drawn_case(case)
    folded = fold_for_inference(net)
    with torch.no_grad():
        want, got = net(x), folded(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    assert folded.receptive_radius == net.receptive_radius


def test_the_paper_cell_loses_the_separable_ops_of_nodes_0_and_1_and_keeps_the_network_intact():
    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), 2, 8, 2), 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_for_inference(net)
    # Node 0: conv, sep, dil on x_in -> conv, dil. Node 1: conv on (x_in, n0), sep on x_in ->
    # conv. Node 2: sep on (x_in, n1), dil on x_in: no plain conv. Node 3: the conv reads n1 only,
    # the separable op (x_in, n0): not a subset, kept.
    keys = [[op.spec.key for op in node.ops] for node in folded.dnbs[0].nodes]
    assert keys == [["conv", "dil"], ["conv"], ["sep", "dil"], ["conv", "sep", "dil"]]
    assert [n.op_inputs for n in folded.dnbs[0].nodes] == [[[0], [0]], [[0, 1]], [[0, 2], [0]], [[2], [0, 1], [1, 3]]]
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not any(n.summed for n in net.dnbs[0].nodes)


def test_the_exported_graph_has_the_folded_networks_convolutions(tmp_path):
    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), 2, 8, 4), 1)
    convs = sum(n.op_type == "Conv" for n in onnx.load_from_string(onnx_bytes(net)).graph.node)
    # Per block, by hand: folded cell ops conv, dil | conv | sep (dw + pw), dil | conv, sep (2), dil
    # = 10 convolutions, channel attention 2 per node, LFF 1: 19. Around the four blocks: sfe1,
    # sfe2, 3 dense connections, GFF 1x1 and 3x3, the x2 upsampler and the tail: 9.
    assert convs == 4 * 19 + 9


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(5, 7), (10, 10), (11, 11), (12, 40), (31, 17)])
def test_composed_upsampler_computes_what_upnet_and_the_tail_compute_up_to_the_border(scale, size):
    # 10 x 10 and below run the originals whole; above, the composed conv with border strips.
    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), scale, 8, 2), scale)
    folded = fold_for_inference(net, upsampler=True)
    assert isinstance(folded.upsample, ComposedUpsampler) and isinstance(folded.tail, torch.nn.Identity)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want, got = net(x), folded(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("scale, opset", [(2, 11), (3, 17), (4, 20)])
def test_the_composed_graph_computes_what_the_network_computes_at_every_size(scale, opset):
    # ONNX Runtime runs the graph; under 2R = 4 LR pixels its If takes the plain branch.
    from deconas.infer.backends import OnnxRuntimeBackend

    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), scale, 8, 2), 10 + scale)
    probe = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # outputs brought into [0, 1], where the graph's clamp keeps them
        y = net(probe)
        net.tail.weight.div_(4 * y.std())
        net.tail.bias.div_(4 * y.std())
        net.tail.bias.add_(0.5 - net(probe).mean())
    proto = onnx.load_from_string(onnx_bytes(net, opset=opset, compose=True))
    assert proto.graph.node[-1].op_type == "If"
    run = OnnxRuntimeBackend(proto.SerializeToString())
    for size in [(1, 1), (3, 9), (4, 4), (4, 30), (11, 13), (23, 17)]:
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(size[0] * size[1]))
        with torch.no_grad():
            want = net(x)
        assert ((want > 0) & (want < 1)).float().mean() > 0.8  # the clamp hides little
        got = torch.from_numpy(run(x.numpy()))
        assert got.shape == want.shape, size
        assert torch.allclose(got, want.clamp(0, 1), atol=1e-5), size


def test_composed_upsampler_is_one_5x5_conv_with_fewer_mult_adds_than_upnet_and_tail():
    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), 4, 8, 1), 3)
    up = ComposedUpsampler(net.upsample, net.tail, 4)
    # Tail 3x3 at HR reads HR neighbours, i.e. LR neighbours; stage 2 (3x3 at 2x) and stage 1
    # (3x3 at LR) each add one LR pixel at most: radius 2, out 3 * 16 channels.
    assert up.radius == 2 and tuple(up.conv.weight.shape) == (48, 8, 5, 5)
    composed = 25 * 8 * 48
    stages = 9 * 8 * 32 + 4 * 9 * 8 * 32 + 16 * 9 * 8 * 3  # per LR pixel (at C = 32: 5x as many)
    assert composed < stages


def test_an_upsampler_with_zero_or_non_finite_weights_is_composed_or_left_as_it_is():
    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), 2, 8, 1), 4)
    with torch.no_grad():
        for p in [*net.upsample.parameters(), *net.tail.parameters()]:
            p.zero_()
    x = torch.rand(1, 3, 14, 15)
    with torch.no_grad():
        assert torch.equal(fold_for_inference(net, upsampler=True)(x), net(x))  # all zeros: radius 0
        net.tail.weight[0, 0, 0, 0] = float("nan")
        assert isinstance(fold_for_inference(net, upsampler=True).upsample, type(net.upsample))


def test_a_folded_backend_keeps_the_networks_receptive_radius():
    from deconas.infer.backends import TorchBackend

    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), 2, 8, 4), 2)
    assert net.receptive_radius == 37  # the paper cell at N = 4 (docs/upscale.md's overlap)
    assert TorchBackend(net, fold=True).radius == 37
    assert TorchBackend(net, precision="bf16").radius == 37
