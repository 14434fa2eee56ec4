"""The search and derive under torchrun: 2 gloo processes on the CPU.

One torchrun launch (process start-up is most of its time) of this file as a worker script
(``__main__`` below): it drives ``run_search``, ``derive`` and the ``deconas search`` command
line in both processes and dumps what each rank holds, for the tests to compare.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_helpers import tiny_config, tiny_config_yaml, tiny_images

HERE = Path(__file__).resolve()

pytestmark = pytest.mark.slow  # every test runs torchrun



def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


def _records(run):
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "elapsed")}
    return [strip(json.loads(x)) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return tiny_images(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def worker_run(images, tmp_path_factory):
    """Both processes: a straight 3-epoch search, a 2-epoch search resumed to 3, derive."""
    root = tmp_path_factory.mktemp("ddp")
    r = subprocess.run(_torchrun(HERE, root, images), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return root


def test_cli_search_under_torchrun_writes_a_single_process_run_folder_and_refuses_another_world_size(
        worker_run, capsys):
    out = worker_run / "cli"
    printed = (worker_run / "cli-stdout.txt").read_text() + (worker_run / "cli-stdout-rank1.txt").read_text()
    assert printed.count('"epoch"') == 1 and json.loads(printed.strip().splitlines()[-1])["epoch"] == 2  # rank 0 spoke
    for f in ("config.yaml", "data.json", "metrics.jsonl", "checkpoint.pt", "search.log"):
        assert (out / f).is_file(), f
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in recs] == [1, 2] and recs[-1]["world_size"] == 2  # one writer
    assert recs[-1]["controller_trained"] is True
    st = torch.load(out / "checkpoint.pt", weights_only=True)
    assert st["world_size"] == 2 and len(st["ranks"]) == 2
    a, b = st["ranks"]
    assert a["train_sampler"] != b["train_sampler"] and not torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["val_sampler"] == b["val_sampler"]  # the same reward patches on both ranks
    # One process cannot continue what two started: the second rank's streams would be lost.
    from deconas.cli import main

    capsys.readouterr()
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["search", "--out", str(out), "--resume", "search.epochs=3"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip() and not x.startswith("search x")]
    assert len(err) == 1 and "2 processes" in err[0], err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_controllers_and_supernets_are_bitwise_equal_across_ranks(worker_run):
    r0 = torch.load(worker_run / "straight-rank0.pt", weights_only=True)
    r1 = torch.load(worker_run / "straight-rank1.pt", weights_only=True)
    for part in ("controller", "supernet"):
        assert r0[part].keys() == r1[part].keys()
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), f"{part}.{k}"
    assert r0["baseline"] == r1["baseline"]
    # ... while each rank trained its own architectures: a step covers two of them.
    assert r0["child_genotypes"] != r1["child_genotypes"]
    assert len(r0["child_genotypes"]) == 3 * 3  # epochs x child_steps, per rank


def test_resume_under_torchrun_continues_exactly(worker_run):
    a = torch.load(worker_run / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(worker_run / "resumed" / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for part in ("controller", "supernet"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    assert a["baseline"] == b["baseline"]
    for ra, rb in zip(a["ranks"], b["ranks"]):
        assert torch.equal(ra["rng"]["torch"], rb["rng"]["torch"]) and ra["train_sampler"] == rb["train_sampler"]
    assert _records(worker_run / "straight") == _records(worker_run / "resumed")


def test_the_grads_all_reduce_averages_with_missing_grads_as_zeros(worker_run):
    got = torch.load(worker_run / "allreduce-rank0.pt", weights_only=True)
    again = torch.load(worker_run / "allreduce-rank1.pt", weights_only=True)
    # Rank r set grad(a) = r + 1 (both ranks), grad(b) = 4 on rank 1 only, c on neither.
    assert torch.equal(got["a"], torch.full((3,), 1.5)) and torch.equal(got["b"], torch.full((2,), 2.0))
    assert got["c"] is None
    assert torch.equal(again["a"], got["a"]) and torch.equal(again["b"], got["b"]) and again["c"] is None


def test_batch_reinforce_update_is_the_mean_over_the_ranks_samples(worker_run):
    """An independent re-computation of one controller step with P = 2 in a single process."""
    from deconas.space.genotype import parse
    from deconas.search.runs import build_controller

    rec = torch.load(worker_run / "ctrlstep-rank0.pt", weights_only=True)
    cfg = tiny_config()
    ctrl = build_controller(cfg)
    ctrl.load_state_dict(rec["before"])
    opt = torch.optim.Adam(ctrl.parameters(), lr=cfg.search.controller_lr)
    opt.load_state_dict(rec["opt"])  # Adam's moments after three epochs
    b = rec["baseline_before"]
    genotypes, rewards = [parse(g) for g in rec["genotypes"]], rec["rewards"]
    assert len(set(genotypes)) == 2  # the two ranks drew different architectures here
    loss = (-ctrl.evaluate(genotypes[0]).log_prob * (rewards[0] - b)
            - ctrl.evaluate(genotypes[1]).log_prob * (rewards[1] - b)) / 2
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, v in ctrl.state_dict().items():
        assert torch.allclose(v, rec["after"][k], atol=1e-7, rtol=0), k
    d = cfg.search.baseline_decay
    assert rec["baseline_after"] == pytest.approx(d * b + (1 - d) * (rewards[0] + rewards[1]) / 2, abs=1e-12)


def test_derive_under_torchrun_writes_what_one_process_writes(worker_run, tmp_path):
    from deconas.search.derive import derive

    one = tmp_path / "one"
    shutil.copytree(worker_run / "straight", one)
    for f in ("candidates.csv", "best.json", "summary.md", "scatter.png"):
        (one / f).unlink(missing_ok=True)
    derive(one, samples=6, device="cpu", progress=False)
    two = list(csv.DictReader(open(worker_run / "straight" / "candidates.csv")))
    assert len(two) == 6 and two == list(csv.DictReader(open(one / "candidates.csv")))
    assert (worker_run / "straight" / "best.json").read_text() == (one / "best.json").read_text()
    assert (worker_run / "straight" / "scatter.png").is_file()


# ----------------------------------------------------------------------------- the worker
def _worker(root: Path, images: Path) -> None:
    import torch.distributed as dist

    from deconas import distributed
    from deconas.search import loop as search_mod
    from deconas.search.derive import derive
    from deconas.runtime import seed_everything

    torch.set_num_threads(1)
    distributed.setup("cpu")
    rank = distributed.rank()

    # all_reduce_grads on a hand-made case.
    params = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in (("a", 3), ("b", 2), ("c", 4))}
    params["a"].grad = torch.full((3,), float(rank + 1))
    if rank == 1:
        params["b"].grad = torch.full((2,), 4.0)
    distributed.all_reduce_grads(params.values())
    torch.save({n: p.grad for n, p in params.items()}, root / f"allreduce-rank{rank}.pt")

    # A straight 3-epoch search, recording every rank's child architectures and final state.
    seen = []
    child_step = search_mod.Search.child_step

    def recording(self):
        loss, arches = child_step(self)
        seen.extend(str(a.genotype) for a in arches)
        return loss, arches
    search_mod.Search.child_step = recording
    held = {}
    run_epoch = search_mod.Search.run_epoch

    def holding(self, bar=None):
        held["search"] = self
        return run_epoch(self, bar)
    search_mod.Search.run_epoch = holding
    cfg = tiny_config(epochs=3, warmup_epochs=1)
    search_mod.run_search(cfg, images, None, root / "straight", progress=False)
    s = held["search"]
    torch.save({"controller": s.strategy.controller.state_dict(), "supernet": s.supernet.state_dict(),
                "baseline": s.baseline, "child_genotypes": seen}, root / f"straight-rank{rank}.pt")
    search_mod.Search.child_step = child_step

    # Stopped after epoch 2, the streams disturbed, resumed to epoch 3.
    search_mod.run_search(tiny_config(epochs=2, warmup_epochs=1), images, None, root / "resumed", progress=False)
    seed_everything(1234 + rank)
    torch.rand(7)
    search_mod.run_search(cfg, images, None, root / "resumed", resume=True, progress=False)

    # One trained controller step, before and after, for the single-process re-computation.
    ctrl_step = search_mod.Search.controller_step
    s = held["search"]
    before, b0 = {k: v.clone() for k, v in s.strategy.controller.state_dict().items()}, s.baseline
    import copy

    opt_before = copy.deepcopy(s.strategy.opt.state_dict())
    st = ctrl_step(s, True)
    torch.save({"before": before, "opt": opt_before, "after": s.strategy.controller.state_dict(), "baseline_before": b0,
                "baseline_after": s.baseline, "genotypes": [str(g) for g in st["genotypes"]],
                "rewards": [b[1] for b in st["batch"]]}, root / f"ctrlstep-rank{rank}.pt")

    derive(root / "straight", samples=6, progress=False)
    dist.barrier()

    # Last, the command line as a user types it (it leaves the process group when done).
    import contextlib
    import io

    from deconas.cli import main

    (root / "tiny.yaml").write_text(tiny_config_yaml(epochs=1))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["search", "--config", str(root / "tiny.yaml"), "--train", str(images), "--out", str(root / "cli"),
                   "search.epochs=2", "search.warmup_epochs=1"])
    assert rc == 0
    (root / f"cli-stdout{'' if rank == 0 else '-rank1'}.txt").write_text(printed.getvalue())


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
