"""From-scratch training: the schedule, exact resume after SIGKILL, checkpoints, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from deconas import config
from deconas.checkpoint import load_model
from deconas.cli import main
from deconas.space.genotype import parse
from deconas.train import learning_rate, run_training

from search_helpers import tiny_images

TINY = ["model.channels=4", "model.blocks=1", "data.lr_patch=8", "data.batch=4", "data.val_fraction=0.34",
        "train.warmup_steps=0", "plot=false"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return tiny_images(tmp_path_factory.mktemp("imgs"))


def test_step_schedule_halves_every_lr_step():
    t = replace(config.load("train-paper").train, lr=1e-4, schedule="step", lr_step=200, lr_gamma=0.5, steps=1000,
                warmup_steps=0)
    assert [learning_rate(s, t) for s in (0, 199, 200, 399, 400)] == [1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5]


def test_cosine_schedule_runs_from_lr_to_floor_after_warmup():
    t = replace(config.load("train-paper").train, lr=1e-3, schedule="cosine", lr_min=1e-5, steps=100,
                warmup_steps=10)
    assert learning_rate(0, t) == pytest.approx(1e-4)
    assert learning_rate(9, t) == pytest.approx(1e-3)
    assert learning_rate(50, t) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert learning_rate(100, t) == pytest.approx(1e-5)


def _cmd(images, out, steps, extra=()):
    return [sys.executable, "-m", "deconas.cli", "train", "--genotype", "7,6,4", "--config", "train-cpu",
            "--train", str(images), "--out", str(out), *TINY, f"train.steps={steps}", "train.epoch_steps=5", *extra]


def _weights(path):
    return load_file(str(path))


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_weights_as_an_uninterrupted_run(images, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 400
    straight = tmp_path / "straight"
    subprocess.run(_cmd(images, straight, steps), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(images, killed, steps), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "state.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let it get a few epochs further, mid-epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    stopped_at = torch.load(killed / "state.pt", weights_only=True)["step"]
    assert 0 < stopped_at < steps

    r = subprocess.run(_cmd(images, killed, steps) + ["--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("last.safetensors", "best.safetensors"):
        a, b = _weights(straight / name), _weights(killed / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    la = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}
    assert [strip(r) for r in la] == [strip(r) for r in lb]


def test_training_writes_self_describing_checkpoints_and_learns(images, tmp_path):
    cfg = config.load("train-cpu", TINY + ["train.steps=60", "train.epoch_steps=20", "train.lr=3e-3",
                                            "model.channels=8"])
    summary = run_training(cfg, parse("7,6,4"), images, None, tmp_path, progress=False)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60]
    assert records[-1]["loss"] < records[0]["loss"]
    model, meta = load_model(tmp_path / "best.safetensors")
    assert str(meta["genotype"]) == "7,6,4" and meta["scale"] == 2 and meta["channels"] == 8
    assert summary["best_val_psnr"] == max(r["val_psnr"] for r in records)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "run.json").is_file()


def test_second_run_into_the_same_folder_is_refused(images, tmp_path, capsys):
    args = ["train", "--genotype", "7", "--train", str(images), "--out", str(tmp_path), *TINY,
            "train.steps=2", "train.epoch_steps=2"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]


@pytest.mark.parametrize("args, words", [
    (["--genotype", "7,6"], "genotype"),
    (["--genotype", "7", "train.stepz=3"], "unknown key"),
    (["--genotype", "7", "--config", "nope"], "preset"),
    (["--from", "/nonexistent/run"], "best.json"),
    (["--genotype", "7", "train.steps=abc"], "train.steps='abc': expected an integer"),
    (["--genotype", "7", "model.channels=-1"], "model.channels=-1"),
    (["--genotype", "7", "train.epoch_steps=0"], "train.epoch_steps=0"),
    (["--genotype", "7", "train.amp=fp8"], "one of none, bf16"),
    (["--genotype", "7|1|11", "model.blocks=3"], "model.blocks=2"),
])
def test_bad_arguments_are_one_line_errors(images, tmp_path, capsys, args, words):
    assert main(["train", *args, "--train", str(images), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def _torchrun(nproc, images, out, steps, extra=()):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m", "deconas.cli",
            "train", "--genotype", "7,6,4", "--train", str(images), "--out", str(out), *TINY,
            f"train.steps={steps}", "train.epoch_steps=5", *extra]


@pytest.mark.slow
def test_torchrun_data_parallel_trains_one_model_and_resumes_only_with_the_same_world_size(images, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    r = subprocess.run(_torchrun(2, images, out, 10), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-8000:]  # a rank's own error comes before torchrun's summary
    st = torch.load(out / "state.pt", weights_only=True)
    assert st["step"] == 10 and len(st["samplers"]) == 2
    assert st["samplers"][0] != st["samplers"][1]  # each process drew its own patches
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # one writer
    # A single process cannot continue what two started: the patch streams would not match.
    r = subprocess.run(_cmd(images, out, 20, ["--resume"]), env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "2 processes" in r.stderr
    r = subprocess.run(_torchrun(2, images, out, 20, ["--resume"]), env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 20


def test_resume_refuses_another_network_or_other_images(images, tmp_path, capsys):
    base = ["train", "--train", str(images), "--out", str(tmp_path), *TINY, "train.steps=4", "train.epoch_steps=2"]
    assert main([*base, "--genotype", "7,6,4"]) == 0
    capsys.readouterr()
    # Same tensor shapes, other wiring: conv reads (x_in, n0) in both, but sep reads x_in vs n0.
    assert main([*base, "--genotype", "7,4,6", "--resume", "train.steps=6"]) == 2
    assert "different network" in capsys.readouterr().err
    other = tiny_images(tmp_path.parent / "other_imgs", n=4, seed=3)
    args = ["train", "--train", str(other), "--out", str(tmp_path), *TINY, "train.steps=6", "train.epoch_steps=2"]
    assert main([*args, "--genotype", "7,6,4", "--resume"]) == 2
    assert "leave --train out" in capsys.readouterr().err
    # Without --train it continues on the images it started with.
    assert main(["train", "--out", str(tmp_path), "--genotype", "7,6,4", "--resume", "train.steps=6"]) == 0


def test_init_across_scales_loads_the_body_and_leaves_the_upsampler_fresh(images, tmp_path):
    cfg = lambda s: config.load("train-cpu", TINY + ["train.steps=3", "train.epoch_steps=3", f"scale={s}"])
    run_training(cfg(2), parse("7,6,4"), [images], out_dir=tmp_path / "x2", progress=False)
    x2 = _weights(tmp_path / "x2" / "best.safetensors")
    # lr=0: the x3 run's weights stay where --init put them, so they can be compared.
    c3 = cfg(3)
    c3.train.lr, c3.train.lr_min = 1e-12, 0.0
    run_training(c3, parse("7,6,4"), [images], out_dir=tmp_path / "x3", progress=False,
                 init=tmp_path / "x2" / "best.safetensors")
    x3 = _weights(tmp_path / "x3" / "best.safetensors")
    body = [k for k in x3 if not k.startswith("upsample.")]
    assert body and all(torch.allclose(x3[k], x2[k], atol=1e-9) for k in body)
    # The x3 upsampler (4 -> 9*4 channels) has no x2 counterpart: it keeps a fresh init.
    assert x3["upsample.0.weight"].shape != x2["upsample.0.weight"].shape
    # The fresh init is seeded like any run's: the same as a scratch x3 run's.
    run_training(c3, parse("7,6,4"), [images], out_dir=tmp_path / "scratch3", progress=False)
    scratch = _weights(tmp_path / "scratch3" / "best.safetensors")
    assert torch.allclose(x3["upsample.0.weight"], scratch["upsample.0.weight"], atol=1e-9)
    assert not torch.allclose(x3["sfe2.weight"], scratch["sfe2.weight"])
    # The chain is in the metadata: the x2 run, then the x3 run started from it.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "x3" / "best.safetensors"), "pt") as f:
        hist = json.loads(f.metadata()["history"])
    assert [h["scale"] for h in hist] == [2, 3] and hist[1]["init"] == "best.safetensors"
    assert hist[0]["steps"] == 3 and hist[1]["steps"] == 3


def test_init_from_another_genotype_or_width_is_one_line_and_exit_2(images, tmp_path, capsys):
    cfg = config.load("train-cpu", TINY + ["train.steps=3", "train.epoch_steps=3"])
    run_training(cfg, parse("7,6,4"), [images], out_dir=tmp_path / "a", progress=False)
    ck = str(tmp_path / "a" / "best.safetensors")
    base = ["train", "--config", "train-cpu", "--train", str(images), "--init", ck, *TINY, "train.steps=3"]
    assert main(base + ["--genotype", "7,6,5", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "genotype 7,6,4 (this run: 7,6,5)" in err
    assert main(base + ["--genotype", "7,6,4", "--out", str(tmp_path / "c"), "model.channels=5"]) == 2
    assert "channels 4 (this run: 5)" in capsys.readouterr().err
    assert not (tmp_path / "b" / "best.safetensors").exists() and not (tmp_path / "c" / "best.safetensors").exists()


def test_init_pretrained_x2_starts_another_scale_from_the_shipped_x2_body(images, tmp_path, capsys):
    # 'pretrained' at x3 would pick the shipped x3 itself; 'pretrained-x2' names the x2 body.
    paper = ["--genotype", "7,6,4,3,0,2,2,3,4,1", "--config", "train-cpu", "scale=3", "model.channels=32",
             "model.blocks=4", "data.lr_patch=8", "data.batch=1", "data.val_fraction=0.34", "train.steps=1",
             "train.epoch_steps=1", "plot=false", "--train", str(images)]
    assert main(["train", *paper, "--init", "pretrained-x2", "--out", str(tmp_path / "a")]) == 0
    rec = json.loads((tmp_path / "a" / "run.json").read_text())["init"]
    assert rec["checkpoint"].endswith("deconas_x2.safetensors") and rec["scale"] == 2
    assert rec["fresh"] == ["upsample.0.weight", "upsample.0.bias"]
    capsys.readouterr()
    assert main(["train", *paper, "--init", "pretrained-x5", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pretrained-x5" in err and "pretrained-x2" in err
    assert not (tmp_path / "b").exists()


def test_split_seed_keeps_one_validation_set_across_training_seeds(images, tmp_path):
    """data.split_seed: two training seeds, one held-out split; without it the seed picks the split."""
    def val_names(out, *extra):
        assert main(["train", "--genotype", "7,6,4", "--train", str(images), "--out", str(out), *TINY,
                     "train.steps=2", "train.epoch_steps=2", "data.val_fraction=0.5", *extra]) == 0
        return json.loads((out / "run.json").read_text())["data"]["val_images"]
    fixed = [val_names(tmp_path / f"s{s}", f"seed={s}", "data.split_seed=7") for s in (0, 1)]
    free = [val_names(tmp_path / f"f{s}", f"seed={s}") for s in (0, 1, 2, 3)]
    assert fixed[0] == fixed[1]
    assert len({tuple(v) for v in free}) > 1  # the check has teeth: seeds alone move the split
