import os
from pathlib import Path

import pytest
import torch

# The suite shares 2 cores; one intra-op thread per test process keeps timings stable.
torch.set_num_threads(int(os.environ.get("DECONAS_TEST_THREADS", "1")))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):  # CI has the data: its absence is a failure, not a skip
            pytest.fail(f"shared data not found at {SHARED_DATA}")
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
