import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# The suite shares 2 cores; one intra-op thread per test process keeps timings stable.
torch.set_num_threads(int(os.environ.get("DECONAS_TEST_THREADS", "1")))

# ONNX graphs that upscale/eval cache go to a folder of this test session, never the user's
# cache (subprocesses inherit it); removed at exit.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="deconas-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):  # CI has the data: its absence is a failure, not a skip
            pytest.fail(f"shared data not found at {SHARED_DATA}")
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random x2 network (C=8, N=1) as a checkpoint file: for the CLI and file handling."""
    from search_helpers import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_x2.safetensors", seed=0)
