"""Weights written before the operations' submodules had names still load, and compute what
they computed then: tests/data holds a DeCoNASNet checkpoint and a supernet state saved by the
version whose ops were positions in an nn.Sequential ("ops.0.1.weight", "depthwise")."""

from pathlib import Path

import torch

from deconas.checkpoint import init_from, load_model
from deconas.space.genotype import parse
from deconas.space.network import DeCoNASNet
from deconas.search.supernet import SuperNet

DATA = Path(__file__).parent / "data"
# The saved outputs were computed on another CPU, whose convolution kernels round differently
# (up to 1.2e-7 on an AVX-512 machine), so not bit for bit: a tensor loaded into the wrong place
# moves the output far more than this bound (swapping two pointwise weights: 4e-4).
SAME = dict(rtol=0, atol=1e-5)


def test_a_network_checkpoint_with_the_old_names_loads_and_computes_the_same():
    old = torch.load(DATA / "legacy-supernet-x3.pt")
    model, _ = load_model(DATA / "legacy-net-x2.safetensors")
    assert any(k.endswith(".pw.weight") for k in model.state_dict())  # named now
    with torch.no_grad():
        torch.testing.assert_close(model(old["input"]), old["net_output"], **SAME)
    # The optimizer state of a resumed run is keyed by parameter order: unchanged.
    assert [tuple(p.shape) for p in model.parameters()] == old["net_param_shapes"]


def test_a_state_dict_with_the_old_names_loads_into_a_network_and_as_init(tmp_path):
    from safetensors.torch import load_file

    old_state = load_file(str(DATA / "legacy-net-x2.safetensors"))
    assert "dnbs.0.nodes.0.ops.1.2.weight" in old_state  # the old positional names
    g = parse(torch.load(DATA / "legacy-supernet-x3.pt")["genotype"])
    net = DeCoNASNet(g, scale=2, channels=4, blocks=2)
    net.load_state_dict(old_state)  # strict: every tensor mapped, none left over
    assert torch.equal(net.dnbs[1].nodes[0].ops[1].pw.weight, old_state["dnbs.1.nodes.0.ops.1.2.weight"])
    fresh = DeCoNASNet(g, scale=3, channels=4, blocks=2)
    rec = init_from(fresh, DATA / "legacy-net-x2.safetensors", 3)
    assert rec["fresh"] == ["upsample.0.weight", "upsample.0.bias"]  # only the x3 upsampler starts fresh


def test_a_search_checkpoints_supernet_with_the_old_names_loads_and_computes_the_same():
    old = torch.load(DATA / "legacy-supernet-x3.pt")
    assert "dnbs.0.nodes.0.ops.1.depthwise.weight" in old["supernet"]
    sup = SuperNet(scale=3, channels=4, blocks=2, nodes=4)
    sup.load_state_dict(old["supernet"])
    assert "dnbs.0.nodes.0.ops.1.dw.weight" in sup.state_dict()
    with torch.no_grad():
        torch.testing.assert_close(sup(old["input"], parse(old["genotype"])), old["supernet_output"], **SAME)
    assert [tuple(p.shape) for p in sup.parameters()] == old["supernet_param_shapes"]


def test_a_seed_still_initialises_the_same_weights_as_before():
    # The fixtures were made by torch.manual_seed(0) -> DeCoNASNet(paper genotype, x2, C=4, N=2)
    # and torch.manual_seed(1) -> SuperNet(x3, C=4, N=2, M=4) in the earlier version.
    from safetensors.torch import load_file

    from deconas.space.layers import current_names

    old = torch.load(DATA / "legacy-supernet-x3.pt")
    torch.manual_seed(0)
    net = DeCoNASNet(parse(old["genotype"]), scale=2, channels=4, blocks=2)
    saved = current_names(load_file(str(DATA / "legacy-net-x2.safetensors")))
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
    torch.manual_seed(1)
    sup = SuperNet(scale=3, channels=4, blocks=2, nodes=4)
    saved = current_names(old["supernet"])
    assert all(torch.equal(v, saved[k]) for k, v in sup.state_dict().items())
