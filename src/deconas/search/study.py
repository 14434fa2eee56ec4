"""``deconas study``: does the search find better networks than chance?

The question every NAS reader asks first (Yu et al., ICLR 2020; Li and Talwalkar, 2019): under
the same budget, are the searched architectures better than random ones, and does the
shared-weight ranking that picked them track their standalone quality at all? On the search
run's own data split:

1. **Searched**: the distinct architectures of ``deconas derive``'s ``candidates.csv``; the
   best ``study.screen`` x K by derive's quick score are re-scored with the shared weights on
   the validation images (``study.shared_max_images``, ``study.shared_max_size``: by default
   every held-out image, whole), and the ``--top`` K best of those are kept.
2. **Random**: for each searched architecture one drawn uniformly from the space (every op bit
   a fair coin) and kept only when its parameter count is within ``study.param_tolerance``
   (10%) of its partner's: rejection sampling, so the two groups are compared at matched size.
3. Every architecture is trained **standalone from scratch** with one recipe (the config's
   ``train`` section) and one seed per pair, and scored on the held-out validation images (and
   on ``--benchmark`` folders when given) with the last weights of the schedule.
4. ``study.json`` (one row per architecture: genotype, group, pair, params, shared_psnr,
   standalone_psnr, seed, ...), ``study.csv``, ``ranking.png`` (standalone against
   shared-weight PSNR, Kendall tau) and ``matched.png`` (searched against random, pair by pair).

The reward noise is measured too (``reward_noise`` in study.json): the std of one
architecture's reward PSNR over fresh reward batches of the search's size, against the spread
of the architectures' mean rewards. When the first is not small against the second, a reward
batch cannot rank architectures.

Resumable per architecture: each trains in its own folder ``arch/<pair>-<group>/`` with the
checkpoints of ``deconas train``; a rerun with ``--resume`` skips finished ones and continues
unfinished ones. ``study.jobs`` architectures train at once, each in its own process with
``study.threads`` torch threads (2 x 1 fills a 2-core machine best).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import json
import math
import multiprocessing as mp
import signal
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from deconas import config as config_mod
from deconas.progress import bar as progress_bar
from deconas import threads as threads_mod
from deconas.checkpoint import load_model
from deconas.config import Config
from deconas.constants import SEED_NOISE, SEED_STUDY
from deconas.data.patches import PatchSampler
from deconas.errors import UserError
from deconas.evaluate import evaluate
from deconas.infer.inference import upscale_array
from deconas.runfolder import (CANDIDATES, CONFIG, LAST_WEIGHTS, SEARCH_STATE, STUDY_ARCHS, STUDY_MATCHED, STUDY_PLAN,
                               STUDY_RANKING, STUDY_RESULT, STUDY_ROW, STUDY_TABLE, STUDY_TRAIN_LOG, TRAIN_RECORD,
                               TRAIN_STATE, TRAIN_SUMMARY, check_resume, read_data_record)
from deconas.runtime import (atomic_write, atomic_write_text, check_tensors_like, parse_json, pyplot, save_figure,
                             seed_everything)
from deconas.search.derive import prepare_val, read_candidates, score
from deconas.search.reward import psnr_y_batch
from deconas.search.stats import kendall_tau
from deconas.search.runs import build_supernet, check_search_folder, read_checkpoint, read_data_json, reload_val_pairs
from deconas.space.complexity import count_params
from deconas.space.genotype import Genotype, num_pairs, parse
from deconas.space.ops import NUM_VALUES, K, value_of
from deconas.train import run_training


# ----------------------------------------------------------------------------- the architectures
def uniform_genotype(nodes: int, rng: np.random.Generator) -> Genotype:
    """An architecture drawn uniformly from the (FF0) space: every op bit a fair coin."""
    return Genotype(tuple(int(v) for v in rng.integers(0, NUM_VALUES, num_pairs(nodes))))


def matched_random(target_params: int, count_params, nodes: int, rng: np.random.Generator,
                   tolerance: float, exclude=(), max_draws: int = 200_000) -> tuple:
    """(genotype, draws): the first uniform draw whose parameter count is within ``tolerance``
    (a fraction) of ``target_params`` and that is not in ``exclude``."""
    for i in range(1, max_draws + 1):
        g = uniform_genotype(nodes, rng)
        if g not in exclude and abs(count_params(g) - target_params) <= tolerance * target_params:
            return g, i
    raise UserError(f"no uniformly drawn architecture within {tolerance:.0%} of {target_params:,} parameters "
                    f"in {max_draws:,} draws; raise study.param_tolerance")


def dense_genotype(nodes: int, density: float, rng: np.random.Generator) -> Genotype:
    """An architecture whose every op bit is set with probability ``density`` (0.5: uniform)."""
    return Genotype(tuple(value_of(row) for row in rng.random((num_pairs(nodes), K)) < density))


def size_matched_random(target_params: int, count_params, nodes: int, rng: np.random.Generator,
                        tolerance: float, exclude=(), max_draws: int = 200_000) -> tuple:
    """(genotype, density, draws): a random architecture of the size of ``target_params``, for
    sizes uniform draws almost never reach (a search's picks can be far sparser than any of
    them). The op bits are independent coins of one density, found by bisection so that the
    median draw has the target's parameters; then draws at that density until one is within
    ``tolerance`` and not in ``exclude``. At the uniform median the density is 0.5 and this is
    :func:`matched_random`'s null."""
    probe = np.random.default_rng(rng.integers(2 ** 63))
    lo, hi = 0.0, 1.0
    for _ in range(20):
        q = (lo + hi) / 2
        sizes = [count_params(dense_genotype(nodes, q, probe)) for _ in range(64)]
        lo, hi = (q, hi) if np.median(sizes) < target_params else (lo, q)
    q = (lo + hi) / 2
    for i in range(1, max_draws + 1):
        g = dense_genotype(nodes, q, rng)
        if g not in exclude and abs(count_params(g) - target_params) <= tolerance * target_params:
            return g, q, i
    raise UserError(f"no random architecture within {tolerance:.0%} of {target_params:,} parameters "
                    f"in {max_draws:,} draws; raise study.param_tolerance")


class SharedScorer:
    """The search's shared weights, to score any architecture of its space on its validation split."""

    def __init__(self, run: Path, max_images: int = 0, max_size: int = 0, device="cpu"):
        self.cfg = config_mod.load(str(run / CONFIG))
        self.scale = self.cfg.scale
        st = read_checkpoint(run / SEARCH_STATE, device, keys=("supernet",))
        self.supernet = build_supernet(self.cfg).to(device)
        try:
            check_tensors_like(st["supernet"], self.supernet.state_dict(), "supernet")  # as derive does
            self.supernet.load_state_dict(st["supernet"])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{run / SEARCH_STATE}: damaged or does not match {run / CONFIG} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
        self.supernet.eval()
        val = reload_val_pairs(run)
        self.val = val[:max_images] if max_images else val
        self.prepared = prepare_val(self.val, max_size, self.scale, device)

    def psnr(self, g: Genotype) -> float:
        return score(self.supernet, g, self.prepared, self.scale)

    @torch.no_grad()
    def reward_noise(self, genotypes: Sequence[Genotype], batches: int, seed: int) -> dict:
        """Reward PSNR of each architecture on ``batches`` fresh reward batches (the search's
        ``val_batch`` patches of ``val_patch`` pixels, as ``val_resample: step`` draws them)."""
        s = self.cfg.search
        vp, vb = s.val_patch, s.val_batch
        sampler = PatchSampler([(hr, lr) for _, hr, lr in self.val], self.scale, vp, vb, seed=seed, augment=False)
        draws = [sampler.sample() for _ in range(batches)]
        table = np.array([[psnr_y_batch(self.supernet(lr, g), hr, self.scale).mean().item() for lr, hr in draws]
                          for g in genotypes])  # (architectures, batches)
        return {"architectures": len(genotypes), "batches": batches, "val_patch": vp, "val_batch": vb,
                **noise_figures(table),
                "advantage": {"moving_average": noise_figures(moving_average_advantages(table, float(s.baseline_decay))),
                              "leave_one_out": noise_figures(leave_one_out_advantages(table))}}


def noise_figures(table: np.ndarray) -> dict:
    """How well one batch ranks architectures, from a (architectures, batches) table of reward
    PSNRs or advantages: the noise of one architecture's value over batches against the spread
    of the architectures' means, and how often one batch orders a pair as their means do."""
    within = float(np.mean(table.std(axis=1, ddof=1)))
    between = float(np.std(table.mean(axis=1), ddof=1))
    means = table.mean(axis=1)
    agree, pairs = 0.0, 0
    for i in range(len(table)):
        for j in range(i + 1, len(table)):
            if means[i] == means[j]:
                continue
            pairs += 1
            agree += float(np.mean(np.sign(table[i] - table[j]) == np.sign(means[i] - means[j])))
    return {"within_std_db": within, "between_std_db": between,
            "noise_to_spread": within / between if between > 0 else float("inf"),
            "pair_order_agreement": agree / pairs if pairs else float("nan")}


def moving_average_advantages(table: np.ndarray, decay: float) -> np.ndarray:
    """r - b as a search meets these rewards one controller step at a time (batch after batch,
    architecture after architecture), b the moving-average baseline started at the first reward."""
    adv, b = np.empty_like(table), None
    for j in range(table.shape[1]):
        for i in range(table.shape[0]):
            r = table[i, j]
            b = r if b is None else b
            adv[i, j] = r - b
            b = decay * b + (1 - decay) * r
    return adv


def leave_one_out_advantages(table: np.ndarray) -> np.ndarray:
    """r_i - mean_{j != i} r_j over the architectures scored on the same batch (one group)."""
    n = table.shape[0]
    return table - (table.sum(axis=0, keepdims=True) - table) / (n - 1)


def plan_study(run: Path, cfg: Config, top: int, n_random: int, device="cpu", progress: bool = True) -> dict:
    """Choose the architectures (searched and matched random) and score them with the shared weights."""
    st = cfg.study
    scorer = SharedScorer(run, st.shared_max_images, st.shared_max_size, device)
    scfg = scorer.cfg
    m, scale = scfg.model, scorer.scale
    C, N, M = m.channels, m.blocks, m.nodes
    if scfg.search.ff:
        raise UserError(f"{run}: the study handles FF0 searches (search.ff: false) for now")
    params = lambda g: count_params(g, scale, C, N)  # noqa: E731
    derived = read_candidates(run)
    if top > len(derived):
        raise UserError(f"--top {top}: {run / 'candidates.csv'} holds only {len(derived)} distinct architectures")
    # Two stages: derive's quick score screens, the study's (all images, whole) ranks the best few.
    screen = st.screen
    cands = [g for g, _ in (derived[:screen * top] if screen else derived)]
    shared = {}
    for g in progress_bar(cands, desc="shared-weight PSNR", unit="arch", disable=not progress):
        shared[g] = scorer.psnr(g)
    ranked = sorted(cands, key=lambda g: -shared[g])
    searched = ranked[:top]
    rng = np.random.default_rng(cfg.seed + SEED_STUDY)
    tol = float(st.param_tolerance)
    rows = []
    base_seed = cfg.seed
    for i, g in enumerate(searched):
        rows.append({"genotype": str(g), "group": "searched", "pair": i, "params": params(g),
                     "shared_psnr": shared[g], "seed": base_seed + i, "draws": None})
    taken = {g for g, _ in derived}  # a random architecture is one the search did not sample
    for i in range(n_random):
        partner = rows[i % top]
        g, draws = matched_random(partner["params"], params, M, rng, tol, exclude=taken)
        taken.add(g)
        shared[g] = scorer.psnr(g)
        rows.append({"genotype": str(g), "group": "random", "pair": partner["pair"], "params": params(g),
                     "shared_psnr": shared[g], "seed": partner["seed"], "draws": draws})
    noise_set = [parse(r["genotype"]) for r in rows]
    noise = scorer.reward_noise(noise_set, st.noise_batches, seed=base_seed + SEED_NOISE)
    # The spread of the shared-weight PSNR on the whole validation split, for comparison.
    noise["shared_between_std_db"] = float(np.std([r["shared_psnr"] for r in rows], ddof=1)) if len(rows) > 1 else 0.0
    return {"run": str(run.resolve()), "scale": scale, "channels": C, "blocks": N, "nodes": M,
            "candidates": len(derived), "rescored": len(cands), "shared_protocol": {
                "images": len(scorer.prepared), "max_size": st.shared_max_size or None,
                "psnr": "Y (BT.601), border = scale, 8-bit outputs, shared weights"},
            "candidate_shared_psnr": {str(g): shared[g] for g in cands},
            "reward_noise": noise, "rows": rows}


# ----------------------------------------------------------------------------- standalone training
def _train_cfg(cfg: Config, scfg: Config, seed: int) -> Config:
    """The study's recipe on the search's network size, scale and validation split."""
    return replace(cfg, scale=scfg.scale, seed=int(seed),
                   model=replace(cfg.model, channels=scfg.model.channels, blocks=scfg.model.blocks),
                   data=replace(cfg.data, val_fraction=scfg.data.val_fraction, val_max=scfg.data.val_max))


def job_threads(st) -> int:
    """Threads of each job: ``study.threads``, or with auto the free cores shared out among
    ``study.jobs`` (measured here, before any job starts)."""
    return threads_mod.resolve(st.threads, share=max(1, st.jobs))[0]


def parent_threads(st) -> int:
    """Threads of the study's own process while no job runs: the jobs' shares together."""
    return job_threads(st) * max(1, st.jobs) if st.threads not in ("auto", 0) else threads_mod.resolve("auto")[0]


def _worker_init() -> None:
    """A worker ends with the study: a killed study must not leave trainings writing into its folders."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # elsewhere: the pool's own shutdown on interrupt below


def _train_one(job: dict) -> dict:
    """Train (or finish training) one architecture and score it; runs in a worker process."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, int(job["threads"])))
    job = {**job, "cfg": replace(job["cfg"], threads=int(job["threads"]))}  # the training keeps the parent's share
    out = Path(job["out"])
    row_path = out / STUDY_ROW
    if row_path.is_file():
        return json.loads(row_path.read_text())
    g = parse(job["row"]["genotype"])
    t0 = time.time()
    if not (out / TRAIN_SUMMARY).is_file():
        out.mkdir(parents=True, exist_ok=True)
        # The training's epoch lines go to the architecture's own log, not between the study's bar.
        with open(out / STUDY_TRAIN_LOG, "a") as logf, contextlib.redirect_stdout(logf):
            run_training(job["cfg"], g, job["train_dir"], job["val_dir"], out, resume=(out / TRAIN_STATE).is_file(),
                         device="cpu", progress=False, split_seed=job["split_seed"])
    if job["val_images"] is not None and read_data_record(out / TRAIN_RECORD, "data")["val_images"] != job["val_images"]:
        raise UserError(f"{out}: trained on another validation split than the search's")
    summary = json.loads((out / TRAIN_SUMMARY).read_text())
    row = dict(job["row"])
    row["standalone_psnr"] = summary["last_val_psnr"]
    row["best_val_psnr"] = summary["best_val_psnr"]
    row["steps"] = summary["steps"]
    if job["benchmarks"]:
        model, _ = load_model(out / LAST_WEIGHTS)
        res = evaluate(lambda lr: upscale_array(model, lr), job["benchmarks"], job["cfg"].scale,
                       progress=False)
        row["benchmarks"] = {d["name"]: {"psnr": d["psnr"], "ssim": d["ssim"]} for d in res["datasets"]}
    row["train_seconds"] = round(time.time() - t0, 1)
    atomic_write_text(row_path, json.dumps(row, indent=1))
    return row


def run_jobs(fn, jobs: list, n_jobs: int, on_done, progress: bool, desc: str, initial: int = 0,
             postfix=None) -> None:
    """``fn(job)`` for every job, ``n_jobs`` at once in worker processes (in this one when 1),
    ``on_done(job, result)`` in this process as each finishes; a progress bar counts them. An
    interrupt or a failed job stops the other workers at once."""
    bar = progress_bar(total=initial + len(jobs), initial=initial, desc=desc, unit="job", disable=not progress)

    def finished(job, res):
        on_done(job, res)
        bar.update(1)
        if postfix is not None:
            bar.set_postfix_str(postfix(res))
    if jobs and max(1, n_jobs) == 1:
        for job in jobs:
            finished(job, fn(job))
    elif jobs:
        pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init)
        try:
            futures = {pool.submit(fn, job): k for k, job in enumerate(jobs)}
            for fut in as_completed(futures):
                finished(jobs[futures[fut]], fut.result())
        except BaseException:  # an interrupt or a failed job: stop the other workers now
            for p in list(getattr(pool, "_processes", {}).values()):
                p.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    bar.close()


# ----------------------------------------------------------------------------- report
def summarize(rows: List[dict]) -> dict:
    """Kendall tau and the searched-against-random figures, recomputed from the rows."""
    done = [r for r in rows if r.get("standalone_psnr") is not None]
    out = {"trained": len(done), "kendall_tau": kendall_tau([r["shared_psnr"] for r in done],
                                                            [r["standalone_psnr"] for r in done])}
    for grp in ("searched", "random"):
        rs = [r for r in done if r["group"] == grp]
        v = [r["standalone_psnr"] for r in rs]
        out[grp] = {"n": len(rs), "mean_psnr": float(np.mean(v)) if v else None,
                    "std_psnr": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                    "best_psnr": float(max(v)) if v else None,
                    "mean_params": float(np.mean([r["params"] for r in rs])) if rs else None,
                    "kendall_tau": kendall_tau([r["shared_psnr"] for r in rs], v)}
    s, r = out["searched"], out["random"]
    if s["mean_params"] and r["mean_params"]:
        out["mean_params_ratio"] = r["mean_params"] / s["mean_params"]
    pairs = {}
    for row in done:
        pairs.setdefault(row["pair"], {})[row["group"]] = row["standalone_psnr"]
    diffs = [p["searched"] - p["random"] for p in pairs.values() if len(p) == 2]
    out["pairs"] = len(diffs)
    out["searched_wins"] = int(sum(d > 0 for d in diffs))
    out["mean_pair_gain_db"] = float(np.mean(diffs)) if diffs else None
    return out


def _plots(rows: List[dict], summ: dict, out: Path, title: str) -> None:
    plt = pyplot()
    done = [r for r in rows if r.get("standalone_psnr") is not None]
    if not done:
        return
    colors = {"searched": "tab:red", "random": "tab:blue"}
    fig, ax = plt.subplots(figsize=(5.2, 4))
    for grp, c in colors.items():
        rs = [r for r in done if r["group"] == grp]
        ax.scatter([r["shared_psnr"] for r in rs], [r["standalone_psnr"] for r in rs], c=c, s=28, label=grp)
    _finish(plt, fig, ax, "shared-weight PSNR (dB, validation)",
            f"{title}\nKendall tau = {summ['kendall_tau']:.2f} over {len(done)} architectures", out / STUDY_RANKING)

    fig, ax = plt.subplots(figsize=(5.2, 4))
    by_pair = {}
    for r in done:
        by_pair.setdefault(r["pair"], {})[r["group"]] = r
    for p in by_pair.values():
        if len(p) == 2:
            a, b = p["searched"], p["random"]
            ax.plot([a["params"] / 1e3, b["params"] / 1e3], [a["standalone_psnr"], b["standalone_psnr"]],
                    color="0.7", lw=0.8, zorder=1)
    for grp, c in colors.items():
        rs = [r for r in done if r["group"] == grp]
        m = summ[grp]["mean_psnr"]
        ax.scatter([r["params"] / 1e3 for r in rs], [r["standalone_psnr"] for r in rs], c=c, s=28, zorder=2,
                   label=f"{grp} (mean {m:.3f} dB)" if m is not None else grp)
    _finish(plt, fig, ax, "parameters (K)", f"{title}\nsearched against random at matched parameters (pairs joined)",
            out / STUDY_MATCHED)


def _finish(plt, fig, ax, xlabel: str, title: str, path: Path) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("standalone PSNR (dB, validation)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


CSV_FIELDS = ["genotype", "group", "pair", "params", "shared_psnr", "standalone_psnr", "best_val_psnr", "seed",
              "draws", "steps"]


def write_results(out: Path, plan: dict, rows: List[dict], cfg: Config) -> dict:
    summ = summarize(rows)
    doc = {k: v for k, v in plan.items() if k not in ("rows", "candidate_shared_psnr")}
    doc.update({"recipe": {"train": asdict(cfg.train), "data": asdict(cfg.data)}, "summary": summ, "rows": rows})
    atomic_write_text(out / STUDY_RESULT, json.dumps(doc, indent=1))

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)
    atomic_write(out / STUDY_TABLE, write_csv)
    _plots(rows, summ, out, f"x{plan['scale']} C={plan['channels']} N={plan['blocks']} M={plan['nodes']}")
    return doc


def format_summary(doc: dict) -> str:
    s = doc["summary"]
    n = doc["reward_noise"]

    def f(v, d=3):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
    lines = [f"study of {doc['run']}: {s['trained']} architectures trained standalone",
             f"Kendall tau (shared-weight vs standalone PSNR): {f(s['kendall_tau'], 3)}"]
    for g in ("searched", "random"):
        x = s[g]
        lines.append(f"  {g:8s} n={x['n']}  mean {f(x['mean_psnr'])} dB  std {f(x['std_psnr'])}  "
                     f"best {f(x['best_psnr'])}  mean params {f(x['mean_params'], 0)}  tau {f(x['kendall_tau'], 2)}")
    lines.append(f"  pairs: searched better in {s['searched_wins']} of {s['pairs']} "
                 f"(mean gain {f(s['mean_pair_gain_db'])} dB)")
    lines.append(f"reward noise: one architecture's std over {n['batches']} reward batches {n['within_std_db']:.3f} dB "
                 f"against a spread of {n['between_std_db']:.3f} dB between architectures "
                 f"(ratio {n['noise_to_spread']:.2f}; one batch orders a pair as the means do "
                 f"{n['pair_order_agreement']:.0%} of the time)")
    for name, a in n.get("advantage", {}).items():  # studies planned before the workbench have none
        lines.append(f"  advantage, {name.replace('_', ' ')} baseline: noise to spread {a['noise_to_spread']:.2f}, "
                     f"pair order agreement {a['pair_order_agreement']:.0%}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the driver
def run_study(run_dir, cfg: Config, out_dir=None, top: Optional[int] = None, n_random: Optional[int] = None,
              benchmarks: Sequence = (), resume: bool = False, progress: bool = True) -> dict:
    run = check_search_folder(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "study"
    check_resume(out, "study", resume)
    for b in benchmarks:
        if not Path(b).is_dir():
            raise UserError(f"--benchmark {b}: not a folder")
    st = cfg.study
    seed_everything(cfg.seed)
    if resume:
        try:
            plan = parse_json((out / STUDY_PLAN).read_text())
            plan["rows"]
        except (OSError, ValueError, KeyError):
            raise UserError(f"{out / STUDY_PLAN}: damaged; start the study again in another --out") from None
    else:
        top = int(top if top is not None else st.top)
        n_random = int(n_random if n_random is not None else st.random)
        if top < 1 or n_random < 0:
            raise UserError(f"--top {top} / --random {n_random}: need at least 1 searched architecture")
        threads_before = torch.get_num_threads()
        torch.set_num_threads(parent_threads(st))
        try:
            plan = plan_study(run, cfg, top, n_random, progress=progress)
        finally:
            torch.set_num_threads(threads_before)
        plan["benchmarks"] = [str(Path(b).resolve()) for b in benchmarks]
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG, config_mod.dump(cfg))
        atomic_write_text(out / STUDY_PLAN, json.dumps(plan, indent=1))
    if resume and (out / CONFIG).is_file():
        cfg = _resumed_config(out / CONFIG, cfg)
        st = cfg.study
    prov = read_data_json(run)
    scfg = config_mod.load(str(run / CONFIG))
    train_dir = None if prov["train_dir"] == "built-in" else prov["train_dir"]
    n_threads = job_threads(st)
    jobs = []
    for r in plan["rows"]:
        name = f"{r['pair']:02d}-{r['group']}"
        jobs.append({"row": r, "out": str(out / STUDY_ARCHS / name), "cfg": _train_cfg(cfg, scfg, r["seed"]),
                     "train_dir": train_dir, "val_dir": prov["val_dir"], "val_images": prov["val_images"],
                     "split_seed": scfg.seed, "threads": n_threads,
                     "benchmarks": plan["benchmarks"]})
    done: Dict[int, dict] = {}
    for i, j in enumerate(jobs):
        p = Path(j["out"]) / STUDY_ROW
        if p.is_file():
            try:
                done[i] = json.loads(p.read_text())
            except ValueError:
                p.unlink()  # a torn row is recomputed from the finished training
    rows = lambda: [done.get(i, j["row"]) for i, j in enumerate(jobs)]  # noqa: E731
    todo = [i for i in range(len(jobs)) if i not in done]
    index = {id(jobs[i]): i for i in todo}

    def finished(job, row):
        done[index[id(job)]] = row
        write_results(out, plan, rows(), cfg)
    run_jobs(_train_one, [jobs[i] for i in todo], st.jobs, finished, progress, "study", initial=len(done),
             postfix=lambda r: f"{r['group']} {r['genotype']} {r['standalone_psnr']:.3f} dB")
    return write_results(out, plan, rows(), cfg)


# On --resume only how the study runs may change; what it measures (the recipe) may not.
_RUN_ONLY = ("study.jobs", "study.threads")


def _resumed_config(path: Path, cfg: Config) -> Config:
    """The recipe the study started with (``path``), with ``cfg``'s jobs and threads; any other
    difference would train the remaining architectures unlike the finished ones: refused."""
    saved = config_mod.load(str(path))
    then, now = config_mod.flatten(saved), config_mod.flatten(cfg)
    changed = [k for k in now if now[k] != then[k] and k not in _RUN_ONLY]
    if changed:
        k = changed[0]
        raise UserError(f"--resume: {k}={now[k]!r} differs from the study's recipe ({k}={then[k]!r} in {path}); "
                        f"a study keeps its recipe (only {' and '.join(_RUN_ONLY)} may change)")
    return replace(saved, study=replace(saved.study, jobs=cfg.study.jobs, threads=cfg.study.threads))
