"""Search strategies: what proposes the architectures that the loop scores, and what it learns
from their rewards. The loop (:mod:`deconas.search.loop`) trains the shared weights and scores;
a strategy only decides. One registry, :data:`STRATEGIES`, by ``search.strategy``:

* ``controller``: the paper's LSTM policy, REINFORCE (:class:`ControllerStrategy`);
* ``random``: random search with weight sharing, every decision bit a fair coin (Li and
  Talwalkar, 2019);
* ``evolution``: regularized evolution (Real et al., 2019): a population of ``search.population``,
  a tournament of ``search.tournament`` picks a parent, the child flips one decision bit, the
  oldest member dies.

Every strategy sees the same rewards (:func:`deconas.search.reward.reward_of`), keeps its whole
state in ``state_dict`` (a resume continues exactly) and, under torchrun, learns from the
gathered rewards of every rank, so its state stays the same on every rank. Each controller step
scores a *group* of ``search.samples_per_step`` x P architectures on one reward batch; its
advantages are ``r - b`` with the moving-average baseline ``b`` or, with
``search.reward_baseline: leave_one_out`` (Kool et al., 2019), ``r_i - mean_{j != i} r_j``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from deconas.config import Config
from deconas.constants import SEED_STRATEGY
from deconas.errors import UserError
from deconas.runtime import STATE_INT_MAX, check_optimizer_state, check_tensors_like, state_number
from deconas.search.controller import Controller, Sample
from deconas.search.runs import build_controller
from deconas.space.genotype import Genotype, decision_bits, from_decision_bits, num_decisions, parse


@dataclass
class Proposal:
    """An architecture to score; ``sample`` is the controller's decoding of it (with the
    log-probability's graph when the policy is being trained)."""
    genotype: Genotype
    sample: Optional[Sample] = None

    def p_one(self) -> torch.Tensor:
        """P(bit = 1) of every decision: the policy's, or for a drawn architecture its bits."""
        if self.sample is not None:
            return self.sample.p_one
        return torch.tensor(decision_bits(self.genotype), dtype=torch.float32)


def advantages(rewards: Sequence[float], kind: str, baseline: Optional[float]) -> List[float]:
    """The advantage of each reward of one group (scored on one reward batch): ``r - b`` with
    the moving-average baseline ``b``, or ``r_i - mean_{j != i} r_j`` (leave-one-out)."""
    if kind == "leave_one_out":
        check_group(len(rewards), kind)
        total, n = sum(rewards), len(rewards)
        return [r - (total - r) / (n - 1) for r in rewards]
    return [r - baseline for r in rewards]


def check_group(size: int, kind: str) -> None:
    """A leave-one-out advantage needs another architecture scored on the same batch."""
    if kind == "leave_one_out" and size < 2:
        raise UserError("search.reward_baseline=leave_one_out needs at least 2 architectures per controller "
                        "step: raise search.samples_per_step (or run more processes)")


_FLOAT_MAX = sys.float_info.max


def checked_baseline(v) -> Optional[float]:
    """A checkpoint's reward baseline: None (not set yet) or a finite number."""
    return None if v is None else float(state_number(v, "baseline", -_FLOAT_MAX, _FLOAT_MAX))


def checked_genotype(g, what: str) -> str:
    """A checkpoint's genotype string, as the strategy stores it; ValueError when it does not parse."""
    if not isinstance(g, str):
        raise ValueError(f"{what} holds {type(g).__name__} where a genotype belongs")
    try:
        return str(parse(g))
    except UserError as e:
        raise ValueError(f"{what} holds {g[:40]!r} ({e})") from None


class Strategy:
    """What every strategy does; see the module's docstring."""

    name = ""

    def __init__(self, cfg: Config, device):
        m, s = cfg.model, cfg.search
        self.nodes, self.blocks, self.ff = m.nodes, m.blocks, s.ff
        self.n_bits = num_decisions(m.nodes, m.blocks, s.ff)
        self.baseline_kind, self.decay = s.reward_baseline, float(s.baseline_decay)
        self.baseline: Optional[float] = None
        # Shared by every rank (the same seed): the group of a step is drawn once, dealt out.
        self.rng = np.random.default_rng(cfg.seed + SEED_STRATEGY)
        self.history: Dict[str, List[float]] = {}  # genotype -> [reward sum, times scored]

    # -- drawing architectures ----------------------------------------------------------
    def uniform(self, rng: np.random.Generator) -> Genotype:
        """Every decision bit a fair coin."""
        return from_decision_bits(rng.integers(0, 2, self.n_bits).tolist(), self.nodes, self.ff)

    def child_architecture(self, rng: np.random.Generator) -> Proposal:
        """The architecture of one child step under ``supernet_sampling: strategy``."""
        raise NotImplementedError

    def propose(self, count: int, with_grad: bool, rank: int, world: int) -> List[Proposal]:
        """This rank's ``count`` architectures of one controller step."""
        raise NotImplementedError

    # -- learning -----------------------------------------------------------------------
    def learn(self, group: List[Tuple[Genotype, float, Optional[Sample]]], train: bool) -> None:
        """Every rank's (genotype, reward, this rank's sample or None) of one step, rank order."""
        for g, r, _ in group:
            h = self.history.setdefault(str(g), [0.0, 0])
            h[0], h[1] = h[0] + r, h[1] + 1
        self._move_baseline([r for _, r, _ in group])

    def _move_baseline(self, rewards: Sequence[float]) -> None:
        mean = rewards[0] if len(rewards) == 1 else sum(rewards) / len(rewards)
        if self.baseline is None:
            self.baseline = mean
        self.baseline = self.decay * self.baseline + (1 - self.decay) * mean

    def best(self, k: int) -> List[Tuple[Genotype, float]]:
        """The ``k`` best architectures scored so far, by mean reward (derive re-scores them)."""
        ranked = sorted(self.history.items(), key=lambda kv: -kv[1][0] / kv[1][1])
        return [(parse(g), s / n) for g, (s, n) in ranked[:k]]

    def pick(self) -> Optional[Genotype]:
        """The architecture the strategy would pick now (the metrics' ``greedy``)."""
        b = self.best(1)
        return b[0][0] if b else None

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"strategy": {"name": self.name, "baseline": self.baseline, "history": self.history,
                             "rng": self.rng.bit_generator.state}}

    def load_state_dict(self, st: dict) -> None:
        """From a checkpoint, checked as data: a damaged value is a ValueError (the caller names the file)."""
        s = st["strategy"]
        if not isinstance(s, dict) or not isinstance(s.get("history"), dict):
            raise ValueError("strategy is not a strategy's state")
        if s["name"] != self.name:
            raise UserError(f"the checkpoint is of a {str(s['name'])[:40]} search, the config asks for {self.name}")
        self.baseline = checked_baseline(s["baseline"])
        history = {}
        for g, v in s["history"].items():
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise ValueError(f"strategy history entry {str(g)[:40]} is {str(v)[:40]}")
            history[checked_genotype(g, "strategy history")] = [
                float(state_number(v[0], "a history reward sum", -_FLOAT_MAX, _FLOAT_MAX)),
                state_number(v[1], "a history count", 1, STATE_INT_MAX, integer=True)]
        self.history = history
        self.rng.bit_generator.state = s["rng"]

    def fingerprint(self) -> List[torch.Tensor]:
        """Tensors that are equal on every rank when the strategies are (torchrun's check)."""
        blob = json.dumps(self.state_dict(), sort_keys=True, default=str).encode()
        return [torch.frombuffer(bytearray(hashlib.sha256(blob).digest()), dtype=torch.uint8)]


class ControllerStrategy(Strategy):
    """The paper's LSTM controller, trained with REINFORCE. With one architecture per step and
    the moving-average baseline this is the paper's (and the release's) update, step for step."""

    name = "controller"

    def __init__(self, cfg: Config, device):
        super().__init__(cfg, device)
        self.controller: Controller = build_controller(cfg).to(device)
        self.opt = torch.optim.Adam(self.controller.parameters(), lr=float(cfg.search.controller_lr))

    def child_architecture(self, rng) -> Proposal:
        with torch.no_grad():
            s = self.controller.sample()
        return Proposal(s.genotype, s)

    def propose(self, count, with_grad, rank, world) -> List[Proposal]:
        # Each rank samples its own (its own torch stream), as one process samples S in a row.
        out = []
        for _ in range(count):
            if with_grad:
                s = self.controller.sample()
            else:
                with torch.no_grad():
                    s = self.controller.sample()
            out.append(Proposal(s.genotype, s))
        return out

    def learn(self, group, train: bool) -> None:
        rewards = [r for _, r, _ in group]
        if self.baseline is None:
            self.baseline = rewards[0] if len(rewards) == 1 else sum(rewards) / len(rewards)
        adv = advantages(rewards, self.baseline_kind, self.baseline)
        if train:
            local = [s for _, _, s in group]
            if all(s is not None and s.log_prob.requires_grad for s in local):
                terms = [-s.log_prob * a for s, a in zip(local, adv)]  # this process holds them all
            else:
                # Under torchrun: the same loss on every rank from the gathered genotypes and rewards
                # (teacher forcing recomputes each log-probability), so the same update everywhere.
                terms = [-self.controller.evaluate(g).log_prob * a for (g, _, _), a in zip(group, adv)]
            loss = terms[0] if len(terms) == 1 else sum(terms) / len(terms)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self._move_baseline(rewards)

    def pick(self) -> Genotype:
        return self.controller.greedy().genotype

    def state_dict(self) -> dict:
        # The keys of every controller checkpoint so far: earlier search folders resume.
        return {"controller": self.controller.state_dict(), "ctrl_opt": self.opt.state_dict(),
                "baseline": self.baseline}

    def load_state_dict(self, st: dict) -> None:
        if "strategy" in st:
            raise UserError(f"the checkpoint is of a {st['strategy'].get('name')} search, the config asks for "
                            f"the controller")
        check_tensors_like(st["controller"], self.controller.state_dict(), "controller")
        check_optimizer_state(st["ctrl_opt"], self.opt, "ctrl_opt")
        baseline = checked_baseline(st["baseline"])
        self.controller.load_state_dict(st["controller"])
        self.opt.load_state_dict(st["ctrl_opt"])
        self.baseline = baseline

    def fingerprint(self) -> List[torch.Tensor]:
        return list(self.controller.state_dict().values())


class RandomStrategy(Strategy):
    """Random search with weight sharing: every architecture a uniform draw, each scored on the
    shared weights; nothing is learned but the record of scores that derive picks from."""

    name = "random"

    def child_architecture(self, rng) -> Proposal:
        return Proposal(self.uniform(rng))

    def propose(self, count, with_grad, rank, world) -> List[Proposal]:
        group = [Proposal(self.uniform(self.rng)) for _ in range(count * world)]
        return group[rank * count:(rank + 1) * count]


class EvolutionStrategy(Strategy):
    """Regularized (aging) evolution: until the population is full its members are uniform
    draws; then each child is a tournament winner with one decision bit flipped, and every
    scored child joins the population while its oldest member leaves."""

    name = "evolution"

    def __init__(self, cfg: Config, device):
        super().__init__(cfg, device)
        self.size, self.tournament = cfg.search.population, cfg.search.tournament
        if self.tournament > self.size:
            raise UserError(f"search.tournament={self.tournament} is larger than search.population={self.size}")
        self.population: deque = deque()  # (genotype, reward), oldest first

    def _child(self, rng) -> Genotype:
        if len(self.population) < self.size:
            return self.uniform(rng)
        pick = rng.choice(len(self.population), self.tournament, replace=False)
        parent = max((self.population[i] for i in sorted(pick)), key=lambda m: m[1])[0]
        bits = list(decision_bits(parent))
        bits[int(rng.integers(0, self.n_bits))] ^= 1
        return from_decision_bits(bits, self.nodes, self.ff)

    def child_architecture(self, rng) -> Proposal:
        return Proposal(self._child(rng))

    def propose(self, count, with_grad, rank, world) -> List[Proposal]:
        group = [Proposal(self._child(self.rng)) for _ in range(count * world)]
        return group[rank * count:(rank + 1) * count]

    def learn(self, group, train: bool) -> None:
        super().learn(group, train)
        for g, r, _ in group:
            self.population.append((g, r))
            while len(self.population) > self.size:
                self.population.popleft()

    def state_dict(self) -> dict:
        st = super().state_dict()
        st["strategy"]["population"] = [[str(g), r] for g, r in self.population]
        return st

    def load_state_dict(self, st: dict) -> None:
        super().load_state_dict(st)
        pop = st["strategy"]["population"]
        if not isinstance(pop, list) or len(pop) > self.size:
            raise ValueError(f"strategy population is not a list of at most {self.size} members")
        members = []
        for m in pop:
            if not isinstance(m, (list, tuple)) or len(m) != 2:
                raise ValueError(f"strategy population member {str(m)[:40]} is damaged")
            members.append((parse(checked_genotype(m[0], "strategy population")),
                            float(state_number(m[1], "a population reward", -_FLOAT_MAX, _FLOAT_MAX))))
        self.population = deque(members)


STRATEGIES = {s.name: s for s in (ControllerStrategy, RandomStrategy, EvolutionStrategy)}


def make_strategy(cfg: Config, device) -> Strategy:
    return STRATEGIES[cfg.search.strategy](cfg, device)
