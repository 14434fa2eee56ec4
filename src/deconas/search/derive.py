"""``deconas derive``: pick the architecture from a trained controller (paper section III.A/B).

Sample K architectures (default ``search.derive_samples``, 100) from the run's controller,
score each with the shared weights on the validation images (whole images, or centre crops
when ``search.derive_max_size`` is set; PSNR on Y with border = scale, outputs rounded to
8 bits, :func:`deconas.metrics.psnr_y`, averaged over the images), and write into the run
folder:

* ``candidates.csv``: every sample (genotype, params, Mult-Adds, validation PSNR, reward,
  log-probability, on the Pareto front or not);
* ``best.json``: the chosen one, the **highest validation PSNR** (the paper keeps "the best";
  PSNR is what it reports). The reward-best (PSNR - alpha * params / params_max, the quantity
  the controller maximised) is recorded beside it under ``reward_best``;
* ``summary.md``: Table I style best and mean PSNR and parameters (also printed);
* ``scatter.png``: PSNR versus parameters like the paper's Fig. 4, Pareto front marked.

Under torchrun (``torchrun --nproc_per_node P -m deconas.cli derive RUN_DIR``) every rank draws
the same K samples (same controller, same seed); the distinct architectures are dealt out
round-robin, each rank scores its share, the scores are gathered and rank 0 writes the files:
the same files as one process, about P times sooner.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from deconas import config as config_mod
from deconas.progress import bar as progress_bar
from deconas import distributed
from deconas.config import Config
from deconas.constants import SEED_DERIVE
from deconas.errors import UserError
from deconas.infer.tiling import NonFiniteOutput, rgb_to_grey_uint8
from deconas.metrics import psnr_y
from deconas.runfolder import BEST, CANDIDATES, CONFIG, SCATTER, SEARCH_STATE, SEARCH_SUMMARY
from deconas.runtime import atomic_write, atomic_write_text, check_tensors_like, pyplot, save_figure, seed_everything
from deconas.search.reward import Penalty, reward_of
from deconas.search.runs import (build_supernet, check_search_folder, read_checkpoint, read_data_json,
                                 read_latency_table, reload_val_pairs)
from deconas.search.strategies import make_strategy
from deconas.space import complexity
from deconas.space.genotype import Genotype, parse


def _centre_crop(hr: np.ndarray, lr: np.ndarray, size: int, scale: int):
    h, w = lr.shape[:2]
    th, tw = min(h, size), min(w, size)
    y, x = (h - th) // 2, (w - tw) // 2
    return hr[y * scale:(y + th) * scale, x * scale:(x + tw) * scale], lr[y:y + th, x:x + tw]


def prepare_val(val, size: int, scale: int, device) -> list:
    """(LR tensor, HR uint8) per validation pair, centre-cropped to ``size`` LR pixels when set;
    grey LR enters as three equal channels."""
    prepared = []
    for _, hr, lr in val:
        if size:
            hr, lr = _centre_crop(hr, lr, size, scale)
        x = lr if lr.ndim == 3 else np.repeat(lr[:, :, None], 3, 2)
        prepared.append((torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float().div(255).to(device), hr))
    return prepared


def pareto_front(params: List[int], psnr: List[float]) -> List[bool]:
    """True where no other candidate has at most as many parameters and at least the PSNR
    (one of the two strictly): the best PSNR for its size."""
    out = []
    for i in range(len(params)):
        out.append(not any((params[j] <= params[i] and psnr[j] >= psnr[i]) and
                           (params[j] < params[i] or psnr[j] > psnr[i]) for j in range(len(params))))
    return out


@torch.no_grad()
def score(supernet, genotype: Genotype, val, scale: int) -> float:
    """Mean PSNR on Y (border = scale) of the sampled architecture over the validation images.

    Output holding NaN or inf is :class:`NonFiniteOutput`: clamped, it would be a black image
    with a finite, meaningless PSNR."""
    vals = []
    for lr_t, hr in val:
        out = supernet(lr_t, genotype)
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteOutput(f"the shared weights give NaN or inf output for {genotype}")
        sr = out.clamp_(0, 1).mul_(255).round_()[0].permute(1, 2, 0).byte().cpu().numpy()
        if hr.ndim == 2:  # grey in, grey out: BT.601 luma, as deconas upscale and eval do
            sr = rgb_to_grey_uint8(sr)
        vals.append(psnr_y(sr, hr, scale))
    return float(np.mean(vals))


def _plot(rows, front, best, path: Path, title: str) -> None:
    plt = pyplot()
    p = np.array([r["params"] for r in rows], dtype=float) / 1e3
    q = np.array([r["val_psnr"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.scatter(p, q, s=14, alpha=0.6, label=f"{len(rows)} samples")
    idx = sorted((i for i, f in enumerate(front) if f), key=lambda i: p[i])
    ax.plot(p[idx], q[idx], "-o", color="tab:red", ms=4, lw=1, label="Pareto front")
    ax.scatter([best["params"] / 1e3], [best["val_psnr"]], marker="*", s=160, color="gold", edgecolor="k",
               zorder=5, label="best PSNR")
    ax.set_xlabel("parameters (K)")
    ax.set_ylabel("validation PSNR on Y (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def setting_name(cfg: Config) -> str:
    s = cfg.search
    return f"CB{int(float(s.alpha) > 0)}_FF{int(s.ff)}"


def derive(run_dir, samples: Optional[int] = None, device=None, progress: bool = True) -> dict:
    """Sample, score and rank architectures of a finished (or interrupted) search; returns
    the content of ``best.json`` plus the summary figures. Under torchrun every process calls
    it; the scoring is spread over the ranks, rank 0 writes, every rank returns the result."""
    scored = score_samples(run_dir, samples, device, progress)
    res = report(Path(run_dir), scored, write=distributed.rank() == 0)
    distributed.barrier()  # the files are in place before any process returns
    return res


def score_samples(run_dir, samples: Optional[int] = None, device=None, progress: bool = True) -> dict:
    """Draw ``samples`` architectures from the trained controller and score each distinct one
    with the shared weights: their rows (genotype, cost, PSNR, reward, Pareto flag) and what
    :func:`report` needs to describe them."""
    run = check_search_folder(run_dir)
    cfg = config_mod.load(str(run / CONFIG))
    s, scale = cfg.search, cfg.scale
    k = int(samples if samples is not None else s.derive_samples)
    if k < 1:
        raise UserError(f"--samples {k}: need at least 1")
    device = device if isinstance(device, torch.device) else distributed.setup(device)
    rank, world = distributed.rank(), distributed.world_size()
    read_data_json(run)  # a damaged data.json is named before the (longer) checkpoint load
    from_policy = s.strategy == "controller"
    st = read_checkpoint(run / SEARCH_STATE, device, keys=("controller" if from_policy else "strategy", "supernet"))
    strategy, supernet = make_strategy(cfg, device), build_supernet(cfg).to(device)
    try:
        strategy.load_state_dict(st)
        check_tensors_like(st["supernet"], supernet.state_dict(), "supernet")  # load_state_dict would cast dtypes
        supernet.load_state_dict(st["supernet"])
    except UserError as e:
        raise UserError(f"{run / SEARCH_STATE}: {e}") from None
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise UserError(f"{run / SEARCH_STATE}: damaged or does not match {run / CONFIG} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    supernet.eval()
    if from_policy and not all(bool(torch.isfinite(t).all()) for t in strategy.controller.state_dict().values()):
        # sampling from it would fail deep inside torch.multinomial
        raise UserError(f"{run / SEARCH_STATE}: the controller's weights hold NaN or inf "
                        f"(a diverged or damaged search); nothing written")

    val = reload_val_pairs(run)
    nmax, size = s.derive_max_images, s.derive_max_size
    val = val[:nmax] if nmax else val
    prepared = prepare_val(val, size, scale, device)

    seed_everything(cfg.seed + SEED_DERIVE)  # the same K samples every time derive runs
    alpha, m = float(s.alpha), cfg.model
    penalty = Penalty(s.penalty, scale, m.channels, m.blocks, m.nodes, s.ff, read_latency_table(cfg))
    if from_policy:
        strategy.controller.eval()
        with torch.no_grad():  # scoring draws no random numbers: sampling first gives the same K samples
            drawn = [(smp.genotype, float(smp.log_prob)) for smp in (strategy.controller.sample() for _ in range(k))]
    else:  # random search and evolution: the best K they scored, re-scored on the validation images
        drawn = [(g, None) for g, _ in strategy.best(k)]
        if not drawn:
            raise UserError(f"{run / SEARCH_STATE}: the search has scored no architecture yet")
    # A policy that has converged repeats itself: score each architecture once, this rank its share.
    unique = list(dict.fromkeys(g for g, _ in drawn))
    mine = list(range(rank, len(unique), world))
    def score_or_nan(g):  # NaN marks non-finite output; every rank refuses after the gather, none waits alone
        try:
            return score(supernet, g, prepared, scale)
        except NonFiniteOutput:
            return math.nan

    scored = [(i, score_or_nan(unique[i]))
              for i in progress_bar(mine, desc="derive", unit="arch", disable=not progress or rank != 0)]
    scores = {unique[i]: v for part in distributed.all_gather(scored) for i, v in part}
    lost = [g for g, v in scores.items() if math.isnan(v)]
    if lost:
        raise UserError(f"{run / SEARCH_STATE}: the shared weights give NaN or inf output for {len(lost)} of "
                        f"{len(scores)} architectures (such as {lost[0]}): a diverged or damaged search; "
                        f"nothing written")
    rows = []
    for g, log_prob in drawn:
        c = complexity.cost(g, scale, m.channels, m.blocks)
        rows.append({"genotype": str(g), "params": c.params, "mult_adds": c.mult_adds, "val_psnr": scores[g],
                     "reward": reward_of(scores[g], penalty(g), penalty.max, alpha), "log_prob": log_prob,
                     "_g": g})
    front = pareto_front([r["params"] for r in rows], [r["val_psnr"] for r in rows])
    for r, f in zip(rows, front):
        r["pareto"] = int(f)
    return {"cfg": cfg, "rows": rows, "front": front, "samples": len(drawn), "unique": len(scores),
            "val_images": len(prepared), "val_crop": size}


def read_candidates(run) -> List[tuple]:
    """``candidates.csv`` read back, checked as data: the distinct architectures with derive's
    validation PSNR, best first. Anything that is not a genotype with a finite PSNR (a short or
    damaged row, NaN, a field past the csv module's limit) is one line naming the file."""
    path = Path(run) / CANDIDATES
    if not path.is_file():
        raise UserError(f"{run}: no candidates.csv; run 'deconas derive {run}' first")
    best = {}
    try:
        with open(path, newline="") as f:
            for n, r in enumerate(csv.DictReader(f), 2):  # line 1 is the header
                g, v = r.get("genotype"), r.get("val_psnr")
                if not isinstance(g, str) or not isinstance(v, str):
                    raise ValueError(f"line {n} has no genotype or val_psnr")
                psnr = float(v)
                if not math.isfinite(psnr):
                    raise ValueError(f"line {n}: val_psnr is {v[:20]}")
                best.setdefault(parse(g), psnr)
    except (OSError, csv.Error, ValueError, UserError) as e:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{path}: damaged ({type(e).__name__}: {' '.join(str(e).split())[:100]})") from None
    if not best:
        raise UserError(f"{path}: no architectures")
    return sorted(best.items(), key=lambda kv: -kv[1])


def report(run: Path, scored: dict, write: bool = True) -> dict:
    """best.json, candidates.csv, summary.md and scatter.png (when ``write``) from
    :func:`score_samples`' rows; returns best.json's content plus the summary figures."""
    cfg, rows, front, k, size = scored["cfg"], scored["rows"], scored["front"], scored["samples"], scored["val_crop"]
    m, scale, ff = cfg.model, cfg.scale, cfg.search.ff

    def record(r):
        g = r["_g"]
        return {"genotype": str(g), "genotype_dict": g.to_dict(), "bits": g.bits(), "scale": scale,
                "channels": m.channels, "blocks": m.blocks, "nodes": m.nodes, "ff": ff,
                "val_psnr": r["val_psnr"], "params": r["params"], "mult_adds": r["mult_adds"], "reward": r["reward"]}

    best_row = max(rows, key=lambda r: r["val_psnr"])
    best = {**record(best_row), "selection": "highest validation PSNR among the samples",
            "reward_best": record(max(rows, key=lambda r: r["reward"])), "setting": setting_name(cfg),
            "samples": k, "unique": scored["unique"], "val_images": scored["val_images"],
            "val_crop": size or None, "psnr_protocol": "Y (BT.601), border = scale, 8-bit outputs"}

    fields = ["genotype", "params", "mult_adds", "val_psnr", "reward", "log_prob", "pareto"]

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({**r, "val_psnr": f"{r['val_psnr']:.4f}", "reward": f"{r['reward']:.4f}",
                            "log_prob": "" if r["log_prob"] is None else f"{r['log_prob']:.4f}",
                            "mult_adds": f"{r['mult_adds']:.0f}"})
    if write:
        atomic_write(run / CANDIDATES, write_csv)
        atomic_write_text(run / BEST, json.dumps(best, indent=2))

    mean_psnr = float(np.mean([r["val_psnr"] for r in rows]))
    mean_params = float(np.mean([r["params"] for r in rows]))
    name = setting_name(cfg)
    origin = ("samples from the controller" if cfg.search.strategy == "controller"
              else f"best-scored architectures of the {cfg.search.strategy} search")
    md = (f"# Derive: {k} {origin} of {run.name} ({name})\n\n"
          f"x{scale}, C={m.channels}, N={m.blocks}, M={m.nodes}; validation PSNR on Y over "
          f"{scored['val_images']} images{f' (centre crops, at most {size} LR px a side)' if size else ''}, "
          f"shared weights.\n\n"
          f"| {name} | | |\n|---|---|---|\n"
          f"| Best | PSNR | {best_row['val_psnr']:.3f} |\n| | Parameters | {best_row['params'] / 1e3:,.1f} K |\n"
          f"| Mean | PSNR | {mean_psnr:.3f} |\n| | Parameters | {mean_params / 1e3:,.1f} K |\n\n"
          f"Best (highest validation PSNR): `{best['genotype']}` ({best_row['params']:,} parameters, "
          f"{best_row['mult_adds'] / 1e9:.2f} G Mult-Adds at 1280x720).\n"
          f"Reward-best: `{best['reward_best']['genotype']}` ({best['reward_best']['params']:,} parameters, "
          f"{best['reward_best']['val_psnr']:.3f} dB).\n"
          f"{sum(front)} of {k} samples on the Pareto front; {scored['unique']} distinct architectures.\n")
    if write:
        atomic_write_text(run / SEARCH_SUMMARY, md)
        _plot(rows, front, best_row, run / SCATTER,
              f"{name}: {k} samples, x{scale} C={m.channels} N={m.blocks} M={m.nodes}")
    return {**best, "mean_psnr": mean_psnr, "mean_params": mean_params, "pareto_count": int(sum(front)),
            "summary_md": md}
