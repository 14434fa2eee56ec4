"""The ``deconas`` command line: every subcommand, option and help text (argparse only).

Building the parser imports nothing heavy (no torch), so ``deconas --help`` is instant. Each
subcommand names its handler in ``deconas.cli.<group>``; :func:`deconas.cli.main` imports it
only when that command runs. Defaults come from the config schema or the module that owns
the value, never from a literal here.
"""

from __future__ import annotations

import argparse
import difflib
import re

from deconas import __version__
from deconas import config
from deconas.constants import (BACKENDS, DEFAULT_OPSET, DEFAULT_PRECISION, DEFAULT_UPSCALE_PRECISION,
                               MAX_PIXELS, OPSETS, OUTSCALE_RANGE, PRECISIONS, PROFILE_REPEATS,
                               PROFILE_SIZE, SCALES, UPSCALE_PRECISIONS)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage on top by default)
        self.exit(2, f"{self.prog}: error: {message}{_did_you_mean(message)}\n")


def _did_you_mean(message: str) -> str:
    """'; did you mean 'search'?' for argparse's invalid-choice message when a choice is close."""
    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not m:
        return ""
    choices = re.findall(r"'([^']*)'|([^,\s]+)", m.group(2))
    choices = [a or b for a, b in choices]
    typed = m.group(1)
    close = [c for c in choices if typed and c.startswith(typed)] or difflib.get_close_matches(typed, choices, n=1,
                                                                                               cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _device(p, default=None):
    p.add_argument("--device", default=default,
                   help="cpu, cuda, cuda:1 ... (default: " + (default or "cuda if available, else cpu") + ")")


def _scale(p, required=False, default=None):
    p.add_argument("--scale", "-s", type=int, choices=SCALES, default=default, required=required,
                   help="upscaling factor (default: " + (str(default) if default else
                                                         "the checkpoint's own; 2 for the shipped network") + ")")


def _backend(p):
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="where the network runs: auto = ONNX Runtime on the CPU, torch on CUDA (default auto)")


def _config(p, preset: str, example: str):
    p.add_argument("--config", default=preset, help=f"preset name or YAML file (default: {preset})")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"config overrides, e.g. {example}")


def _images(p):
    p.add_argument("--train", metavar="DIR", nargs="+", help="folders of training HR images (default: built-in images)")
    p.add_argument("--val", metavar="DIR", help="validation HR images (default: held out from --train)")


def _command(sub, name: str, handler: str, **texts):
    """A subcommand whose handler (``module:function``) :func:`deconas.cli.main` imports when it runs."""
    p = sub.add_parser(name, **texts)
    p.set_defaults(handler=handler)
    return p


def _replaces(p, what: str):
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} if it exists")


def _run_folder(p, default: str, what: str):
    p.add_argument("--out", metavar="DIR", default=None, help=f"run folder (default: {default})")
    p.add_argument("--resume", action="store_true", help=f"continue the {what} in --out where it stopped")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="deconas", description="DeCoNAS: neural architecture search for single-image "
                 "super-resolution. Search, derive, train, evaluate, upscale.")
    ap.add_argument("--version", action="version", version=f"deconas {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = _command(sub, "arch", "deconas.cli.arch:cmd_arch",
                 help="parameters, Mult-Adds and the node table of a genotype",
                 description="Parameters and Mult-Adds (1280x720 HR output) of a DeCoNASNet, computed "
                 "from the genotype, and which inputs each operation of each mix node reads.")
    p.add_argument("genotype", help="e.g. 7,6,4,3,0,2,2,3,4,1 (paper), 30 release bits, or CELL|LFF|GFF")
    _scale(p, default=config.default("scale"))
    p.add_argument("--channels", "-C", type=int, default=config.default("model.channels"),
                   help="feature channels C (default %(default)s)")
    p.add_argument("--blocks", "-N", type=int, default=config.default("model.blocks"),
                   help="dense blocks N (default %(default)s)")
    p.add_argument("--nodes", "-M", type=int, default=None, help="mix nodes per block M (default: the genotype's; checked against it)")
    p.add_argument("--ff-bits", default=None, help="feature-fusion bits: M LFF bits then N GFF bits (e.g. 1011|1101; "
                   "default: the genotype's, else every LFF and GFF on)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _command(sub, "eval", "deconas.cli.evaluate:cmd_eval",
                 help="PSNR/SSIM on Y of bicubic or a checkpoint on benchmark folders",
                 description="Evaluate with the standard SR protocol (MATLAB bicubic LR, Y channel, "
                 "border = scale) on one or more benchmark folders; optionally PSNR on RGB, several "
                 "networks side by side, and an HTML page with zoomed crops.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--bicubic", action="store_true", help="evaluate bicubic interpolation (the baseline row)")
    g.add_argument("--checkpoint", help="a .safetensors checkpoint written by deconas train, or 'pretrained'")
    p.add_argument("--benchmark", nargs="+", required=True, metavar="DIR", help="folders of HR images (or NAME/HR)")
    _scale(p, required=False)
    p.add_argument("--compare", nargs="+", metavar="CKPT", default=None,
                   help="more checkpoints (or 'pretrained') at the same scale, measured in the same pass: "
                        "a table each, a 'compare' list in --json, a column each in --report (default: none)")
    p.add_argument("--rgb", action="store_true", help="also PSNR on RGB (all three channels, border = scale); "
                   "the Y values are unchanged")
    p.add_argument("--json", metavar="FILE", default=None, help="write per-image and mean values to FILE (default: none)")
    p.add_argument("--save-images", metavar="DIR", default=None,
                   help="write the SR images here (DIR/<set>/<image>.png; default: not saved)")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="write an HTML page, DIR/index.html, with the table and zoomed crops of HR, bicubic and "
                        "every network for each image; a new, empty or earlier-report folder (default: none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace saved SR images that exist; let --report write its own files into a folder "
                        "that holds other files (those are left alone)")
    p.add_argument("--self-ensemble", action="store_true", help="x8 flips/rotations (networks only)")
    p.add_argument("--tile", type=int, default=0,
                   help="tile size in LR pixels for large images (default 0 = whole image)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    _backend(p)
    p.add_argument("--precision", choices=[q for q in UPSCALE_PRECISIONS if q != "auto"], default=None,
                   help=f"the networks' arithmetic, as in upscale: bf16 (torch) and int8 (ONNX Runtime) "
                        f"are faster on the CPU and cost a little PSNR (default: {DEFAULT_PRECISION}, the "
                        f"protocol's numbers)")

    p = _command(sub, "search", "deconas.cli.search:cmd_search",
                 help="run the search (shared-weight supernet; controller, random or evolution)",
                 description="ENAS-style search: child steps on the shared weights, then controller steps "
                 "that score architectures with reward PSNR - alpha * cost / max cost (search.strategy: "
                 "controller (REINFORCE), random or evolution; docs/search.md).")
    _config(p, "cpu", "search.alpha=0")
    _images(p)
    _run_folder(p, "runs/search-<time>", "search")
    _device(p)

    p = _command(sub, "derive", "deconas.cli.search:cmd_derive",
                 help="pick architectures from a search (controller samples or the best scored) and rank them",
                 description="Sample K architectures from the run's controller (or take the K best that random "
                 "search or evolution scored), score each with the shared weights on the validation images, "
                 "write candidates.csv, best.json and a plot.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a search run folder (deconas search --out)")
    p.add_argument("--samples", type=int, default=None, help=f"architectures to score (default: "
                   f"search.derive_samples, {config.default('search.derive_samples')})")
    _device(p)

    p = _command(sub, "train", "deconas.cli.train:cmd_train",
                 help="train a DeCoNASNet from scratch",
                 description="From-scratch training (L1, Adam, step schedule) with periodic validation, "
                 "best/last checkpoints in safetensors and exact --resume.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--genotype", help="the architecture, e.g. 7,6,4,3,0,2,2,3,4,1")
    g.add_argument("--from", dest="from_run", metavar="RUN_DIR", help="use best.json of a search run")
    _config(p, "train-cpu", "train.lr=2e-4")
    _images(p)
    _run_folder(p, "runs/train-<time>", "training")
    p.add_argument("--init", metavar="CHECKPOINT", default=None,
                   help="start from a checkpoint's weights (same genotype, C and N): fine-tuning, another scale "
                        "from the x2 body, or a warm restart; 'pretrained' = the shipped network of the "
                        "run's scale, 'pretrained-x2' = the shipped x2 at any scale (default: random init)")
    _device(p)

    p = _command(sub, "upscale", "deconas.cli.upscale:cmd_upscale",
                 help="upscale images with a pretrained or your own network",
                 description="Upscale image files or folders. By default the shipped pretrained network "
                 "for --scale; tiled inference for any size; greyscale stays grey, alpha is kept.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", default="results", metavar="OUTDIR", help="output folder (default: results)")
    p.add_argument("--recursive", "-r", action="store_true",
                   help="also the images in subfolders; the tree is mirrored under OUTDIR (default: only the "
                        "folder's own images)")
    p.add_argument("--outscale", type=float, default=None, metavar="F",
                   help=f"final scale, any factor {OUTSCALE_RANGE[0]:g}..{OUTSCALE_RANGE[1]:g}: the network at the "
                        "nearest scale not below F, then a MATLAB-bicubic resize to round(F x size) "
                        "(default: the network's scale)")
    p.add_argument("--suffix", default=None,
                   help="added to each output's name, NAME_SUFFIX.EXT; '' for none (default: x<outscale>, e.g. x2)")
    p.add_argument("--precision", choices=UPSCALE_PRECISIONS, default=None,
                   help=f"the network's arithmetic: auto = bf16 (torch, the body in bf16, at most 0.002 dB "
                        f"from fp32) on a CPU with AMX-BF16, else fp32 (ONNX Runtime on the CPU); int8 "
                        f"(ONNX Runtime) costs more PSNR, printed when chosen "
                        f"(default: {DEFAULT_UPSCALE_PRECISION})")
    p.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint (default: shipped weights)")
    _scale(p, default=None)
    p.add_argument("--tile", type=int, default=None,
                   help="tile size in input pixels (0 = whole image; default: whole up to 512x512, "
                        "else tiles whose windows are at most 512x512)")
    p.add_argument("--ext", default=None, help="output format/extension, e.g. png (default: the input's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that already exist (default: skip them); inputs are never written")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"refuse input images above N pixels (default {MAX_PIXELS:,})")
    _device(p)
    _backend(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the CPUs this process may use)")

    p = _command(sub, "export", "deconas.cli.upscale:cmd_export",
                 help="write a network as an ONNX graph (dynamic batch, height, width)",
                 description="Export a checkpoint (default: the shipped network for --scale) to ONNX, "
                 "output clamped to [0, 1] in the graph, with genotype, scale, C, N and receptive radius in "
                 "its metadata; fp32, fp16 (for GPU hosts) or int8 (static QDQ, calibrated on images).")
    p.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint (default: shipped weights)")
    _scale(p, default=None)
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="fp32; fp16 (weights and arithmetic, input and output stay float32); int8 (QDQ, "
                        "per-channel weights) (default %(default)s)")
    p.add_argument("--calib", metavar="DIR", nargs="+", default=None,
                   help="int8: HR images whose bicubic LR patches calibrate the activations (default: the "
                        "built-in photographs)")
    _replaces(p, "FILE.onnx")

    p = _command(sub, "profile", "deconas.cli.profile:cmd_profile",
                 help="measure the latency table of a search space (for search.penalty=latency)",
                 description="Time every part of the space's networks (each operation for each number of "
                 "inputs, channel attention, LFF, GFF, the fixed parts) on this machine, in ONNX Runtime on the "
                 "CPU or torch on CUDA, and write the table the latency penalty sums (docs/search.md).")
    p.add_argument("--out", "-o", required=True, metavar="FILE.json", help="the table to write")
    _replaces(p, "FILE.json")
    _config(p, "cpu", "model.channels=32 (the space: scale, C, N, M)")
    p.add_argument("--size", type=int, default=PROFILE_SIZE, metavar="PIXELS",
                   help="LR input size, square (default %(default)s)")
    p.add_argument("--repeats", type=int, default=PROFILE_REPEATS,
                   help="timed runs per part, the median is kept (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the CPUs this process may use)")
    p.add_argument("--device", default="cpu", help="cpu (ONNX Runtime, default) or cuda (torch)")

    p = _command(sub, "study", "deconas.cli.search:cmd_study",
                 help="does the search beat random architectures? (each trained standalone)",
                 description="With --train: the full study. A random pool of uniform architectures trained "
                 "standalone; one search per supernet schedule, each scoring the pool (Kendall tau with "
                 "bootstrap intervals); every strategy searched on the best schedule at one budget, its top "
                 "architectures trained standalone and compared with the pool at matched parameters. With "
                 "--run RUN_DIR: the study of that search (its --top K best derived architectures against K "
                 "uniform ones matched in parameters).")
    _images(p)
    p.add_argument("--run", dest="run_dir", metavar="RUN_DIR", default=None,
                   help="study this search run folder (after 'deconas derive') instead of running searches "
                        "(default: the full study, with --train)")
    p.add_argument("--rows", metavar="STUDY_JSON", default=None,
                   help="a full study's study.json whose finished trainings (same recipe) are not run again "
                        "and, where it planned the same pool, whose searches are taken as they are (default: none)")
    p.add_argument("--report", metavar="STUDY_JSON", default=None,
                   help="print the summary of a full study's study.json, recomputed from its rows with the "
                        "config's study settings; writes nothing but --plots (default: run a study)")
    p.add_argument("--plots", metavar="DIR", default=None,
                   help="with --report: also draw picks.png and fidelity.png in DIR (default: none)")
    _replaces(p, "--plots' picks.png and fidelity.png")
    p.add_argument("--markdown", action="store_true",
                   help="with --report: print the summary as Markdown tables (default: lines)")
    p.add_argument("--top", type=int, default=None,
                   help=f"--run: searched architectures (default: study.top, {config.default('study.top')})")
    p.add_argument("--random", type=int, default=None,
                   help=f"--run: random architectures (default: study.random, {config.default('study.random')})")
    _config(p, "study-cpu", "train.steps=3000 (the training recipe and the study's settings)")
    p.add_argument("--benchmark", nargs="+", metavar="DIR", help="--run: also score every network on these folders (default: none)")
    _run_folder(p, "RUN_DIR/study with --run, else runs/study-<time>", "study")
    p.add_argument("--jobs", type=int, default=None, help="jobs (trainings, searches) at once (default: study.jobs)")

    p = _command(sub, "run", "deconas.cli.train:cmd_run",
                 help="the whole experiment: search -> derive -> train -> evaluate -> report",
                 description="Search, derive the best architecture, train it from scratch and evaluate "
                 "it against bicubic, into one run folder with a Markdown report. With no arguments it "
                 "runs a small CPU experiment on built-in images in a few minutes.")
    _images(p)
    _config(p, "run-cpu", "seed=1")
    p.add_argument("--benchmark", nargs="*", metavar="DIR", default=None, help="evaluate on these folders too (default: only the run's held-out images)")
    _run_folder(p, "runs/run-<time>", "run, stage by stage,")
    _device(p)
    return ap
