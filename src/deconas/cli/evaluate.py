"""``deconas eval``: the standard SR evaluation of bicubic or a checkpoint on benchmark folders."""

from __future__ import annotations

from deconas.errors import UserError
from deconas.evaluate import bicubic_upscaler, evaluate, format_table, network_upscaler, save_json


def cmd_eval(args) -> int:
    if args.bicubic:
        if args.scale is None:
            raise UserError("--scale is required with --bicubic")
        if args.self_ensemble:
            raise UserError("--self-ensemble applies to --checkpoint only")
        scale, method, upscale_fn = args.scale, "Bicubic", bicubic_upscaler(args.scale)
    else:
        upscale_fn, scale, method = network_upscaler(args.checkpoint, args.scale, args.device, args.backend,
                                                     args.tile, args.self_ensemble)
    result = evaluate(upscale_fn, args.benchmark, scale, save_dir=args.save_images, progress=True,
                      overwrite=args.overwrite)
    result["method"] = method
    print(format_table(result, method))
    if args.json:
        try:
            save_json(result, args.json)
        except OSError as e:
            raise UserError(f"--json: cannot write {args.json} ({e.strerror or e})") from None
        except UserError as e:  # atomic_write's own one-line message; name the option too
            raise UserError(f"--json: {e}") from None
    return 0
