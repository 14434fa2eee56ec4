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
import shutil
import sys
import time
from pathlib import Path

from deconas import config as config_mod
from deconas.checkpoint import load_model, read_meta
from deconas.config import Config
from deconas.data.datasets import builtin_images, expand_sources, find_hr_folder, hr_files, holdout_split
from deconas.data.images import write_image
from deconas.data.imresize import bicubic_up
from deconas.errors import UserError
from deconas.evaluate import evaluate
from deconas.infer.inference import upscale_array
from deconas.runfolder import (BEST, BEST_WEIGHTS, CANDIDATES, CONFIG, CURVES, METRICS, PIPELINE_DATA, PIPELINE_REPORT,
                               PIPELINE_RESULTS, PIPELINE_SEARCH, PIPELINE_SPLIT, PIPELINE_SR, PIPELINE_TIMES,
                               PIPELINE_TRAIN, SCATTER, SEARCH_STATE, SEARCH_SUMMARY, TRAIN_STATE, TRAIN_SUMMARY,
                               write_config)
from deconas.runtime import atomic_write_text, read_jsonl
from deconas.search.derive import derive
from deconas.search.loop import run_search
from deconas.space.describe import describe, format_table
from deconas.space.genotype import parse
from deconas.train import read_best, run_training


def _split_data(cfg: Config, train_dirs, out: Path) -> dict:
    """Hold ``test_fraction`` of the images out for the final evaluation, as two folders.

    Built-in images are written as PNG; a user's files are linked (not copied)."""
    data = out / PIPELINE_DATA
    marker = data / PIPELINE_SPLIT
    if marker.is_file():
        return json.loads(marker.read_text())
    frac, seed = float(cfg.test_fraction), cfg.seed
    tmp = out / (PIPELINE_DATA + ".partial")
    if tmp.exists():
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
    data.mkdir(parents=True, exist_ok=True)
    for sub in ("train", "test"):
        # A split killed between these two moves left its own folders (links and PNGs it wrote,
        # no split.json): they are replaced (rmtree removes links, never what they point to).
        if (data / sub).exists():
            shutil.rmtree(data / sub)
        os.replace(tmp / sub, data / sub)
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
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in (out / PIPELINE_REPORT,):
        if p.exists():
            p.unlink()


def run_pipeline(cfg: Config, train_dirs=None, val_dir=None, benchmarks=None, out_dir="runs/run", resume=False,
                 device=None, progress=True) -> dict:
    s_cfg, t_cfg = stage_configs(cfg)
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()):
        if not resume:
            raise UserError(f"{out} is not empty; pass --resume to continue the run there, or pick another --out")
        if not (out / CONFIG).is_file():  # a run writes its config.yaml first: without one it is not a run
            theirs = sorted(p.name for p in out.iterdir())
            raise UserError(f"--out {out}: holds files deconas did not write for a run ({', '.join(theirs[:3])}"
                            f"{', ...' if len(theirs) > 3 else ''}); pick an empty or new folder")
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

    say(f"data -> {out / PIPELINE_DATA}")
    split = timed("data", lambda: _split_data(cfg, train_dirs, out))
    train_dir, test_dir = out / PIPELINE_DATA / "train", out / PIPELINE_DATA / "test"
    scale = cfg.scale

    eval_dirs = ([test_dir] if split["test"] else []) + list(benchmarks or [])
    if not eval_dirs:
        raise UserError("nothing to evaluate on: set test_fraction > 0 or pass --benchmark DIR")

    search_dir = out / PIPELINE_SEARCH
    ckpt = search_dir / SEARCH_STATE
    epochs = s_cfg.search.epochs
    last_epoch = _last_epoch(search_dir / METRICS)
    if last_epoch < epochs:
        _invalidate(out, search_dir / BEST, search_dir / CANDIDATES, out / PIPELINE_TRAIN, out / PIPELINE_RESULTS)
        say(f"search ({s_cfg.model}, {epochs} epochs) -> {search_dir}")
        timed("search", lambda: run_search(s_cfg, train_dir, val_dir, search_dir, resume=ckpt.is_file(),
                                           device=device, progress=progress))
    if not (search_dir / BEST).is_file():
        _invalidate(out, out / PIPELINE_TRAIN, out / PIPELINE_RESULTS)
        say("derive")
        timed("derive", lambda: derive(search_dir, cfg.derive_samples, device=device, progress=progress))
    best = read_best(search_dir)  # checked as data: a damaged one is one line naming it
    genotype = parse(best["genotype"])

    # Train the best architecture from scratch. With FF bits, N must be the searched N.
    if genotype.ff:
        t_cfg.model.blocks = len(genotype.gff)
    train_out = out / PIPELINE_TRAIN
    if not (train_out / TRAIN_SUMMARY).is_file():
        _invalidate(out, out / PIPELINE_RESULTS)
        say(f"train {genotype} from scratch -> {train_out}")
        timed("train", lambda: run_training(t_cfg, genotype, train_dir, val_dir, train_out,
                                            resume=(train_out / TRAIN_STATE).is_file(), device=device,
                                            progress=progress))

    # Evaluate the found network against bicubic on the held-out images (and any benchmarks).
    results_path = out / PIPELINE_RESULTS
    if not results_path.is_file():
        say("evaluate")
        results = timed("evaluate", lambda: _evaluate(train_out / BEST_WEIGHTS, eval_dirs, scale, device,
                                                      out / PIPELINE_SR))
        atomic_write_text(results_path, json.dumps(results, indent=1))
    results = json.loads(results_path.read_text())
    report = _report(cfg, out, split, best, genotype, t_cfg, results, times)
    atomic_write_text(out / PIPELINE_REPORT, report)
    say(f"done: {out / PIPELINE_REPORT}")
    return {"results": results, "genotype": str(genotype), "times": times}


def _last_epoch(path: Path) -> int:
    records = read_jsonl(path)
    return int(records[-1]["epoch"]) if records else 0


def _evaluate(checkpoint: Path, dirs, scale: int, device, save_dir: Path) -> dict:
    model, meta = load_model(checkpoint, scale=scale, device=device)
    bic = evaluate(lambda lr: bicubic_up(lr, scale), dirs, scale, progress=False)
    net = evaluate(lambda lr: upscale_array(model, lr), dirs, scale, save_dir=save_dir, progress=False,
                   overwrite=True)  # the run's own folder: a resumed evaluation writes it again
    rows = []
    for b, n in zip(bic["datasets"], net["datasets"]):
        rows.append({"dataset": b["name"], "images": b["images"], "bicubic_psnr": b["psnr"], "bicubic_ssim": b["ssim"],
                     "psnr": n["psnr"], "ssim": n["ssim"],
                     "per_image": [{"name": pb["name"], "bicubic_psnr": pb["psnr"], "psnr": pn["psnr"]}
                                   for pb, pn in zip(b["per_image"], n["per_image"])]})
    return {"scale": scale, "checkpoint": str(checkpoint), "datasets": rows}


def _report(cfg, out: Path, split, best, genotype, t_cfg, results, times) -> str:
    meta = read_meta(out / PIPELINE_TRAIN / BEST_WEIGHTS)  # what was trained, whatever the config says now
    info = describe(genotype, int(meta["scale"]), int(meta["channels"]), int(meta["blocks"]))
    summary = out / PIPELINE_SEARCH / SEARCH_SUMMARY
    summary_md = summary.read_text() if summary.is_file() else ""
    tr = json.loads((out / PIPELINE_TRAIN / TRAIN_SUMMARY).read_text())
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
              f"![PSNR versus parameters of the derived samples]({PIPELINE_SEARCH}/{SCATTER})", "",
              "## Training", "",
              f"{tr['steps']} steps; best validation PSNR {tr['best_val_psnr']:.2f} dB." if tr.get("best_val_psnr")
              else f"{tr['steps']} steps.", "",
              f"![Training curves]({PIPELINE_TRAIN}/{CURVES})", "",
              "## Time (seconds, this machine)", "",
              "| " + " | ".join(times) + " | total |", "|" + "---|" * (len(times) + 1),
              "| " + " | ".join(f"{v:.0f}" for v in times.values()) + f" | {sum(times.values()):.0f} |", ""]
    return "\n".join(lines)
