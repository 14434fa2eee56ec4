"""`deconas run`: the whole experiment into one folder, resumable stage by stage."""

import json
import shutil

import pytest

from deconas.cli import main

from search_helpers import tiny_images

TINY = [
    "test_fraction=0.25", "derive_samples=3",
    "search_overrides=[model.channels=4, model.blocks=1, model.nodes=2, data.lr_patch=8, data.batch=2, "
    "data.val_fraction=0.34, search.epochs=2, search.child_steps=2, search.controller_steps=2, "
    "search.warmup_epochs=1, search.val_patch=8, search.val_batch=2, search.derive_max_size=12, tensorboard=false]",
    "train_overrides=[model.channels=4, model.blocks=1, data.lr_patch=8, data.batch=4, data.val_fraction=0.34, "
    "train.steps=6, train.epoch_steps=3, plot=false]",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return tiny_images(tmp_path_factory.mktemp("imgs"), n=8)


def test_run_writes_every_stage_and_a_report(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--train", str(images), "--out", str(out), *TINY]) == 0
    split = json.loads((out / "data" / "split.json").read_text())
    assert len(split["test"]) == 2 and len(split["train"]) == 6
    assert not set(split["test"]) & set(split["train"])  # held-out images never reach search or training
    for f in ("search/best.json", "search/candidates.csv", "search/scatter.png", "train/best.safetensors",
              "results.json", "report.md"):
        assert (out / f).is_file(), f
    results = json.loads((out / "results.json").read_text())
    assert results["datasets"][0]["images"] == 2
    best = json.loads((out / "search" / "best.json").read_text())
    report = (out / "report.md").read_text()
    assert best["genotype"] in report and "Bicubic" in report
    assert "found network" in capsys.readouterr().out


def test_rerun_with_resume_skips_finished_stages(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--train", str(images), "--out", str(out), *TINY]) == 0
    stamp = (out / "train" / "best.safetensors").stat().st_mtime_ns
    times = json.loads((out / "times.json").read_text())
    (out / "report.md").unlink()
    (out / "results.json").unlink()
    assert main(["run", "--train", str(images), "--out", str(out), "--resume", *TINY]) == 0
    assert (out / "train" / "best.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((out / "times.json").read_text())["search"] == times["search"]
    assert (out / "report.md").is_file()


def test_finished_run_is_not_overwritten(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--train", str(images), "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["run", "--train", str(images), "--out", str(out), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err


def test_a_run_whose_data_split_was_interrupted_resumes(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--train", str(images), "--out", str(out), *TINY]) == 0
    # As a kill between the split's two moves leaves it: data/train in place, no test/, no split.json.
    (out / "data" / "split.json").unlink()
    shutil.rmtree(out / "data" / "test")
    assert main(["run", "--train", str(images), "--out", str(out), "--resume", *TINY]) == 0
    assert (out / "data" / "split.json").is_file() and any((out / "data" / "test").iterdir())


def test_a_resume_with_a_damaged_best_json_is_one_line_naming_it(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--train", str(images), "--out", str(out), *TINY]) == 0
    (out / "search" / "best.json").write_text('{"genotype": [7, 6, 4]}')  # read back as data, not trusted
    capsys.readouterr()
    assert main(["run", "--train", str(images), "--out", str(out), "--resume", *TINY]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert "Traceback" not in err and len(errors) == 1 and "best.json" in errors[0], err
