"""Run folders: the one place that knows what search, train, pipeline and study write, under
which names, and when an existing folder may be written to.

Rules. A folder holding another kind of run is refused; a new run refuses a folder that
already holds its resume state (``--resume`` continues it), and ``--resume`` needs that state.
Every file is written atomically (a temporary file renamed into place), so a killed run
leaves the previous version, never half a file.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .errors import UserError
from .runtime import atomic_write_text

# What each kind of run writes (other modules use these names, never their own strings).
CONFIG = "config.yaml"  # the config as run (every default filled in; a resume rewrites it)
METRICS = "metrics.jsonl"  # one record per epoch
SEARCH_STATE = "checkpoint.pt"  # search: supernet, controller, optimizers, random streams
SEARCH_DATA = "data.json"  # search: the images it used (absolute paths) and its validation names
BEST = "best.json"  # derive: the chosen genotype
CANDIDATES = "candidates.csv"  # derive: every scored architecture
SEARCH_SUMMARY = "summary.md"  # derive: the report
TRAIN_STATE = "state.pt"  # training: weights, optimizer, samplers, random streams
TRAIN_RECORD = "run.json"  # training: the network, its cost, its data and its --init
TRAIN_SUMMARY = "summary.json"  # training: written when the schedule has finished
BEST_WEIGHTS = "best.safetensors"  # training: best validation PSNR (or the last, without validation)
LAST_WEIGHTS = "last.safetensors"
PIPELINE_TIMES = "times.json"  # pipeline: seconds per stage
STUDY_PLAN = "plan.json"  # study: the architectures and their seeds


def default_path(prefix: str) -> Path:
    """``runs/PREFIX-YYYYmmdd-HHMMSS``: where a run goes without --out."""
    return Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


# The file that marks each kind of run folder: its resume state (or the pipeline's and the
# study's record of progress).
RUN_MARKERS = {"training run": TRAIN_STATE, "search": SEARCH_STATE, "pipeline run": PIPELINE_TIMES, "study": STUDY_PLAN}


def check_out_dir(out: Path, kind: str, option: str = "--out") -> None:
    """Before any data is loaded: ``out`` can be a run folder of this ``kind``. A file in the
    way, a folder that cannot be written, or one holding another kind of run is one line.
    Temporary files left by a killed writer (``.<name>.*.tmp``) are removed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out}: a file is in the way (it must be a folder)")
    for other, marker in RUN_MARKERS.items():
        if other != kind and (out / marker).is_file() and not (out / RUN_MARKERS[kind]).is_file():
            raise UserError(f"{option} {out}: holds a {other}, not a {kind}; pick another folder")
    probe_dir = out
    while not probe_dir.exists():  # the nearest folder that exists is where it will be made
        probe_dir = probe_dir.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".deconas-probe.", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{option} {out}: cannot write in {probe_dir} ({e.strerror or e})") from None
    if out.is_dir() and int(os.environ.get("RANK", "0")) == 0:
        for tmp in out.glob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


def check_resume(out: Path, kind: str, resume: bool) -> Path:
    """:func:`check_out_dir`, then: ``--resume`` needs the run's state, a new run refuses it.
    Returns the path of the state file."""
    check_out_dir(out, kind)
    state = Path(out) / RUN_MARKERS[kind]
    if resume and not state.is_file():
        raise UserError(f"--resume: no {state} to continue from")
    if not resume and state.is_file():
        raise UserError(f"{out} already holds a {kind}; pass --resume to continue it or pick another --out")
    return state


def write_config(out: Path, cfg) -> None:
    from . import config as config_mod

    atomic_write_text(Path(out) / CONFIG, config_mod.dump(cfg))
