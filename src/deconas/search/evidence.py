"""``deconas study --train DIR``: does the search find better networks than chance, and which
supernet schedule and strategy make it so? The study runs its own searches, on one data split:

1. **The random pool**: ``study.pool`` architectures drawn uniformly from the space (every op
   bit a fair coin), stratified by parameters (one draw from each of ``pool`` equal-probability
   size bands of the uniform distribution, so the pool spans the space's sizes and is still a
   sample of it), each trained standalone ``study.pool_seeds`` times with the config's recipe.
2. **Supernet fidelity**: one controller search per schedule in ``study.schedules`` (the same
   child steps); each supernet scores the pool with its shared weights on the validation
   images. Kendall tau against standalone PSNR, with a bootstrap 95% interval, also on the
   residuals after each side's trend in log-parameters (how much of the ranking is just size).
   The best schedule is the one with the highest tau.
3. **Strategies at one budget**: each of ``study.strategies`` searches on the best schedule,
   with the same child steps and the same number of architectures scored; derive ranks what
   it found, and its ``study.top`` best by shared-weight PSNR are trained standalone
   ``study.seeds`` times. Each is compared with the pool at matched parameters: the mean
   residual against the pool's PSNR-against-log-parameters line (bootstrap interval over pool
   and picks), pairs with the pool architecture nearest in size, and pairs with its own
   size-matched random partner (drawn at the pick's size, trained right after it), which holds
   where the picks are smaller than any pool architecture.

Written to the study folder: ``study.json`` (one row per (architecture, seed, group) with
``group`` (``pool`` or the strategy), ``genotype``, ``params``, ``seed``, ``shared_psnr`` (per
search), ``standalone_psnr``; the summary; the recipe), ``study.csv``, ``fidelity.png``,
``picks.png``, ``study.log``; the searches in ``searches/<strategy>-<schedule>/`` and the
trainings in ``arch/<genotype>-s<seed>/``. Every part resumes: a search from its checkpoint, a
training from its own, a finished one is never redone. ``--rows study.json`` re-plans from
committed rows when the folder is gone: trainings whose (genotype, seed) and recipe are there
are not run again, and the searches of a study that planned the same pool are taken as they
are (another machine's searches would pick other architectures).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import itertools
import json
import math
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from deconas import config as config_mod
from deconas.config import Config
from deconas.constants import MAX_PARAMS, SEED_MATCHED, SEED_STUDY, STUDY_STRATEGIES
from deconas.errors import UserError
from deconas.runfolder import (CANDIDATES, CONFIG, SEARCH_DATA, SEARCH_STATE, STUDY_ARCHS, STUDY_FIDELITY, STUDY_LOG,
                               STUDY_PICKS, STUDY_PLAN, STUDY_RESULT, STUDY_ROW, STUDY_SEARCHES, STUDY_SHARED,
                               STUDY_TABLE, TRAIN_RECORD, check_folders, check_resume, read_data_record)
from deconas.runtime import (atomic_write, atomic_write_text, check_writable, parse_json, pyplot, read_json,
                             save_figure)
from deconas.search import stats
from deconas.search.runs import read_data_json
from deconas.search.derive import derive, read_candidates
from deconas.search.loop import run_search
from deconas.search.study import (SharedScorer, _resumed_config, _train_cfg, _train_one, job_threads,
                                  parent_threads, run_jobs, size_matched_random, uniform_genotype)
from deconas.space.complexity import count_params
from deconas.space.genotype import Genotype, parse

KIND = "full"  # plan.json's kind: the one-run study's plan has none
# The rule that sets the cpu preset's strategy (docs/search.md, "How the study sets the
# defaults"): a strategy beats chance when the t of its picks against their size-matched random
# partners is significant at 5% over the strategies compared (Bonferroni, Student t with
# pairs - 1 degrees of freedom), once both seeds of every pick and partner are trained.
FAMILY_LEVEL = 0.05
KEPT_STRATEGY = "controller"  # the paper's, kept when none beats chance


# ----------------------------------------------------------------------------- the plan
def stratified_pool(n: int, nodes: int, count_params, rng: np.random.Generator, reference: int = 20_000) -> list:
    """``n`` distinct uniform architectures, one from each of ``n`` equal-probability bands of
    the parameter count (band edges: quantiles of ``reference`` uniform draws; within a band,
    the first draw that falls in it): a stratified sample of the uniform distribution."""
    draws = [uniform_genotype(nodes, rng) for _ in range(reference)]
    sizes = np.array([count_params(g) for g in draws])
    edges = np.quantile(sizes, np.linspace(0, 1, n + 1))
    band = np.clip(np.searchsorted(edges, sizes, side="right") - 1, 0, n - 1)
    pool, taken = [], set()
    for b in range(n):
        g = next((g for g, k in zip(draws, band) if k == b and g not in taken), None)
        if g is None:  # a band of one repeated size: the nearest free draw in size instead
            mid = (edges[b] + edges[b + 1]) / 2
            g = min((g for g in draws if g not in taken), key=lambda g: abs(count_params(g) - mid))
        pool.append(g)
        taken.add(g)
    return pool


def search_name(strategy: str, schedule: str) -> str:
    return f"{strategy}-{schedule}"


def search_config(cfg: Config, strategy: str, schedule: str) -> Config:
    """The study's search config (``search_config`` + ``search_overrides``) with this strategy
    and schedule; controller-loo scores ``loo_samples`` architectures per step in as many fewer
    steps, so every strategy scores as many."""
    base = config_mod.load(cfg.search_config or "cpu", cfg.search_overrides)
    s = replace(base.search, supernet_sampling=schedule, **STUDY_STRATEGIES[strategy])
    if s.reward_baseline == "leave_one_out":
        k = cfg.study.loo_samples
        if s.controller_steps % k:
            raise UserError(f"study.loo_samples={k}: search.controller_steps={s.controller_steps} does not divide by "
                            f"it (controller-loo must score as many architectures as the others)")
        s = replace(s, samples_per_step=k * s.samples_per_step, controller_steps=s.controller_steps // k)
    return config_mod.validate(replace(base, seed=cfg.seed, tensorboard=False, search=s))


def training_config(cfg: Config, scfg: Config, seed: int) -> Config:
    """The study's recipe on the searches' network size, scale and validation split."""
    return _train_cfg(cfg, scfg, seed)


def recipe(cfg: Config, scfg: Config) -> dict:
    """What makes two standalone scores comparable: every training setting but the seed."""
    flat = config_mod.flatten(training_config(cfg, scfg, 0))
    return {k: v for k, v in flat.items() if k.split(".")[0] in ("train", "data", "model") or k == "scale"}


def recipe_changes(theirs: dict, ours: dict) -> list:
    """The settings of ``ours`` that differ from a recorded recipe ``theirs``.

    A setting the record lacks was added after it was written; a new setting's default keeps the
    old behaviour, so the record is read as having that default. Without this, every setting added
    to the schema would orphan the committed rows."""
    return [k for k in ours if theirs.get(k, config_mod.default(k)) != ours[k]]


def _slug(g: Genotype, seed: int) -> str:
    return f"{str(g).replace(',', '-').replace('|', '_')}-s{seed}"


# ----------------------------------------------------------------------------- the jobs
def _search_one(job: dict) -> dict:
    """Run (or finish) one search and derive its candidates; runs in a worker process."""
    warnings.filterwarnings("ignore")
    out = Path(job["out"])
    cfg = replace(job["cfg"], threads=int(job["threads"]))  # the parent's share of the free cores
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # its lines are in its search.log
        rec = run_search(cfg, job["train_dir"], job["val_dir"], out, resume=(out / SEARCH_STATE).is_file(),
                         device="cpu", progress=False)
        t0 = time.time()
        if not (out / CANDIDATES).is_file():
            derive(out, None, device="cpu", progress=False)
    return {"name": job["name"], "search_seconds": rec.get("elapsed"), "derive_seconds": round(time.time() - t0, 1)}


def _log(out: Path, text: str) -> None:
    with open(out / STUDY_LOG, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {text}\n")


# ----------------------------------------------------------------------------- the driver
class FullStudy:
    """The study's state: its plan, the searches' costs, the shared-weight scores and the trainings."""

    def __init__(self, cfg: Config, train_dir, val_dir, out: Path, progress: bool):
        self.cfg, self.out, self.progress = cfg, out, progress
        self.st = cfg.study
        self.train_dir = [str(Path(d).resolve()) for d in train_dir] if train_dir else None
        self.val_dir = str(Path(val_dir).resolve()) if val_dir else None
        self.scfg = search_config(cfg, "controller", "strategy")  # the network, scale and split of every search
        m = self.scfg.model
        self.params = lambda g: count_params(g, self.scfg.scale, m.channels, m.blocks)  # noqa: E731
        self.recipe = recipe(cfg, self.scfg)
        self.threads = job_threads(self.st)
        self.plan: dict = {}
        self.shared: Dict[str, Dict[str, float]] = {}
        self.trained: Dict[str, dict] = {}  # slug -> the training's row (standalone_psnr, ...)
        self.known: Dict[str, dict] = {}  # slug -> a committed row (--rows)
        self.committed: Optional[dict] = None  # the --rows study.json

    # -- files -------------------------------------------------------------------------------
    def adopt(self) -> bool:
        """Take the committed study's searches as they are (costs, best schedule, picks,
        partners, shared-weight scores) when it planned the same pool: a study whose folder was
        lost does not rerun its searches, which on another machine would pick other
        architectures than the ones whose trainings were committed."""
        doc = self.committed
        if not doc or doc.get("pool") != self.plan["pool"] or not isinstance(doc.get("searches"), dict):
            return False
        try:
            self.plan.update(copy.deepcopy({"searches": doc["searches"], "best_schedule": doc.get("best_schedule"),
                                            "picks": doc.get("picks") or {}, "partners": doc.get("partners") or {}}))
            for g in [g for gs in self.plan["picks"].values() for g in gs] + list(self.plan["partners"].values()):
                parse(g)
            for r in doc["rows"]:
                for name, v in r.get("shared_psnr", {}).items():
                    self.shared.setdefault(str(name), {})[str(parse(r["genotype"]))] = float(v)
        except (TypeError, ValueError, AttributeError, KeyError, UserError):
            raise UserError("--rows: a damaged plan (searches, picks or partners) in the committed study") from None
        return True

    def save_plan(self) -> None:
        atomic_write_text(self.out / STUDY_PLAN, json.dumps(self.plan, indent=1))

    def save_shared(self) -> None:
        atomic_write_text(self.out / STUDY_SHARED, json.dumps(self.shared, indent=1))

    def new_plan(self) -> None:
        rng = np.random.default_rng(self.cfg.seed + SEED_STUDY)
        pool = stratified_pool(self.st.pool, self.scfg.model.nodes, self.params, rng)
        self.plan = {"kind": KIND, "pool": [str(g) for g in pool], "searches": {}, "best_schedule": None,
                     "picks": {}, "recipe": self.recipe, "train_dir": self.train_dir, "val_dir": self.val_dir}

    def load(self) -> None:
        try:
            self.plan = parse_json((self.out / STUDY_PLAN).read_text())
            ok = self.plan.get("kind") == KIND and isinstance(self.plan.get("pool"), list)
            for g in self.plan["pool"]:
                parse(g)
        except (OSError, ValueError, AttributeError, KeyError, TypeError, UserError):
            ok = False
        if not ok:
            raise UserError(f"{self.out / STUDY_PLAN}: damaged or the plan of a one-run study (resume that one "
                            f"with 'deconas study --run RUN_DIR --out {self.out} --resume')")
        path = self.out / STUDY_SHARED
        if path.is_file():
            try:
                shared = parse_json(path.read_text())
                self.shared = {str(k): {str(g): float(v) for g, v in d.items()} for k, d in shared.items()}
            except (OSError, ValueError, AttributeError, TypeError):
                self.shared = {}  # recomputed from the searches' checkpoints

    def read_rows(self, path: Path) -> None:
        """Committed rows whose training needs no rerun: same recipe, finished."""
        doc = read_json(path, f"--rows {path}", MAX_STUDY_BYTES)
        try:
            rows, theirs = doc["rows"], doc["recipe"]
            if not isinstance(rows, list) or not isinstance(theirs, dict):
                raise TypeError
        except (KeyError, TypeError) as e:
            raise UserError(f"--rows {path}: not a study.json of a full study ({type(e).__name__})") from None
        diff = recipe_changes(theirs, self.recipe)
        if diff:
            k = diff[0]
            was = f"{k}={theirs[k]!r}" if k in theirs else f"{k} at its default (written before the setting existed)"
            raise UserError(f"--rows {path}: trained with {was}, this study's recipe has "
                            f"{k}={self.recipe[k]!r}; its rows cannot be reused")
        self.committed = doc
        for r in rows:
            try:
                g, seed, v = parse(r["genotype"]), int(r["seed"]), r["standalone_psnr"]
            except (KeyError, TypeError, ValueError, UserError):
                raise UserError(f"--rows {path}: a damaged row ({str(r)[:80]})") from None
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.known[_slug(g, seed)] = {"genotype": str(g), "seed": seed, "params": self.params(g),
                                              "standalone_psnr": float(v), "train_seconds": r.get("train_seconds"),
                                              "from_rows": str(path)}

    # -- jobs --------------------------------------------------------------------------------
    def search_job(self, strategy: str, schedule: str) -> dict:
        name = search_name(strategy, schedule)
        self.plan["searches"].setdefault(name, {"strategy": strategy, "schedule": schedule})
        return {"name": name, "out": str(self.out / STUDY_SEARCHES / name),
                "cfg": search_config(self.cfg, strategy, schedule), "train_dir": self.train_dir,
                "val_dir": self.val_dir, "threads": self.threads}

    def train_jobs(self, genotypes: Sequence[str], seeds: int) -> List[dict]:
        """Every genotype's first seed, then every second one, ... (in the genotypes' order):
        the trainings finished at any moment cover as many architectures as they can."""
        jobs = []
        for i in range(seeds):
            for g in genotypes:
                seed = self.cfg.seed + i
                slug = _slug(parse(g), seed)
                if slug in self.trained or any(j["slug"] == slug for j in jobs):
                    continue
                out = self.out / STUDY_ARCHS / slug
                if slug in self.known:  # taken as it is, without a job (each job's end rewrites the summary)
                    if not (out / STUDY_ROW).is_file():
                        out.mkdir(parents=True, exist_ok=True)
                        atomic_write_text(out / STUDY_ROW, json.dumps(self.known[slug], indent=1))
                    self.trained[slug] = self.known[slug]
                    continue
                split = self.scfg.seed if self.scfg.data.split_seed is None else self.scfg.data.split_seed
                jobs.append({"slug": slug, "row": {"genotype": g, "seed": seed, "params": self.params(parse(g))},
                             "out": str(out), "cfg": training_config(self.cfg, self.scfg, seed),
                             "train_dir": self.train_dir, "val_dir": self.val_dir, "val_images": None,
                             "split_seed": split, "threads": self.threads, "benchmarks": []})
        return jobs

    def run_phase(self, desc: str, searches: List[dict], trainings: List[dict]) -> None:
        # Longest first: trainings, then the (shorter) searches fill the cores at the end.
        jobs = [("train", j) for j in trainings] + [("search", j) for j in searches]
        if not jobs:
            return
        _log(self.out, f"{desc}: {len(searches)} searches, {len(trainings)} trainings")

        def done(job, res):
            kind, j = job
            if kind == "search":
                self.plan["searches"][j["name"]].update(res)
                self.save_plan()
                _log(self.out, f"search {j['name']} done: {res['search_seconds']} s")
            else:
                self.trained[j["slug"]] = res
                _log(self.out, f"trained {res['genotype']} seed {res['seed']}: {res['standalone_psnr']:.3f} dB "
                     f"({res.get('train_seconds')} s)")
            self.write(plot=False)
        run_jobs(_job, jobs, self.st.jobs, done, self.progress, desc)

    def check_split(self) -> None:
        """Every training validated on the searches' images (the same split, by name)."""
        names = None
        for name in self.plan["searches"]:
            run = self.out / STUDY_SEARCHES / name
            if (run / SEARCH_DATA).is_file():
                v = read_data_json(run)["val_images"]
                if names is not None and v != names:
                    raise UserError(f"{run}: validated on other images than the study's other searches")
                names = v
        for slug in self.trained:
            rec = self.out / STUDY_ARCHS / slug / TRAIN_RECORD
            if names is not None and rec.is_file() and read_data_record(rec, "data")["val_images"] != names:
                raise UserError(f"{rec.parent}: trained on another validation split than the searches'")

    def score_shared(self, names: Sequence[str], genotypes: Sequence[str]) -> None:
        """Shared-weight PSNR of these architectures on these searches' supernets (cached)."""
        before = torch.get_num_threads()
        torch.set_num_threads(parent_threads(self.st))
        try:
            for name in names:
                have = self.shared.setdefault(name, {})
                todo = [g for g in dict.fromkeys(genotypes) if g not in have]
                if not todo:
                    continue
                if not (self.out / STUDY_SEARCHES / name / SEARCH_STATE).is_file():  # adopted from --rows
                    _log(self.out, f"no supernet of {name} here: {len(todo)} architectures keep no score on it")
                    continue
                scorer = SharedScorer(self.out / STUDY_SEARCHES / name, self.st.shared_max_images,
                                      self.st.shared_max_size)
                for g in todo:
                    have[g] = scorer.psnr(parse(g))
                self.save_shared()
                _log(self.out, f"shared-weight PSNR of {len(todo)} architectures on {name}")
        finally:
            torch.set_num_threads(before)

    def picks(self, name: str) -> List[str]:
        """The ``top`` best of a search by shared-weight PSNR: derive's best ``screen x top``
        re-scored on the whole validation images."""
        top, screen = self.st.top, self.st.screen
        derived = read_candidates(self.out / STUDY_SEARCHES / name)
        cands = [str(g) for g, _ in (derived[:screen * top] if screen else derived)]
        self.score_shared([name], cands)
        ranked = sorted(cands, key=lambda g: -self.shared[name][g])
        return ranked[:top]

    def draw_partners(self, picks: Sequence[str]) -> None:
        """A size-matched random partner for every pick (``plan["partners"]``, drawn once): the
        picks may be far smaller than any uniform architecture, so the pool cannot match them."""
        partners = self.plan.setdefault("partners", {})
        rng = np.random.default_rng(self.cfg.seed + SEED_STUDY + SEED_MATCHED)
        taken = set(self.plan["pool"]) | set(picks) | set(partners.values())
        for g in picks:
            if g in partners:
                continue
            partner, _, _ = size_matched_random(self.params(parse(g)), self.params, self.scfg.model.nodes, rng,
                                                self.st.param_tolerance, exclude={parse(t) for t in taken})
            partners[g] = str(partner)
            taken.add(str(partner))

    # -- results -----------------------------------------------------------------------------
    def rows(self) -> List[dict]:
        groups = [("pool", self.plan["pool"], self.st.pool_seeds)]
        groups += [(s, gs, self.st.seeds) for s, gs in self.plan["picks"].items()]
        groups += [("matched", list(dict.fromkeys(self.plan.get("partners", {}).values())), self.st.seeds)]
        rows = []
        for group, gs, seeds in groups:
            for g in gs:
                for i in range(seeds):
                    seed = self.cfg.seed + i
                    res = self.trained.get(_slug(parse(g), seed))
                    rows.append({"group": group, "genotype": g, "params": self.params(parse(g)), "seed": seed,
                                 "shared_psnr": {n: d[g] for n, d in self.shared.items() if g in d},
                                 "standalone_psnr": res["standalone_psnr"] if res else None,
                                 "train_seconds": res.get("train_seconds") if res else None})
        return rows

    def write(self, plot: bool = True) -> dict:
        """study.json and study.csv (after every job), and the plots (at the end of a phase)."""
        rows = self.rows()
        summ = summarize(rows, self.plan, self.st, np.random.default_rng(self.cfg.seed + SEED_STUDY))
        doc = {"kind": KIND, "recipe": self.recipe, "search_config": config_mod.to_dict(self.scfg),
               "pool": self.plan["pool"], "searches": self.plan["searches"],
               "best_schedule": self.plan["best_schedule"], "picks": self.plan["picks"],
               "partners": self.plan.get("partners", {}), "summary": summ,
               "rows": rows}
        atomic_write_text(self.out / STUDY_RESULT, json.dumps(doc, indent=1))
        write_csv(self.out / STUDY_TABLE, rows, list(self.plan["searches"]))
        if plot:
            plots(rows, summ, self.out, self.plan.get("partners", {}))
        return doc


def _job(job) -> dict:
    kind, j = job
    return _search_one(j) if kind == "search" else _train_one(j)


def run_full_study(cfg: Config, train_dir=None, val_dir=None, out_dir="runs/study", resume: bool = False,
                   rows_file=None, progress: bool = True) -> dict:
    """Plan (or continue) the study in ``out_dir`` and run it to the end; returns study.json's content."""
    out = Path(out_dir)
    check_folders(*(train_dir or []), val_dir)
    check_resume(out, "study", resume)
    study = FullStudy(cfg, train_dir, val_dir, out, progress)
    if resume:
        study.load()
        if (out / CONFIG).is_file():
            cfg = _resumed_config(out / CONFIG, cfg)
            study = FullStudy(cfg, train_dir, val_dir, out, progress)
            study.load()
        if not isinstance(study.plan.get("recipe"), dict) or recipe_changes(study.plan["recipe"], study.recipe):
            raise UserError(f"{out / STUDY_PLAN}: planned with another recipe than {out / CONFIG}")
        # The study's own images: --train and --val may be left out, not changed.
        for key, opt in (("train_dir", "--train"), ("val_dir", "--val")):
            given, then = getattr(study, key), study.plan.get(key)
            if given is not None and given != then:
                raise UserError(f"--resume: {opt} {' '.join(given) if isinstance(given, list) else given} differs "
                                f"from the study's ({then or 'built-in images' if key == 'train_dir' else then})")
            setattr(study, key, then)
    if rows_file is not None:  # before anything is written: rows of another recipe are refused
        study.read_rows(Path(rows_file))
    if not resume:
        study.new_plan()
        adopted = study.adopt()
        out.mkdir(parents=True, exist_ok=True)
        if adopted:
            study.save_shared()
        atomic_write_text(out / CONFIG, config_mod.dump(cfg))
        study.save_plan()
        _log(out, f"planned: pool of {len(study.plan['pool'])}, schedules {', '.join(cfg.study.schedules)}, "
                  f"strategies {', '.join(cfg.study.strategies)}"
             + (f"; searches, picks and partners taken from {rows_file}" if adopted else ""))
    st = study.st
    for slug in list((out / STUDY_ARCHS).iterdir()) if (out / STUDY_ARCHS).is_dir() else []:
        p = slug / STUDY_ROW
        if p.is_file():
            try:
                study.trained[slug.name] = json.loads(p.read_text())
            except ValueError:
                p.unlink()  # a torn row is recomputed from the finished training

    # 1. The pool, and one controller search per schedule.
    schedule_jobs = [study.search_job("controller", s) for s in st.schedules]
    study.save_plan()
    todo = [j for j in schedule_jobs if "search_seconds" not in study.plan["searches"][j["name"]]]
    study.run_phase("pool and schedules", todo, study.train_jobs(study.plan["pool"], st.pool_seeds))
    study.check_split()
    names = [j["name"] for j in schedule_jobs]
    study.score_shared(names, study.plan["pool"])

    # 2. The best schedule: the highest shared-weight tau on the pool.
    summ = study.write()["summary"]
    taus = {n: summ["fidelity"].get(n, {}).get("tau", float("nan")) for n in names}
    best = max(st.schedules, key=lambda s: -math.inf if math.isnan(taus[search_name("controller", s)])
               else taus[search_name("controller", s)])
    if study.plan["best_schedule"] not in (None, best):
        _log(out, f"best schedule: {best} (was {study.plan['best_schedule']})")
        study.plan["picks"], study.plan["partners"] = {}, {}  # the other schedule's
    study.plan["best_schedule"] = best
    study.save_plan()

    # 3. Every strategy on it; each one's top architectures, trained standalone.
    strat_jobs = [study.search_job(s, best) for s in st.strategies]
    study.save_plan()
    todo = [j for j in strat_jobs if "search_seconds" not in study.plan["searches"][j["name"]]]
    study.run_phase("strategies", todo, [])
    for s, j in zip(st.strategies, strat_jobs):
        if s not in study.plan["picks"]:  # made once (or adopted from --rows)
            study.plan["picks"][s] = study.picks(j["name"])
    study.save_plan()
    # Round-robin over the strategies (each one's best, then each one's second, ...): a study
    # stopped half-way has trained picks of every strategy, not all of the first one's.
    ranks = itertools.zip_longest(*study.plan["picks"].values())
    picked = list(dict.fromkeys(g for rank in ranks for g in rank if g is not None))
    study.draw_partners(picked)  # each pick's size-matched random partner trains right after it
    study.save_plan()
    paired = list(dict.fromkeys(g for p in picked for g in (p, study.plan["partners"][p])))
    study.score_shared(list(study.plan["searches"]), list(dict.fromkeys(study.plan["pool"] + paired)))
    study.run_phase("picks", [], study.train_jobs(paired, st.seeds))
    study.check_split()
    doc = study.write()
    _log(out, "done")
    return doc


# ----------------------------------------------------------------------------- the summary
def _by_arch(rows: List[dict], group: str) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {}
    for r in rows:
        if r["group"] == group and r["standalone_psnr"] is not None:
            out.setdefault(r["genotype"], []).append(r["standalone_psnr"])
    return out


def _two_way(by_seed: Dict[str, Dict[int, float]]) -> Optional[dict]:
    """The seed noise split as in the recipe measurement: the part a seed gives every architecture
    alike (which cancels in pick minus partner, trained with the same seeds) and the rest, over the
    architectures trained with every seed that several of them share."""
    multi = [d for d in by_seed.values() if len(d) >= 2]
    if len(multi) < 2:
        return None
    common = sorted(set.intersection(*(set(d) for d in multi)))
    if len(common) < 2:
        return None
    t = stats.arch_by_seed([[d[k] for k in common] for d in multi])
    return {k: t[k] for k in ("architectures", "seeds", "seed_effect_std_db", "residual_std_db")}


def summarize(rows: List[dict], plan: dict, st, rng: np.random.Generator) -> dict:
    """Ground truth noise, fidelity per search, and each strategy against the pool, from the rows."""
    params = {r["genotype"]: r["params"] for r in rows}
    by_seed: Dict[str, Dict[int, float]] = {}
    for r in rows:  # every trained (architecture, seed) once, whatever its groups
        if r["standalone_psnr"] is not None:
            by_seed.setdefault(r["genotype"], {}).setdefault(int(r["seed"]), r["standalone_psnr"])
    pool = {g: float(np.mean(v)) for g, v in _by_arch(rows, "pool").items()}
    out = {"trained": sum(map(len, by_seed.values())), "pool_trained": len(pool),
           "ground_truth": stats.seed_noise({g: list(d.values()) for g, d in by_seed.items()})}
    out["ground_truth"]["two_way"] = _two_way(by_seed)
    out["ground_truth"]["pool_between_std_db"] = float(np.std(list(pool.values()), ddof=1)) if len(pool) > 1 else None
    shared = {}
    for r in rows:
        for n, v in r["shared_psnr"].items():
            shared.setdefault(n, {})[r["genotype"]] = v
    fid = {}
    for n, d in shared.items():
        gs = [g for g in pool if g in d]
        if len(gs) >= 3:
            fid[n] = stats.fidelity([params[g] for g in gs], [d[g] for g in gs], [pool[g] for g in gs], rng,
                                    st.bootstrap)
    out["fidelity"] = fid
    out["size_fit"] = dict(zip(("a", "b"), stats.log_fit([params[g] for g in pool], list(pool.values())))) \
        if len(set(params[g] for g in pool)) >= 2 else None
    strategies = {}
    for s, gs in plan.get("picks", {}).items():
        mine = {g: float(np.mean(v)) for g, v in _by_arch(rows, s).items()}
        if not mine or out["size_fit"] is None:
            continue
        g_list = list(mine)
        gain = stats.gain_over_pool([params[g] for g in pool], list(pool.values()), [params[g] for g in g_list],
                                    [mine[g] for g in g_list], rng, st.bootstrap)
        pool_g = list(pool)
        diffs = []
        for g in g_list:
            i = stats.nearest_in_size([params[p] for p in pool_g], params[g], st.param_tolerance)
            if i is not None:
                diffs.append(mine[g] - pool[pool_g[i]])
        pairs = stats.mean_with_interval(diffs)
        pairs["wins"] = int(sum(d > 0 for d in diffs))
        partner_psnr = {g: float(np.mean(v)) for g, v in _by_arch(rows, "matched").items()}
        partners = plan.get("partners", {})
        vs = [mine[g] - partner_psnr[partners[g]] for g in g_list if partners.get(g) in partner_psnr]
        against_partners = stats.mean_with_interval(vs)
        against_partners["wins"] = int(sum(d > 0 for d in vs))
        se = against_partners["se_db"]
        against_partners["z"] = against_partners["mean_db"] / se if se else None
        srch = plan["searches"].get(search_name(s, plan.get("best_schedule")), {})
        strategies[s] = {"picks": len(g_list), "mean_params": float(np.mean([params[g] for g in g_list])),
                         "best_standalone_psnr": max(mine.values()), "gain_over_pool_fit": gain,
                         "matched_pairs": pairs, "size_matched_random": against_partners,
                         "search_seconds": srch.get("search_seconds"),
                         "derive_seconds": srch.get("derive_seconds")}
    out["strategies"] = strategies
    ups = [v["gain_over_pool_fit"]["ci95"][1] for v in strategies.values()]
    out["bound_db"] = max(ups) if ups else None  # no strategy beats the pool's fit by more than this (95%)
    # The same bound against the size-matched partners: no extrapolation of the pool's fit to
    # sizes the pool does not reach (evolution's picks are half the pool's smallest).
    ups = [v["size_matched_random"]["ci95"][1] for v in strategies.values() if v["size_matched_random"]["ci95"]]
    out["bound_partners_db"] = max(ups) if ups else None
    out["defaults"] = defaults_rule(rows, plan, st.seeds, strategies, out["bound_partners_db"])
    return out


def defaults_rule(rows: List[dict], plan: dict, seeds: int, strategies: dict, bound: Optional[float]) -> dict:
    """The study's verdict under :data:`FAMILY_LEVEL`: pending while a pick's or partner's seed
    is untrained; then the strategy with the largest z among those that beat chance, or
    :data:`KEPT_STRATEGY` and the bound when none does."""
    done = {(r["group"], r["genotype"], r["seed"]) for r in rows if r["standalone_psnr"] is not None}
    partners = plan.get("partners", {})
    want = [(s, g, k) for s, gs in plan.get("picks", {}).items() for g in gs for k in range(seeds)]
    want += [("matched", partners[g], k) for s, g, k in want if g in partners]
    want = list(dict.fromkeys(want))  # a partner shared by two picks is trained once
    z = {s: v["size_matched_random"].get("z") for s, v in strategies.items()}
    need = {s: stats.bonferroni_t(v["size_matched_random"].get("n") or 0, len(strategies), FAMILY_LEVEL)
            for s, v in strategies.items()}
    passing = sorted((s for s in z if z[s] is not None and need[s] is not None and z[s] >= need[s]),
                     key=lambda s: -z[s])
    out = {"level": FAMILY_LEVEL, "compared": len(strategies), "t_needed": need, "trainings": len(want),
           "missing": sum(w not in done for w in want), "beats_chance": passing}
    out["status"] = "pending" if out["missing"] or not want else "decided"
    out["strategy"] = None if out["status"] == "pending" else (passing[0] if passing else KEPT_STRATEGY)
    out["bound_partners_db"] = bound
    return out


def write_csv(path: Path, rows: List[dict], searches: List[str]) -> None:
    fields = ["group", "genotype", "params", "seed", "standalone_psnr", "train_seconds"] + \
             [f"shared_psnr.{n}" for n in searches]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for r in rows:
                w.writerow({**{k: r[k] for k in fields[:6]},
                            **{f"shared_psnr.{n}": r["shared_psnr"].get(n) for n in searches}})
    atomic_write(path, write)


COLORS = {"controller": "tab:red", "controller-loo": "tab:orange", "random": "tab:green", "evolution": "tab:purple"}


def plots(rows: List[dict], summ: dict, out: Path, partners: Optional[Dict[str, str]] = None) -> None:
    pool = {r["genotype"]: r for r in rows if r["group"] == "pool" and r["standalone_psnr"] is not None}
    if len(pool) < 3:
        return
    plt = pyplot()
    fid = summ["fidelity"]
    if fid:
        fig, axes = plt.subplots(1, len(fid), figsize=(3.6 * len(fid), 3.4), squeeze=False)
        for ax, (n, f) in zip(axes[0], fid.items()):
            gs = [g for g in pool if n in pool[g]["shared_psnr"]]
            ax.scatter([pool[g]["shared_psnr"][n] for g in gs], [pool[g]["standalone_psnr"] for g in gs], s=18,
                       c=[np.log(pool[g]["params"]) for g in gs], cmap="viridis")
            lo, hi = f["ci95"]
            ax.set_title(f"{n}\ntau {f['tau']:.2f} [{lo:.2f}, {hi:.2f}], residual {f['residual_tau']:.2f}",
                         fontsize=8)
            ax.set_xlabel("shared-weight PSNR (dB)", fontsize=8)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("standalone PSNR (dB)", fontsize=8)
        fig.tight_layout()
        save_figure(fig, out / STUDY_FIDELITY)
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    params_of = {r["genotype"]: r["params"] for r in rows}
    ax.scatter([r["params"] / 1e3 for r in pool.values()], [r["standalone_psnr"] for r in pool.values()], s=16,
               c="0.55", label=f"random pool ({len(pool)})")
    fit = summ["size_fit"]
    if fit:
        xs = np.linspace(min(r["params"] for r in pool.values()), max(r["params"] for r in pool.values()), 50)
        ax.plot(xs / 1e3, fit["a"] + fit["b"] * np.log(xs), color="0.3", lw=1, label="pool fit (log params)")
    partner_psnr = _by_arch(rows, "matched")
    for s, v in summ["strategies"].items():
        mine = [r for r in rows if r["group"] == s and r["standalone_psnr"] is not None]
        g, m = v["gain_over_pool_fit"], v["size_matched_random"]
        label = f"{s}: fit {g['mean_db']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"
        if m["ci95"]:
            label += f", partners {m['mean_db']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]"
        ax.scatter([r["params"] / 1e3 for r in mine], [r["standalone_psnr"] for r in mine], s=30, marker="D",
                   c=COLORS.get(s, "k"), label=label + " dB", zorder=3)
        for gt, psnrs in _by_arch(rows, s).items():  # each pick to its partner, means over seeds
            q = (partners or {}).get(gt)
            if q in partner_psnr:
                ax.plot([params_of[gt] / 1e3, params_of[q] / 1e3], [np.mean(psnrs), np.mean(partner_psnr[q])],
                        color=COLORS.get(s, "k"), lw=0.7, alpha=0.6)
    matched = [r for r in rows if r["group"] == "matched" and r["standalone_psnr"] is not None]
    if matched:
        ax.scatter([r["params"] / 1e3 for r in matched], [r["standalone_psnr"] for r in matched], s=18,
                   marker="x", c="0.2", label=f"size-matched random partners ({len({r['genotype'] for r in matched})})")
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter  # noqa: PLC0415 (matplotlib loads with pyplot)
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))  # plain thousands, not 6x10^1
    ax.set_xlabel("parameters (K)")
    ax.set_ylabel("standalone PSNR (dB, validation)")
    ax.set_title("each strategy's picks against the random pool (lines: pick to its size-matched partner)",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)  # below: off the points
    fig.tight_layout()
    save_figure(fig, out / STUDY_PICKS)


MAX_STUDY_BYTES = 64 << 20  # a study.json of thousands of rows is a few MB


def report(path, cfg: Config, plots_dir=None, overwrite: bool = False, markdown: bool = False) -> str:
    """The summary of a full study's study.json recomputed from its rows with this version's
    statistics and ``cfg``'s study settings (``study.bootstrap``, ``study.param_tolerance``,
    ``seed``), as lines or (``markdown``) tables. Writes nothing but, with ``plots_dir``, the
    study's two plots there (never over files of those names unless ``overwrite``)."""
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        if plots_dir.exists() and not plots_dir.is_dir():
            raise UserError(f"--plots {plots_dir}: a file is in the way (it must be a folder)")
        there = [n for n in (STUDY_PICKS, STUDY_FIDELITY) if (plots_dir / n).exists()]
        if there and not overwrite:
            raise UserError(f"--plots {plots_dir}: {there[0]} is there; pass --overwrite to replace it")
        check_writable(plots_dir, "--plots")
    doc = read_json(path, f"--report {path}", MAX_STUDY_BYTES)
    try:
        plan = {"picks": {str(s): [str(parse(g)) for g in gs] for s, gs in doc["picks"].items()},
                "partners": {str(parse(a)): str(parse(b)) for a, b in doc.get("partners", {}).items()},
                "searches": {str(k): dict(v) for k, v in doc["searches"].items()},
                "best_schedule": str(doc["best_schedule"])}
        if doc.get("kind") != KIND or not isinstance(doc["rows"], list):
            raise TypeError
        rows = [_checked_row(r) for r in doc["rows"]]
    except (ValueError, KeyError, TypeError, AttributeError, UserError) as e:
        why = "a damaged genotype" if isinstance(e, UserError) else type(e).__name__
        raise UserError(f"--report {path}: not a study.json of a full study ({why})") from None
    summ = summarize(rows, plan, cfg.study, np.random.default_rng(cfg.seed + SEED_STUDY))
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        plots(rows, summ, plots_dir, plan["partners"])
    doc = {"summary": summ, "best_schedule": plan["best_schedule"]}
    return format_markdown(doc) if markdown else format_summary(doc)


def _checked_row(r: dict) -> dict:
    def psnr(v):
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError
        return float(v)
    params = r["params"]
    if isinstance(params, bool) or not isinstance(params, int) or not 0 < params <= MAX_PARAMS:
        raise ValueError
    return {"group": str(r["group"]), "genotype": str(parse(r["genotype"])), "params": params,
            "seed": int(r["seed"]), "standalone_psnr": psnr(r["standalone_psnr"]),
            "shared_psnr": {str(k): psnr(v) for k, v in r.get("shared_psnr", {}).items()}}


def _f(v, d=3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def _conclusions(s: dict) -> List[str]:
    """The bounds and the defaults rule's verdict, as sentences (both forms of the summary)."""
    lines = []
    if s["bound_db"] is not None:
        lines.append(f"no strategy beats the pool's fit by more than {s['bound_db']:.3f} dB (95%)")
    if s.get("bound_partners_db") is not None:
        lines.append(f"no strategy beats its size-matched random partners by more than "
                     f"{s['bound_partners_db']:.3f} dB (95%)")
    d = s.get("defaults")
    if d:
        zs = {n: x["size_matched_random"].get("z") for n, x in s["strategies"].items()}
        need = sorted({round(v, 2) for v in d["t_needed"].values() if v is not None})
        rule = (f"t against the size-matched partners at the Bonferroni {d['level']:.0%} level over "
                f"{d['compared']} strategies: at least {' / '.join(f'{v:.2f}' for v in need) or '-'}")
        top = max((v for v in zs.values() if v is not None), default=None)
        if d["status"] == "pending":
            lines.append(f"defaults: pending, {d['missing']} of {d['trainings']} pick and partner trainings to come "
                         f"(beating chance: {rule}; so far {', '.join(d['beats_chance']) or 'none'})")
        elif d["beats_chance"]:
            lines.append(f"defaults: {d['strategy']} beats chance (t {_f(zs[d['strategy']], 2)}; {rule}): "
                         f"the cpu preset takes it")
        else:
            bound = f"; bound {_f(d['bound_partners_db'])} dB" if d["bound_partners_db"] is not None else ""
            lines.append(f"defaults: no strategy beats chance (largest t {_f(top, 2)}; {rule}): the cpu preset "
                         f"keeps the {d['strategy']}{bound}")
    return lines


def _ratio(a, b):
    return a / b if a is not None and b else None


def format_summary(doc: dict) -> str:
    s = doc["summary"]
    f = _f
    gt = s["ground_truth"]
    lines = [f"study: {s['trained']} trainings, pool of {s['pool_trained']}",
             f"ground truth: seed std {f(gt['seed_std_db'])} dB over {gt['with_seeds']} architectures with several "
             f"seeds, between architectures {f(gt['between_std_db'])} dB (ratio {f(gt['ratio'], 2)})"]
    tw = gt.get("two_way")
    if tw:
        lines.append(f"  of it, shared by every architecture at one seed {f(tw['seed_effect_std_db'])} dB; the rest "
                     f"{f(tw['residual_std_db'])} dB (ratio {f(_ratio(tw['residual_std_db'], gt['between_std_db']), 2)}; "
                     f"{tw['architectures']} architectures x {tw['seeds']} seeds)")
    for n, x in s["fidelity"].items():
        lines.append(f"  fidelity {n:24s} tau {f(x['tau'], 2)} [{f(x['ci95'][0], 2)}, {f(x['ci95'][1], 2)}]  "
                     f"residual tau {f(x['residual_tau'], 2)} [{f(x['residual_ci95'][0], 2)}, "
                     f"{f(x['residual_ci95'][1], 2)}]  size tau {f(x['size_tau'], 2)}")
    lines.append(f"best schedule: {doc['best_schedule']}")
    for n, x in s["strategies"].items():
        g, p, m = x["gain_over_pool_fit"], x["matched_pairs"], x["size_matched_random"]
        ci = m["ci95"] or [None, None]
        lines.append(f"  {n:15s} gain over the pool's fit {f(g['mean_db'])} dB [{f(g['ci95'][0])}, {f(g['ci95'][1])}] "
                     f"(z {f(g['z'], 1)}); matched pairs {f(p['mean_db'])} dB, {p['wins']}/{p['n']} wins; "
                     f"against size-matched random {f(m['mean_db'])} dB [{f(ci[0])}, {f(ci[1])}] "
                     f"(z {f(m.get('z'), 1)}), {m['wins']}/{m['n']} wins; search {f(x['search_seconds'], 0)} s")
    return "\n".join(lines + _conclusions(s))


def format_markdown(doc: dict) -> str:
    """The summary as Markdown tables, for a README or a paper's notes."""
    s = doc["summary"]
    f = _f
    gt = s["ground_truth"]

    def interval(ci, d=3):
        return "-" if not ci else f"{f(ci[0], d)} .. {f(ci[1], d)}"
    out = [f"{s['trained']} trainings, a pool of {s['pool_trained']}.", "",
           "| architectures | with several seeds | seed std of one training | std between architectures "
           "| ratio (target at most 0.33) |", "|---|---|---|---|---|",
           f"| {gt['architectures']} | {gt['with_seeds']} | {f(gt['seed_std_db'])} dB | {f(gt['between_std_db'])} dB "
           f"| {f(gt['ratio'], 2)} |", ""]
    tw = gt.get("two_way")
    if tw:
        out += [f"Of the seed noise, {f(tw['seed_effect_std_db'])} dB is shared by every architecture at one seed "
                f"(it cancels between architectures trained with the same seeds); the rest is "
                f"{f(tw['residual_std_db'])} dB, ratio {f(_ratio(tw['residual_std_db'], gt['between_std_db']), 2)} "
                f"({tw['architectures']} architectures x {tw['seeds']} seeds).", ""]
    out += ["| search (strategy-schedule) | Kendall tau on the pool | 95% interval | tau of the residuals "
            "| 95% interval | tau of size alone |", "|---|---|---|---|---|---|"]
    for n, x in s["fidelity"].items():
        out.append(f"| `{n}` | {f(x['tau'], 2)} | {interval(x['ci95'], 2)} | {f(x['residual_tau'], 2)} "
                   f"| {interval(x['residual_ci95'], 2)} | {f(x['size_tau'], 2)} |")
    out += ["", f"On the best schedule, `{doc['best_schedule']}`:", "",
            "| strategy | picks | mean params | pick - size-matched partner | 95% interval | z | wins "
            "| over the pool's fit | 95% interval | z | search |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, x in s["strategies"].items():
        g, m = x["gain_over_pool_fit"], x["size_matched_random"]
        out.append(f"| `{n}` | {x['picks']} | {x['mean_params']:,.0f} | {f(m['mean_db'])} dB | {interval(m['ci95'])} "
                   f"| {f(m.get('z'), 1)} | {m['wins']}/{m['n']} | {f(g['mean_db'])} dB | {interval(g['ci95'])} "
                   f"| {f(g['z'], 1)} | {f(x['search_seconds'], 0)} s |")
    concl = _conclusions(s)
    return "\n".join(out + ([""] + [f"- {c[0].upper()}{c[1:]}." for c in concl] if concl else []))
