"""study: searched against matched random architectures, trained standalone, ranked."""

import json
import subprocess
from dataclasses import replace
import sys

import numpy as np
import pytest
import torch

from deconas import config
from deconas.cli import main
from deconas.errors import UserError
from deconas.space.complexity import count_params
from deconas.search.derive import derive
from deconas.space.genotype import parse
from deconas.infer.inference import upscale_array
from deconas.metrics import psnr_y
from deconas.runfolder import SEARCH_STATE as CHECKPOINT
from deconas.search.loop import run_search
from deconas.search.runs import build_supernet, reload_val_pairs
from deconas.search.stats import kendall_tau
from deconas.search.study import (dense_genotype, matched_random, run_study, size_matched_random, summarize,
                                  uniform_genotype)

from search_helpers import tiny_config, tiny_images
from test_stats import _tau_by_hand


def tiny_study_config(**study):
    cfg = config.load("study-cpu", ["train.steps=6", "train.epoch_steps=3", "train.warmup_steps=0",
                                    "data.lr_patch=8", "data.batch=2", "study.noise_batches=3", "study.jobs=1",
                                    "study.param_tolerance=0.2"])
    return replace(cfg, study=replace(cfg.study, **study))


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    run_search(tiny_config(), tiny_images(root / "imgs", n=6, size=48), None, root / "run", progress=False)
    derive(root / "run", samples=6, device="cpu", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def study(search_run):
    doc = run_study(search_run, tiny_study_config(), search_run / "study", top=2, n_random=2, progress=False)
    return search_run / "study", doc


def test_uniform_architectures_set_every_op_bit_half_the_time():
    rng = np.random.default_rng(1)
    bits = np.array([[int(b) for b in uniform_genotype(4, rng).bits().split()] for _ in range(2000)])
    assert bits.shape == (2000, 30)
    # 2000 fair coins per bit: 4.5 sigma is 0.05.
    assert np.all(np.abs(bits.mean(0) - 0.5) < 0.05)


def test_matched_random_architectures_are_within_the_tolerance():
    rng = np.random.default_rng(2)
    params = lambda g: count_params(g, 2, 16, 3)  # noqa: E731
    for target in (40_000, 60_000, 90_000):
        g, draws = matched_random(target, params, 4, rng, 0.1)
        assert abs(params(g) - target) <= 0.1 * target and draws >= 1


def test_dense_architectures_set_every_op_bit_with_the_density_given():
    rng = np.random.default_rng(3)
    for q in (0.1, 0.5, 0.8):
        bits = np.array([[int(b) for b in dense_genotype(4, q, rng).bits().split()] for _ in range(2000)])
        # 2000 coins per bit: 4.5 sigma is at most 0.05
        assert np.all(np.abs(bits.mean(0) - q) < 0.05)


def test_size_matched_random_reaches_sizes_no_uniform_draw_does():
    params = lambda g: count_params(g, 2, 16, 3)  # noqa: E731
    rng = np.random.default_rng(4)
    smallest = min(params(uniform_genotype(4, rng)) for _ in range(3000))
    for target in (smallest // 2, int(smallest * 0.7), 120_000):
        g, q, draws = size_matched_random(target, params, 4, rng, 0.1)
        assert abs(params(g) - target) <= 0.1 * target
        assert (q < 0.5) == (target < 98_000)  # sparser coins below the uniform median (98k), denser above
    # the same stream draws the same partner; an excluded one is not drawn again
    a = size_matched_random(30_000, params, 4, np.random.default_rng(5), 0.1)[0]
    assert size_matched_random(30_000, params, 4, np.random.default_rng(5), 0.1)[0] == a
    assert size_matched_random(30_000, params, 4, np.random.default_rng(5), 0.1, exclude={a})[0] != a


def test_study_trains_searched_and_matched_random_architectures(study, search_run):
    out, doc = study
    rows = doc["rows"]
    assert [r["group"] for r in rows] == ["searched", "searched", "random", "random"]
    plan = json.loads((out / "plan.json").read_text())
    # Searched = the best two of the candidates by shared-weight PSNR.
    ranked = sorted(plan["candidate_shared_psnr"].items(), key=lambda kv: -kv[1])
    assert [r["genotype"] for r in rows[:2]] == [g for g, _ in ranked[:2]]
    cfg = config.load(str(search_run / "config.yaml"))
    import csv

    derived = {r["genotype"] for r in csv.DictReader(open(search_run / "candidates.csv"))}
    for r in rows:
        g = parse(r["genotype"])
        net_params = sum(p.numel() for p in __import__("deconas.space.network", fromlist=["x"]).DeCoNASNet(
            g, scale=2, channels=cfg.model.channels, blocks=cfg.model.blocks).parameters())
        assert r["params"] == net_params
        assert np.isfinite(r["standalone_psnr"]) and r["standalone_psnr"] > 5 and r["steps"] == 6
        assert (out / "arch" / f"{r['pair']:02d}-{r['group']}" / "last.safetensors").is_file()
    for r in rows[2:]:  # matched to its partner, same seed, not an architecture the search sampled
        partner = rows[r["pair"]]
        assert abs(r["params"] - partner["params"]) <= 0.2 * partner["params"]
        assert r["seed"] == partner["seed"]
        assert r["genotype"] not in derived
    for f in ("study.json", "study.csv", "ranking.png", "matched.png", "config.yaml"):
        assert (out / f).is_file()
    on_disk = json.loads((out / "study.json").read_text())
    assert on_disk["summary"]["kendall_tau"] == pytest.approx(
        _tau_by_hand([r["shared_psnr"] for r in rows], [r["standalone_psnr"] for r in rows]), abs=1e-12)
    s = summarize(rows)
    assert s["searched"]["mean_psnr"] == pytest.approx(np.mean([r["standalone_psnr"] for r in rows[:2]]))
    assert s["random"]["best_psnr"] == max(r["standalone_psnr"] for r in rows[2:])
    n = on_disk["reward_noise"]
    assert n["within_std_db"] > 0 and n["batches"] == 3 and 0 <= n["pair_order_agreement"] <= 1


def test_shared_psnr_is_the_extracted_networks_psnr(study, search_run):
    """The shared-weight score against a second route: the standalone network copied out of the
    supernet, run through the inference path of deconas eval."""
    _, doc = study
    cfg = config.load(str(search_run / "config.yaml"))
    sn = build_supernet(cfg)
    sn.load_state_dict(torch.load(search_run / CHECKPOINT, weights_only=True)["supernet"])
    val = reload_val_pairs(search_run)
    for r in doc["rows"][::3]:
        net = sn.extract_standalone(parse(r["genotype"])).eval()
        ref = np.mean([psnr_y(upscale_array(net, lr), hr, 2) for _, hr, lr in val])
        assert r["shared_psnr"] == pytest.approx(ref, abs=1e-3)


def test_study_resume_retrains_only_what_is_missing(study, search_run):
    import shutil

    out, doc = study
    keep = out / "arch" / "00-searched" / "row.json"
    before = keep.stat().st_mtime_ns
    shutil.rmtree(out / "arch" / "01-random")
    again = run_study(search_run, tiny_study_config(), out, resume=True, progress=False)
    assert keep.stat().st_mtime_ns == before
    assert [r["genotype"] for r in again["rows"]] == [r["genotype"] for r in doc["rows"]]
    # Deterministic training: the retrained architecture lands on the same PSNR.
    assert again["rows"][3]["standalone_psnr"] == pytest.approx(doc["rows"][3]["standalone_psnr"], abs=1e-9)


def test_study_resume_keeps_its_recipe_and_refuses_another_in_one_line(study, search_run, capsys):
    out, doc = study
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    assert main(["study", str(search_run), "--out", str(out), "--resume", "train.steps=7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.steps=7" in err[0] and "train.steps=6" in err[0], err
    with pytest.raises(UserError, match="data.lr_patch"):
        run_study(search_run, replace(tiny_study_config(), data=replace(tiny_study_config().data, lr_patch=9)),
                  out, resume=True, progress=False)
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()) == before  # nothing touched
    # How it runs may change: a resume on one process finds every architecture done.
    again = run_study(search_run, tiny_study_config(jobs=1, threads=2), out, resume=True, progress=False)
    assert [r["standalone_psnr"] for r in again["rows"]] == pytest.approx(
        [r["standalone_psnr"] for r in doc["rows"]], abs=1e-9)


@pytest.mark.slow
def test_study_in_two_processes_gives_the_same_rows(study, search_run, tmp_path):
    _, doc = study
    two = run_study(search_run, tiny_study_config(jobs=2), tmp_path / "s2", top=2, n_random=2, progress=False)
    assert [r["standalone_psnr"] for r in two["rows"]] == pytest.approx([r["standalone_psnr"] for r in doc["rows"]],
                                                                        abs=1e-9)


def test_study_cli_refusals_are_one_line(search_run, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.yaml", CHECKPOINT, "data.json"):
        (bare / f).write_bytes((search_run / f).read_bytes())
    assert main(["study", str(bare)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "candidates.csv" in err[0] and "deconas derive" in err[0]
    assert main(["study", str(search_run / "study")]) == 2  # not a search run
    assert "deconas search" in capsys.readouterr().err
    assert main(["study", str(search_run), "--out", str(search_run / "study")]) == 2  # a study is there
    assert "--resume" in capsys.readouterr().err
    assert main(["study", str(search_run), "study.top=0"]) == 2
    assert "study.top" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_study_leaves_no_training_behind(search_run, tmp_path):
    """SIGKILL the study while its workers train: the workers end too (they would otherwise go on
    writing into the folders that a --resume trains in)."""
    import os
    import signal
    import time

    script = tmp_path / "long_study.py"
    script.write_text(
        "import sys\n"
        "if __name__ == '__main__':  # the spawned workers import this file too\n"
        "    sys.path.insert(0, sys.argv[1])\n"
        "    from test_study import tiny_study_config\n"
        "    from deconas.search.study import run_study\n"
        "    cfg = tiny_study_config(jobs=2)\n"
        "    cfg.train.steps = cfg.train.epoch_steps = 100000  # still training when the study dies\n"
        "    run_study(sys.argv[2], cfg, sys.argv[3], top=2, n_random=0, progress=False)\n")
    proc = subprocess.Popen([sys.executable, str(script), os.path.dirname(__file__), str(search_run),
                             str(tmp_path / "s")])
    def workers():
        return subprocess.run(["pgrep", "-f", "multiprocessing.spawn", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    deadline = time.time() + 300  # planning first: slow on a busy machine
    while time.time() < deadline and proc.poll() is None and not (
            len(list((tmp_path / "s").glob("arch/*/run.json"))) == 2 and len(workers()) == 2):
        time.sleep(0.5)
    kids = workers()
    assert len(kids) == 2, "the study is not training two architectures at once"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    def running(pid):
        try:
            return "State:\tZ" not in open(f"/proc/{pid}/status").read()  # a zombie has ended
        except OSError:
            return False
    deadline = time.time() + 20
    alive = kids
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [k for k in alive if running(k)]
    assert not alive
