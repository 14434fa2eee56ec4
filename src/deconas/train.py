"""``deconas train``: train one DeCoNASNet from scratch (paper section III.A).

L1 loss, Adam, a step (paper) or cosine learning-rate schedule, on-the-fly random LR/HR
patches with flips and rotations, validation PSNR (Y, border = scale) every epoch, and
``best.safetensors`` / ``last.safetensors`` beside a resume state ``state.pt`` that is
written atomically every epoch. ``--resume`` restores the weights, the optimizer, the step
and every random stream, so an interrupted run ends with the same weights as one that was
never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from deconas import config as config_mod
from deconas.progress import bar as progress_bar
from deconas.config import Config
from deconas import distributed
from deconas import threads as threads_mod
from deconas.checkpoint import check_init, init_from, save_model
from deconas.data.datasets import load_train_val
from deconas.space.complexity import cost
from deconas.constants import MAX_THREADS, SCALES, SEED_RANK_STRIDE
from deconas.errors import UserError
from deconas.space.genotype import Genotype, GenotypeError, parse
from deconas.space.network import DeCoNASNet
from deconas.data.patches import PatchSampler
from deconas.runfolder import (BEST, BEST_WEIGHTS, CURVES, LAST_WEIGHTS, METRICS, TRAIN_LOG, TRAIN_RECORD, TRAIN_SUMMARY,
                        check_folders, check_resume, out_path, read_data_record, resume_sources, run_config,
                        write_config)
from deconas.infer.inference import upscale_array
from deconas.metrics import psnr_y
from deconas.runtime import (STATE_INT_MAX, JsonlLog, atomic_torch_save, atomic_write_text, check_optimizer_state,
                             check_tensors_like, pyplot, read_json, read_jsonl, rng_state, save_figure, seed_everything,
                             set_rng_state, state_number, torch_load)


def learning_rate(step: int, t: config_mod.Train) -> float:
    """Learning rate before optimizer step ``step`` (0-based)."""
    base = float(t.lr)
    warm = t.warmup_steps
    if warm and step < warm:
        return base * (step + 1) / warm
    if t.schedule == "cosine":
        total = t.steps
        floor = float(t.lr_min)
        return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(step, total) / total))
    return base * float(t.lr_gamma) ** (step // t.lr_step)


def validation_psnr(model: torch.nn.Module, val_pairs, scale: int) -> float:
    """Mean PSNR on Y (border = scale) over whole validation images, through the same
    inference path as ``deconas eval`` (rounded to uint8; grey in, grey out)."""
    if not val_pairs:
        return float("nan")
    model.eval()
    vals = [psnr_y(upscale_array(model, lr), hr, scale) for _, hr, lr in val_pairs]
    model.train()
    return float(np.mean(vals))


def _plot_curves(records, path):
    plt = pyplot()
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(steps, [r["loss"] for r in records])
    ax[0].set_xlabel("step"), ax[0].set_ylabel("L1 loss (train)"), ax[0].set_yscale("log")
    vp = [(r["step"], r["val_psnr"]) for r in records if r.get("val_psnr") is not None]
    if vp:
        ax[1].plot(*zip(*vp), marker="o")
    ax[1].set_xlabel("step"), ax[1].set_ylabel("validation PSNR (dB, Y)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


class Training:
    """One DeCoNASNet's training, shaped like :class:`deconas.search.loop.Search`: ``step`` (one
    optimizer step on a fresh batch of patches), ``validate``, and ``state_dict`` /
    ``load_state_dict`` (an exact resume: weights, optimizer, patch stream, random streams).
    :func:`run_training` drives it; distributed wrapping and mixed precision (``step`` takes
    the forward to use), files, logs and plots stay outside."""

    def __init__(self, cfg: Config, genotype: Genotype, train_pairs, val_pairs, device, rank: int = 0, world: int = 1):
        m, d, self.t = cfg.model, cfg.data, cfg.train
        self.scale, self.device, self.rank, self.world = cfg.scale, device, rank, world
        self.net_id = {"genotype": str(genotype), "scale": self.scale, "channels": m.channels, "blocks": m.blocks}
        # Built in this order after the seed: the same seed gives the same run.
        self.model = DeCoNASNet(genotype, scale=self.scale, channels=m.channels, blocks=m.blocks).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=float(self.t.lr), betas=(0.9, 0.999), eps=1e-8)
        # Each rank draws its own patches: its own random stream.
        self.sampler = PatchSampler([(hr, lr) for _, hr, lr in train_pairs], self.scale, d.lr_patch, d.batch,
                                    seed=cfg.seed + SEED_RANK_STRIDE * rank, augment=d.augment)
        self.val_pairs = val_pairs
        self.steps, self.best = 0, -float("inf")

    def step(self, forward=None, autocast=contextlib.nullcontext) -> Tuple[float, float]:
        """One optimizer step through ``forward`` (the model, or its DDP wrapper); (loss, lr)."""
        lr_now = learning_rate(self.steps, self.t)
        for g in self.opt.param_groups:
            g["lr"] = lr_now
        lr_b, hr_b = self.sampler.sample()
        lr_b, hr_b = lr_b.to(self.device, non_blocking=True), hr_b.to(self.device, non_blocking=True)
        with autocast():
            sr_b = (forward or self.model)(lr_b)
        loss = F.l1_loss(sr_b.float(), hr_b)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.t.grad_clip))
        self.opt.step()
        self.steps += 1
        value = loss.detach().item()
        if not math.isfinite(value):  # the weights are lost; the last checkpoint is from before
            raise UserError(f"training diverged at step {self.steps}: the loss is {value}; lower train.lr "
                            f"(now {lr_now:g}) or set train.grad_clip, then --resume from the last checkpoint")
        return value, lr_now

    def validate(self) -> Optional[float]:
        """Whole-image validation PSNR; a new best is remembered. None without validation images."""
        if not self.val_pairs:
            return None
        psnr = validation_psnr(self.model, self.val_pairs, self.scale)
        self.best = max(self.best, psnr)
        return psnr

    def state_dict(self, samplers: list) -> dict:
        """``samplers``: every rank's patch-stream state (each rank draws its own)."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "samplers": samplers,
                "rng": rng_state(), "step": self.steps, "best": self.best, "net": self.net_id}

    def load_state_dict(self, st: dict, where) -> None:
        """Continue from ``st`` (a state.pt); one that is not a training's state, or not this
        network's, is a one-line error naming ``where``."""
        if not isinstance(st, dict):
            raise UserError(f"{where}: damaged (not a training state); start a new run in another --out")
        try:
            self._load(st, where)
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as e:
            first = str(e).splitlines()[0][:120] if str(e) else ""
            raise UserError(f"{where}: damaged or of another run ({type(e).__name__}: {first}); "
                            f"start a new run in another --out") from None

    def _load(self, st: dict, where) -> None:
        saved_id = st.get("net", self.net_id)
        if saved_id != self.net_id:
            diff = ", ".join(f"{k} {saved_id[k]} (now {v})" for k, v in self.net_id.items() if saved_id.get(k) != v)
            raise UserError(f"{where} is a different network: {diff}; resume with the same settings")
        samplers = st.get("samplers") or [st["sampler"]]  # "sampler": states written before data parallelism
        if len(samplers) != self.world:
            raise UserError(f"{where} was written by {len(samplers)} processes; resume it with as many "
                            f"(this run has {self.world})")
        # Checked as data before anything is loaded: torch would cast a tensor of another dtype,
        # and a damaged optimizer state would fail only inside a later step.
        check_tensors_like(st["model"], self.model.state_dict(), "model")
        check_optimizer_state(st["optimizer"], self.opt, "optimizer")
        steps = state_number(st["step"], "step", 0, STATE_INT_MAX, integer=True)
        best = state_number(st["best"], "best", hi=sys.float_info.max)  # -inf: not validated yet
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.sampler.load_state_dict(samplers[self.rank])
        set_rng_state(st["rng"])
        self.steps, self.best = steps, float(best)


def _wrap(model, device, world: int):
    """The forward a step goes through: the model, or under torchrun its DDP wrapper."""
    if world <= 1:
        return model
    # The depthwise weights' gradients come back in another (equivalent) memory layout.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _autocast(amp: str, device):
    # bf16 autocast: AMX/tensor-core matmuls for the convolutions, fp32 weights and loss.
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp == "bf16" else contextlib.nullcontext


def run_training(cfg: Config, genotype: Genotype, train_dir=None, val_dir=None, out_dir="runs/train",
                 resume: bool = False, device=None, progress: bool = True, init=None,
                 split_seed=None) -> dict:
    """Train and return a summary dict (also written to ``out_dir/summary.json``).

    ``split_seed``: the seed of the held-out validation split when it is not ``cfg.seed``
    (``deconas study`` trains with a seed per pair on the search's own split).
    On the CPU, ``cfg.threads`` sets torch's threads for the run (restored afterwards); ``auto``
    fits the free cores, and re-checks them by timing unless the run is deterministic, whose
    numbers depend on the thread count: it keeps the count it started with (run.json), also on
    resume."""
    cfg = config_mod.validate(cfg)  # a hand-made mapping gets its defaults; every value is checked
    before = torch.get_num_threads()
    try:
        return _run_training(cfg, genotype, train_dir, val_dir, out_dir, resume, device, progress, init, split_seed)
    finally:
        torch.set_num_threads(before)


def _run_training(cfg, genotype, train_dir, val_dir, out_dir, resume, device, progress, init, split_seed) -> dict:
    out = Path(out_dir)
    scale, t = cfg.scale, cfg.train
    device = device if isinstance(device, torch.device) else distributed.setup(device)
    rank, world = distributed.rank(), distributed.world_size()
    writer = rank == 0  # the one process that validates and writes files
    state_path = check_resume(out, "training run", resume)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    n_threads, thread_source = None, None
    if device.type == "cpu":
        pinned = _started_threads(out) if resume and cfg.deterministic else None
        n_threads, thread_source = threads_mod.resolve(pinned or cfg.threads, share=distributed.local_world_size())
        torch.set_num_threads(n_threads)
    seed_everything(cfg.seed)
    if resume:  # continue the same network on the same data, or say why not
        train_dir, val_dir = resume_sources(read_data_record(out / TRAIN_RECORD, "data"), train_dir, val_dir,
                                            out / TRAIN_RECORD)
    split = (cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed) if split_seed is None else int(split_seed)
    train_pairs, val_pairs, prov = load_train_val(train_dir, val_dir, scale, cfg.data.val_fraction,
                                                  cfg.data.val_max, split, require_val=False)
    tr = Training(cfg, genotype, train_pairs, val_pairs, device, rank, world)
    log = JsonlLog(out / METRICS)
    total, per_epoch = t.steps, t.epoch_steps
    if resume:
        tr.load_state_dict(torch_load(state_path, map_location=device), state_path)
        if writer:
            log.truncate_after("step", tr.steps)
            # The run's config as continued (overrides on resume, e.g. a new train.steps, take effect).
            write_config(out, cfg)
            with open(out / TRAIN_LOG, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} resumed at step {tr.steps} of {total}\n")
    init_rec = None
    if init is not None and not resume:
        init_rec = init_from(tr.model, init, scale)
        if writer:
            print(f"init from {init_rec['checkpoint']} (x{init_rec['scale']}, step {init_rec['step']}): "
                  f"loaded {len(init_rec['loaded'])} tensors ({init_rec['loaded_params']:,} params); "
                  f"fresh {len(init_rec['fresh'])} ({init_rec['fresh_params']:,} params)"
                  + (f": {', '.join(init_rec['fresh'])}" if init_rec["fresh"] else ""), file=sys.stderr)
    if resume:
        try:
            init_rec = json.loads((out / TRAIN_RECORD).read_text()).get("init")
        except (OSError, ValueError):
            init_rec = None
    elif writer:
        out.mkdir(parents=True, exist_ok=True)
        log.truncate_after("step", 0)  # lines a run killed before its first checkpoint left behind
        write_config(out, cfg)
        c = cost(genotype, scale, tr.net_id["channels"], tr.net_id["blocks"])
        info = {**tr.net_id, "params": c.params, "mult_adds": c.mult_adds, "train_images": len(train_pairs),
                "data": prov, "init": init_rec, "threads": n_threads, "threads_from": thread_source}
        atomic_write_text(out / TRAIN_RECORD, json.dumps(info, indent=2))

    records = read_jsonl(out / METRICS)
    # The weights' history: the runs they come from (through --init), then this one.
    earlier = list(init_rec["history"]) if init_rec else []
    data_names = "built-in" if prov["train_dir"] == "built-in" else [Path(p).name for p in prov["train_dir"]]

    def history(at_step):
        return earlier + [{"run": out.resolve().name, "scale": scale, "steps": at_step, "data": data_names,
                           "init": Path(init_rec["checkpoint"]).name if init_rec else None,
                           "lr": float(t.lr), "schedule": t.schedule}]
    distributed.barrier()  # the writer has made the run folder
    forward, autocast = _wrap(tr.model, device, world), _autocast(t.amp, device)
    bar = progress_bar(total=total, initial=tr.steps, disable=not progress or not writer, desc="train", unit="step")
    tr.model.train()
    t0 = time.time()
    loss_sum, loss_n = 0.0, 0
    tuner = None
    if thread_source == threads_mod.AUTO and not cfg.deterministic and world == 1:
        def thread_line(text):
            bar.write(text)
            with open(out / TRAIN_LOG, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {tr.steps}: {text}\n")
        tuner = threads_mod.Tuner(n_threads, threads_mod.usable_cpus(), torch.set_num_threads, thread_line)
    while tr.steps < total:
        t_step = time.perf_counter()
        loss, lr_now = tr.step(forward, autocast)
        if tuner is not None:
            tuner.step(time.perf_counter() - t_step)
        loss_sum, loss_n = loss_sum + loss, loss_n + 1
        bar.update(1)
        if tr.steps % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{lr_now:.2e}")
        if tr.steps % per_epoch == 0 or tr.steps == total:
            step, epoch = tr.steps, math.ceil(tr.steps / per_epoch)
            mean_loss = distributed.mean(loss_sum / max(loss_n, 1))
            samplers = distributed.all_gather(tr.sampler.state_dict())
            loss_sum, loss_n = 0.0, 0
            if writer:
                before = tr.best
                psnr = tr.validate() if epoch % t.val_every == 0 or step == total else None
                rec = {"epoch": epoch, "step": step, "loss": mean_loss, "lr": lr_now,
                       "val_psnr": psnr, "seconds": round(time.time() - t0, 2)}
                records.append(rec)
                # Before the state: a kill in between leaves a line past the state, which a resume drops
                # and writes again (a line written after it would be lost for good).
                log.write(rec)
                if psnr is not None and psnr > before:
                    save_model(out / BEST_WEIGHTS, tr.model, step=step, val_psnr=psnr, history=history(step))
                save_model(out / LAST_WEIGHTS, tr.model, step=step, val_psnr=psnr, history=history(step))
                atomic_torch_save(state_path, tr.state_dict(samplers))
                if cfg.plot:
                    _plot_curves(records, out / CURVES)
                bar.write(f"epoch {epoch}  step {step}/{total}  loss {rec['loss']:.4f}  lr {lr_now:.2e}"
                          + (f"  val PSNR {psnr:.3f} dB" if psnr is not None else ""))
    bar.close()
    distributed.barrier()
    if not writer:
        return {}
    if not (out / BEST_WEIGHTS).exists():  # no validation data: the last weights are the result
        save_model(out / BEST_WEIGHTS, tr.model, step=tr.steps, history=history(tr.steps))
    summary = {"steps": tr.steps, "best_val_psnr": tr.best if tr.best > -float("inf") else None,
               "last_val_psnr": records[-1]["val_psnr"] if records else None,
               "seconds_this_session": round(time.time() - t0, 1)}
    atomic_write_text(out / TRAIN_SUMMARY, json.dumps(summary, indent=2))
    return summary


def _started_threads(out: Path) -> Optional[int]:
    """The thread count a run started with (run.json), for a deterministic resume."""
    try:
        n = json.loads((out / TRAIN_RECORD).read_text()).get("threads")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_THREADS else None


def read_best(run_dir) -> dict:
    """A search's ``best.json`` (what derive chose), checked: missing or damaged is one line."""
    p = Path(run_dir) / BEST
    if not p.is_file():
        raise UserError(f"--from {run_dir}: no best.json there (run 'deconas derive {run_dir}' first)")
    try:
        best = read_json(p, str(p), 1_000_000)
    except UserError as e:
        raise UserError(f"{e}; run 'deconas derive {run_dir}' again") from None
    if not isinstance(best, dict) or not isinstance(best.get("genotype"), str):
        raise UserError(f"{p}: damaged (no 'genotype'); run 'deconas derive {run_dir}' again")
    try:
        g = parse(best["genotype"])
    except UserError as e:
        raise UserError(f"{p}: damaged genotype ({e})") from None
    # What a training takes from it (scale, and N with FF bits), within the bounds of a config.
    lo, hi = config_mod.bounds("model.blocks")
    for key, fits in (("scale", lambda v: v in SCALES), ("blocks", lambda v: lo <= v <= hi)):
        if key in best and (isinstance(best[key], bool) or not isinstance(best[key], int) or not fits(best[key])):
            raise UserError(f"{p}: damaged ({key} is {str(best[key])[:40]!r})")
    if g.ff and "blocks" in best and best["blocks"] != len(g.gff):  # one GFF bit per block
        raise UserError(f"{p}: damaged (blocks {best['blocks']}, but its genotype has {len(g.gff)} GFF bits)")
    return best


def genotype_from_run(run_dir) -> Genotype:
    return parse(read_best(run_dir)["genotype"])


def config_from_run(cfg: Config, run_dir, keep=()) -> Config:
    """``cfg`` with the searched network's scale (and N, which FF bits are tied to) from a
    search's ``best.json``, except for the dotted keys in ``keep`` (set by the user)."""
    best = read_best(run_dir)
    g = parse(best["genotype"])
    if "scale" in best and "scale" not in keep:
        cfg = replace(cfg, scale=int(best["scale"]))
    if g.ff and "blocks" in best and "model.blocks" not in keep:
        cfg = replace(cfg, model=replace(cfg.model, blocks=int(best["blocks"])))
    return cfg


def check_genotype(g: Genotype, cfg: Config) -> None:
    """The genotype fits the config's network (its GFF bits are one per block)."""
    try:
        g.check_blocks(cfg.model.blocks)
    except GenotypeError as e:
        raise GenotypeError(f"{e}; set model.blocks={len(g.gff)}") from None
