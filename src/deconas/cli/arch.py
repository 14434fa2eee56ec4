"""``deconas arch``: what a genotype costs and what it wires, without building the network."""

from __future__ import annotations

import json

from deconas.errors import UserError
from deconas.space.describe import describe, format_table
from deconas.space.genotype import parse


def cmd_arch(args) -> int:
    for name in ("channels", "blocks"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be a positive integer")
    if args.nodes is not None and args.nodes < 1:
        raise UserError(f"--nodes {args.nodes}: must be a positive integer")
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
