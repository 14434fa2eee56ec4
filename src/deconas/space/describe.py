"""A genotype described without building its network: parameters, Mult-Adds and which inputs
each operation of each mix node reads (``deconas arch`` and the run report print it)."""

from __future__ import annotations

from deconas.space import complexity
from deconas.space.genotype import Genotype, node_table
from deconas.space.ops import OPS


def describe(g: Genotype, scale: int, channels: int, blocks: int) -> dict:
    c = complexity.cost(g, scale, channels, blocks)
    return {
        "genotype": str(g), "bits": g.bits(), "scale": scale, "channels": channels, "blocks": blocks,
        "nodes": g.nodes, "ff": g.ff, "params": c.params, "mult_adds": c.mult_adds,
        "mult_adds_hr_size": list(complexity.HR_SIZE[::-1]),
        "node_table": [{"node": m, **names} for m, names in node_table(g)],
        "lff_reads": [("x_in" if i == 0 else f"n{i - 1}") for i in g.lff_inputs()],
        "gff_reads": [("F0" if i == 0 else f"B{i - 1}") for i in g.gff_inputs(blocks)],
    }


def format_table(info: dict) -> str:
    rows = [("node",) + tuple(f"{op.label} reads" for op in OPS)]
    for r in info["node_table"]:
        rows.append((str(r["node"]),) + tuple(", ".join(r[op.key]) or "-" for op in OPS))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()
    out = [line(rows[0]), line(tuple("-" * w for w in widths))] + [line(r) for r in rows[1:]]
    return "\n".join(out)
