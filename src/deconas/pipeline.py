"""``deconas run``: the paper's whole experiment in one command.

    data split -> search -> derive -> train the best from scratch -> evaluate vs bicubic -> report

Everything lands in one run folder::

    RUN/data/{train,test}/   the images used (the test images never reach search or training)
    RUN/search/              the search run (metrics, checkpoint, candidates.csv, scatter.png)
    RUN/train/               the from-scratch training (best.safetensors, curves.png)
    RUN/results.json         bicubic and the found network on each evaluation set
    RUN/report.md            the short report

Each stage is skipped when its output is already complete, so ``--resume`` (or simply
rerunning on the same ``--out``) continues an interrupted run where it stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from . import config as config_mod
from .arch import describe, format_table
from .config import Config
from .errors import UserError
from .runfolder import (BEST, BEST_WEIGHTS, CANDIDATES, METRICS, PIPELINE_TIMES, SEARCH_STATE, SEARCH_SUMMARY,
                        TRAIN_STATE, TRAIN_SUMMARY, check_folders, check_out_dir, out_path, run_config, write_config)
from .runtime import atomic_write_text, read_jsonl


def _split_data(cfg: Config, train_dirs, out: Path) -> dict:
    """Hold ``test_fraction`` of the images out for the final evaluation, as two folders.

    Built-in images are written as PNG; a user's files are linked (not copied)."""
    from .datasets import builtin_images, expand_sources, holdout_split
    from .images import write_image

    marker = out / "data" / "split.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    frac, seed = float(cfg.test_fraction), cfg.seed
    tmp = out / "data.partial"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    (tmp / "train").mkdir(parents=True)
    (tmp / "test").mkdir(parents=True)
    if train_dirs is None:
        items = builtin_images()
        train, test = holdout_split(items, frac, seed)
        for sub, part in (("train", train), ("test", test)):
            for name, pixels in part:
                write_image(tmp / sub / (Path(name).stem + ".png"), pixels)
        source = "built-in (scikit-image sample photographs)"
    else:
        from .datasets import find_hr_folder, hr_files

        files, seen = [], set()
        for d in expand_sources(train_dirs):
            prefix = d.resolve().name
            while prefix in seen:  # two sources with one name (a/Set5, b/Set5)
                prefix += "_"
            seen.add(prefix)
            files += [(f"{prefix}__{f.name}", f) for f in hr_files(find_hr_folder(d))]
        train, test = holdout_split(files, frac, seed)
        for sub, part in (("train", train), ("test", test)):
            for name, f in part:
                os.symlink(f.resolve(), tmp / sub / name)
        source = ", ".join(str(d) for d in train_dirs)
    split = {"source": source, "test_fraction": frac, "seed": seed,
             "train": sorted(n for n, _ in train), "test": sorted(n for n, _ in test)}
    (out / "data").mkdir(parents=True, exist_ok=True)
    for sub in ("train", "test"):
        os.replace(tmp / sub, out / "data" / sub)
    tmp.rmdir()
    atomic_write_text(marker, json.dumps(split, indent=1))
    return split


def stage_configs(cfg: Config):
    """The search and train configs a run config names, checked before any work starts."""
    # Types and the rest are checked by the schema.
    for key, name in (("search_config", cfg.search_config), ("train_config", cfg.train_config)):
        if name is None:
            raise UserError(f"config: '{key}' must name a preset or a YAML file")
    one_run = [f"scale={cfg.scale}", f"seed={cfg.seed}"]  # one scale and one seed for the whole run
    s_cfg = config_mod.load(cfg.search_config, list(cfg.search_overrides) + one_run)
    t_cfg = config_mod.load(cfg.train_config, list(cfg.train_overrides) + one_run)
    return s_cfg, t_cfg


def _invalidate(out: Path, *paths: Path) -> None:
    """An earlier stage is (re)running: what later stages made from its old output is stale."""
    import shutil

    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in (out / "report.md",):
        if p.exists():
            p.unlink()


def run_pipeline(cfg: Config, train_dirs=None, val_dir=None, benchmarks=None, out_dir="runs/run", resume=False,
                 device=None, progress=True) -> dict:
    from .derive import derive
    from .search import run_search
    from .train import run_training

    s_cfg, t_cfg = stage_configs(cfg)
    out = Path(out_dir)
    if not resume and out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; pass --resume to continue the run there, or pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    times = json.loads((out / PIPELINE_TIMES).read_text()) if (out / PIPELINE_TIMES).is_file() else {}

    def timed(name, fn):
        t0 = time.time()
        res = fn()
        times[name] = round(times.get(name, 0.0) + time.time() - t0, 1)
        atomic_write_text(out / PIPELINE_TIMES, json.dumps(times, indent=1))
        return res

    def say(msg):
        print(f"[deconas run] {msg}", file=sys.stderr, flush=True)

    say(f"data -> {out / 'data'}")
    split = timed("data", lambda: _split_data(cfg, train_dirs, out))
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    scale = cfg.scale

    eval_dirs = ([test_dir] if split["test"] else []) + list(benchmarks or [])
    if not eval_dirs:
        raise UserError("nothing to evaluate on: set test_fraction > 0 or pass --benchmark DIR")

    search_dir = out / "search"
    ckpt = search_dir / SEARCH_STATE
    epochs = s_cfg.search.epochs
    last_epoch = _last_epoch(search_dir / METRICS)
    if last_epoch < epochs:
        _invalidate(out, search_dir / BEST, search_dir / CANDIDATES, out / "train", out / "results.json")
        say(f"search ({s_cfg.model}, {epochs} epochs) -> {search_dir}")
        timed("search", lambda: run_search(s_cfg, train_dir, val_dir, search_dir, resume=ckpt.is_file(),
                                           device=device, progress=progress))
    if not (search_dir / BEST).is_file():
        _invalidate(out, out / "train", out / "results.json")
        say("derive")
        timed("derive", lambda: derive(search_dir, cfg.derive_samples, device=device, progress=progress))
    best = json.loads((search_dir / BEST).read_text())
    from .genotype import parse

    genotype = parse(best["genotype"])

    # Train the best architecture from scratch. With FF bits, N must be the searched N.
    if genotype.ff:
        t_cfg.model.blocks = len(genotype.gff)
    train_out = out / "train"
    if not (train_out / TRAIN_SUMMARY).is_file():
        _invalidate(out, out / "results.json")
        say(f"train {genotype} from scratch -> {train_out}")
        timed("train", lambda: run_training(t_cfg, genotype, train_dir, val_dir, train_out,
                                            resume=(train_out / TRAIN_STATE).is_file(), device=device,
                                            progress=progress))

    # Evaluate the found network against bicubic on the held-out images (and any benchmarks).
    results_path = out / "results.json"
    if not results_path.is_file():
        say("evaluate")
        results = timed("evaluate", lambda: _evaluate(train_out / BEST_WEIGHTS, eval_dirs, scale, device,
                                                      out / "sr"))
        atomic_write_text(results_path, json.dumps(results, indent=1))
    results = json.loads(results_path.read_text())
    report = _report(cfg, out, split, best, genotype, t_cfg, results, times)
    atomic_write_text(out / "report.md", report)
    say(f"done: {out / 'report.md'}")
    return {"results": results, "genotype": str(genotype), "times": times}


def _last_epoch(path: Path) -> int:
    records = read_jsonl(path)
    return int(records[-1]["epoch"]) if records else 0


def _evaluate(checkpoint: Path, dirs, scale: int, device, save_dir: Path) -> dict:
    from .checkpoint import load_model
    from .evaluate import evaluate
    from .imresize import bicubic_up
    from .inference import upscale_array

    model, meta = load_model(checkpoint, scale=scale, device=device)
    bic = evaluate(lambda lr: bicubic_up(lr, scale), dirs, scale, progress=False)
    net = evaluate(lambda lr: upscale_array(model, lr), dirs, scale, save_dir=save_dir, progress=False)
    rows = []
    for b, n in zip(bic["datasets"], net["datasets"]):
        rows.append({"dataset": b["name"], "images": b["images"], "bicubic_psnr": b["psnr"], "bicubic_ssim": b["ssim"],
                     "psnr": n["psnr"], "ssim": n["ssim"],
                     "per_image": [{"name": pb["name"], "bicubic_psnr": pb["psnr"], "psnr": pn["psnr"]}
                                   for pb, pn in zip(b["per_image"], n["per_image"])]})
    return {"scale": scale, "checkpoint": str(checkpoint), "datasets": rows}


def _report(cfg, out: Path, split, best, genotype, t_cfg, results, times) -> str:
    from .checkpoint import read_meta

    meta = read_meta(out / "train" / BEST_WEIGHTS)  # what was trained, whatever the config says now
    info = describe(genotype, int(meta["scale"]), int(meta["channels"]), int(meta["blocks"]))
    summary_md = (out / "search" / SEARCH_SUMMARY).read_text() if (out / "search" / SEARCH_SUMMARY).is_file() else ""
    tr = json.loads((out / "train" / TRAIN_SUMMARY).read_text())
    lines = [
        "# DeCoNAS run", "",
        f"Data: {split['source']}; {len(split['train'])} images for search and training, "
        f"{len(split['test'])} held out for evaluation ({', '.join(split['test'])}).", "",
        "## Found architecture", "",
        f"Genotype `{genotype}` (release bits `{genotype.bits()}`), chosen by validation PSNR among "
        f"the derived samples.", "",
        "```", format_table(info), "```", "",
        f"Trained network: x{info['scale']}, C={info['channels']}, N={info['blocks']}, M={info['nodes']}: "
        f"**{info['params']:,} parameters**, {info['mult_adds'] / 1e9:.2f} G Mult-Adds (1280x720 output).", "",
        "## Results (PSNR dB / SSIM on Y, border = scale)", "",
        "| Set | Images | Bicubic | DeCoNASNet (found) | Gain |", "|---|---|---|---|---|",
    ]
    for r in results["datasets"]:
        lines.append(f"| {r['dataset']} | {r['images']} | {r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f} | "
                     f"{r['psnr']:.2f} / {r['ssim']:.4f} | {r['psnr'] - r['bicubic_psnr']:+.2f} dB |")
    lines += ["", "## Search", "", summary_md.replace("# Derive", "### Derive"), "",
              "![PSNR versus parameters of the derived samples](search/scatter.png)", "",
              "## Training", "",
              f"{tr['steps']} steps; best validation PSNR {tr['best_val_psnr']:.2f} dB." if tr.get("best_val_psnr")
              else f"{tr['steps']} steps.", "",
              "![Training curves](train/curves.png)", "",
              "## Time (seconds, this machine)", "",
              "| " + " | ".join(times) + " | total |", "|" + "---|" * (len(times) + 1),
              "| " + " | ".join(f"{v:.0f}" for v in times.values()) + f" | {sum(times.values()):.0f} |", ""]
    return "\n".join(lines)


def cli_run(args) -> int:
    out = out_path(args.out, "run", args.resume)
    cfg = run_config(out, args.resume, args.config, args.overrides)
    stage_configs(cfg)
    check_out_dir(out, "pipeline run")
    check_folders(*(args.train or []), args.val, *(args.benchmark or []), what="no such folder")
    res = run_pipeline(cfg, args.train, args.val, args.benchmark, out, args.resume, args.device)
    for r in res["results"]["datasets"]:
        print(f"{r['dataset']:<16} bicubic {r['bicubic_psnr']:.2f} dB   found network {r['psnr']:.2f} dB "
              f"({r['psnr'] - r['bicubic_psnr']:+.2f})")
    print(f"report: {out / 'report.md'}")
    return 0
