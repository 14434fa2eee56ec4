"""A genotype's inference latency predicted from a per-operation table, measured once per
machine, runtime, network size and input size by ``deconas profile``
(:mod:`deconas.infer.profile`); the search's ``latency`` penalty sums it (docs/search.md,
"The latency table").

The model, in what it sums (every entry in milliseconds, the runtime's per-call overhead taken
out of each and counted once in ``fixed``):

    fixed                      SFENet, the dense connections, GFF's 3x3 conv, upsampler, tail
  + N x sum over mix nodes:    node                 ReLU + channel attention
                               + mean[active ops - 1]   the mean of the node's active ops
                               + sum over active ops k: op[k][inputs read - 1] + concat[inputs read - 1]
  + N x (lff[inputs read - 1] + concat[inputs read - 1])   LFF's 1x1 conv, + the local residual
  + gff[inputs read - 1] + concat[inputs read - 1]         GFF's 1x1 conv over what it reads

``concat[j - 1]`` is joining j feature maps (0 for one), ``mean[n - 1]`` averaging n outputs (0
for one).
"""

from __future__ import annotations

from deconas.errors import UserError
from deconas.space.genotype import Genotype
from deconas.space.ops import OPS

FORMAT = "deconas-latency-1"


def check_table(table, nodes: int, blocks: int, where: str = "latency table") -> dict:
    """``table`` has every entry a genotype of M nodes and N blocks needs (one line if not)."""
    try:
        ok = (table["format"] == FORMAT and float(table["fixed"]) >= 0 and float(table["node"]) >= 0
              and all(len(table["op"][op.key]) >= nodes for op in OPS)
              and len(table["lff"]) >= nodes + 1 and len(table["gff"]) >= blocks + 1
              and len(table["concat"]) >= max(nodes, blocks) + 1 and len(table["mean"]) >= len(OPS))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{where}: not a deconas latency table for M={nodes}, N={blocks} "
                        f"(make one with 'deconas profile')")
    return table


def predict_latency(g: Genotype, table: dict) -> float:
    """Predicted milliseconds of one forward pass of ``g``'s network (see the module's model)."""
    blocks, cat = int(table["blocks"]), table["concat"]
    per_block = 0.0
    for m in range(g.nodes):
        per_block += table["node"]
        active = 0
        for k, op in enumerate(OPS):
            n = len(g.op_inputs(m, k))
            if n:
                per_block += table["op"][op.key][n - 1] + cat[n - 1]
                active += 1
        if active:
            per_block += table["mean"][active - 1]
    n_lff = len(g.lff_inputs())
    per_block += table["lff"][n_lff - 1] + cat[n_lff - 1]
    n_gff = len(g.gff_inputs(blocks))
    return table["fixed"] + blocks * per_block + table["gff"][n_gff - 1] + cat[n_gff - 1]
