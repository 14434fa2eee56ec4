"""The controller: sampling follows the heads, REINFORCE moves the policy, decoding is consistent."""

import torch

from deconas.search.controller import Controller
from deconas.space.genotype import num_pairs
from deconas.space.ops import K


def controller(nodes, blocks, **changes):
    """A controller with the settings these tests were written for (the config's search
    defaults), but ``changes``."""
    settings = dict(ff=False, lstm_size=64, lstm_layers=2, tanh_constant=1.1, op_tanh_reduce=2.5, temperature=None,
                    tie_embeddings=True)
    return Controller(nodes, blocks, **{**settings, **changes})


def test_strongly_biased_head_emits_its_bit_at_least_99_percent_of_the_time():
    torch.manual_seed(0)
    c = controller(nodes=3, blocks=2, tanh_constant=None)  # no squashing, so a head can be decisive
    with torch.no_grad():
        c.op_b[0] = torch.tensor([-6.0, 6.0])  # conv head: P(bit = 1) ~ 0.99999
        c.op_b[2] = torch.tensor([6.0, -6.0])  # dilated head: P(bit = 1) ~ 0.00001
    n, conv_on, dil_on, sep_on = 300, 0, 0, 0
    with torch.no_grad():
        for _ in range(n):
            for v in c.sample().genotype.cell:
                conv_on += (v >> 2) & 1
                sep_on += (v >> 1) & 1
                dil_on += v & 1
    total = n * num_pairs(3)
    assert conv_on / total >= 0.99
    assert dil_on / total <= 0.01
    assert 0.3 < sep_on / total < 0.7  # the unbiased head stays near a coin flip


def test_tanh_squashing_bounds_op_probabilities_as_the_release():
    c = controller(nodes=2, blocks=2)  # 0.44 * tanh: |logit difference| <= 0.88
    with torch.no_grad():
        c.op_b[:] = torch.tensor([-100.0, 100.0])
    p = c.sample().p_one
    assert torch.all(p <= torch.sigmoid(torch.tensor(0.88)) + 1e-6)


def test_reinforce_step_with_positive_advantage_raises_log_prob_of_sampled_genotype():
    torch.manual_seed(1)
    c = controller(nodes=4, blocks=4, ff=True)
    opt = torch.optim.Adam(c.parameters(), lr=1e-2)
    s = c.sample()
    before = c.evaluate(s.genotype).log_prob.item()
    assert abs(before - s.log_prob.item()) < 1e-5  # teacher forcing reproduces the sample's log-prob
    advantage = 1.5
    opt.zero_grad()
    (-s.log_prob * advantage).backward()
    opt.step()
    assert c.evaluate(s.genotype).log_prob.item() > before


def test_negative_advantage_lowers_log_prob():
    torch.manual_seed(2)
    c = controller(nodes=3, blocks=2)
    opt = torch.optim.Adam(c.parameters(), lr=1e-2)
    s = c.sample()
    before = s.log_prob.item()
    opt.zero_grad()
    (-s.log_prob * -1.0).backward()
    opt.step()
    assert c.evaluate(s.genotype).log_prob.item() < before


def test_greedy_takes_the_more_probable_bit_of_every_decision():
    c = controller(nodes=3, blocks=2, tanh_constant=None)
    with torch.no_grad():
        c.op_b[:] = torch.tensor([[-5.0, 5.0], [5.0, -5.0], [-5.0, 5.0]])  # conv on, sep off, dil on
    g = c.greedy().genotype
    assert g.cell == (5,) * num_pairs(3)
    assert c.greedy().genotype == g  # deterministic


def test_ff_search_adds_one_lff_step_and_one_gff_step():
    torch.manual_seed(3)
    c = controller(nodes=4, blocks=3, ff=True)
    s = c.sample()
    assert len(s.genotype.cell) == num_pairs(4)
    assert len(s.genotype.lff) == 4 and len(s.genotype.gff) == 3
    assert s.p_one.numel() == c.num_decisions() == num_pairs(4) * K + 4 + 3 == len(c.decision_names())
    assert controller(nodes=4, blocks=3).sample().genotype.lff is None  # FF0: no FF bits


def test_tied_embedding_row_is_the_sum_of_the_heads_rows_for_its_bits():
    c = controller(nodes=2, blocks=2)
    table = c.op_embedding_table()
    assert table.shape == (2 ** K, 64)
    v = 0b101  # conv on, sep off, dil on
    expect = c.op_w[0, 1] + c.op_w[1, 0] + c.op_w[2, 1]
    assert torch.allclose(table[v], expect)
    untied = controller(nodes=2, blocks=2, tie_embeddings=False)
    assert untied.op_embedding_table().shape == (2 ** K, 64)


def test_initialisation_is_uniform_within_a_tenth_and_biases_zero():
    c = controller(nodes=4, blocks=4, ff=True)
    for name, p in c.named_parameters():
        if name.endswith("_b"):
            assert torch.all(p == 0)
        else:
            assert p.abs().max() <= 0.1
