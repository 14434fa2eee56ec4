"""``deconas eval``: the standard SR evaluation of bicubic or a checkpoint on benchmark folders."""

from __future__ import annotations

import sys
from pathlib import Path

from deconas.constants import DEFAULT_PRECISION
from deconas.errors import UserError
from deconas.evaluate import bicubic_upscaler, evaluate_methods, format_table, network_upscaler, save_json


def _precision(args) -> str:
    """``--precision`` as given, else the default; int8 is only for networks (not --bicubic)."""
    return getattr(args, "precision", None) or DEFAULT_PRECISION


def _identity(checkpoint: str, scale: int):
    """What makes two checkpoint arguments the same network: the file they load."""
    if checkpoint == "pretrained":
        from deconas.checkpoint import pretrained_path
        return pretrained_path(scale).resolve()
    return Path(checkpoint).resolve()


def _unique(labels, given):
    """Column names of their own: two files called best.safetensors are named by their paths."""
    out = list(labels)
    for i, lab in enumerate(labels):
        if labels.count(lab) > 1:
            out[i] = given[i] + lab[len(Path(given[i]).name):]  # the path, keeping a "(self-ensemble)" suffix
    return out


def cmd_eval(args) -> int:
    compare = list(args.compare or [])
    networks = ([] if args.bicubic else [args.checkpoint]) + compare
    if args.bicubic:
        if args.scale is None:
            raise UserError("--scale is required with --bicubic")
        if args.self_ensemble and not compare:
            raise UserError("--self-ensemble applies to networks (--checkpoint, --compare) only")
    # the report's folder is checked before any network is loaded or image evaluated
    report = None
    if args.report is not None:
        from deconas.eval_report import EvalReport
        report = EvalReport(args.report, overwrite=args.overwrite)

    fns, labels, given = [], [], []
    if args.bicubic:
        scale = args.scale
        fns.append(bicubic_upscaler(scale))
        labels.append("Bicubic")
        given.append("Bicubic")
    else:
        fn, scale, method = network_upscaler(args.checkpoint, args.scale, args.device, args.backend,
                                             args.tile, args.self_ensemble, _precision(args))
        fns.append(fn)
        labels.append(method)
        given.append(args.checkpoint)
    seen = {} if args.bicubic else {_identity(args.checkpoint, scale): "the same network as --checkpoint"}
    for ck in compare:
        key = _identity(ck, scale)
        if key in seen:
            raise UserError(f"--compare {ck}: {seen[key]}; give each network once")
        seen[key] = "given twice"
        try:
            fn, _, method = network_upscaler(ck, scale, args.device, args.backend, args.tile, args.self_ensemble,
                                              _precision(args))
        except UserError as e:
            raise UserError(f"--compare {ck}: {e}") from None
        fns.append(fn)
        labels.append(method)
        given.append(ck)
    labels = _unique(labels, given)
    measured = len(fns)  # the methods the table and --json report
    baseline = 0 if args.bicubic else None
    if report is not None and baseline is None:  # the page shows bicubic beside the networks
        fns.append(bicubic_upscaler(scale))
        labels.append("Bicubic")
        baseline = len(fns) - 1
    if report is not None:
        opts = [o for o, on in (("--rgb", args.rgb), ("--self-ensemble", args.self_ensemble and networks),
                                (f"--tile {args.tile}", args.tile)) if on]
        about = {"methods": ", ".join(labels[i] for i in range(len(labels)) if i != baseline) or "bicubic only",
                 "scale": f"x{scale}", "sets": ", ".join(str(b) for b in args.benchmark)}
        if networks:
            about["backend"] = args.backend + (f", device {args.device}" if args.device else "")
        if opts:
            about["options"] = " ".join(opts)
        report.start(labels, baseline, scale, args.rgb, about)

    try:
        results = evaluate_methods(fns, args.benchmark, scale, save_dir=args.save_images, progress=True,
                                   overwrite=args.overwrite, rgb=args.rgb,
                                   on_image=report.add if report is not None else None)
    except BaseException:
        if report is not None:
            report.discard()
        raise
    for r, lab in zip(results, labels):
        r["method"] = lab
    result = results[0]
    if compare:
        result["compare"] = results[1:measured]
    print("\n\n".join(format_table(r, r["method"]) for r in results[:measured]))
    if args.json:
        try:
            save_json(result, args.json)
        except OSError as e:
            raise UserError(f"--json: cannot write {args.json} ({e.strerror or e})") from None
        except UserError as e:  # atomic_write's own one-line message; name the option too
            raise UserError(f"--json: {e}") from None
    if report is not None:
        page = report.write(results)
        print(f"report: {page}", file=sys.stderr)
    return 0
