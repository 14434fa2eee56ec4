"""Progress of long commands: a tqdm bar on a terminal, plain lines everywhere else.

A bar redrawn with carriage returns is unreadable in a log file or a CI page (a `deconas run`
log once held 337 KB of them). :func:`bar` returns tqdm when the stream is a terminal and a
:class:`LineProgress` otherwise: the same figures (count, rate, ETA, the postfix such as the
loss), one plain line every ``every`` seconds and one at the end.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Optional

from deconas.constants import PROGRESS_EVERY_S

__all__ = ["bar", "LineProgress", "format_seconds"]


def format_seconds(s: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short and unambiguous in a log line."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineProgress:
    """A progress report for logs: the interface of tqdm that deconas uses (``update``,
    ``set_postfix``, ``set_postfix_str``, ``write``, ``close``, iteration, ``with``)."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, initial: int = 0,
                 desc: str = "", unit: str = "it", disable: bool = False, file=None,
                 every: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = initial + len(iterable)
        self.iterable, self.total, self.n, self.initial = iterable, total, initial, initial
        self.desc, self.unit, self.disable, self.every = desc, unit, disable, every
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.start = self.last = clock()
        self.postfix = ""
        self.closed = False

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()  # as tqdm does: a finished loop reports its end

    def __len__(self):
        return self.total if self.total is not None else len(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def line(self) -> str:
        """The current figures as one line (what is printed)."""
        el = self.clock() - self.start
        done = self.n - self.initial
        parts = [f"{self.desc}: " if self.desc else ""]
        parts.append(f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}")
        if self.total:
            parts.append(f" ({100 * self.n / self.total:.0f}%)")
        rate = done / el if el > 0 else 0.0
        if done > 0:
            parts.append(f", {rate:.2f} {self.unit}/s" if rate >= 1 else f", {el / done:.2f} s/{self.unit}")
        parts.append(f", elapsed {format_seconds(el)}")
        if self.total and done > 0 and self.n < self.total:
            parts.append(f", ETA {format_seconds((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(f", {self.postfix}")
        return "".join(parts)

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if not self.disable and now - self.last >= self.every:
            self.last = now
            self._print(self.line())

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def write(self, s: str, file=None, end: str = "\n") -> None:
        # Where tqdm.write puts messages (stdout), so that a command's output is the same either way.
        print(s, file=file if file is not None else sys.stdout, end=end, flush=True)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        # The last figures once, when anything was counted: a log shows how the job ended.
        if not self.closed and not self.disable and self.n > self.initial:
            self._print(self.line())
        self.closed = True


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, initial: int = 0, desc: str = "",
        unit: str = "it", disable: bool = False, file=None, leave: bool = True, **tqdm_options):
    """A progress display on ``file`` (stderr): tqdm on a terminal, else :class:`LineProgress`.
    ``DECONAS_PROGRESS=lines`` forces plain lines, ``=bar`` the bar."""
    file = file if file is not None else sys.stderr
    mode = os.environ.get("DECONAS_PROGRESS", "")
    if mode == "bar" or (mode != "lines" and _is_terminal(file)):
        from tqdm import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=file,
                    leave=leave, dynamic_ncols=True, **tqdm_options)
    return LineProgress(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=file)
