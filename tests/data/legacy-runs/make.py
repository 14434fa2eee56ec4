"""Run folders written by the version before the layout move, committed as tests/data/legacy-runs/:
a search (1 epoch, derived), a study on it (one of its two architectures left without its row, as
a killed study leaves it) and a training (4 of its steps); and in expected.json what the same
version gives when each runs on uninterrupted (2 epochs, the row, 6 steps). Made with commit c2ab827:

    git worktree add /tmp/old c2ab827 && cd /tmp/old
    OMP_NUM_THREADS=1 PYTHONPATH=src python <this file> /tmp/legacy-runs   # then drop the *.png
"""
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
import torch
torch.set_num_threads(1)
import deconas
sys.path.insert(0, str(Path(deconas.__file__).resolve().parents[2] / "tests"))
from search_helpers import tiny_config  # noqa: E402
from deconas import config
from deconas.search import run_search
from deconas.derive import derive
from deconas.study import run_study
from deconas.cli import main

out = Path(sys.argv[1]); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
cfg = tiny_config(epochs=1, warmup_epochs=0)
cfg = config.apply_overrides(cfg, ["search.lstm_size=8", "search.lstm_layers=1", "data.val_fraction=0.25"])
run_search(cfg, None, None, out / "search", progress=False)
derive(out / "search", samples=4, device="cpu", progress=False)
scfg = config.load("study-cpu", ["train.steps=4", "train.epoch_steps=2", "train.warmup_steps=0", "data.lr_patch=8",
                                 "data.batch=2", "study.noise_batches=2", "study.jobs=1", "study.param_tolerance=0.3"])
run_study(out / "search", scfg, out / "study", top=1, n_random=1, progress=False)
# The random architecture's training as a killed study leaves it: its state at step 2 of 4, no row.
arch = out / "study" / "arch" / "00-random"
expected = {"study_random_row": json.loads((arch / "row.json").read_text())}
for f in ("row.json", "summary.json"):
    (arch / f).unlink()
rc = main(["train", "--genotype", "7,6,4", "--out", str(out / "train"), "model.channels=4", "model.blocks=1",
           "data.lr_patch=8", "data.batch=2", "train.steps=4", "train.epoch_steps=2", "train.warmup_steps=0",
           "plot=false", "data.val_fraction=0.25", "train.schedule=step"])
assert rc == 0
# The same runs, uninterrupted, in a scratch folder: what a resume of the folders above must reach.
scratch = Path(tempfile.mkdtemp())
run_search(config.apply_overrides(cfg, ["search.epochs=2"]), None, None, scratch / "search", progress=False)
expected["search_epoch_2"] = json.loads((scratch / "search" / "metrics.jsonl").read_text().splitlines()[-1])
rc = main(["train", "--genotype", "7,6,4", "--out", str(scratch / "train"), "model.channels=4", "model.blocks=1",
           "data.lr_patch=8", "data.batch=2", "train.steps=6", "train.epoch_steps=2", "train.warmup_steps=0",
           "plot=false", "data.val_fraction=0.25", "train.schedule=step"])
assert rc == 0
expected["train_steps_6"] = json.loads((scratch / "train" / "summary.json").read_text())
(out / "expected.json").write_text(json.dumps(expected, indent=1))
shutil.rmtree(scratch)
