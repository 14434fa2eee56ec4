"""``deconas search``, ``deconas derive`` and ``deconas study``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from deconas import config, distributed
from deconas.errors import UserError
from deconas.runfolder import SEARCH_DATA, check_folders, check_resume, out_path, resume_sources, run_config
from deconas.search.derive import derive
from deconas.search.loop import run_search
from deconas.search.runs import read_data_json
from deconas.search import evidence
from deconas.search.evidence import run_full_study
from deconas.search.study import format_summary, run_study


def cmd_search(args) -> int:
    """Under torchrun every process runs this; rank 0 speaks (an error is one line, from rank 0)."""
    return distributed.rank0_speaks(lambda main_process: _search(args, main_process))


def _search(args, main_process: bool) -> int:
    out = out_path(args.out, "search", args.resume)
    cfg = run_config(out, args.resume, args.config, args.overrides)
    check_folders(*(args.train or []), args.val)
    check_resume(out, "search", args.resume)  # before the banner: a refusal is one line
    if args.resume:
        resume_sources(read_data_json(out), args.train, args.val, out / SEARCH_DATA)
    m = cfg.model
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if main_process:
        print(f"search x{cfg.scale} C={m.channels} N={m.blocks} M={m.nodes} "
              f"alpha={cfg.search.alpha} ff={cfg.search.ff}"
              f"{f' processes={world}' if world > 1 else ''} -> {out}", file=sys.stderr)
    rec = run_search(cfg, args.train, args.val, out, args.resume, args.device)
    if main_process:
        print(json.dumps({k: rec.get(k) for k in ("epoch", "val_psnr", "params_mean", "greedy", "elapsed")}))
    return 0


def cmd_derive(args) -> int:
    def body(main_process: bool) -> int:
        res = derive(args.run_dir, args.samples, args.device)
        if main_process:
            print(res["summary_md"])
            print(json.dumps({k: res[k] for k in ("genotype", "val_psnr", "params", "mean_psnr", "mean_params")}))
        return 0
    return distributed.rank0_speaks(body)


def cmd_study(args) -> int:
    if args.report is not None:
        given = [f for f, v in (("--train", args.train), ("--val", args.val), ("--run", args.run_dir),
                                ("--rows", args.rows), ("--resume", args.resume), ("--out", args.out)) if v]
        if given:
            raise UserError(f"--report reads a study.json and writes nothing but --plots; {given[0]} is for "
                            f"running a study")
        print(evidence.report(args.report, config.load(args.config, args.overrides), args.plots, args.overwrite,
                              args.markdown))
        return 0
    if args.plots is not None or args.overwrite or args.markdown:
        flag = "--plots" if args.plots is not None else "--overwrite" if args.overwrite else "--markdown"
        raise UserError(f"{flag} is for --report STUDY_JSON; a running study writes its summary and plots in --out")
    if args.run_dir is None and args.overrides and "=" not in args.overrides[0]:
        args.run_dir = args.overrides.pop(0)  # the older form, 'deconas study RUN_DIR'
    if args.run_dir is None:
        return _full_study(args)
    if args.train or args.val or args.rows:
        raise UserError("--run RUN_DIR studies that search's own data; --train, --val and --rows are for the "
                        "full study (without --run)")
    out = Path(args.out) if args.out is not None else Path(args.run_dir) / "study"
    cfg = run_config(out, args.resume, args.config, args.overrides)  # on resume: its own recipe + overrides
    if args.jobs is not None:
        cfg.study.jobs = int(args.jobs)
    doc = run_study(args.run_dir, cfg, args.out, args.top, args.random, args.benchmark or (), args.resume)
    print(format_summary(doc))
    return 0


def _full_study(args) -> int:
    if args.top is not None or args.random is not None or args.benchmark:
        raise UserError("--top, --random and --benchmark are for 'deconas study --run RUN_DIR'; the full study "
                        "takes study.top and the rest from its config")
    out = out_path(args.out, "study", args.resume)
    cfg = run_config(out, args.resume, args.config, args.overrides)
    if args.jobs is not None:
        cfg = config.apply_overrides(cfg, [f"study.jobs={args.jobs}"])
    doc = run_full_study(cfg, args.train, args.val, out, args.resume, args.rows)
    print(evidence.format_summary(doc))
    return 0
