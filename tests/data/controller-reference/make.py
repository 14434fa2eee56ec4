"""The search's metrics as the version before the strategy seam wrote them (commit b659112),
for tests/test_strategies.py: the controller, strategy sampling, the moving-average baseline
and the params penalty must reproduce them. Made with:

    git worktree add /tmp/old b659112 && cd /tmp/old
    OMP_NUM_THREADS=1 PYTHONPATH=src python <this file> <this folder>
"""
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import deconas

torch.set_num_threads(1)
sys.path.insert(0, str(Path(deconas.__file__).resolve().parents[2] / "tests"))
from search_helpers import tiny_config, tiny_images  # noqa: E402

from deconas.search.loop import run_search  # noqa: E402

out = Path(sys.argv[1])
scratch = Path(tempfile.mkdtemp())
cfg = tiny_config(epochs=3, warmup_epochs=1)
run_search(cfg, tiny_images(scratch / "imgs", n=6, size=40), None, scratch / "run", progress=False)
shutil.copy(scratch / "run" / "metrics.jsonl", out / "metrics.jsonl")
shutil.rmtree(scratch)
