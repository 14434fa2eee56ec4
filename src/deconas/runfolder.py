"""Run folders: the one place that knows what search, train, pipeline and study write, under
which names, when an existing folder may be written to, and what a resumed run continues with.

Rules. A folder holding another kind of run is refused; a new run refuses a folder that
already holds its resume state (``--resume`` continues it), and ``--resume`` needs that state.
A resumed run continues with its own config (plus the overrides given) and its own images:
``--train``/``--val`` may be repeated but must name the same folders. Every file is written
atomically (a temporary file renamed into place), so a killed run leaves the previous
version, never half a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional, Sequence

from deconas import config as config_mod
from deconas.data.datasets import expand_sources
from deconas.errors import UserError
from deconas.runtime import atomic_write_text, check_writable, parse_json

# What each kind of run writes (other modules use these names, never their own strings).
CONFIG = "config.yaml"  # the config as run (every default filled in; a resume rewrites it)
METRICS = "metrics.jsonl"  # one record per epoch
SEARCH_STATE = "checkpoint.pt"  # search: supernet, controller, optimizers, random streams
SEARCH_DATA = "data.json"  # search: the images it used (absolute paths) and its validation names
BEST = "best.json"  # derive: the chosen genotype
CANDIDATES = "candidates.csv"  # derive: every scored architecture
SEARCH_LOG = "search.log"  # search: one line per epoch, for a person
SEARCH_TB = "tb"  # search: TensorBoard events (when tensorboard is installed)
SEARCH_SUMMARY = "summary.md"  # derive: the report
SCATTER = "scatter.png"  # derive: PSNR against parameters of the samples
TRAIN_STATE = "state.pt"  # training: weights, optimizer, samplers, random streams
TRAIN_RECORD = "run.json"  # training: the network, its cost, its data and its --init
TRAIN_SUMMARY = "summary.json"  # training: written when the schedule has finished
TRAIN_LOG = "resume.log"  # training: one line per resume
BEST_WEIGHTS = "best.safetensors"  # training: best validation PSNR (or the last, without validation)
LAST_WEIGHTS = "last.safetensors"
CURVES = "curves.png"  # training: loss and validation PSNR
PIPELINE_TIMES = "times.json"  # pipeline: seconds per stage
PIPELINE_DATA = "data"  # pipeline: the images, as train/ and test/
PIPELINE_SPLIT = "split.json"  # pipeline: in data/, written last: which images went where
PIPELINE_SEARCH, PIPELINE_TRAIN = "search", "train"  # pipeline: the stages' run folders
PIPELINE_RESULTS = "results.json"  # pipeline: bicubic and the found network on each set
PIPELINE_SR = "sr"  # pipeline: the found network's outputs
PIPELINE_REPORT = "report.md"  # pipeline: the report
STUDY_PLAN = "plan.json"  # study: the architectures and their seeds
STUDY_ROW = "row.json"  # study: one trained architecture's results, in its own folder
STUDY_RESULT = "study.json"  # study: every row, the summary and the recipe
STUDY_TABLE = "study.csv"  # study: the rows as a table
STUDY_RANKING = "ranking.png"  # study: standalone against shared-weight PSNR
STUDY_MATCHED = "matched.png"  # study: searched against random, pair by pair
STUDY_ARCHS = "arch"  # study: one training folder per architecture, arch/<pair>-<group>/
STUDY_TRAIN_LOG = "train.log"  # study: in an architecture's folder, its training's lines
STUDY_SEARCHES = "searches"  # full study: one search run folder per (strategy, schedule)
STUDY_SHARED = "shared.json"  # full study: shared-weight PSNR of each architecture on each search
STUDY_FIDELITY = "fidelity.png"  # full study: standalone against shared-weight PSNR, per search
STUDY_PICKS = "picks.png"  # full study: the pool, its size trend and each strategy's picks
STUDY_LOG = "study.log"  # full study: one line per phase and per finished job


def default_path(prefix: str) -> Path:
    """``runs/PREFIX-YYYYmmdd-HHMMSS``: where a run goes without --out."""
    return Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def out_path(out: Optional[str], prefix: str, resume: bool) -> Path:
    """The run folder of a command: ``--out``, or a new ``runs/PREFIX-<time>``. ``--resume``
    needs ``--out``, and under torchrun every process must be told the same folder."""
    if resume and out is None:
        raise UserError("--resume needs --out DIR (the folder of the run to continue)")
    if out is None and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise UserError("under torchrun, give --out DIR (every process must write to the same run)")
    return Path(out) if out is not None else default_path(prefix)


def run_config(out: Path, resume: bool, config: str, overrides: Sequence[str]):
    """A new run's config is ``config`` (a preset or YAML file) with the overrides; a resumed
    run continues with its own ``config.yaml`` plus the overrides (e.g. a longer schedule)."""
    if resume and (Path(out) / CONFIG).is_file():
        return config_mod.apply_overrides(config_mod.load(str(Path(out) / CONFIG)), overrides)
    return config_mod.load(config, overrides)


def check_folders(*paths, what: str = "not a folder of images") -> None:
    """Every given folder exists (before any work starts); None entries are skipped."""
    for p in paths:
        if p is not None and not Path(p).is_dir():
            raise UserError(f"{p}: {what}")


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
    check_writable(out, option)
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
    if not resume and Path(out).is_dir() and not (Path(out) / CONFIG).is_file():
        # A new run writes only into a folder of its own (empty, or a run of its kind that stopped
        # before its first checkpoint: its config.yaml says so), never over files it did not create.
        theirs = sorted(p.name for p in Path(out).iterdir() if p.name not in (METRICS, STUDY_TRAIN_LOG))
        if theirs:
            raise UserError(f"--out {out}: holds files deconas did not write for this run ({', '.join(theirs[:3])}"
                            f"{', ...' if len(theirs) > 3 else ''}); pick an empty or new folder")
    return state


def write_config(out: Path, cfg) -> None:
    atomic_write_text(Path(out) / CONFIG, config_mod.dump(cfg))


# ----------------------------------------------------------------------------- the data record
# What a run trained and validated on (:func:`deconas.data.datasets.load_train_val`'s provenance:
# absolute folders, or "built-in", and the names of the validation images): a search keeps it
# in data.json, a training in run.json's "data".

def read_data_record(path: Path, key: Optional[str] = None) -> dict:
    """The data record in ``path`` (under ``key`` when it is one entry of the file), checked:
    missing or damaged is a one-line :class:`UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing; is this a run folder of deconas?")
    try:
        rec = parse_json(path.read_text())
        rec = rec[key] if key is not None else rec
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({type(e).__name__}); the file is damaged") from None
    except (KeyError, TypeError):
        raise UserError(f"{path}: damaged (no {key!r})") from None
    if not isinstance(rec, dict):
        raise UserError(f"{path}: damaged (not a JSON object)")
    missing = [k for k in ("train_dir", "val_dir", "val_images") if k not in rec]
    if missing:
        raise UserError(f"{path}: damaged (no {', '.join(missing)})")
    if not (rec["train_dir"] == "built-in" or isinstance(rec["train_dir"], list)):
        raise UserError(f"{path}: damaged (train_dir is {rec['train_dir']!r})")
    return rec


def resume_sources(rec: dict, train_dir, val_dir, where) -> tuple:
    """(train_dir, val_dir) a resumed run continues with: its own, from the data record.
    ``--train``/``--val`` may be given again but must name the same folders (in any order and
    from any working directory); anything else is refused in one line."""
    then = rec["train_dir"]
    if train_dir is not None:
        try:
            now = sorted(str(p.resolve()) for p in expand_sources(train_dir))
        except UserError:
            now = None
        if then == "built-in" or now != sorted(then):
            raise UserError(f"--resume: --train differs from the run's training images "
                            f"({'built-in' if then == 'built-in' else ', '.join(then)}, {where}); "
                            f"leave --train out to continue with them")
    if val_dir is not None and str(Path(val_dir).resolve()) != rec["val_dir"]:
        raise UserError(f"--resume: --val {val_dir} differs from the run's validation images "
                        f"({rec['val_dir'] or 'held out of the training images'}, {where}); leave --val out")
    return (None if then == "built-in" else then), rec["val_dir"]
