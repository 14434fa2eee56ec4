"""The DeCoNAS genotype: which inputs each operation of each mix node reads, plus the
optional feature-fusion (FF) bits.

Encoding (docs/design.md, section 2): one integer per (node, input) pair, in the order
node 0 input 0; node 1 inputs 0, 1; node 2 inputs 0..2; ... Input 0 is the block input
``x_in``, input j >= 1 is node j-1. Each integer holds one bit per operation of the
operation table (:mod:`deconas.space.ops`), most significant first: conv 3x3 = 4,
separable = 2, dilated = 1. With FF search, M bits choose the LFF inputs among
``x_in, node_0..node_{M-2}`` and N bits the GFF inputs among ``F0, B0..B_{N-2}``.

String forms accepted by :func:`parse`:

* the paper's integers ``7,6,4,3,0,2,2,3,4,1`` (commas, or spaces);
* the authors' release bits, ``1 1 1 1 1 0 1 0 ...`` (K bits per integer, space-separated;
  where 0/1 values could be either form, commas mean integers and spaces mean bits);
* either of these followed by the FF bits, as ``7,6,4,3,0,2,2,3,4,1|1011|1101``
  (LFF bits then GFF bits) or as trailing 0/1 tokens (M + N more of them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from deconas.errors import UserError
from deconas.space.ops import NUM_VALUES, OPS, K, bit_weight, bits_of, value_of

PAPER_GENOTYPE = "7,6,4,3,0,2,2,3,4,1"


class GenotypeError(UserError):
    """A genotype string or value that does not fit the search space."""


def num_pairs(nodes: int) -> int:
    """M(M+1)/2: one controller step (one integer) per (node, input) pair."""
    return nodes * (nodes + 1) // 2


def nodes_from_pairs(pairs: int) -> Optional[int]:
    """Inverse of :func:`num_pairs`, or None when ``pairs`` is not a triangular number."""
    m = int((math.isqrt(8 * pairs + 1) - 1) // 2)
    return m if m >= 1 and num_pairs(m) == pairs else None


@dataclass(frozen=True)
class Genotype:
    """A cell (shared by every DNB) and the feature-fusion choice.

    ``lff``/``gff`` are None when feature-fusion search is off (FF0: every input is read).
    """

    cell: Tuple[int, ...]
    lff: Optional[Tuple[int, ...]] = None
    gff: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        object.__setattr__(self, "cell", tuple(int(v) for v in self.cell))
        if self.lff is not None:
            object.__setattr__(self, "lff", tuple(int(v) for v in self.lff))
        if self.gff is not None:
            object.__setattr__(self, "gff", tuple(int(v) for v in self.gff))
        validate(self)

    # -- structure ---------------------------------------------------------------
    @property
    def nodes(self) -> int:
        return nodes_from_pairs(len(self.cell))

    @property
    def ff(self) -> bool:
        return self.lff is not None

    def value(self, node: int, inp: int) -> int:
        """The K-bit integer of (node, input); input 0 is x_in, input j is node j-1."""
        return self.cell[num_pairs(node) + inp]

    def op_inputs(self, node: int, op: int) -> Tuple[int, ...]:
        """Indices (0 = x_in, j = node j-1) of the inputs that operation ``op`` of ``node`` reads."""
        return tuple(j for j in range(node + 1) if self.value(node, j) & bit_weight(op))

    def lff_inputs(self) -> Tuple[int, ...]:
        """Indices into [x_in, node_0, .., node_{M-1}] the LFF reads; the last node always."""
        m = self.nodes
        bits = self.lff if self.lff is not None else (1,) * m
        return tuple(i for i in range(m) if bits[i]) + (m,)

    def gff_inputs(self, blocks: int) -> Tuple[int, ...]:
        """Indices into [F0, B0, .., B_{N-1}] the GFF reads; B_{N-1} always."""
        self.check_blocks(blocks)
        bits = self.gff if self.gff is not None else (1,) * blocks
        return tuple(i for i in range(blocks) if bits[i]) + (blocks,)

    def check_blocks(self, blocks: int) -> None:
        """The genotype fits a network of ``blocks`` DNBs: searched GFF bits are one per block."""
        if self.gff is not None and len(self.gff) != blocks:
            raise GenotypeError(f"genotype {self} has {len(self.gff)} GFF bits but the network has "
                                f"N={blocks} blocks; expected one GFF bit per block")

    # -- printing ----------------------------------------------------------------
    def __str__(self) -> str:
        s = ",".join(str(v) for v in self.cell)
        if self.ff:
            s += "|" + "".join(map(str, self.lff)) + "|" + "".join(map(str, self.gff))
        return s

    def bits(self) -> str:
        """The release's form: K space-separated bits per integer, then the FF bits."""
        out = [str(b) for v in self.cell for b in bits_of(v)]
        if self.ff:
            out += [str(b) for b in self.lff + self.gff]
        return " ".join(out)

    def to_dict(self) -> dict:
        return {"cell": list(self.cell), "lff": None if self.lff is None else list(self.lff),
                "gff": None if self.gff is None else list(self.gff)}

    @classmethod
    def from_dict(cls, d: dict) -> "Genotype":
        return cls(tuple(d["cell"]), None if d.get("lff") is None else tuple(d["lff"]),
                   None if d.get("gff") is None else tuple(d["gff"]))

    def with_ff(self, lff: Optional[Sequence[int]], gff: Optional[Sequence[int]]) -> "Genotype":
        return Genotype(self.cell, None if lff is None else tuple(lff), None if gff is None else tuple(gff))


def validate(g: Genotype, nodes: Optional[int] = None, blocks: Optional[int] = None) -> None:
    m = nodes_from_pairs(len(g.cell))
    if m is None:
        raise GenotypeError(
            f"genotype has {len(g.cell)} integers; expected M(M+1)/2 of them (1, 3, 6, 10, 15, 21, 28, 36, ...)"
        )
    if nodes is not None and m != nodes:
        raise GenotypeError(
            f"genotype has {len(g.cell)} integers, which is M={m} nodes; expected {num_pairs(nodes)} for M={nodes}"
        )
    for i, v in enumerate(g.cell):
        if not 0 <= v < NUM_VALUES:
            raise GenotypeError(f"genotype integer #{i + 1} is {v}; expected 0..{NUM_VALUES - 1} ({K} bits)")
    if (g.lff is None) != (g.gff is None):
        raise GenotypeError("feature-fusion bits need both the LFF and the GFF part")
    if g.lff is not None:
        for name, bits in (("LFF", g.lff), ("GFF", g.gff)):
            if any(b not in (0, 1) for b in bits):
                raise GenotypeError(f"{name} bits {_shown(''.join(map(str, bits)))} must all be 0 or 1")
        if len(g.lff) != m:
            raise GenotypeError(f"genotype has {len(g.lff)} LFF bits; expected M={m}")
        if blocks is not None:
            g.check_blocks(blocks)


_TOKEN = re.compile(r"[,\s]+")


def _shown(text: str, limit: int = 80) -> str:
    """A genotype as an error message quotes it: whole when short, its head and length when not,
    so that a wrong 100,000-value string is still one readable line."""
    t = text.strip()
    return repr(t) if len(t) <= limit else f"{t[:limit - 20]!r}... ({len(t):,} characters)"


def _ints(text: str, what: str) -> list:
    toks = [t for t in _TOKEN.split(text.strip()) if t]
    out = []
    for t in toks:
        if not re.fullmatch(r"\d+", t):
            raise GenotypeError(f"{what} {_shown(text)}: {_shown(t, 40)} is not a non-negative integer")
        out.append(int(t))
    return out


def _bits(text: str, what: str) -> list:
    """FF bits, written '1011', '1 0 1 1' or '1,0,1,1'."""
    t = text.strip()
    if re.fullmatch(r"[01]+", t):
        return [int(c) for c in t]
    vals = _ints(t, what)
    if any(v not in (0, 1) for v in vals):
        raise GenotypeError(f"{what} {_shown(t)}: feature-fusion bits must be 0 or 1")
    return vals


def parse(text: str, nodes: Optional[int] = None, blocks: Optional[int] = None,
          ff_bits: Optional[str] = None) -> Genotype:
    """Parse any accepted string form (see the module docstring). ``nodes``/``blocks`` check
    the lengths; ``ff_bits`` gives the FF bits separately (M LFF bits then N GFF bits)."""
    if not isinstance(text, str) or not text.strip():
        raise GenotypeError("genotype is empty; expected e.g. " + PAPER_GENOTYPE)
    parts = text.split("|")
    if len(parts) not in (1, 3):
        raise GenotypeError(f"genotype {_shown(text)}: expected CELL or CELL|LFF_BITS|GFF_BITS")
    vals = _ints(parts[0], "genotype")
    lff = gff = None
    if len(parts) == 3:
        lff, gff = _bits(parts[1], "LFF bits"), _bits(parts[2], "GFF bits")
        cell = _cell_from_values(vals, nodes, text)
    else:
        cell, lff, gff = _split_flat(vals, nodes, blocks, text)
    if ff_bits is not None:
        if lff is not None:
            raise GenotypeError("feature-fusion bits given twice (in the genotype and in --ff-bits)")
        m = nodes_from_pairs(len(cell))
        if "|" in ff_bits:
            a, b = ff_bits.split("|", 1)
            lff, gff = _bits(a, "LFF bits"), _bits(b, "GFF bits")
        else:
            allbits = _bits(ff_bits, "--ff-bits")
            n = blocks if blocks is not None else len(allbits) - m
            if len(allbits) != m + n or n < 1:
                raise GenotypeError(
                    f"--ff-bits has {len(allbits)} bits; expected M + N = {m} + {blocks if blocks else 'N'}"
                )
            lff, gff = allbits[:m], allbits[m:]
    g = Genotype(tuple(cell), None if lff is None else tuple(lff), None if gff is None else tuple(gff))
    validate(g, nodes, blocks)
    return g


def _cell_from_values(vals, nodes, text):
    """A list of integers that is the cell alone: either M(M+1)/2 integers or K bits each."""
    if nodes_from_pairs(len(vals)) is not None and (nodes is None or num_pairs(nodes) == len(vals)):
        return vals
    if len(vals) % K == 0 and all(v in (0, 1) for v in vals):
        ints = [value_of(vals[i:i + K]) for i in range(0, len(vals), K)]
        if nodes_from_pairs(len(ints)) is not None and (nodes is None or num_pairs(nodes) == len(ints)):
            return ints
    expect = f"{num_pairs(nodes)} integers or {K * num_pairs(nodes)} bits for M={nodes}" if nodes else \
        f"M(M+1)/2 integers (10 for M=4) or K bits per integer ({K * num_pairs(4)} for M=4)"
    raise GenotypeError(f"genotype {_shown(text)} has {len(vals)} values; expected {expect}")


def _split_flat(vals, nodes, blocks, text):
    """A flat list: the cell, optionally followed by M + N FF bits. The lengths decide."""
    candidates = []
    for m in ([nodes] if nodes else range(1, 64)):
        t = num_pairs(m)
        for per in (1, K):  # integers, or release bits
            n_cell = t * per
            if n_cell > len(vals):
                continue
            rest = len(vals) - n_cell
            head = vals[:n_cell]
            if per == K and any(v not in (0, 1) for v in head):
                continue
            if rest == 0:
                candidates.append((m, per, None))
            elif blocks is not None and rest == m + blocks and all(v in (0, 1) for v in vals[n_cell:]):
                candidates.append((m, per, blocks))
    if not candidates:
        _cell_from_values(vals, nodes, text)  # raises with the expected lengths
    # 0/1 values can read both ways (45 values: M=5 release bits or M=9 integers). The forms'
    # own separators decide: the paper writes integers with commas, the release bits with spaces.
    if len(candidates) > 1:
        per_hint = 1 if "," in text else K
        candidates = [c for c in candidates if c[1] == per_hint] or candidates
    if len({(c[0], c[2]) for c in candidates}) > 1:
        forms = " or ".join(f"M={m} as {'integers' if per == 1 else 'bits'}" + (" + FF bits" if n else "")
                            for m, per, n in candidates)
        raise GenotypeError(f"genotype {_shown(text)} is ambiguous ({forms}); pass the number of nodes (--nodes)")
    m, per, n = candidates[0]
    n_cell = num_pairs(m) * per
    head = vals[:n_cell]
    cell = head if per == 1 else [value_of(head[i:i + K]) for i in range(0, n_cell, K)]
    if n is None:
        return cell, None, None
    tail = vals[n_cell:]
    return cell, tail[:m], tail[m:]


def all_ones(nodes: int, ff: bool = False, blocks: int = 0) -> Genotype:
    """The largest network in the space: every bit set (its size normalises the CB penalty)."""
    cell = tuple([value_of((1,) * K)] * num_pairs(nodes))
    if ff:
        return Genotype(cell, (1,) * nodes, (1,) * blocks)
    return Genotype(cell)


def decision_bits(g: Genotype) -> Tuple[int, ...]:
    """The genotype as the search's binary decisions, in the controller's order: K bits per
    (node, input) pair, then the LFF and GFF bits under FF search."""
    bits = tuple(b for v in g.cell for b in bits_of(v))
    return bits + (g.lff + g.gff if g.ff else ())


def from_decision_bits(bits: Sequence[int], nodes: int, ff: bool) -> Genotype:
    """Inverse of :func:`decision_bits` (the GFF bits are what follows the M LFF bits)."""
    n = num_pairs(nodes) * K
    cell = tuple(value_of(bits[i:i + K]) for i in range(0, n, K))
    if not ff:
        return Genotype(cell)
    return Genotype(cell, tuple(bits[n:n + nodes]), tuple(bits[n + nodes:]))


def num_decisions(nodes: int, blocks: int, ff: bool) -> int:
    return num_pairs(nodes) * K + ((nodes + blocks) if ff else 0)


def decision_names(nodes: int, blocks: int, ff: bool) -> list:
    """'n{node}.{input}.{op}' (input 'x' = x_in, 'n{j}' = node j), then 'lff.{i}', 'gff.{i}',
    in the order of :func:`decision_bits`."""
    names = []
    for m in range(nodes):
        for j in range(m + 1):
            src = "x" if j == 0 else f"n{j - 1}"
            names += [f"n{m}.{src}.{op.key}" for op in OPS]
    if ff:
        names += [f"lff.{'x' if i == 0 else f'n{i - 1}'}" for i in range(nodes)]
        names += [f"gff.{'F0' if i == 0 else f'B{i - 1}'}" for i in range(blocks)]
    return names


def complement(g: Genotype) -> Genotype:
    """Every decision bit flipped: with ``g`` it covers every (node, input, op) once (FairNAS)."""
    return from_decision_bits([1 - b for b in decision_bits(g)], g.nodes, g.ff)


def node_table(g: Genotype) -> list:
    """Rows (node, {op: [input names]}) for printing which inputs each operation reads."""
    rows = []
    for m in range(g.nodes):
        names = {op.key: [("x_in" if j == 0 else f"n{j - 1}") for j in g.op_inputs(m, k)] for k, op in enumerate(OPS)}
        rows.append((m, names))
    return rows
