"""The operation table of the search space (docs/design.md, section 1.3): the K candidate
operations of a mix node and how a genotype integer encodes them.

``OPS`` is the one description of the operations: the genotype's bit layout, the controller's
decisions, what the standalone network builds (:mod:`deconas.space.layers`), what the supernet
slices, what ``complexity`` counts, what ``deconas arch`` prints and what inference's
receptive radius adds up all read it. Kept free of torch, so that parsing or describing a
genotype does not load it.

A genotype integer holds one bit per operation, operation 0 the most significant: with
conv, sep, dil that is conv = 4, sep = 2, dil = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple


@dataclass(frozen=True)
class OpSpec:
    """A mix-node operation: ReLU, then a ``kernel`` conv with ``dilation``; a separable one is
    a depthwise ``kernel`` conv (one filter per channel, no bias) then a pointwise 1x1 conv.

    ``key`` names the operation in the controller's decisions and in ``deconas arch --json``;
    ``label`` is the words of its column in ``deconas arch``'s table ("<label> reads")."""
    key: str
    label: str
    kernel: int
    dilation: int
    separable: bool

    @property
    def radius(self) -> int:
        """How many pixels away an output pixel sees (its 'same' padding)."""
        return self.dilation * (self.kernel // 2)


# Operation k of the genotype: conv 3x3, depthwise-separable 3x3, dilated 3x3 at rate 3 (the
# plain conv's label names its kernel: "conv" alone would fit all three).
OPS = (
    OpSpec("conv", "conv 3x3", kernel=3, dilation=1, separable=False),
    OpSpec("sep", "separable", kernel=3, dilation=1, separable=True),
    OpSpec("dil", "dilated", kernel=3, dilation=3, separable=False),
)
K = len(OPS)
NUM_VALUES = 2 ** K  # a genotype integer is one of 0 .. NUM_VALUES - 1


def bit_weight(k: int) -> int:
    """The value of operation k's bit in a genotype integer (most significant first)."""
    return 1 << (K - 1 - k)


def bits_of(value: int) -> Tuple[int, ...]:
    """The K bits of a genotype integer, operation 0 first: 6 -> (1, 1, 0)."""
    return tuple(value // bit_weight(k) & 1 for k in range(K))


def value_of(bits: Sequence[int]) -> int:
    """Inverse of :func:`bits_of`: (1, 1, 0) -> 6."""
    return sum(bit_weight(k) for k, b in enumerate(bits) if b)
