"""``deconas search``: the DeCoNAS search loop (paper section II.D; docs/design.md, section 3).

Each epoch:

1. **Child steps** (``search.child_steps``): for every minibatch of LR/HR patches (random
   crops, flips, 90-degree rotations) the controller samples a fresh architecture; the
   shared-weight supernet runs it, L1 loss, Adam step. The learning rate is
   ``lr * lr_gamma ** (epoch // lr_step_epochs)`` (paper: 1e-4 halved every 50 epochs).
2. **Controller steps** (``search.controller_steps``): sample an architecture with
   gradients, score it on one validation batch (``val_batch`` LR patches of ``val_patch``
   pixels, the release's protocol), reward
   ``R = PSNR - alpha * params / params_max + entropy_weight * entropy``, REINFORCE
   ``loss = -log_prob * (R - b)`` with Adam, then the moving-average baseline
   ``b <- decay * b + (1 - decay) * R`` (the first reward initialises ``b``, so the first
   advantages are not dominated by a 30 dB offset). ``params_max`` is the largest network
   of the space (:func:`deconas.space.complexity.max_params`); alpha = 0 is CB0, 2 is CB1.
   During the first ``warmup_epochs`` epochs the controller steps still sample and score
   (this warms the baseline and logs the validation PSNR) but do not update the controller.

Reward PSNR and the reward are :mod:`deconas.search.reward`'s. ``deconas derive`` and ``deconas
eval`` score a grey image on its one channel (the network's output turned grey with BT.601
luma weights, :func:`deconas.infer.tiling.rgb_to_grey_uint8`).

Run folder: ``config.yaml``, ``data.json`` (where the images came from, as absolute paths, and
which were held out), ``checkpoint.pt`` (atomic, every epoch; holds the controller, supernet,
both optimizers, baseline, epoch and every random stream, so ``--resume`` continues exactly),
``metrics.jsonl`` (one record per epoch, appended *after* that epoch's checkpoint is saved, so
the last record never names an epoch the checkpoint lacks; a resume drops records past the
checkpoint's epoch), ``search.log`` and TensorBoard events when ``torch.utils.tensorboard`` imports.

Under torchrun (``torchrun --nproc_per_node P -m deconas.cli search ...``) every rank samples
its own architecture from the same controller, on its own patches and random stream: a child
step trains P architectures, the supernet's gradients averaged over the ranks
(:func:`deconas.distributed.all_reduce_grads`, a missing gradient counting as zeros). A
controller step scores P architectures on the same reward batch; the rewards and genotypes are
gathered and every rank makes the same REINFORCE update with the batch of P (teacher-forced
log-probabilities of all P samples), so the controllers stay bitwise equal; the baseline moves
once per step with the batch's mean reward. With P = 1 all of this is the single-process loop,
bit for bit. Rank 0 writes the files; the checkpoint holds every rank's random streams, and a
resume must use the same number of processes (docs/search.md, "The search under torchrun").
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from deconas import config as config_mod
from deconas.progress import bar as progress_bar
from deconas import distributed
from deconas import threads as threads_mod
from deconas.config import Config
from deconas.constants import MAX_THREADS, SEED_CHILD, SEED_RANK_STRIDE, SEED_REWARD
from deconas.data.patches import PatchSampler
from deconas.errors import UserError
from deconas.runfolder import (BEST, CANDIDATES, METRICS, SCATTER, SEARCH_DATA, SEARCH_LOG, SEARCH_SUMMARY, SEARCH_TB,
                               check_resume, resume_sources, write_config)
from deconas.runtime import (STATE_INT_MAX, JsonlLog, atomic_torch_save, atomic_write_text, check_optimizer_state,
                             check_tensors_like, rng_state, seed_everything, set_rng_state, state_number)
from deconas.search.reward import Penalty, psnr_y_batch, reward_of
from deconas.search.runs import build_supernet, load_search_data, read_checkpoint, read_data_json, read_latency_table
from deconas.search.strategies import Proposal, check_group, make_strategy
from deconas.space.genotype import Genotype, complement, decision_bits, decision_names, from_decision_bits

class Search:
    """State and steps of one search; :func:`run_search` drives it epoch by epoch. The loop
    trains the shared weights and scores architectures; ``self.strategy``
    (:mod:`deconas.search.strategies`) proposes them and learns from their rewards."""

    def __init__(self, cfg: Config, train_pairs, val_pairs, device, rank: int = 0, world: Optional[int] = None):
        self.cfg, self.s, self.device, self.rank = cfg, cfg.search, device, rank
        self.world = distributed.world_size() if world is None else int(world)
        self.is_writer = rank == 0
        d, seed, s = cfg.data, cfg.seed, cfg.search
        self.scale = cfg.scale
        # Built from the same seed on every rank: identical initial weights everywhere (the
        # controller first, as the search always has: its initialisation draws first).
        self.strategy = make_strategy(cfg, device)
        self.supernet = build_supernet(cfg).to(device)
        if rank > 0:  # then each rank its own stream (rank 0 keeps the single-process one)
            seed_everything(seed + SEED_RANK_STRIDE * rank)
        self.child_opt = torch.optim.Adam(self.supernet.parameters(), lr=float(s.lr))
        # Uniform and fair child steps, and the other strategies' child proposals: each rank's own.
        self.child_rng = np.random.default_rng(seed + SEED_CHILD + SEED_RANK_STRIDE * rank)
        # Own training patches per rank; the reward patches are the same on every rank, so the
        # P rewards of one controller step compare architectures on the same images.
        self.train_sampler = PatchSampler([(hr, lr) for _, hr, lr in train_pairs], self.scale,
                                          d.lr_patch, d.batch, seed=seed + SEED_RANK_STRIDE * rank,
                                          augment=d.augment)
        vp = s.val_patch
        try:
            self.val_sampler = PatchSampler([(hr, lr) for _, hr, lr in val_pairs], self.scale, vp,
                                            s.val_batch, seed=seed + SEED_REWARD, augment=False)
        except UserError:
            raise UserError(f"no validation image is at least {vp * self.scale}x{vp * self.scale} pixels "
                            f"(reward patch {vp} at x{self.scale}); lower search.val_patch") from None
        self.alpha = float(s.alpha)
        m = cfg.model
        self.penalty = Penalty(s.penalty, cfg.scale, m.channels, m.blocks, m.nodes, s.ff, read_latency_table(cfg))
        self.params_max = self.supernet.max_params(s.ff)
        self.epoch = 0  # completed epochs
        self.child_steps_done, self.scored = 0, 0  # the search's cost so far (every rank's)
        self._params: Dict[Genotype, int] = {}
        self._val: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # current reward batch
        check_group(s.samples_per_step * self.world, s.reward_baseline)  # before any step is taken

    @property
    def baseline(self) -> Optional[float]:
        return self.strategy.baseline

    def params(self, g: Genotype) -> int:
        n = self._params.get(g)
        if n is None:
            n = self._params[g] = self.supernet.num_params(g)
        return n

    def child_lr(self, epoch: int) -> float:
        return float(self.s.lr) * float(self.s.lr_gamma) ** (epoch // self.s.lr_step_epochs)

    # -- the one place where a child step's architectures are decided ----------------------
    def child_architectures(self) -> List[Proposal]:
        """``supernet_sampling``: ``strategy`` trains what the strategy proposes; ``uniform`` a
        uniform draw; ``fair`` a uniform draw and its bit complement, so every (node, input, op)
        weight chunk is trained once per step (FairNAS's strict fairness). The first
        ``uniform_epochs`` epochs sample uniformly whatever the setting."""
        mode = self.s.supernet_sampling
        if self.epoch < self.s.uniform_epochs and mode == "strategy":
            mode = "uniform"
        if mode == "strategy":
            return [self.strategy.child_architecture(self.child_rng)]
        g = self.strategy.uniform(self.child_rng)
        return [Proposal(g)] if mode == "uniform" else [Proposal(g), Proposal(complement(g))]

    def child_step(self) -> Tuple[float, List[Proposal]]:
        arches = self.child_architectures()
        lr, hr = self.train_sampler.sample()
        lr, hr = lr.to(self.device), hr.to(self.device)
        self.child_opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for a in arches:  # the gradients of a fair pair add up into one update
            loss = F.l1_loss(self.supernet(lr, a.genotype), hr)
            loss.backward()
            loss_sum += loss.item()
        if self.world > 1:
            distributed.all_reduce_grads(self.supernet.parameters())
        clip = float(self.s.grad_clip)
        if clip:
            torch.nn.utils.clip_grad_norm_(self.supernet.parameters(), clip)
        self.child_opt.step()
        if not math.isfinite(loss_sum):  # the shared weights are lost; the last checkpoint is from before
            raise UserError(f"the search diverged in epoch {self.epoch + 1}: the supernet's loss is {loss_sum}; "
                            f"lower search.lr (now {self.child_lr(self.epoch):g}) or set search.grad_clip")
        return loss_sum / len(arches), arches

    def val_batch(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The reward's validation patches. ``val_resample``: ``step`` draws a new batch per
        controller step (the release), ``epoch`` one per epoch, ``run`` one for the whole search
        (a fixed validation set, as the paper's text has it; the least noisy reward)."""
        mode = self.s.val_resample
        if mode not in ("step", "epoch", "run"):
            raise UserError(f"search.val_resample is {mode!r}; expected step, epoch or run")
        if mode == "step" or self._val is None:
            self._val = self.val_sampler.sample()
        return self._val

    def _gather_group(self, rows: List[tuple]) -> List[tuple]:
        """Every rank's rows (genotype, psnr, reward, entropy, params) of this controller step,
        in rank order, in one collective (a genotype travels as its decision bits)."""
        if self.world == 1:
            return rows
        width = 4 + self.strategy.n_bits
        flat = [float(v) for g, *vals in rows for v in list(vals) + list(decision_bits(g))]
        out = []
        for part in distributed.gather_floats(flat):
            for i in range(0, len(part), width):
                r = part[i:i + width]
                g = from_decision_bits([int(b) for b in r[4:]], self.strategy.nodes, self.strategy.ff)
                out.append((g, r[0], r[1], r[2], int(r[3])))
        return out

    def controller_step(self, train: bool) -> dict:
        """Score this step's group of architectures on one reward batch and let the strategy
        learn from their rewards (every rank from the same gathered rewards)."""
        props = self.strategy.propose(self.s.samples_per_step, train and self.world == 1, self.rank, self.world)
        lr, hr = self.val_batch()
        lr, hr = lr.to(self.device), hr.to(self.device)
        rows = []
        for p in props:
            with torch.no_grad():
                psnr = psnr_y_batch(self.supernet(lr, p.genotype), hr, self.scale).mean().item()
            entropy = float(p.sample.entropy.detach()) if p.sample is not None else 0.0
            reward = reward_of(psnr, self.penalty(p.genotype), self.penalty.max, self.alpha, entropy,
                               float(self.s.entropy_weight))
            rows.append((p.genotype, psnr, reward, entropy, self.params(p.genotype)))
        group = self._gather_group(rows)
        mine = range(self.rank * len(props), (self.rank + 1) * len(props))
        samples = [props[i - mine.start].sample if i in mine else None for i in range(len(group))]
        self.strategy.learn([(g, rw, smp) for (g, _, rw, _, _), smp in zip(group, samples)], train)
        self.scored += len(group)
        return {"proposals": props, "batch": [(p, rw, e, k) for _, p, rw, e, k in group],
                "genotypes": [g for g, *_ in group]}

    def run_epoch(self, bar=None) -> dict:
        """One epoch of child steps then controller steps; returns its metrics record."""
        epoch, t0 = self.epoch, time.time()
        lr_now = self.child_lr(epoch)
        for g in self.child_opt.param_groups:
            g["lr"] = lr_now
        self.supernet.train()
        losses, child_params, p_sum, n_samples = [], [], 0.0, 0
        for _ in range(self.s.child_steps):
            loss, arches = self.child_step()
            losses.append(loss)
            for a in arches:
                child_params.append(self.params(a.genotype))
                p_sum, n_samples = p_sum + a.p_one(), n_samples + 1
            if bar is not None:
                bar.update(1)
                if len(losses) % 10 == 0:
                    bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-10:]):.4f}")
        train_ctrl = epoch >= self.s.warmup_epochs
        if self.s.val_resample == "epoch":
            self._val = None
        self.supernet.eval()
        steps = []
        for _ in range(self.s.controller_steps):
            st = self.controller_step(train_ctrl)
            steps.append(st)
            for p in st["proposals"]:
                p_sum, n_samples = p_sum + p.p_one(), n_samples + 1
            if bar is not None:
                bar.update(1)
        self.epoch += 1
        child_done = self.s.child_steps * self.world
        if self.world > 1:  # every rank's child steps and P(bit = 1) sums, for the record
            parts = distributed.all_gather((losses, child_params, p_sum, n_samples))
            losses = [x for part in parts for x in part[0]]
            child_params = [x for part in parts for x in part[1]]
            p_sum, n_samples = sum(part[2] for part in parts), sum(part[3] for part in parts)
            if not distributed.same_on_every_rank(self.strategy.fingerprint()
                                                  + list(self.supernet.state_dict().values())):
                raise RuntimeError("the ranks' strategies or supernets differ; the backend's all-reduce "
                                   "did not give every rank the same result")
        self.child_steps_done += child_done
        batch = [b for st in steps for b in st["batch"]]
        ctrl_params = [b[3] for b in batch]
        mean = lambda xs: float(np.mean(xs)) if len(xs) else None
        p_one = (p_sum / max(n_samples, 1)).tolist() if n_samples else []
        pick = self.strategy.pick()
        return {
            "epoch": self.epoch, "lr": lr_now, "controller_trained": train_ctrl,
            "child_loss": mean(losses), "val_psnr": mean([b[0] for b in batch]),
            "reward": mean([b[1] for b in batch]), "baseline": self.baseline,
            "entropy": mean([b[2] for b in batch]),
            "params_mean": mean(child_params + ctrl_params), "child_params_mean": mean(child_params),
            "controller_params_mean": mean(ctrl_params), "params_max": self.params_max,
            "greedy": str(pick) if pick is not None else None,
            "greedy_params": self.params(pick) if pick is not None else None,
            "p_one": dict(zip(decision_names(self.cfg.model.nodes, self.cfg.model.blocks, self.s.ff),
                              [round(p, 4) for p in p_one])),
            "seconds": round(time.time() - t0, 2), "world_size": self.world,
            "strategy": self.strategy.name, "child_steps_total": self.child_steps_done,
            "architectures_scored_total": self.scored,
        }

    # -- checkpoint -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, **self.strategy.state_dict(),
                "supernet": self.supernet.state_dict(), "child_opt": self.child_opt.state_dict(),
                "train_sampler": self.train_sampler.state_dict(), "val_sampler": self.val_sampler.state_dict(),
                "val_batch": list(self._val) if self._val is not None else None, "rng": rng_state(),
                "child_rng": self.child_rng.bit_generator.state,
                "cost": {"child_steps": self.child_steps_done, "scored": self.scored}}

    def rank_streams(self) -> dict:
        """This rank's random streams (each rank has its own): the checkpoint keeps all of them."""
        return {"rng": rng_state(), "train_sampler": self.train_sampler.state_dict(),
                "val_sampler": self.val_sampler.state_dict(), "child_rng": self.child_rng.bit_generator.state}

    def load_state_dict(self, st: dict) -> None:
        """``st``'s top-level streams are rank 0's; ``st["ranks"][r]`` (several processes) rank r's."""
        ranks = st.get("ranks")
        if ranks is not None:
            if not isinstance(ranks, list) or len(ranks) != self.world or not isinstance(ranks[self.rank], dict):
                raise ValueError(f"ranks is not one state per process ({self.world})")
            st = {**st, **ranks[self.rank]}
        # Checked as data before anything is loaded: torch would cast a tensor of another dtype,
        # and a damaged optimizer state or reward batch would fail (or mislead) only epochs later.
        epoch = state_number(st["epoch"], "epoch", 0, STATE_INT_MAX, integer=True)
        check_tensors_like(st["supernet"], self.supernet.state_dict(), "supernet")
        check_optimizer_state(st["child_opt"], self.child_opt, "child_opt")
        val = None if st.get("val_batch") is None else self._checked_val_batch(st["val_batch"])
        cost = st.get("cost") or {"child_steps": epoch * self.s.child_steps * self.world,
                                  "scored": epoch * self.s.controller_steps * self.world}
        if not isinstance(cost, dict):
            raise ValueError(f"cost is {str(cost)[:40]}")
        done = [state_number(cost[k], f"cost {k}", 0, STATE_INT_MAX, integer=True) for k in ("child_steps", "scored")]
        self.epoch = epoch
        self.strategy.load_state_dict(st)
        self.supernet.load_state_dict(st["supernet"])
        self.child_opt.load_state_dict(st["child_opt"])
        self.train_sampler.load_state_dict(st["train_sampler"])
        self.val_sampler.load_state_dict(st["val_sampler"])
        self._val = None if val is None else tuple(t.to(self.device) for t in val)
        set_rng_state(st["rng"])
        if st.get("child_rng") is not None:  # searches before the strategy seam drew no such numbers
            self.child_rng.bit_generator.state = st["child_rng"]
        self.child_steps_done, self.scored = done

    def _checked_val_batch(self, val) -> tuple:
        """A checkpoint's reward batch: LR and HR patches (B, 3, p, p) and (B, 3, p*scale, p*scale), in [0, 1]."""
        ok = isinstance(val, (list, tuple)) and len(val) == 2 and all(
            isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() == 4 for t in val)
        if ok:
            lr, hr = val
            ok = (lr.shape[0] == hr.shape[0] > 0 and lr.shape[1] == hr.shape[1] == 3 and lr.shape[2] > 0
                  and lr.shape[3] > 0 and tuple(hr.shape[2:]) == (lr.shape[2] * self.scale, lr.shape[3] * self.scale)
                  and all(bool(((t >= 0) & (t <= 1)).all()) for t in val))  # NaN fails too
        if not ok:
            raise ValueError("val_batch is not a batch of LR and HR patches in [0, 1]")
        return tuple(val)


_CHECKPOINT_KEYS = ("epoch", "supernet", "child_opt", "train_sampler", "val_sampler", "rng", "structure")
# What each strategy adds (the controller's are the keys every search had before the seam).
_STRATEGY_KEYS = {"controller": ("controller", "ctrl_opt", "baseline")}


def _structure(cfg: Config) -> dict:
    """The settings a checkpoint's tensors depend on; a resume must not change them."""
    m, s = cfg.model, cfg.search
    if s.strategy != "controller":
        return {"scale": cfg.scale, "channels": m.channels, "blocks": m.blocks, "nodes": m.nodes, "ff": s.ff,
                "strategy": s.strategy}
    return {"scale": cfg.scale, "channels": m.channels, "blocks": m.blocks, "nodes": m.nodes, "ff": s.ff,
            "lstm_size": s.lstm_size, "lstm_layers": s.lstm_layers, "tie_embeddings": s.tie_embeddings}


def _same_structure(saved, want: dict) -> bool:
    """Whether a checkpoint's ``structure`` is ``want``; a damaged one (tensors where numbers
    belong, whose == is not a truth value) is not."""
    try:
        return isinstance(saved, dict) and bool(saved == want)
    except (RuntimeError, TypeError, ValueError):
        return False


def _log_line(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # optional: tensorboard is not a dependency
        return None
    return SummaryWriter(str(out / SEARCH_TB))


def run_search(cfg: Config, train_dir=None, val_dir=None, out_dir="runs/search", resume: bool = False,
               device=None, progress: bool = True, rank: Optional[int] = None) -> dict:
    """Run (or continue, ``resume=True``) a search into ``out_dir``; returns the last epoch's record.

    ``train_dir``: a folder, several, a folder of image folders, or None (built-in images).
    ``val_dir``: validation folder, or None to hold out ``data.val_fraction`` of the training images.
    On the CPU, ``cfg.threads`` sets torch's intra-op threads for the search (restored
    afterwards): ``auto`` fits the cores free at the start (a resumed deterministic search keeps
    the count it started with); the CPU preset's small convolutions run fastest on one thread,
    and on a busy machine several threads per process slow everyone down many times over.
    Under torchrun every process calls this with the same arguments (it joins the process
    group); ``rank`` defaults to the process's rank (0 without torchrun).
    """
    cfg = config_mod.validate(cfg)  # a hand-made mapping gets its defaults; every value is checked
    before = torch.get_num_threads()
    try:
        return _run_search(cfg, train_dir, val_dir, out_dir, resume, device, progress, rank)
    finally:
        torch.set_num_threads(before)


def _run_search(cfg, train_dir, val_dir, out_dir, resume, device, progress, rank) -> dict:
    out = Path(out_dir)
    device = device if isinstance(device, torch.device) else distributed.setup(device)
    world = distributed.world_size()
    rank = distributed.rank() if rank is None else int(rank)
    ckpt = check_resume(out, "search", resume)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.seed)
    writer = rank == 0
    st = None
    if resume:
        st = read_checkpoint(ckpt, device, keys=_CHECKPOINT_KEYS)
        kind = st["strategy"].get("name") if isinstance(st.get("strategy"), dict) else "controller"
        if kind != cfg.search.strategy:
            raise UserError(f"{ckpt}: the checkpoint is of a {kind} search, the config asks for search.strategy="
                            f"{cfg.search.strategy}; resume it with its own strategy")
        missing = [k for k in _STRATEGY_KEYS.get(kind, ("strategy",)) if k not in st]
        if missing:
            raise UserError(f"{ckpt}: damaged or not a search checkpoint (no {', '.join(missing)})")
        try:  # checkpoints from before torchrun: one process
            then = state_number(st.get("world_size", 1), "world_size", 1, STATE_INT_MAX, integer=True)
            elapsed0 = float(state_number(st.get("elapsed", 0.0), "elapsed", 0, sys.float_info.max))
        except ValueError as e:
            raise UserError(f"{ckpt}: damaged ({e})") from None
        if then != world:
            raise UserError(f"{ckpt} was written by {then} process{'es' if then > 1 else ''}; resume it with "
                            f"as many (this run has {world}): each process's random streams are in it")
        want = _structure(cfg)
        if not _same_structure(st["structure"], want):
            saved = st["structure"]
            if not isinstance(saved, dict):
                raise UserError(f"{ckpt}: damaged (its search space record is {str(saved)[:40]!r})")
            diff = "; ".join(f"{k} {str(saved.get(k, 'missing'))[:40]} (config: {v})" for k, v in want.items()
                             if not _same_structure({k: saved.get(k)}, {k: v}))
            raise UserError(f"{ckpt}: the search space of the checkpoint differs from the config's: "
                            f"{diff or str(saved)[:80]}")
        train_dir, val_dir = resume_sources(read_data_json(out), train_dir, val_dir, out / SEARCH_DATA)
    n_threads = None
    if device.type == "cpu":
        pinned = st.get("threads") if st is not None and cfg.deterministic else None
        pinned = pinned if isinstance(pinned, int) and not isinstance(pinned, bool) and 0 < pinned <= MAX_THREADS else None
        n_threads, _ = threads_mod.resolve(pinned or cfg.threads, share=distributed.local_world_size())
        torch.set_num_threads(n_threads)
    train_pairs, val_pairs, prov = load_search_data(cfg, train_dir, val_dir)
    search = Search(cfg, train_pairs, val_pairs, device, rank, world)
    log = JsonlLog(out / METRICS)
    if st is not None:
        try:
            search.load_state_dict(st)
        except UserError as e:
            raise UserError(f"{ckpt}: {e}") from None
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError, OverflowError) as e:
            raise UserError(f"{ckpt}: damaged or from another search ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    distributed.barrier()  # every rank has checked the folder (and read the checkpoint) before any write
    if st is not None:
        if writer:
            log.truncate_after("epoch", search.epoch)
            write_config(out, cfg)  # records e.g. a longer search.epochs
            if search.epoch < cfg.search.epochs:  # derive's picks describe weights that are about to change
                for name in (BEST, CANDIDATES, SEARCH_SUMMARY, SCATTER):
                    (out / name).unlink(missing_ok=True)
    elif writer:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, cfg)
        atomic_write_text(out / SEARCH_DATA, json.dumps(prov, indent=1))
    epochs = cfg.search.epochs
    per_epoch = cfg.search.child_steps + cfg.search.controller_steps
    tb = _tensorboard(out) if writer and cfg.tensorboard else None
    if writer:
        _log_line(out / SEARCH_LOG, f"{'resume at' if resume else 'start'} epoch {search.epoch}/{epochs}; "
                  f"{n_threads or 'default'} threads; "
                  f"{len(train_pairs)} training and {len(val_pairs)} validation images; device {device}; "
                  f"params_max {search.params_max:,}")
    bar = progress_bar(total=epochs * per_epoch, initial=search.epoch * per_epoch,
                       disable=not progress or not writer, desc="search", unit="step")
    rec = None
    t_start = time.time()
    elapsed0 = elapsed0 if st is not None else 0.0
    while search.epoch < epochs:
        rec = search.run_epoch(bar)
        rec["elapsed"] = round(elapsed0 + time.time() - t_start, 2)
        streams = distributed.all_gather(search.rank_streams()) if world > 1 else None
        if writer:  # checkpoint first: metrics.jsonl never records an epoch that the checkpoint lacks
            extra = {"ranks": streams} if streams is not None else {}
            atomic_torch_save(ckpt, {**search.state_dict(), "structure": _structure(cfg), "elapsed": rec["elapsed"],
                                     "world_size": world, "threads": n_threads, **extra})
            log.write(rec)
            line = (f"epoch {rec['epoch']}/{epochs}  loss {rec['child_loss']:.4f}  val PSNR {rec['val_psnr']:.3f}  "
                    f"reward {rec['reward']:.3f}  baseline {rec['baseline']:.3f}  entropy {rec['entropy']:.2f}  "
                    f"params {rec['params_mean']:,.0f}  greedy {rec['greedy']}")
            _log_line(out / SEARCH_LOG, line)
            bar.write(line)
            if tb is not None:
                for k in ("child_loss", "val_psnr", "reward", "baseline", "entropy", "params_mean", "lr"):
                    if rec.get(k) is not None:
                        tb.add_scalar(f"search/{k}", rec[k], rec["epoch"])
                tb.flush()
    bar.close()
    if tb is not None:
        tb.close()
    distributed.barrier()  # the writer's last files are in place before any process returns
    if rec is None and (out / METRICS).is_file():  # already finished: report the last record
        lines = (out / METRICS).read_text().splitlines()
        rec = json.loads(lines[-1]) if lines else None
    return rec or {}
