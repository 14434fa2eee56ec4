"""The DeCoNAS controller (paper section II.C; docs/design.md, section 3): a 2-layer LSTM
that writes a genotype.

One LSTM step per (node, input) pair of the mix nodes, M(M+1)/2 steps, in genotype order.
Each step emits K = 3 independent binary decisions (does op k of the operation table,
:data:`deconas.space.ops.OPS`, read this input?) through op-specific heads: one linear layer
per op (64 -> 2), shared by all steps, each a 2-way softmax. With feature-fusion search
(FF1) one more step emits the M LFF bits and one the N GFF bits, each bit through its own head.

Logits: ``logits / temperature`` (optional), then ``c * tanh(.)`` with
c = tanh_constant / op_tanh_reduce = 1.1 / 2.5 = 0.44 on the op heads (the release's
squashing; it bounds each op bit's probability to [0.29, 0.71], which keeps the search
exploring). The FF heads are not squashed, as in the release.

Next input: the embedding of the emitted K-bit integer, an 8 x 64 table. Tied embeddings
(the paper follows Press & Wolf / Inan et al.): the table is not a parameter of its own;
row v is the sum over ops k of head k's output-weight row for the bit that v has at k,
``emb[v] = sum_k W_k[bit_k(v)]``. That is output-embedding tying for K factorised binary
softmaxes: an integer is embedded by the output vectors of the decisions that made it.
``tie_embeddings=False`` gives a free 8 x 64 table instead (what the release's code does).
The GFF step's input is likewise the tied embedding of the LFF bits (sum of the LFF heads'
rows), since there is no table for 2**M values.

Initialisation: every parameter uniform in [-0.1, 0.1] (ENAS and the release's controller),
head biases 0. The paper's "variance scaling, 0.02" is of the same order for these sizes:
for a 64-wide fan-in, std sqrt(0.02 / 64) ~ 0.018 vs 0.1 / sqrt(3) ~ 0.058.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from deconas.space.genotype import Genotype, decision_names, num_decisions, num_pairs
from deconas.space.ops import NUM_VALUES, OPS, K, bits_of, value_of


@dataclass
class Sample:
    """One decoding of the controller.

    ``log_prob`` and ``entropy`` are sums over all decisions and carry gradients;
    ``p_one`` holds P(bit = 1) of every decision in order (detached), for the metrics.
    """

    genotype: Genotype
    log_prob: torch.Tensor
    entropy: torch.Tensor
    p_one: torch.Tensor


class Controller(nn.Module):
    """The settings are the config's ``search`` section (:func:`deconas.search.runs.build_controller`)."""

    def __init__(self, nodes: int, blocks: int, *, ff: bool, lstm_size: int, lstm_layers: int,
                 tanh_constant: Optional[float], op_tanh_reduce: float, temperature: Optional[float],
                 tie_embeddings: bool):
        super().__init__()
        self.nodes, self.blocks, self.ff = nodes, blocks, ff
        self.tanh_constant, self.op_tanh_reduce, self.temperature = tanh_constant, op_tanh_reduce, temperature
        self.tie_embeddings = tie_embeddings
        h = lstm_size
        self.g_emb = nn.Parameter(torch.empty(1, h))  # input of the first step
        self.lstm = nn.ModuleList(nn.LSTMCell(h, h) for _ in range(lstm_layers))
        # Op heads: K linear layers 64 -> 2, stacked so that one einsum evaluates all K.
        self.op_w = nn.Parameter(torch.empty(K, 2, h))
        self.op_b = nn.Parameter(torch.zeros(K, 2))
        if not tie_embeddings:
            self.op_emb = nn.Parameter(torch.empty(NUM_VALUES, h))
        if ff:
            self.lff_w = nn.Parameter(torch.empty(nodes, 2, h))
            self.lff_b = nn.Parameter(torch.zeros(nodes, 2))
            self.gff_w = nn.Parameter(torch.empty(blocks, 2, h))
            self.gff_b = nn.Parameter(torch.zeros(blocks, 2))
        # row v: the K bits of integer v (the tied embedding sums the heads' rows for them)
        bits = torch.tensor([bits_of(v) for v in range(NUM_VALUES)])
        self.register_buffer("_int_bits", bits, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("_b"):
                nn.init.zeros_(p)
            else:
                nn.init.uniform_(p, -0.1, 0.1)

    # -- structure --------------------------------------------------------------------
    def num_decisions(self) -> int:
        return num_decisions(self.nodes, self.blocks, self.ff)

    def decision_names(self) -> List[str]:
        return decision_names(self.nodes, self.blocks, self.ff)

    def op_embedding_table(self) -> torch.Tensor:
        """The 8 x H embedding of K-bit integers (tied: sum of the op heads' rows)."""
        if not self.tie_embeddings:
            return self.op_emb
        k = torch.arange(K, device=self.op_w.device)
        return self.op_w[k, self._int_bits].sum(1)  # (2**K, K, H) -> (2**K, H)

    # -- decoding ---------------------------------------------------------------------
    def _lstm_step(self, x, state):
        new_state = []
        for i, cell in enumerate(self.lstm):
            h, c = cell(x, state[i])
            new_state.append((h, c))
            x = h
        return x, new_state

    def _logits(self, h, w, b, squash: bool) -> torch.Tensor:
        logits = torch.einsum("h,kch->kc", h[0], w) + b  # (heads, 2)
        if self.temperature is not None:
            logits = logits / self.temperature
        if squash and self.tanh_constant is not None:
            logits = (self.tanh_constant / self.op_tanh_reduce) * torch.tanh(logits)
        return logits

    def _decide(self, logits, mode: str, forced: Optional[List[int]]):
        log_p = F.log_softmax(logits, -1)
        if forced is not None:
            bits = torch.tensor(forced, dtype=torch.long, device=logits.device)
        elif mode == "greedy":
            bits = logits.argmax(-1)
        else:
            bits = torch.multinomial(log_p.exp().detach(), 1).squeeze(1)
        lp = log_p.gather(1, bits[:, None]).sum()
        ent = -(log_p.exp() * log_p).sum()
        return bits, lp, ent, log_p[:, 1].exp().detach()

    def _run(self, mode: str, genotype: Optional[Genotype] = None) -> Sample:
        dev = self.g_emb.device
        hsz = self.g_emb.shape[1]
        state = [(torch.zeros(1, hsz, device=dev), torch.zeros(1, hsz, device=dev)) for _ in self.lstm]
        x = self.g_emb
        table = self.op_embedding_table()
        cell, log_prob, entropy, p_one = [], 0.0, 0.0, []
        for t in range(num_pairs(self.nodes)):
            h, state = self._lstm_step(x, state)
            forced = None
            if genotype is not None:
                forced = list(bits_of(genotype.cell[t]))
            bits, lp, ent, p1 = self._decide(self._logits(h, self.op_w, self.op_b, True), mode, forced)
            value = value_of(bits.tolist())
            cell.append(value)
            log_prob, entropy = log_prob + lp, entropy + ent
            p_one.append(p1)
            x = table[value][None]
        lff = gff = None
        if self.ff:
            fusion = {}
            for name, w, b in (("lff", self.lff_w, self.lff_b), ("gff", self.gff_w, self.gff_b)):  # LFF, then GFF
                h, state = self._lstm_step(x, state)
                forced = list(getattr(genotype, name)) if genotype is not None and genotype.ff else None
                bits, lp, ent, p1 = self._decide(self._logits(h, w, b, False), mode, forced)
                fusion[name] = bits.tolist()
                log_prob, entropy = log_prob + lp, entropy + ent
                p_one.append(p1)
                if name == "lff":  # GFF's step reads the LFF bits' tied embedding
                    x = self.lff_w[torch.arange(self.nodes, device=dev), bits].sum(0, keepdim=True)
            lff, gff = fusion["lff"], fusion["gff"]
        return Sample(Genotype(tuple(cell), lff, gff), log_prob, entropy, torch.cat(p_one))

    def sample(self) -> Sample:
        """Draw a genotype from the policy (uses the global torch RNG)."""
        return self._run("sample")

    def greedy(self) -> Sample:
        """Most-likely decoding: every decision takes its more probable bit."""
        return self._run("greedy")

    def evaluate(self, genotype: Genotype) -> Sample:
        """log-probability and entropy of a given genotype under the policy (teacher forcing)."""
        if genotype.nodes != self.nodes or genotype.ff != self.ff:
            raise ValueError(f"genotype {genotype} does not fit this controller (M={self.nodes}, ff={self.ff})")
        return self._run("forced", genotype)
