"""threads: auto fits the free cores, an explicit count wins, long loops re-check by timing."""

import os
import subprocess
import sys
import time

import pytest

from deconas import config
from deconas import threads
from deconas.errors import UserError
from deconas.space.genotype import parse


def test_an_explicit_count_wins_then_omp_num_threads_then_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "free_cpus", lambda: 6)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve(2) == (2, "config")
    assert threads.resolve("auto") == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.resolve("auto") == (6, "auto") and threads.resolve(0) == (6, "auto")
    assert threads.resolve(None, share=4) == (1, "auto")  # 6 // 4
    assert threads.resolve("auto", share=2) == (3, "auto")
    for bad in ("", "0", "two", "-1"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        assert threads.resolve("auto") == (6, "auto")


def test_usable_cpus_is_the_affinity_capped_by_a_cgroup_quota(monkeypatch):
    n = len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.usable_cpus() == n
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 0.5)  # half a CPU: still one thread
    assert threads.usable_cpus() == 1
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: n + 8.0)
    assert threads.usable_cpus() == n


def test_free_cpus_subtracts_the_busy_ones(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    for busy, free in ((0.0, 4), (1.2, 3), (2.6, 1), (3.9, 1), (7.0, 1)):
        monkeypatch.setattr(threads, "busy_cpus", lambda seconds=0.1, b=busy: b)
        assert threads.free_cpus() == free


@pytest.mark.slow
def test_a_spinning_process_on_our_cpus_counts_as_busy():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with_spin = threads.busy_cpus(0.5)
    finally:
        spin.kill()
        spin.wait()
    # Whatever else runs, one of our CPUs was kept busy (the idle figure depends on the machine).
    assert with_spin >= 0.8, with_spin


class FakeLoop:
    """Steps whose time depends only on the thread count: the tuner's whole world."""

    def __init__(self, step_ms, start):
        self.step_ms, self.n, self.log = step_ms, start, []
        self.tuner = threads.Tuner(start, max(step_ms), self.set, self.log.append, every=20, window=5)

    def set(self, n):
        assert 1 <= n <= max(self.step_ms)
        self.n = n

    def run(self, steps):
        self.at = {n: 0 for n in self.step_ms}  # steps run at each count
        for _ in range(steps):
            self.at[self.n] += 1
            self.tuner.step(self.step_ms[self.n] / 1e3)
        return self


def test_the_tuner_moves_to_fewer_threads_when_they_are_faster():
    loop = FakeLoop({1: 150, 2: 300}, start=2).run(200)  # two threads beside a busy process
    assert loop.tuner.n == 1 and loop.log == ["threads 2 -> 1: a step took 300 ms, now 150 ms"]
    # From then on it only probes two threads now and then (a window every `every` steps).
    assert loop.run(300).at[1] >= 0.8 * 300 and loop.tuner.n == 1 and len(loop.log) == 1


def test_the_tuner_moves_up_when_more_threads_are_faster():
    loop = FakeLoop({1: 145, 2: 93, 3: 140}, start=1).run(400)
    assert loop.tuner.n == 2 and loop.log == ["threads 1 -> 2: a step took 145 ms, now 93 ms"]
    assert loop.run(300).at[2] >= 0.8 * 300


def test_the_tuner_keeps_its_count_when_the_difference_is_within_the_margin():
    loop = FakeLoop({1: 100, 2: 97}, start=1).run(500)
    assert loop.tuner.n == 1 and loop.log == [] and loop.at[1] >= 0.8 * 500


def test_the_threads_setting_takes_auto_or_a_count():
    assert config.load("train-cpu").threads == "auto"
    assert config.load("train-cpu", ["threads=3"]).threads == 3
    for bad in ("two", "-1", "1000000", "2.5", "true"):
        with pytest.raises(UserError, match="threads"):
            config.load("train-cpu", [f"threads={bad}"])


def _threads_per_step(monkeypatch):
    """Record torch's thread count at every training step."""
    import torch

    from deconas import train as train_mod

    seen, step = [], train_mod.Training.step

    def spy(self, *a, **k):
        seen.append(torch.get_num_threads())
        return step(self, *a, **k)
    monkeypatch.setattr(train_mod.Training, "step", spy)
    return seen


def test_a_training_records_its_threads_and_a_deterministic_resume_keeps_them(tmp_path, monkeypatch):
    import json

    import torch

    from deconas.train import run_training
    from search_helpers import tiny_images

    imgs = tiny_images(tmp_path / "imgs", n=4, size=32)
    tiny = ["model.channels=4", "model.blocks=1", "data.lr_patch=8", "data.batch=2", "data.val_fraction=0.34",
            "train.warmup_steps=0", "plot=false", "train.epoch_steps=2"]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "free_cpus", lambda: 1)
    seen = _threads_per_step(monkeypatch)
    before = torch.get_num_threads()
    run_training(config.load("train-cpu", tiny + ["train.steps=2"]), parse("1,1,1"), str(imgs), None, tmp_path / "r",
                 progress=False)
    rec = json.loads((tmp_path / "r" / "run.json").read_text())
    assert (rec["threads"], rec["threads_from"]) == (1, "auto") and seen == [1, 1]
    assert torch.get_num_threads() == before  # restored afterwards
    # More cores free now; the deterministic run continues on the count it started with.
    monkeypatch.setattr(threads, "free_cpus", lambda: 2)
    run_training(config.load("train-cpu", tiny + ["train.steps=4"]), parse("1,1,1"), str(imgs), None, tmp_path / "r",
                 resume=True, progress=False)
    assert seen == [1, 1, 1, 1]
    run_training(config.load("train-cpu", tiny + ["train.steps=2", "threads=2"]), parse("1,1,1"), str(imgs), None,
                 tmp_path / "r2", progress=False)
    assert seen[-2:] == [2, 2]


def test_onnx_runtime_counts_every_usable_cpu_whatever_the_load(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus", lambda seconds=0.1: 3.0)
    assert threads.resolve("auto") == (1, "auto")
    assert threads.resolve("auto", load_aware=False) == (4, "auto")
