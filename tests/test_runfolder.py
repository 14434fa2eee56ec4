"""Run folders: what a resumed run continues with, and where a run goes."""

import json

import pytest

from deconas.errors import UserError
from deconas.runfolder import out_path, read_data_record, resume_sources, run_config

from search_helpers import tiny_images


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return tiny_images(root / "a", n=2), tiny_images(root / "b", n=2, seed=1)


def _record(train, val=None):
    return {"train_dir": "built-in" if train == "built-in" else [str(p.resolve()) for p in train],
            "val_dir": None if val is None else str(val.resolve()), "val_images": ["x"]}


def test_resume_continues_with_the_runs_own_folders_given_again_in_any_order(two_folders, monkeypatch):
    a, b = two_folders
    rec = _record([a, b], val=b)
    assert resume_sources(rec, None, None, "run.json") == (rec["train_dir"], rec["val_dir"])
    monkeypatch.chdir(a.parent)  # relative names of the same folders are the same images
    assert resume_sources(rec, [b.name, a.name], b.name, "run.json") == (rec["train_dir"], rec["val_dir"])


@pytest.mark.parametrize("given", ["train-other", "train-missing", "val-other", "train-on-builtin"])
def test_resume_refuses_other_images_in_one_line_naming_the_option(two_folders, tmp_path, given):
    a, b = two_folders
    rec = _record("built-in") if given == "train-on-builtin" else _record([a])
    train, val = {"train-other": ([b], None), "train-missing": ([tmp_path / "nowhere"], None),
                  "val-other": (None, b), "train-on-builtin": ([a], None)}[given]
    with pytest.raises(UserError, match="--train differs" if train else "--val .* differs") as e:
        resume_sources(rec, train, val, "run.json")
    assert "\n" not in str(e.value) and "run.json" in str(e.value)


def test_a_damaged_data_record_is_one_line_naming_the_file(tmp_path):
    p = tmp_path / "run.json"
    for text, why in (("{not json", "unreadable"), (json.dumps({"genotype": "7,6,4"}), "no 'data'"),
                      (json.dumps({"data": {"train_dir": 3, "val_dir": None, "val_images": []}}), "train_dir"),
                      (json.dumps({"data": {"train_dir": "built-in"}}), "no val_dir, val_images")):
        p.write_text(text)
        with pytest.raises(UserError, match=why) as e:
            read_data_record(p, "data")
        assert str(p) in str(e.value)
    p.write_text(json.dumps({"data": _record("built-in")}))
    assert read_data_record(p, "data")["train_dir"] == "built-in"


def test_out_path_needs_out_to_resume_and_under_torchrun(monkeypatch):
    with pytest.raises(UserError, match="--resume needs --out"):
        out_path(None, "train", resume=True)
    assert out_path(None, "train", resume=False).parent.name == "runs"
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="under torchrun"):
        out_path(None, "search", resume=False)
    assert str(out_path("r", "search", resume=True)) == "r"


def test_a_resumed_run_takes_its_own_config_plus_the_overrides(tmp_path):
    from deconas import config
    (tmp_path / "config.yaml").write_text(config.dump(config.load("train-cpu", ["train.steps=7", "seed=3"])))
    cfg = run_config(tmp_path, True, "search-paper", ["train.steps=9"])  # --config is not the run's: ignored
    assert (cfg.train.steps, cfg.seed, cfg.model) == (9, 3, config.load("train-cpu").model)
    assert run_config(tmp_path, False, "search-paper", []) == config.load("search-paper")
