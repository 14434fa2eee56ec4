"""How many CPU threads a command uses. ``threads: auto`` (the default) fits the cores that are
free: the CPUs this process may use (affinity, cgroup quota) less those other processes keep
busy at the start; long loops re-check by timing (:class:`Tuner`). An explicit count, in the
config or in ``OMP_NUM_THREADS``, wins.

Why: on a shared machine, OpenMP threads that wait for a core stall every step; beside one
busy process a two-thread step on two cores runs slower than a one-thread step (README,
"Speed"). No torch import here: ONNX Runtime commands use it too.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Callable, Optional, Sequence, Union

AUTO = "auto"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(n, math.ceil(quota)) if quota else n)


def _cgroup_quota() -> Optional[float]:
    """CPUs' worth of the cgroup quota (v2 cpu.max, v1 cfs), or None when there is none."""
    try:
        text = open("/sys/fs/cgroup/cpu.max").read().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        p = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def _cpu_times(cpus: Sequence[int]) -> Optional[tuple]:
    """(busy, total) jiffies over these CPUs, from /proc/stat."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    want = {f"cpu{c}" for c in cpus}
    busy = total = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in want:
            v = [int(x) for x in parts[1:]]
            idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
            t = sum(v[:8])  # guest time is already in user
            busy, total = busy + t - idle, total + t
    return (busy, total) if total else None


def busy_cpus(seconds: float = 0.1) -> float:
    """How many of this process's CPUs other processes keep busy, measured over ``seconds``
    (this process sleeps meanwhile, so what is busy is someone else)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return 0.0
    a = _cpu_times(cpus)
    time.sleep(seconds)
    b = _cpu_times(cpus)
    if a is None or b is None or b[1] <= a[1]:
        return 0.0
    return len(cpus) * (b[0] - a[0]) / (b[1] - a[1])


def free_cpus() -> int:
    """Usable CPUs less the busy ones, at least 1."""
    n = usable_cpus()
    return max(1, min(n, round(n - busy_cpus())))


def resolve(setting: Union[str, int, None], share: int = 1, load_aware: bool = True) -> tuple:
    """(threads, where from): an explicit count (``setting`` > 0), else ``OMP_NUM_THREADS``, else
    the free CPUs divided among ``share`` processes (study workers, torchrun ranks on one node).
    ``load_aware=False`` counts every usable CPU as free: ONNX Runtime's inference ran faster on
    all cores even beside busy processes (README, "Speed"), unlike torch training, whose
    threads wait for each other every step."""
    if isinstance(setting, int) and not isinstance(setting, bool) and setting > 0:
        return setting, "config"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    return max(1, (free_cpus() if load_aware else usable_cpus()) // max(1, share)), AUTO


class Tuner:
    """Re-checks the thread count of a loop of like steps: every ``every`` steps it times
    ``window`` steps at the current count, then as many at one thread fewer or one more (in
    turn, within ``1..limit``), and keeps the faster when it is at least ``margin`` faster.
    ``apply(n)`` sets the count; ``log(text)`` records each change."""

    def __init__(self, threads: int, limit: int, apply: Callable[[int], None], log: Callable[[str], None],
                 every: int = 200, window: int = 12, margin: float = 0.08):
        self.n, self.limit, self.apply, self.log = threads, max(1, limit), apply, log
        self.every, self.window, self.margin = every, window, margin
        self.count, self.times, self.base, self.trial, self.up = 0, [], None, None, False

    def step(self, seconds: float) -> None:
        """One step took ``seconds`` (wall)."""
        self.count += 1
        if self.trial is None and self.base is None and self.count < self.every:
            return
        self.times.append(seconds)
        if len(self.times) < self.window:
            return
        med, self.times = statistics.median(self.times), []
        if self.trial is None:  # the current count's figure: now try a neighbour
            self.base = med
            cands = [self.n + 1, self.n - 1] if self.up else [self.n - 1, self.n + 1]
            self.up = not self.up
            nxt = next((c for c in cands if 1 <= c <= self.limit), None)
            if nxt is None:
                self._rest()
                return
            self.trial = nxt
            self.apply(nxt)
            return
        if med < self.base * (1 - self.margin):
            self.log(f"threads {self.n} -> {self.trial}: a step took {self.base * 1e3:.0f} ms, now "
                     f"{med * 1e3:.0f} ms")
            self.n = self.trial
        else:
            self.apply(self.n)
        self._rest()

    def _rest(self) -> None:
        self.trial, self.base, self.count = None, None, 0
