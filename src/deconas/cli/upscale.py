"""``deconas upscale`` (image files and folders) and ``deconas export`` (a network as ONNX).

Nothing here imports torch: with ONNX Runtime and a cached graph, ``deconas upscale`` never
loads it."""

from __future__ import annotations

import sys
from pathlib import Path

from deconas.infer.upscale import UpscaleRequest, upscale_images


def cmd_upscale(args) -> int:
    rep = upscale_images(UpscaleRequest(
        inputs=list(args.inputs), output=Path(args.output), checkpoint=args.checkpoint, scale=args.scale,
        tile=args.tile, ext=args.ext, overwrite=args.overwrite, max_pixels=args.max_pixels, device=args.device,
        backend=args.backend, threads=args.threads, recursive=args.recursive, outscale=args.outscale,
        suffix=args.suffix, precision=args.precision))
    if rep.earlier_results:
        print(f"{len(rep.earlier_results)} earlier result(s) in the inputs (like {rep.earlier_results[0].name}) "
              f"not upscaled again", file=sys.stderr)
    n = rep.written + len(rep.failed)
    print(f"upscaled {rep.written} of {n} images; {len(rep.failed)} failed"
          + (f"; {rep.skipped} skipped (output exists; --overwrite replaces)" if rep.skipped else "")
          + (f"; {rep.onto_input} skipped (output would replace an input)" if rep.onto_input else "")
          + (f" ({rep.arithmetic})" if rep.written else ""))
    return 1 if rep.failed else 0


def cmd_export(args) -> int:
    from deconas.infer.export import export_checkpoint  # torch: only this command loads it

    info = export_checkpoint(args.checkpoint, args.scale, args.output, args.opset, args.overwrite,
                             precision=args.precision, calib=args.calib)
    print(f"wrote {args.output} (x{info['scale']}, {info['genotype']}, C={info['channels']}, N={info['blocks']}, "
          f"receptive radius {info['radius']}, opset {info['opset']}, {info['precision']}; "
          f"input '{info['input']}' (batch, 3, height, width) float32 in [0, 1])")
    return 0
