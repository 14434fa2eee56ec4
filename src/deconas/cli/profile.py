"""``deconas profile``: the latency table of a search space, measured on this machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from deconas import config
from deconas.constants import MAX_THREADS
from deconas.errors import UserError
from deconas.infer.profile import profile
from deconas.runtime import atomic_write_text, pick_device


def cmd_profile(args) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise UserError(f"--out {out}: the table is a .json file")
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {out}: exists; pass --overwrite to replace it")
    if not 8 <= args.size <= 4096:
        raise UserError(f"--size {args.size}: use 8..4096 LR pixels")
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise UserError(f"--threads {args.threads}: use 1..{MAX_THREADS}")
    if not 3 <= args.repeats <= 10_000:
        raise UserError(f"--repeats {args.repeats}: use 3..10000")
    device = pick_device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {args.device}: profile runs on cpu (ONNX Runtime) or cuda (torch)")
    cfg = config.load(args.config, args.overrides)
    m = cfg.model
    if args.threads:
        torch.set_num_threads(args.threads)
    say = lambda what: print(f"profile: {what}", file=sys.stderr, flush=True)  # noqa: E731
    table = profile(cfg.scale, m.channels, m.blocks, m.nodes, (args.size, args.size), str(device), args.threads,
                    args.repeats, progress=say)
    atomic_write_text(out, json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}: x{cfg.scale} C={m.channels} N={m.blocks} M={m.nodes}, {args.size}x{args.size} LR, "
          f"{table['runtime']}; use it with search.penalty=latency search.latency_table={out}")
    return 0
