"""``deconas arch``: what a genotype costs and what it wires, without building the network."""

from __future__ import annotations

import json

from . import complexity
from .errors import UserError
from .genotype import OPS, Genotype, node_table, parse


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
    rows = [("node", "conv 3x3 reads", "separable reads", "dilated reads")]
    for r in info["node_table"]:
        rows.append((str(r["node"]),) + tuple(", ".join(r[op]) or "-" for op in OPS))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()
    out = [line(rows[0]), line(tuple("-" * w for w in widths))] + [line(r) for r in rows[1:]]
    return "\n".join(out)


def cli_arch(args) -> int:
    for name in ("channels", "blocks"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be a positive integer")
    if args.nodes is not None and args.nodes < 1:
        raise UserError(f"--nodes {args.nodes}: must be a positive integer")
    g = parse(args.genotype, nodes=args.nodes, blocks=args.blocks, ff_bits=args.ff_bits)
    if g.ff and len(g.gff) != args.blocks:
        raise UserError(f"genotype has {len(g.gff)} GFF bits; expected N={args.blocks} (--blocks)")
    info = describe(g, args.scale, args.channels, args.blocks)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"genotype   {info['genotype']}   (M={g.nodes} mix nodes, FF {'on' if g.ff else 'off'})")
    print(f"bits       {info['bits']}")
    print(f"network    x{args.scale}, C={args.channels}, N={args.blocks}")
    print(f"params     {info['params']:,}")
    print(f"mult-adds  {info['mult_adds'] / 1e9:,.1f} G (for a 1280x720 HR output)")
    print()
    print(format_table(info))
    print()
    print(f"LFF reads  {', '.join(info['lff_reads'])}   (+ x_in, local residual)")
    print(f"GFF reads  {', '.join(info['gff_reads'])}   (+ x_grl, global residual)")
    return 0
