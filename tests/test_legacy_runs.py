"""Run folders written by the version before the layout move (tests/data/legacy-runs, made by
its make.py with that version) still resume, and reach what that version reached uninterrupted
(expected.json, same machine as the folders; here to a tolerance for another CPU's rounding)."""

import json
import shutil
from pathlib import Path

import pytest

from deconas.cli import main
from deconas.runtime import read_jsonl

LEGACY = Path(__file__).parent / "data" / "legacy-runs"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


@pytest.fixture
def legacy(tmp_path):
    """A copy of the legacy folders (a resume writes into them)."""
    for name in ("search", "study", "train"):
        shutil.copytree(LEGACY / name, tmp_path / name)
    return tmp_path


def test_a_search_folder_of_the_old_layout_resumes_to_the_uninterrupted_result(legacy):
    before = read_jsonl(legacy / "search" / "metrics.jsonl")
    assert main(["search", "--out", str(legacy / "search"), "--resume", "search.epochs=2"]) == 0
    recs = read_jsonl(legacy / "search" / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2] and recs[0] == before[0]
    want = EXPECTED["search_epoch_2"]
    assert recs[1]["greedy"] == want["greedy"]
    for k in ("child_loss", "val_psnr", "reward", "baseline", "entropy", "params_mean"):
        assert recs[1][k] == pytest.approx(want[k], rel=1e-4), k
    # ... and the resumed search still derives.
    assert main(["derive", str(legacy / "search"), "--samples", "3"]) == 0


def test_a_training_folder_of_the_old_layout_resumes_to_the_uninterrupted_result(legacy):
    assert main(["train", "--genotype", "7,6,4", "--out", str(legacy / "train"), "--resume", "train.steps=6"]) == 0
    got = json.loads((legacy / "train" / "summary.json").read_text())
    assert got["steps"] == 6
    assert got["last_val_psnr"] == pytest.approx(EXPECTED["train_steps_6"]["last_val_psnr"], abs=1e-3)


def test_a_study_folder_of_the_old_layout_resumes_and_finishes_only_what_was_missing(legacy):
    searched = legacy / "study" / "arch" / "00-searched"
    row_before = (searched / "row.json").read_text()
    assert main(["study", str(legacy / "search"), "--out", str(legacy / "study"), "--resume"]) == 0
    assert (searched / "row.json").read_text() == row_before  # finished: not trained again
    rows = {r["group"]: r for r in json.loads((legacy / "study" / "study.json").read_text())["rows"]}
    want = EXPECTED["study_random_row"]
    assert rows["random"]["genotype"] == want["genotype"]
    assert rows["random"]["standalone_psnr"] == pytest.approx(want["standalone_psnr"], abs=1e-3)
