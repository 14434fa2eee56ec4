"""``deconas train`` (one network from scratch) and ``deconas run`` (the whole experiment)."""

from __future__ import annotations

import json
import os
import sys

from deconas import distributed
from deconas.checkpoint import check_init
from deconas.errors import UserError
from deconas.pipeline import run_pipeline, stage_configs
from deconas.runfolder import (PIPELINE_REPORT, check_folders, check_out_dir, check_resume, out_path,
                               run_config)
from deconas.space.genotype import parse
from deconas.train import check_genotype, config_from_run, genotype_from_run, run_training


def cmd_train(args) -> int:
    out = out_path(args.out, "train", args.resume)
    cfg = run_config(out, args.resume, args.config, args.overrides)  # on resume, the run's own config wins
    g = parse(args.genotype) if args.genotype else genotype_from_run(args.from_run)
    if args.from_run and not args.resume:
        cfg = config_from_run(cfg, args.from_run, keep={o.split("=", 1)[0].strip() for o in args.overrides})
    check_genotype(g, cfg)
    check_folders(*(args.train or []), args.val)
    check_resume(out, "training run", args.resume)
    if args.init and args.resume:
        raise UserError("--init starts a new run from a checkpoint; --resume continues one: give one of them")
    if args.init:  # refused before any image is loaded
        check_init(args.init, g, cfg.scale, cfg.model.channels, cfg.model.blocks)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun, one process speaks
    if main_process:
        print(f"training {g} x{cfg.scale} C={cfg.model.channels} N={cfg.model.blocks} -> {out}", file=sys.stderr)
    try:
        summary = run_training(cfg, g, args.train, args.val, out, args.resume, args.device, init=args.init)
    finally:
        distributed.cleanup()
    if main_process:
        print(json.dumps(summary))
    return 0


def cmd_run(args) -> int:
    out = out_path(args.out, "run", args.resume)
    cfg = run_config(out, args.resume, args.config, args.overrides)
    stage_configs(cfg)
    check_out_dir(out, "pipeline run")
    check_folders(*(args.train or []), args.val, *(args.benchmark or []), what="no such folder")
    res = run_pipeline(cfg, args.train, args.val, args.benchmark, out, args.resume, args.device)
    for r in res["results"]["datasets"]:
        print(f"{r['dataset']:<16} bicubic {r['bicubic_psnr']:.2f} dB   found network {r['psnr']:.2f} dB "
              f"({r['psnr'] - r['bicubic_psnr']:+.2f})")
    print(f"report: {out / PIPELINE_REPORT}")
    return 0
