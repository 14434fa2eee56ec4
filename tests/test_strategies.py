"""Search strategies (search/strategies.py): the controller path reproduces the version before
the strategy seam, every strategy x penalty derives a best.json, resumes are exact, fair
sampling is strictly fair, the advantages and the REINFORCE step, evolution's population and
tournament, random search's coins, the latency model, torchrun, and the refusals.

The torchrun test launches this file as its worker script (``__main__`` at the bottom), as
tests/test_search_distributed.py does.
"""

import copy
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from deconas.cli import main
from deconas.errors import UserError
from deconas.runtime import seed_everything, torch_load
from deconas.search.derive import derive
from deconas.search.loop import Search, run_search
from deconas.search.reward import Penalty, reward_of
from deconas.search.runs import build_controller, load_search_data
from deconas.search.strategies import advantages, make_strategy
from deconas.space.genotype import Genotype, all_ones, decision_bits, from_decision_bits, parse
from deconas.space.latency import check_table, predict_latency
from deconas.space.network import DeCoNASNet, count_params

from search_helpers import tiny_config, tiny_config_yaml, tiny_images

HERE = Path(__file__).resolve()
REFERENCE = HERE.parent / "data" / "controller-reference" / "metrics.jsonl"
CPU = torch.device("cpu")
TIMING = ("seconds", "elapsed")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return tiny_images(tmp_path_factory.mktemp("imgs"))


def _records(run):
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _one_line_error(capsys) -> str:
    """The error of a refused command: one line (the 'search x...' banner aside, as in test_search.py)."""
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip() and not x.startswith("search x")]
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------- 1. the previous version
# Values that only the sampled architectures decide (integers, or means of integers), and
# settings: equal exactly. Every other number is a float of the training: rel 1e-6.
_EXACT = {"epoch", "lr", "controller_trained", "greedy", "greedy_params", "params_max", "params_mean",
          "child_params_mean", "controller_params_mean", "world_size"}


def test_controller_with_strategy_sampling_moving_average_and_params_reproduces_the_previous_version(tmp_path):
    """What tests/data/controller-reference/make.py ran on commit b659112, run again here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = tiny_config(epochs=3, warmup_epochs=1)
        assert (cfg.search.strategy, cfg.search.supernet_sampling, cfg.search.reward_baseline,
                cfg.search.penalty, cfg.search.samples_per_step) == ("controller", "strategy", "moving_average",
                                                                     "params", 1)
        run_search(cfg, tiny_images(tmp_path / "imgs", n=6, size=40), None, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    ref = [json.loads(x) for x in REFERENCE.read_text().splitlines()]
    got = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(ref) == 3 and len(got) == len(ref)
    for r, g in zip(ref, got):
        for key, want in r.items():
            if key in TIMING:
                continue
            assert key in g, key
            have = g[key]
            if key in _EXACT:
                assert have == want, (r["epoch"], key, have, want)
            elif key == "p_one":
                assert list(have) == list(want), r["epoch"]  # the same decisions, in the same order
                for name, p in want.items():
                    assert have[name] == pytest.approx(p, rel=1e-6), (r["epoch"], name)
            else:
                assert isinstance(want, float), key  # nothing of the reference goes unchecked
                assert have == pytest.approx(want, rel=1e-6), (r["epoch"], key, have, want)
    assert all(g["strategy"] == "controller" for g in got)


# ----------------------------------------------------------------- 2. strategies x penalties
def _latency_table_for_tiny(nodes=2, blocks=2, channels=4, scale=2) -> dict:
    """A hand-made table of the format space/latency.py's check_table asks for."""
    return {"format": "deconas-latency-1", "runtime": "hand-made", "unit": "ms", "scale": scale,
            "channels": channels, "blocks": blocks, "nodes": nodes, "input": [8, 8],
            "fixed": 5.0, "node": 0.5,
            "op": {"conv": [1.0 + j for j in range(nodes)], "sep": [0.4 + 0.2 * j for j in range(nodes)],
                   "dil": [1.5 + j for j in range(nodes)]},
            "concat": [0.0] + [0.05 * j for j in range(1, max(nodes, blocks) + 1)],
            "mean": [0.0, 0.02, 0.03],
            "lff": [0.3 + 0.1 * j for j in range(nodes + 1)], "gff": [0.2 + 0.1 * j for j in range(blocks + 1)]}


@pytest.mark.parametrize("penalty", ["params", "mult_adds", "latency"])
@pytest.mark.parametrize("strategy", ["controller", "random", "evolution"])
def test_each_strategy_with_each_penalty_derives_a_best_json_with_its_reward(images, tmp_path, strategy, penalty):
    extra = {}
    table = None
    if penalty == "latency":
        table = check_table(_latency_table_for_tiny(), 2, 2)
        (tmp_path / "latency.json").write_text(json.dumps(table))
        extra["latency_table"] = str(tmp_path / "latency.json")
    cfg = tiny_config(strategy=strategy, penalty=penalty, population=3, tournament=2, **extra)
    m, s = cfg.model, cfg.search
    run = tmp_path / "run"
    run_search(cfg, images, None, run, progress=False)
    derive(run, device="cpu", progress=False)
    best = json.loads((run / "best.json").read_text())
    g = parse(best["genotype"], nodes=m.nodes, blocks=m.blocks)  # a genotype of the space ...
    assert g.ff is s.ff and Genotype.from_dict(best["genotype_dict"]) == g
    assert (best["scale"], best["channels"], best["blocks"], best["nodes"]) == (cfg.scale, m.channels, m.blocks,
                                                                                m.nodes)
    if strategy != "controller":  # ... and for random search and evolution, one it scored
        assert str(g) in torch_load(run / "checkpoint.pt")["strategy"]["history"]
    pen = Penalty(penalty, cfg.scale, m.channels, m.blocks, m.nodes, s.ff, table)
    assert best["reward"] == pytest.approx(reward_of(best["val_psnr"], pen(g), pen.max, float(s.alpha)), abs=1e-9)
    if penalty == "params":  # the parameters of the networks themselves, counted by torch
        n = count_params(DeCoNASNet(g, cfg.scale, m.channels, m.blocks))
        n_max = count_params(DeCoNASNet(all_ones(m.nodes), cfg.scale, m.channels, m.blocks))
        assert best["params"] == n
        assert best["reward"] == pytest.approx(best["val_psnr"] - float(s.alpha) * n / n_max, abs=1e-9)
    if penalty == "latency":
        assert pen(g) == predict_latency(g, table) and pen.max == predict_latency(all_ones(m.nodes), table)
    recs = _records(run)
    assert all(r["strategy"] == strategy for r in recs)


# ----------------------------------------------------------------- 3. exact resume
@pytest.mark.parametrize("strategy,extra", [
    ("controller", {}),
    ("random", {}),
    ("evolution", {}),
    ("evolution", {"supernet_sampling": "fair"}),
    ("controller", {"reward_baseline": "leave_one_out", "samples_per_step": 3}),
], ids=["controller", "random", "evolution", "evolution-fair", "controller-leave_one_out-3"])
def test_resume_is_bit_identical_for_each_strategy(images, tmp_path, strategy, extra):
    kw = dict(strategy=strategy, population=3, tournament=2, **extra)
    run_search(tiny_config(epochs=2, **kw), images, None, tmp_path / "straight", progress=False)
    run_search(tiny_config(epochs=1, **kw), images, None, tmp_path / "resumed", progress=False)
    seed_everything(999)  # the process's streams disturbed between the two runs
    torch.rand(11)
    run_search(tiny_config(epochs=2, **kw), images, None, tmp_path / "resumed", resume=True, progress=False)
    a, b = torch_load(tmp_path / "straight" / "checkpoint.pt"), torch_load(tmp_path / "resumed" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["supernet"].keys() == b["supernet"].keys()
    for k in a["supernet"]:
        assert torch.equal(a["supernet"][k], b["supernet"][k]), k
    if strategy == "controller":
        for k in a["controller"]:
            assert torch.equal(a["controller"][k], b["controller"][k]), k
        assert a["baseline"] == b["baseline"]
    else:
        sa, sb = a["strategy"], b["strategy"]
        assert sa["name"] == strategy
        assert sa["history"] == sb["history"] and len(sa["history"]) > 0
        assert sa["rng"] == sb["rng"] and sa["baseline"] == sb["baseline"]
        if strategy == "evolution":
            assert sa["population"] == sb["population"] and len(sa["population"]) == 3
    assert a["child_rng"] == b["child_rng"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert _records(tmp_path / "straight") == _records(tmp_path / "resumed")


# ----------------------------------------------------------------- 4. fair sampling
def _chunks(supernet):
    """(block, node, input, op, tensor) -> (weight, dim) of every per-input chunk of the shared ops."""
    out = {}
    for d, dnb in enumerate(supernet.dnbs):
        for m, node in enumerate(dnb.nodes):
            for k, op in enumerate(node.ops):
                parts = [("dw", op.dw.weight, 0), ("pw", op.pw.weight, 1)] if op.spec.separable else \
                    [("conv", op.conv.weight, 1)]
                for name, w, dim in parts:
                    for j in range(m + 1):
                        out[(d, m, j, k, name)] = (w, dim)
    return out


def _count_trained_chunks(images, sampling, steps, ff=False):
    """Run ``steps`` child steps of a Search; per chunk: the steps whose gradient slice is
    non-zero, and the steps in which an architecture of the step reads it.

    Every weight of the supernet is first made positive, so every activation is positive and
    no ReLU can silence a chunk: its gradient is non-zero exactly when an architecture of the
    step reads it. (With the fresh initialisation a node's output can be all zeros after its
    ReLU, e.g. block 1 node 0 in the first step with ff=true here, and then the chunks that
    read it get no gradient, however fair the sampling.)"""
    cfg = tiny_config(supernet_sampling=sampling, ff=ff)
    train, val, _ = load_search_data(cfg, images, None)
    seed_everything(cfg.seed)
    search = Search(cfg, train, val, CPU, rank=0, world=1)
    with torch.no_grad():
        for p in search.supernet.parameters():
            p.abs_().add_(1e-2)
    c = cfg.model.channels
    chunks = _chunks(search.supernet)
    nonzero, reads, per_step_reads = Counter(), Counter(), []
    real_step = search.child_opt.step

    def spying_step(*a, **k):
        for key, (w, dim) in chunks.items():
            j = key[2]
            if w.grad is not None and bool(w.grad.narrow(dim, j * c, c).ne(0).any()):
                nonzero[key] += 1
        return real_step(*a, **k)

    search.child_opt.step = spying_step
    for _ in range(steps):
        _, arches = search.child_step()
        step_reads = Counter()
        for key in chunks:
            d, m, j, k, _ = key
            step_reads[key] = sum(j in a.genotype.op_inputs(m, k) for a in arches)
            reads[key] += step_reads[key] > 0
        per_step_reads.append((len(arches), step_reads))
    return chunks, nonzero, reads, per_step_reads


@pytest.mark.parametrize("ff", [False, True])
def test_fair_sampling_trains_every_weight_chunk_exactly_once_per_step(images, ff):
    n = 6
    chunks, nonzero, reads, per_step = _count_trained_chunks(images, "fair", n, ff)
    assert len(chunks) == 2 * (1 + 2) * 4  # N=2 blocks x (1 + 2 inputs) x (conv, sep dw, sep pw, dil)
    assert {key: nonzero[key] for key in chunks} == {key: n for key in chunks}
    for count, step_reads in per_step:  # a pair per step: the draw and its complement, each chunk once
        assert count == 2 and set(step_reads.values()) == {1}


def test_uniform_sampling_does_not_train_every_chunk_equally_often(images):
    """The teeth of the test above: the same counter, one uniform draw per step."""
    n = 6
    chunks, nonzero, reads, _ = _count_trained_chunks(images, "uniform", n)
    counts = {key: nonzero[key] for key in chunks}
    assert counts == {key: reads[key] for key in chunks}  # a gradient exactly where the architecture reads
    assert len(set(counts.values())) > 1, counts


# ----------------------------------------------------------------- 5. advantages, REINFORCE
def test_leave_one_out_advantages_are_each_reward_minus_the_mean_of_the_others():
    got = advantages([1.0, 2.0, 6.0], "leave_one_out", None)
    assert got == pytest.approx([1.0 - (2.0 + 6.0) / 2, 2.0 - (1.0 + 6.0) / 2, 6.0 - (1.0 + 2.0) / 2], abs=1e-12)
    assert got == pytest.approx([-3.0, -1.5, 4.5], abs=1e-12)
    assert advantages([4.0, -2.0], "leave_one_out", None) == pytest.approx([6.0, -6.0], abs=1e-12)
    # The baseline of the other argument plays no part.
    assert advantages([1.0, 2.0, 6.0], "leave_one_out", 100.0) == pytest.approx([-3.0, -1.5, 4.5], abs=1e-12)


def test_leave_one_out_with_a_group_of_one_is_a_one_line_user_error():
    with pytest.raises(UserError) as e:
        advantages([3.0], "leave_one_out", None)
    assert "\n" not in str(e.value) and "samples_per_step" in str(e.value)


def test_moving_average_advantages_are_reward_minus_baseline():
    assert advantages([1.0, 2.5, 4.0], "moving_average", 2.0) == pytest.approx([-1.0, 0.5, 2.0], abs=1e-12)
    assert advantages([7.0], "moving_average", 7.5) == pytest.approx([-0.5], abs=1e-12)


def _distinct_samples(strategy, count, tries=50):
    for _ in range(tries):
        props = strategy.propose(count, True, 0, 1)
        if len({p.genotype for p in props}) == count:
            return props
    raise AssertionError("the controller kept repeating itself")


@pytest.mark.parametrize("baseline", ["leave_one_out", "moving_average"])
def test_controller_step_with_three_samples_is_the_mean_reinforce_update_of_its_advantages(baseline):
    """One controller update with samples_per_step=3, recomputed by hand: the advantages from
    the hand-made rewards, loss = mean(-log_prob_i * A_i) on a copy, one Adam step."""
    lr = 0.05
    cfg = tiny_config(samples_per_step=3, reward_baseline=baseline, controller_lr=lr)
    torch.manual_seed(3)
    strat = make_strategy(cfg, CPU)
    props = _distinct_samples(strat, 3)
    rewards = [10.0, 11.0, 14.0]  # the third is the best, by a margin
    if baseline == "leave_one_out":
        expect_adv = [10.0 - 12.5, 11.0 - 12.0, 14.0 - 10.5]
        b_before = None
    else:
        b_before = strat.baseline = 11.5
        expect_adv = [r - 11.5 for r in rewards]
    twin = build_controller(cfg)
    twin.load_state_dict(strat.controller.state_dict())
    opt = torch.optim.Adam(twin.parameters(), lr=lr)
    opt.load_state_dict(copy.deepcopy(strat.opt.state_dict()))
    lp_before = [strat.controller.evaluate(p.genotype).log_prob.item() for p in props]

    strat.learn([(p.genotype, r, p.sample) for p, r in zip(props, rewards)], train=True)

    loss = sum(-twin.evaluate(p.genotype).log_prob * a for p, a in zip(props, expect_adv)) / 3
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, v in twin.state_dict().items():
        assert torch.allclose(strat.controller.state_dict()[k], v, atol=1e-6, rtol=0), k
    lp_after = [strat.controller.evaluate(p.genotype).log_prob.item() for p in props]
    assert lp_after[2] > lp_before[2]  # the best-advantage sample became more likely ...
    assert lp_after[0] < lp_before[0]  # ... the worst less
    d = cfg.search.baseline_decay
    mean = sum(rewards) / 3
    want_b = mean if b_before is None else d * b_before + (1 - d) * mean
    assert strat.baseline == pytest.approx(want_b, abs=1e-12)


# ----------------------------------------------------------------- 6. evolution, random
def _code(bits):
    return from_decision_bits(bits, 2, False)


# Pairwise Hamming distance >= 3 over the 9 decision bits of M = 2: a child one bit away from
# one of them is at least two bits away from every other, so its parent is known.
_CODES = [[0] * 9, [1] * 3 + [0] * 6, [0] * 3 + [1] * 3 + [0] * 3, [0] * 6 + [1] * 3, [1] * 9]


def _distance(a, b):
    return sum(x != y for x, y in zip(decision_bits(a), decision_bits(b)))


def test_evolution_population_is_bounded_and_the_oldest_member_leaves():
    cfg = tiny_config(strategy="evolution", population=4, tournament=2)
    strat = make_strategy(cfg, CPU)
    rng = np.random.default_rng(7)
    added = []
    for size in (1, 2, 3, 1, 2, 6, 1):  # groups of hand-made genotypes and rewards
        group = [(strat.uniform(rng), float(rng.normal(10, 1)), None) for _ in range(size)]
        strat.learn(group, train=True)
        added += [(g, r) for g, r, _ in group]
        assert len(strat.population) <= cfg.search.population
        assert list(strat.population) == added[-cfg.search.population:]  # the youngest stay, in age order
    assert len(added) == 16


class _RecordingRng:
    """A numpy Generator that records what its ``choice`` calls drew (the tournaments)."""

    def __init__(self, seed):
        self.gen, self.drawn = np.random.default_rng(seed), []

    def choice(self, *a, **k):
        out = self.gen.choice(*a, **k)
        self.drawn.append([int(i) for i in np.atleast_1d(out)])
        return out

    def __getattr__(self, name):
        return getattr(self.gen, name)


def test_evolution_child_is_one_bit_from_its_parent_the_best_of_its_tournament():
    n, t = len(_CODES), 2
    cfg = tiny_config(strategy="evolution", population=n, tournament=t)
    strat = make_strategy(cfg, CPU)
    rewards = [3.0, 5.0, 1.0, 4.0, 2.0]  # not in age order
    strat.learn([(_code(b), r, None) for b, r in zip(_CODES[:2], rewards[:2])], train=True)
    strat.learn([(_code(b), r, None) for b, r in zip(_CODES[2:], rewards[2:])], train=True)
    members = [g for g, _ in strat.population]
    assert members == [_code(b) for b in _CODES]
    rank_of = {i: sorted(range(n), key=lambda j: -rewards[j]).index(i) for i in range(n)}
    rng, parents, draws = _RecordingRng(11), Counter(), 2000
    for _ in range(draws):
        rng.drawn.clear()
        child = strat.child_architecture(rng).genotype
        dist = [_distance(child, g) for g in members]
        assert sorted(dist)[0] == 1 and sorted(dist)[1] >= 2, dist  # exactly one bit from one member
        parent = dist.index(1)
        assert len(rng.drawn) == 1 and len(set(rng.drawn[0])) == t  # one tournament, t distinct members
        assert parent == max(rng.drawn[0], key=lambda i: rewards[i])  # its best is the parent
        parents[rank_of[parent]] += 1
    # Tournament selection: the member of reward rank i (0 = best) wins with C(n-1-i, t-1) / C(n, t).
    for i in range(n):
        p = math.comb(n - 1 - i, t - 1) / math.comb(n, t)
        tol = 4.5 * math.sqrt(p * (1 - p) / draws) + 1e-12
        assert abs(parents[i] / draws - p) <= tol, (i, parents[i] / draws, p)
    # The strategy's own proposals follow the same rule, from its own stream.
    for prop in strat.propose(5, False, 0, 1):
        assert sorted(_distance(prop.genotype, g) for g in members)[0] == 1


@pytest.mark.parametrize("ff", [False, True])
def test_random_strategy_sets_every_decision_bit_half_the_time(ff):
    cfg = tiny_config(strategy="random", ff=ff)
    strat = make_strategy(cfg, CPU)
    draws = 3000
    bits = np.array([decision_bits(p.genotype) for p in strat.propose(draws, False, 0, 1)])
    assert bits.shape == (draws, 9 + (4 if ff else 0))  # 3 pairs x 3 ops (+ M LFF + N GFF bits)
    tol = 4.5 * math.sqrt(0.25 / draws)
    assert np.all(np.abs(bits.mean(0) - 0.5) <= tol), bits.mean(0)
    assert len({tuple(r) for r in bits.tolist()}) > draws // 20  # many different architectures


def test_random_and_evolution_deal_one_group_out_to_the_ranks():
    for name in ("random", "evolution"):
        cfg = tiny_config(strategy=name, population=3, tournament=2)
        one, r0, r1 = (make_strategy(cfg, CPU) for _ in range(3))
        whole = [p.genotype for p in one.propose(2, False, 0, 1)] + [p.genotype for p in one.propose(2, False, 0, 1)]
        # Two ranks, two per rank: each rank's slice of the same draw of four.
        dealt = [p.genotype for p in r0.propose(2, False, 0, 2)] + [p.genotype for p in r1.propose(2, False, 1, 2)]
        assert dealt == whole, name
        assert r0.rng.bit_generator.state == r1.rng.bit_generator.state == one.rng.bit_generator.state


# ----------------------------------------------------------------- 7. the latency model
def test_predict_latency_is_the_hand_sum_of_the_table():
    """M = 3, N = 2 (docs of space/latency.py): fixed + N x (per node: node + per active op
    (op[k][inputs - 1] + concat[inputs - 1]) + mean[active ops - 1]; + lff + concat) + gff + concat."""
    table = {"format": "deconas-latency-1", "scale": 2, "channels": 4, "blocks": 2, "nodes": 3,
             "fixed": 1000.0, "node": 100.0,
             "op": {"conv": [10.0, 20.0, 30.0], "sep": [1.0, 2.0, 3.0], "dil": [0.5, 0.25, 0.125]},
             "concat": [0.0, 4000.0, 5000.0, 6000.0], "mean": [0.0, 7.0, 8.0],
             "lff": [200.0, 300.0, 400.0, 500.0], "gff": [60.0, 70.0, 80.0]}
    assert check_table(table, 3, 2) is table
    # Nodes 0 and 1 empty; node 2: conv reads x_in and n1 (2), sep n0 (1), dil x_in (1): 3 ops.
    # per node: 100 + 100 + (100 + 20 + 4000 + 1 + 0 + 0.5 + 0 + mean[2] = 8) = 4329.5
    # LFF (FF0) reads x_in, n0, n1, n2: lff[3] + concat[3] = 6500; per block 10829.5
    # GFF (FF0) reads F0, B0, B1: gff[2] + concat[2] = 5080
    empty_nodes = parse("0,0,0,5,2,4")
    assert predict_latency(empty_nodes, table) == pytest.approx(1000 + 2 * 10829.5 + 5080, rel=1e-12)  # 27739
    # node 0: x_in 7: conv, sep, dil read 1 each: 100 + 10 + 1 + 0.5 + mean[2] 8 = 119.5
    # node 1: x_in 1 (dil), n0 6 (conv, sep): each op 1 input: 100 + 10 + 1 + 0.5 + 8 = 119.5
    # node 2: x_in 0, n0 0, n1 3 (sep, dil): 100 + 1 + 0.5 + mean[1] 7 = 108.5
    # LFF bits 010: n0 and (always) n2: lff[1] + concat[1] = 4300; per block 347.5 + 4300 = 4647.5
    # GFF bits 10: F0 and (always) B1: gff[1] + concat[1] = 4070
    ff_bits = parse("7,1,6,0,0,3|010|10")
    assert predict_latency(ff_bits, table) == pytest.approx(1000 + 2 * 4647.5 + 4070, rel=1e-12)  # 14365


# ----------------------------------------------------------------- 8. torchrun
def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


_DDP = dict(epochs=2, population=3, tournament=2)


@pytest.mark.slow
def test_random_and_evolution_under_torchrun_end_with_the_same_state_on_every_rank(images, tmp_path):
    r = subprocess.run(_torchrun(HERE, tmp_path, images), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    cfg = tiny_config(**_DDP)
    steps = cfg.search.epochs * cfg.search.controller_steps
    for name in ("random", "evolution"):
        r0 = torch_load(tmp_path / f"{name}-rank0.pt")
        r1 = torch_load(tmp_path / f"{name}-rank1.pt")
        assert r0["strategy"] == r1["strategy"], name  # history, population, rng, baseline
        s = r0["strategy"]["strategy"]
        assert s["name"] == name
        assert sum(n for _, n in s["history"].values()) == steps * 2  # both ranks' architectures, every step
        if name == "evolution":
            assert len(s["population"]) == 3
        assert r0["supernet"].keys() == r1["supernet"].keys()
        for k in r0["supernet"]:
            assert torch.equal(r0["supernet"][k], r1["supernet"][k]), (name, k)
        # ... while each rank scored its own share of each step's group, and trained its own children.
        assert len(r0["scored"]) == len(r1["scored"]) == steps
        for a, b, group in zip(r0["scored"], r1["scored"], r0["groups"]):
            assert a + b == group
        assert r0["groups"] == r1["groups"]
        assert r0["child_genotypes"] != r1["child_genotypes"]
        assert _records(tmp_path / name)[-1]["world_size"] == 2
        assert _records(tmp_path / name)[-1]["architectures_scored_total"] == steps * 2


def _worker(root: Path, images: Path) -> None:
    from deconas import distributed
    from deconas.search import loop as search_mod

    torch.set_num_threads(1)
    distributed.setup("cpu")
    rank = distributed.rank()
    held, seen, scored, groups = {}, [], [], []
    child_step, controller_step, run_epoch = (search_mod.Search.child_step, search_mod.Search.controller_step,
                                              search_mod.Search.run_epoch)

    def recording_child(self):
        loss, arches = child_step(self)
        seen.extend(str(a.genotype) for a in arches)
        return loss, arches

    def recording_controller(self, train):
        st = controller_step(self, train)
        scored.append([str(p.genotype) for p in st["proposals"]])
        groups.append([str(g) for g in st["genotypes"]])
        return st

    def holding(self, bar=None):
        held["search"] = self
        return run_epoch(self, bar)

    search_mod.Search.child_step, search_mod.Search.controller_step = recording_child, recording_controller
    search_mod.Search.run_epoch = holding
    for name in ("random", "evolution"):
        for log in (seen, scored, groups):
            log.clear()
        search_mod.run_search(tiny_config(strategy=name, **_DDP), images, None, root / name, progress=False)
        s = held["search"]
        torch.save({"strategy": s.strategy.state_dict(), "supernet": s.supernet.state_dict(),
                    "child_genotypes": list(seen), "scored": list(scored), "groups": list(groups)},
                   root / f"{name}-rank{rank}.pt")


# ----------------------------------------------------------------- 9. refusals
def _cfg_file(tmp_path, **search):
    f = tmp_path / "tiny.yaml"
    f.write_text(tiny_config_yaml(**search))
    return str(f)


def test_a_tournament_larger_than_the_population_is_a_one_line_refusal(images, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["search", "--config", _cfg_file(tmp_path, epochs=1), "--train", str(images), "--out", str(out),
                 "search.strategy=evolution", "search.population=2", "search.tournament=5"]) == 2
    line = _one_line_error(capsys)
    assert "search.tournament=5" in line and "search.population=2" in line
    assert not (out / "checkpoint.pt").exists()


def test_leave_one_out_with_one_sample_in_one_process_is_a_one_line_refusal(images, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["search", "--config", _cfg_file(tmp_path, epochs=1), "--train", str(images), "--out", str(out),
                 "search.reward_baseline=leave_one_out", "search.samples_per_step=1"]) == 2
    assert "samples_per_step" in _one_line_error(capsys)
    assert not (out / "checkpoint.pt").exists()


_SWITCHES = [("controller", "random"), ("random", "evolution"), ("evolution", "controller")]


def _search_then_resume_as(images, tmp_path, capsys, before, after):
    out = tmp_path / "r"
    assert main(["search", "--config", _cfg_file(tmp_path, epochs=1, strategy=before, population=3, tournament=2),
                 "--train", str(images), "--out", str(out)]) == 0
    capsys.readouterr()
    kept = (out / "checkpoint.pt").read_bytes()
    assert main(["search", "--out", str(out), "--resume", "search.epochs=2", f"search.strategy={after}"]) == 2
    line = _one_line_error(capsys)
    assert (out / "checkpoint.pt").read_bytes() == kept
    assert len(_records(out)) == 1
    return line


@pytest.mark.parametrize("before,after", _SWITCHES)
def test_resuming_a_search_with_another_strategy_is_a_one_line_refusal(images, tmp_path, capsys, before, after):
    _search_then_resume_as(images, tmp_path, capsys, before, after)


@pytest.mark.parametrize("before,after", [("controller", "random"), ("random", "evolution"), ("evolution", "controller")])
def test_the_refusal_of_another_strategy_names_both_and_does_not_call_the_checkpoint_damaged(
        images, tmp_path, capsys, before, after):
    line = _search_then_resume_as(images, tmp_path, capsys, before, after)
    assert before in line and after in line and "damaged" not in line, line


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
