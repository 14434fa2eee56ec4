"""``deconas arch``: what a genotype costs and what it wires, without building the network."""

from __future__ import annotations

import json

from deconas import config
from deconas.errors import UserError
from deconas.space.describe import describe, format_table
from deconas.space.genotype import parse


def cmd_arch(args) -> int:
    for name in ("channels", "blocks", "nodes"):  # the bounds every network of deconas has
        v, (lo, hi) = getattr(args, name), config.bounds(f"model.{name}")
        if v is not None and not lo <= v <= hi:
            raise UserError(f"--{name} {v}: expected an integer from {lo} to {hi}")
    g = parse(args.genotype, nodes=args.nodes, blocks=args.blocks, ff_bits=args.ff_bits)
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
