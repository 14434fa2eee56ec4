"""The network on channels-last buffers (1x1 convolutions as matrix products over slots of
them): the network itself is the oracle."""

import pytest
import torch
from hypothesis import given, settings

from deconas.infer.buffered import BufferedNetwork, _runs
from deconas.infer.fold import fold_for_inference
from deconas.space.genotype import PAPER_GENOTYPE, parse
from deconas.space.network import DeCoNASNet

from test_fold import drawn_case, genotypes, randomised

CL = torch.channels_last


def buffered(net, upsampler=True):
    return BufferedNetwork(fold_for_inference(net, upsampler=upsampler).to(memory_format=CL)).eval()


@settings(max_examples=40, deadline=None)
@given(genotypes)
def test_the_buffered_network_computes_what_the_network_computes(case):
    # Every cell, with and without feature-fusion bits (LFF and GFF reading gaps of slots).
    net, x = drawn_case(case)
    with torch.no_grad():
        want, got = net(x), buffered(net)(x.contiguous(memory_format=CL))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def test_the_buffered_paper_network_matches_in_bf16_as_closely_as_the_plain_bf16_copy():
    from deconas.infer.backends import bf16_network

    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), 2, 16, 2), 5)
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = net(x)
        plain = bf16_network(fold_for_inference(net, upsampler=True)).net(x.contiguous(memory_format=CL))
        got = bf16_network(fold_for_inference(net, upsampler=True))(x.contiguous(memory_format=CL))
    assert (got - want).abs().max() <= 2 * (plain - want).abs().max() + 1e-6


def test_runs_group_consecutive_slots():
    assert _runs([0, 1, 2, 4]) == [(0, 3), (4, 5)]
    assert _runs([3]) == [(3, 4)] and _runs([1, 3, 5]) == [(1, 2), (3, 4), (5, 6)]


def test_an_unfolded_network_is_refused():
    with pytest.raises(ValueError, match="folded"):
        BufferedNetwork(DeCoNASNet(parse(PAPER_GENOTYPE), 2, 8, 1))


def test_fused_convolutions_and_the_plain_steps_give_the_same_network(monkeypatch):
    import deconas.infer.buffered as buffered_mod

    if not buffered_mod._fused_convolutions():
        pytest.skip("this torch has no oneDNN fused convolutions")
    net = randomised(DeCoNASNet(parse(PAPER_GENOTYPE), 3, 8, 2), 9)
    run = buffered(net)
    x = torch.rand(1, 3, 13, 12, generator=torch.Generator().manual_seed(9)).contiguous(memory_format=CL)
    with torch.no_grad():
        fused = run(x)
        monkeypatch.setattr(buffered_mod, "_fused_convolutions", lambda dtype=None: False)
        steps = run(x)
        want = net(x.contiguous())
    assert torch.allclose(fused, steps, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    assert torch.allclose(steps, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
