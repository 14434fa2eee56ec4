"""Hostile and careless input, run through the CLI: a correct result, or one line on stderr,
exit code 2, no traceback, no user file changed, and no memory spent on it first."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from deconas.cli import main

from search_helpers import tiny_images

TINY = ["model.channels=4", "model.blocks=1", "data.lr_patch=8", "data.batch=4", "data.val_fraction=0.34",
        "train.warmup_steps=0", "plot=false", "train.steps=2", "train.epoch_steps=2"]


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def photo(path, h=20, w=24, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


# 1. upscale never writes onto its inputs, and skips what it has already written.

@pytest.mark.slow
def test_upscale_into_its_input_folder_changes_no_file_and_does_not_upscale_results_again(tmp_path, ckpt):
    photo(tmp_path / "foo.png", seed=0)
    photo(tmp_path / "foo_x2.png", seed=1)  # the user's own file, named like a result
    before = digest(tmp_path)
    assert main(["upscale", str(tmp_path), "-o", str(tmp_path), "--checkpoint", str(ckpt)]) == 0
    assert main(["upscale", str(tmp_path), "-o", str(tmp_path), "--checkpoint", str(ckpt), "--overwrite"]) == 0
    assert digest(tmp_path) == before  # no file replaced, no foo_x2_x2.png


def test_existing_outputs_are_skipped_unless_overwrite_is_given(tmp_path, ckpt, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir(), out.mkdir()
    photo(src / "a.png"), photo(src / "b.png", seed=2)
    (out / "a_x2.png").write_bytes(b"mine")
    assert main(["upscale", str(src), "-o", str(out), "--checkpoint", str(ckpt)]) == 0
    assert (out / "a_x2.png").read_bytes() == b"mine" and (out / "b_x2.png").is_file()
    assert "1 skipped" in capsys.readouterr().out
    assert main(["upscale", str(src), "-o", str(out), "--checkpoint", str(ckpt), "--overwrite"]) == 0
    assert Image.open(out / "a_x2.png").size == (48, 40)


# 2. A checkpoint is checked against its header before anything is allocated.

def _crafted(path, meta, tensors=None):
    base = {"format": "deconas-net-1", "genotype": "7,6,4,3,0,2,2,3,4,1", "scale": "2", "channels": "32",
            "blocks": "4"}
    save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata={**base, **meta})
    return path


@pytest.mark.slow
@pytest.mark.parametrize("meta,says", [
    ({"channels": "20000", "blocks": "64"}, "channels=20000"),
    ({"blocks": "100000"}, "blocks=100000"),
    ({"scale": "8"}, "scale 8"),
    ({"genotype": "1," * 20000 + "1"}, "damaged metadata"),
    ({}, "tensor sfe1.weight is missing"),
])
def test_a_crafted_checkpoint_is_refused_in_one_line_before_memory_is_spent(tmp_path, meta, says, capsys):
    bad = _crafted(tmp_path / "bad.safetensors", meta)
    photo(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(bad)]) == 2
    one_line_error(capsys, says)
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_with_a_wrong_tensor_shape_names_that_tensor(tmp_path, ckpt, capsys):
    from safetensors.torch import load_file
    from safetensors import safe_open

    t = load_file(str(ckpt))
    t["tail.weight"] = torch.zeros(3, 8, 5, 5)
    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata()
    save_file(t, str(tmp_path / "bad.safetensors"), metadata=meta)
    assert main(["eval", "--checkpoint", str(tmp_path / "bad.safetensors"), "--benchmark", str(tmp_path)]) == 2
    one_line_error(capsys, "tensor tail.weight is F32 [3, 8, 5, 5], expected F32 [3, 8, 3, 3]")


# 3. A huge image is refused from its header, naming --max-pixels.

def test_a_small_file_of_a_huge_image_is_refused_naming_max_pixels(tmp_path, ckpt, capsys):
    Image.new("L", (12000, 12000)).save(tmp_path / "bomb.png")  # 144 Mpx in about 140 KB
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    assert main(["upscale", str(tmp_path / "bomb.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt)]) == 2
    one_line_error(capsys, "bomb.png", "144.0 Mpx", "--max-pixels")
    photo(tmp_path / "small.png", 30, 40)
    assert main(["upscale", str(tmp_path / "small.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt),
                 "--max-pixels", "1000"]) == 2
    one_line_error(capsys, "--max-pixels")


# 4-5. Configs: cycles, wrong types, typos, sizes that cannot fit, a bad --out.

@pytest.mark.parametrize("text,says", [
    ("base: SELF\n", "cycle"),
    ("base: 42\n", "base: 42"),
    ("base: train-cpu\nmodel: {chanels: 8}\n", "did you mean 'model.channels'"),
    ("base: train-cpu\ntrian: {steps: 3}\n", "did you mean 'train'"),
    ("base: train-cpu\nmodel: 5\n", "section 'model'"),
    ("base: train-cpu\ndata: {batch: 100000}\n", "data.batch=100000"),
    ("base: train-cpu\ndata: {batch: 2000, lr_patch: 1000}\n", "GiB"),
])
def test_bad_config_files_are_one_line_before_any_work(tmp_path, text, says, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text.replace("SELF", str(cfg)))
    assert main(["train", "--genotype", "7,6,4", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, says)
    assert not (tmp_path / "r").exists()


def test_search_with_absurd_nodes_is_one_line(tmp_path, capsys):
    assert main(["search", "--out", str(tmp_path / "s"), "model.nodes=99"]) == 2
    one_line_error(capsys, "model.nodes=99")


def test_out_is_checked_before_data_is_loaded(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--genotype", "7,6,4", "--out", str(tmp_path / "file")]) == 2
    one_line_error(capsys, "a file is in the way")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "checkpoint.pt").write_bytes(b"")
    assert main(["train", "--genotype", "7,6,4", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "holds a search")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_is_refused_before_data_is_loaded(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["train", "--genotype", "7,6,4", "--out", str(ro / "run")]) == 2
        one_line_error(capsys, "cannot write")
    finally:
        ro.chmod(0o755)


# 6. The minor ones.

def test_resume_removes_temporary_files_of_a_killed_writer_and_results_are_ordinary_files(tmp_path):
    imgs = tiny_images(tmp_path / "imgs")
    out = tmp_path / "run"
    base = ["train", "--genotype", "7,6,4", "--train", str(imgs), "--out", str(out), *TINY]
    assert main(base) == 0
    (out / ".state.pt.abc123.tmp").write_bytes(b"half")
    assert main(base + ["--resume", "train.steps=4"]) == 0
    assert not list(out.glob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert modes["best.safetensors"] == modes["last.safetensors"] == modes["config.yaml"] == 0o666 & ~umask


def test_an_animated_gif_says_that_only_its_first_frame_is_used(tmp_path, ckpt, caplog):
    frames = [Image.new("RGB", (16, 12), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert main(["upscale", str(tmp_path / "anim.gif"), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt)]) == 0
    assert any("3 frames; only the first is used" in r.getMessage() for r in caplog.records)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_an_unsafe_resume_state_is_refused_without_pointing_at_the_unsafe_loader(tmp_path, capsys):
    imgs = tiny_images(tmp_path / "imgs")
    out = tmp_path / "run"
    base = ["train", "--genotype", "7,6,4", "--train", str(imgs), "--out", str(out), *TINY]
    assert main(base) == 0
    torch.save({"model": Payload()}, out / "state.pt")
    capsys.readouterr()
    assert main(base + ["--resume"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()[-1]  # after the "training ..." banner
    assert "refused" in err and "Traceback" not in captured.err
    assert "weights_only" not in err and "this must never run" not in captured.out


@pytest.mark.slow
def test_crafted_checkpoint_stays_within_a_memory_limit(tmp_path):
    """Under `ulimit -v` of 3 GB the 188-byte checkpoint asking for C=20000, N=64 is one line."""
    bad = _crafted(tmp_path / "bad.safetensors", {"channels": "20000", "blocks": "64"})
    photo(tmp_path / "a.png")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from deconas.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"),
                        "--checkpoint", str(bad)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.fixture
def nan_ckpt(tmp_path):
    """A checkpoint whose weights hold NaN (what a diverged training leaves)."""
    from deconas.checkpoint import save_model
    from deconas.space.genotype import parse
    from deconas.space.network import DeCoNASNet

    net = DeCoNASNet(parse("7,6,4"), 2, 8, 1)
    with torch.no_grad():
        net.tail.weight[0, 0, 1, 1] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_model(path, net)
    return path


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_upscale_with_a_nan_network_is_refused_naming_the_checkpoint_and_writes_nothing(nan_ckpt, tmp_path, capsys,
                                                                                        backend):
    src = tmp_path / "in"
    src.mkdir()
    photo(src / "a.png")
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--checkpoint", str(nan_ckpt), "--backend", backend]) == 2
    one_line_error(capsys, str(nan_ckpt), "NaN")
    assert not out.exists() or not any(out.iterdir())


def test_eval_with_a_nan_network_is_refused_naming_the_checkpoint(nan_ckpt, tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    photo(bench / "a.png", 40, 48)
    assert main(["eval", "--checkpoint", str(nan_ckpt), "--benchmark", str(bench), "--backend", "torch"]) == 2
    one_line_error(capsys, str(nan_ckpt), "NaN")


def test_a_training_that_diverges_stops_in_one_line_and_keeps_its_last_checkpoint(tmp_path, capsys):
    images = tiny_images(tmp_path / "imgs", n=4, size=40)
    out = tmp_path / "t"
    args = ["train", "--genotype", "7,6,4", "--train", str(images), "--out", str(out), "model.channels=4",
            "model.blocks=1", "data.lr_patch=8", "data.batch=2", "train.epoch_steps=2", "train.warmup_steps=0",
            "plot=false", "train.schedule=step"]
    assert main(args + ["train.steps=2"]) == 0
    capsys.readouterr()
    before = (out / "state.pt").read_bytes()
    assert main(["train", "--genotype", "7,6,4", "--out", str(out), "--resume", "train.steps=6", "train.lr=1e30"]) == 2
    err = capsys.readouterr().err  # the banner and the progress bar, then the error
    errors = [ln for ln in err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert "Traceback" not in err and len(errors) == 1 and "diverged" in errors[0] and "train.lr" in errors[0], err
    assert (out / "state.pt").read_bytes() == before  # nothing written from the NaN weights


@pytest.mark.parametrize("device", ["meta", "xla", "cuda:99"])
def test_a_device_deconas_does_not_run_on_is_one_line(tmp_path, capsys, device):
    src = photo(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--device", device]) == 2
    one_line_error(capsys, f"--device {device}")


@pytest.mark.parametrize("threads", ["100000", "0"])
def test_an_absurd_thread_count_is_one_line_before_any_runtime_starts(tmp_path, capsys, threads):
    src = photo(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--threads", threads]) == 2
    one_line_error(capsys, f"--threads {threads}")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_output_quietly():
    # `true` reads nothing and exits: every line deconas prints goes to a closed pipe.
    r = subprocess.run(f"{sys.executable} -m deconas.cli arch 7,6,4,3,0,2,2,3,4,1 | true", shell=True,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


TINY_TRAIN = ["model.channels=4", "model.blocks=1", "data.lr_patch=8", "data.batch=2", "train.epoch_steps=2",
              "train.warmup_steps=0", "train.steps=2", "plot=false"]


def test_train_into_a_folder_of_the_users_files_is_refused_and_changes_nothing(tmp_path, capsys):
    images = tiny_images(tmp_path / "imgs", n=4, size=40)
    (images / "curves.png").write_bytes(b"the user's own plot")
    before = digest(images)
    assert main(["train", "--genotype", "7,6,4", "--train", str(images), "--out", str(images), *TINY_TRAIN]) == 2
    one_line_error(capsys, "--out", "did not write")
    assert digest(images) == before


def test_a_full_disk_during_training_is_one_line_and_a_rerun_starts_clean(tmp_path, capsys, monkeypatch):
    images = tiny_images(tmp_path / "imgs", n=4, size=40)
    out = tmp_path / "t"

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: file write failed")
    monkeypatch.setattr(torch, "save", full)  # what torch says when the disk is full
    assert main(["train", "--genotype", "7,6,4", "--train", str(images), "--out", str(out), *TINY_TRAIN]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert "Traceback" not in err and len(errors) == 1 and "state.pt" in errors[0], err
    assert not (out / "state.pt").exists()
    monkeypatch.undo()
    assert main(["train", "--genotype", "7,6,4", "--train", str(images), "--out", str(out), *TINY_TRAIN]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [2]  # no line of the failed run is left


@pytest.mark.parametrize("content", ["[1, 2]", '"7,6,4"', "{}", '{"genotype": "7,6,4", "scale": "x"}', "{no"])
def test_train_from_a_damaged_best_json_is_one_line(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.json").write_text(content)
    images = tiny_images(tmp_path / "imgs", n=4, size=40)
    assert main(["train", "--from", str(run), "--train", str(images), "--out", str(tmp_path / "t"), *TINY_TRAIN]) == 2
    one_line_error(capsys, "best.json")


def test_val_naming_a_folder_with_no_usable_image_is_refused(tmp_path, capsys):
    images = tiny_images(tmp_path / "imgs", n=4, size=40)
    small = tmp_path / "small"
    small.mkdir()
    photo(small / "a.png", 1, 1)  # smaller than the scale: no LR image can be made of it
    assert main(["train", "--genotype", "7,6,4", "--train", str(images), "--val", str(small),
                 "--out", str(tmp_path / "t"), *TINY_TRAIN]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("deconas train: error: --val"), err


@pytest.fixture(scope="module")
def derived_search(tmp_path_factory):
    from deconas.search.derive import derive
    from deconas.search.loop import run_search
    from search_helpers import tiny_config

    root = tmp_path_factory.mktemp("derived")
    run_search(tiny_config(epochs=1, warmup_epochs=0), tiny_images(root / "imgs", n=6, size=40), None,
               root / "run", progress=False)
    derive(root / "run", samples=3, device="cpu", progress=False)
    return root / "run"


def test_a_candidates_csv_with_a_short_row_is_one_line(derived_search, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(derived_search, run)
    lines = (run / "candidates.csv").read_text().splitlines()
    (run / "candidates.csv").write_text("\n".join(lines[:2] + [lines[2].split(",")[0]]) + "\n")
    assert main(["study", str(run), "--out", str(tmp_path / "study")]) == 2
    one_line_error(capsys, "candidates.csv", "damaged")


def test_a_resumed_search_does_not_keep_the_previous_derive_as_current(derived_search, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(derived_search, run)
    assert (run / "best.json").is_file()
    assert main(["search", "--out", str(run), "--resume", "search.epochs=2"]) == 0
    assert not (run / "best.json").exists() and not (run / "candidates.csv").exists()
    assert main(["derive", str(run), "--samples", "2"]) == 0 and (run / "best.json").is_file()


def test_upscale_removes_the_temporaries_a_killed_run_left_for_its_outputs_and_no_others(tmp_path, ckpt):
    src = tmp_path / "in"
    src.mkdir()
    photo(src / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a_x2.png.k3j2h1g0.tmp"  # what atomic_write leaves when killed mid-write
    stale.write_bytes(b"half")
    other = out / ".notes.txt.abc.tmp"  # not one of this command's outputs: left alone
    other.write_bytes(b"the user's")
    assert main(["upscale", str(src), "-o", str(out), "--checkpoint", str(ckpt), "--backend", "torch"]) == 0
    assert not stale.exists() and other.read_bytes() == b"the user's" and (out / "a_x2.png").is_file()


def test_one_over_long_output_name_is_skipped_and_the_folder_job_goes_on(tmp_path, ckpt, capsys, caplog):
    src = tmp_path / "in"
    src.mkdir()
    photo(src / "a.png")
    photo(src / ("b" * 245 + ".png"))  # a valid name; with "_x2" and the temporary's suffix it is not
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--checkpoint", str(ckpt), "--backend", "torch"]) == 1
    got = capsys.readouterr()
    assert "Traceback" not in got.err and any("too long" in r.getMessage() for r in caplog.records)
    assert (out / "a_x2.png").is_file() and "1 failed" in got.out


def test_eval_never_saves_onto_the_images_it_measures(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    for i in range(2):
        photo(bench / f"im{i}.png", 40, 48, seed=i)
    before = digest(bench)
    # --save-images DIR puts DIR/<set>/<stem>.png: with DIR the benchmark's parent, that is the input itself
    assert main(["eval", "--bicubic", "--scale", "2", "--benchmark", str(bench), "--save-images", str(tmp_path)]) == 2
    one_line_error(capsys, "--save-images", "being evaluated")
    assert digest(bench) == before


def test_eval_refuses_two_images_saved_under_one_name_and_an_existing_file(tmp_path, capsys):
    bench = tmp_path / "bird"
    bench.mkdir()
    photo(bench / "bird.png", 40, 48)
    Image.fromarray(np.asarray(Image.open(bench / "bird.png"))).save(bench / "bird.jpg")
    out = tmp_path / "sr"
    assert main(["eval", "--bicubic", "--scale", "2", "--benchmark", str(bench), "--save-images", str(out)]) == 2
    one_line_error(capsys, "bird.png", "bird.jpg")
    (bench / "bird.jpg").unlink()
    assert main(["eval", "--bicubic", "--scale", "2", "--benchmark", str(bench), "--save-images", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", "--bicubic", "--scale", "2", "--benchmark", str(bench), "--save-images", str(out)]) == 2
    one_line_error(capsys, "exists", "--overwrite")
    assert main(["eval", "--bicubic", "--scale", "2", "--benchmark", str(bench), "--save-images", str(out),
                 "--overwrite"]) == 0


@pytest.mark.parametrize("damage", ["a dict of something else", "a list", "tensors of another shape"])
def test_train_resume_from_a_damaged_state_is_one_line(tmp_path, capsys, damage):
    images = tiny_images(tmp_path / "imgs", n=4, size=40)
    out = tmp_path / "t"
    assert main(["train", "--genotype", "7,6,4", "--train", str(images), "--out", str(out), *TINY_TRAIN]) == 0
    capsys.readouterr()
    st = torch.load(out / "state.pt", weights_only=True)
    if damage == "a dict of something else":
        st = {"a": 1}
    elif damage == "a list":
        st = [1, 2, 3]
    else:
        st["model"] = {k: torch.zeros(3) for k in st["model"]}
    torch.save(st, out / "state.pt")
    assert main(["train", "--genotype", "7,6,4", "--out", str(out), "--resume", "train.steps=4"]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert "Traceback" not in err and len(errors) == 1 and "state.pt" in errors[0], err


@pytest.mark.parametrize("args, words", [
    (["--size", "4"], "--size 4"),
    (["--threads", "100000"], "--threads 100000"),
    (["--repeats", "1"], "--repeats 1"),
    (["--device", "meta"], "--device meta"),
])
def test_profile_refusals_are_one_line_and_write_nothing(tmp_path, capsys, args, words):
    out = tmp_path / "lat.json"
    assert main(["profile", "--out", str(out), *args]) == 2
    one_line_error(capsys, words)
    assert not out.exists()


def test_profile_never_replaces_a_file_without_overwrite(tmp_path, capsys):
    out = tmp_path / "lat.json"
    out.write_text("the user's")
    assert main(["profile", "--out", str(out), "--size", "8", "--repeats", "3"]) == 2
    one_line_error(capsys, "exists", "--overwrite")
    assert out.read_text() == "the user's"
    assert main(["profile", "--out", str(tmp_path / "lat.txt")]) == 2
    one_line_error(capsys, ".json")


@pytest.mark.parametrize("table, words", [
    (None, "latency_table"),                      # the latency penalty without a table
    ("missing", "no such file"),
    ("{not json", "not JSON"),
    ("[" * 200_000, "not JSON"),                  # nested past the parser's recursion: no RecursionError
    ('{"format": "deconas-latency-1"}', "not a deconas latency table"),
])
def test_a_search_with_a_missing_or_damaged_latency_table_is_one_line(tmp_path, capsys, table, words):
    args = ["search", "--out", str(tmp_path / "s"), "search.penalty=latency", "search.epochs=1"]
    if table == "missing":
        args.append(f"search.latency_table={tmp_path / 'nope.json'}")
    elif table is not None:
        (tmp_path / "t.json").write_text(table)
        args.append(f"search.latency_table={tmp_path / 't.json'}")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and words in err[-1], err
    assert not (tmp_path / "s" / "checkpoint.pt").exists()


def test_a_latency_table_of_another_network_size_is_refused(tmp_path, capsys):
    from deconas.space.latency import FORMAT

    table = {"format": FORMAT, "fixed": 1.0, "node": 0.1, "op": {k: [0.1] * 4 for k in ("conv", "sep", "dil")},
             "lff": [0.1] * 5, "gff": [0.1] * 4, "concat": [0.0] * 5, "mean": [0.0] * 3,
             "channels": 32, "blocks": 3, "scale": 2}  # measured for C=32; the cpu space is C=16
    (tmp_path / "t.json").write_text(json.dumps(table))
    assert main(["search", "--out", str(tmp_path / "s"), "search.penalty=latency",
                 f"search.latency_table={tmp_path / 't.json'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "C=32" in err[-1] and "C=16" in err[-1], err


def _non_images(folder):
    """What ends up in photo folders: a text file renamed .png, random bytes named .jpg."""
    (folder / "notes.png").write_text("shopping list\nmilk\n")
    (folder / "noise.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return ["notes.png", "noise.jpg"]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_non_image_files_in_a_folder_are_named_and_the_others_are_written(tmp_path, ckpt, capsys, caplog, backend):
    src = tmp_path / "in"
    src.mkdir()
    photo(src / "a.png"), photo(src / "b.png", seed=3)
    bad = _non_images(src)
    out = tmp_path / "out"
    # exit 1: the documented code of a folder job in which some files failed (docs/upscale.md)
    assert main(["upscale", str(src), "-o", str(out), "--checkpoint", str(ckpt), "--backend", backend]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped) == 2 and all(any(b in m for m in skipped) for b in bad), skipped
    assert "upscaled 2 of 4 images; 2 failed" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["notes.png", "noise.jpg"])
def test_a_single_file_that_is_not_an_image_is_one_line_exit_2_and_writes_nothing(tmp_path, ckpt, capsys, name):
    _non_images(tmp_path)
    out = tmp_path / "out"
    assert main(["upscale", str(tmp_path / name), "-o", str(out), "--checkpoint", str(ckpt)]) == 2
    one_line_error(capsys, name, "not an image")
    assert not out.exists()


@pytest.mark.slow
def test_non_image_files_through_the_real_cli_never_give_a_traceback(tmp_path, ckpt):
    src = tmp_path / "in"
    src.mkdir()
    photo(src / "a.png")
    bad = _non_images(src)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "deconas.cli", "upscale"]
    r = subprocess.run(cli + [str(src), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt)],
                       capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("upscale: ")]  # the progress line
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(lines) == 2, r.stderr
    assert all(any(b in ln for ln in lines) for b in bad) and (tmp_path / "out" / "a_x2.png").is_file()
    r = subprocess.run(cli + [str(src / "notes.png"), "-o", str(tmp_path / "o2"), "--checkpoint", str(ckpt)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "notes.png" in r.stderr, r.stderr


@pytest.mark.parametrize("damage", ["a NaN weight", "weights whose output overflows"])
def test_export_of_a_network_with_nan_or_inf_is_refused_naming_the_checkpoint_and_writes_nothing(tmp_path, capsys,
                                                                                                damage):
    from deconas.checkpoint import save_model
    from deconas.space.genotype import parse
    from deconas.space.network import DeCoNASNet

    net = DeCoNASNet(parse("7,6,4"), 2, 8, 1)
    with torch.no_grad():
        if damage == "a NaN weight":
            net.tail.weight[0, 0, 1, 1] = float("nan")
        else:  # every weight finite, but 3e38 times a pixel is past float32's 3.4e38
            net.sfe1.weight.mul_(3e38)
    ck = tmp_path / "bad.safetensors"
    save_model(ck, net)
    out = tmp_path / "bad.onnx"
    assert main(["export", "--checkpoint", str(ck), "-o", str(out)]) == 2
    one_line_error(capsys, str(ck), "NaN or inf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]  # no graph, no temporary


def _damage_search_state(run, part):
    st = torch.load(run / "checkpoint.pt", weights_only=True)
    if part == "controller":
        st["controller"]["op_w"].fill_(float("nan"))
    elif part == "one operation":  # only the architectures that use it give NaN
        st["supernet"]["dnbs.0.nodes.0.ops.2.conv.weight"].fill_(float("nan"))
    else:
        st["supernet"]["sfe1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(st, run / "checkpoint.pt")


@pytest.mark.parametrize("part", ["the first convolution", "one operation", "controller"])
def test_derive_of_a_search_whose_weights_hold_nan_is_one_line_naming_the_state_and_writes_nothing(
        derived_search, tmp_path, capsys, part):
    run = tmp_path / "run"
    shutil.copytree(derived_search, run)
    _damage_search_state(run, part)
    before = digest(run)
    assert main(["derive", str(run), "--samples", "8"]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert "Traceback" not in err and len(errors) == 1, err
    assert str(run / "checkpoint.pt") in errors[0] and "NaN or inf" in errors[0], errors
    assert digest(run) == before  # no candidates.csv of nan (or black-image) scores


# Guarantees of the README's promises section that had no test of their own.

@pytest.mark.parametrize("command", ["search", "run", "run --resume", "study"])
def test_a_run_of_any_kind_refuses_an_out_holding_the_users_files(derived_search, tmp_path, capsys, command):
    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)  # named like a run's own folder, as a user's may be
    (mine / "data" / "photo.png").write_bytes(b"the user's")
    (mine / "notes.txt").write_text("the user's")
    before = digest(mine)
    argv = {"search": ["search", "--out", str(mine), "search.epochs=1"],
            "run": ["run", "--out", str(mine)], "run --resume": ["run", "--out", str(mine), "--resume"],
            "study": ["study", str(derived_search), "--out", str(mine)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert "Traceback" not in err and len(errors) == 1 and str(mine) in errors[0], err
    assert digest(mine) == before and sorted(p.name for p in mine.iterdir()) == ["data", "notes.txt"]
    assert digest(mine / "data") == {"photo.png": hashlib.sha256(b"the user's").hexdigest()}


def test_a_search_that_diverges_stops_in_one_line_and_keeps_its_last_checkpoint(derived_search, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(derived_search, run)
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["search", "--out", str(run), "--resume", "search.epochs=2", "search.lr=1e30"]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert "Traceback" not in err and len(errors) == 1 and "diverged" in errors[0], err
    assert (run / "checkpoint.pt").read_bytes() == before


def test_a_config_that_asks_to_run_python_is_refused_and_runs_nothing(tmp_path, capsys):
    flag = tmp_path / "ran"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'seed: !!python/object/apply:os.system ["touch {flag}"]\n')
    assert main(["train", "--genotype", "7,6,4", "--config", str(cfg), "--out", str(tmp_path / "t")]) == 2
    one_line_error(capsys, "c.yaml")
    assert not flag.exists() and not (tmp_path / "t").exists()


def test_an_image_that_trips_pillows_bomb_check_is_the_max_pixels_error(tmp_path, ckpt, capsys, monkeypatch):
    from deconas.infer import upscale as upscale_mod

    Image.new("L", (12000, 12000)).save(tmp_path / "bomb.png")  # 144 Mpx, above Pillow's own limit
    monkeypatch.setattr(upscale_mod, "image_pixels", lambda path: 0)  # as for a header deconas cannot read
    assert main(["upscale", str(tmp_path / "bomb.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt)]) == 2
    one_line_error(capsys, "bomb.png", "--max-pixels")
    assert not (tmp_path / "o").exists()


def test_export_never_writes_onto_its_own_checkpoint(tmp_path, ckpt, capsys):
    own = tmp_path / "net.onnx"  # a safetensors checkpoint that happens to end in .onnx
    own.write_bytes(ckpt.read_bytes())
    assert main(["export", "--checkpoint", str(own), "-o", str(own), "--overwrite"]) == 2
    one_line_error(capsys, "checkpoint itself")
    assert own.read_bytes() == ckpt.read_bytes()


def test_eval_refuses_a_saved_image_name_too_long_before_any_image_is_evaluated(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    photo(bench / "a.png", 40, 48)
    photo(bench / ("b" * 245 + ".png"), 40, 48)  # a valid name; its temporary's is not
    out = tmp_path / "sr"
    assert main(["eval", "--bicubic", "--scale", "2", "--benchmark", str(bench), "--save-images", str(out)]) == 2
    one_line_error(capsys, "--save-images", "too long")
    assert not out.exists()  # a.png (first by name) was not saved either


def test_arch_writes_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["arch", "7,6,4,3,0,2,2,3,4,1"]) == 0
    assert main(["arch", "7,6,4", "--json"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_profile_writes_a_table_that_a_latency_search_accepts(tmp_path, capsys):
    from deconas import config
    from deconas.search.runs import read_latency_table

    out = tmp_path / "lat.json"
    space = ["model.channels=4", "model.blocks=1", "model.nodes=2"]
    assert main(["profile", "--out", str(out), "--size", "8", "--repeats", "3", *space]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["lat.json"]  # no temporary left
    cfg = config.load("cpu", space + ["search.penalty=latency", f"search.latency_table={out}"])
    table = read_latency_table(cfg)
    assert (table["channels"], table["blocks"], table["nodes"]) == (4, 1, 2)
