"""The search loop: exact resume, the reward, warm-up, the run folder, the CLI's errors."""

import json

import pytest
import torch

from deconas.cli import main
from deconas.metrics import psnr_y
from deconas.runtime import torch_load
from deconas.search.loop import run_search
from deconas.search.reward import psnr_y_batch

from search_helpers import tiny_config, tiny_config_yaml, tiny_images


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return tiny_images(tmp_path_factory.mktemp("imgs"))


def _state(run):
    return torch_load(run / "checkpoint.pt")


def test_resume_after_stopping_gives_the_same_final_controller_and_child_weights(images, tmp_path):
    cfg = tiny_config(epochs=3, warmup_epochs=1)
    run_search(cfg, images, None, tmp_path / "straight", progress=False)
    first = tiny_config(epochs=2, warmup_epochs=1)  # "stopped" after epoch 2 ...
    run_search(first, images, None, tmp_path / "resumed", progress=False)
    run_search(cfg, images, None, tmp_path / "resumed", resume=True, progress=False)  # ... and continued
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "resumed")
    assert a["epoch"] == b["epoch"] == 3
    for part in ("controller", "supernet"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    assert a["baseline"] == b["baseline"]
    ra = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "elapsed")}
    assert [strip(r) for r in ra] == [strip(r) for r in rb]


def test_run_folder_holds_config_metrics_checkpoint_and_log(images, tmp_path):
    rec = run_search(tiny_config(), images, None, tmp_path / "r", progress=False)
    for f in ("config.yaml", "data.json", "metrics.jsonl", "checkpoint.pt", "search.log"):
        assert (tmp_path / "r" / f).is_file(), f
    recs = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    for key in ("child_loss", "val_psnr", "reward", "baseline", "entropy", "params_mean", "p_one"):
        assert recs[-1][key] is not None, key
    assert rec["epoch"] == 2
    assert len(recs[-1]["p_one"]) == 3 * 3  # M(M+1)/2 = 3 pairs x K = 3 decisions
    assert json.loads((tmp_path / "r" / "data.json").read_text())["val_images"]  # held out of --train


def test_reward_is_psnr_minus_cb_penalty_plus_entropy_bonus(images, tmp_path):
    cfg = tiny_config(alpha=2.0, entropy_weight=1e-2, epochs=1)
    rec = run_search(cfg, images, None, tmp_path / "r", progress=False)
    expect = rec["val_psnr"] - 2.0 * rec["controller_params_mean"] / rec["params_max"] + 1e-2 * rec["entropy"]
    assert rec["reward"] == pytest.approx(expect, abs=1e-9)


def test_warmup_epochs_leave_the_controller_untouched(images, tmp_path):
    from deconas.runtime import seed_everything
    from deconas.search.runs import build_controller

    cfg = tiny_config(epochs=2, warmup_epochs=2)
    run_search(cfg, images, None, tmp_path / "r", progress=False)
    seed_everything(cfg.seed)
    fresh = build_controller(cfg).state_dict()
    trained = _state(tmp_path / "r")["controller"]
    assert all(torch.equal(fresh[k], trained[k]) for k in fresh)
    rec = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["controller_trained"] is False


def test_feature_fusion_search_samples_lff_and_gff_bits(images, tmp_path):
    rec = run_search(tiny_config(ff=True, epochs=1), images, None, tmp_path / "r", progress=False)
    assert "|" in rec["greedy"]
    assert any(k.startswith("gff.") for k in rec["p_one"])


def test_batched_reward_psnr_matches_the_protocol_metric():
    torch.manual_seed(0)
    hr = torch.rand(3, 3, 20, 20)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    got = psnr_y_batch(sr, hr, border=2)
    to8 = lambda t: t.mul(255).round().byte().permute(1, 2, 0).numpy()
    for i in range(3):
        assert got[i].item() == pytest.approx(psnr_y(to8(sr[i]), to8(hr[i]), 2), abs=1e-6)


def _one_line_error(capsys) -> str:
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip() and not x.startswith("search x")]
    assert len(err) == 1, err
    return err[0]


def _tiny_cfg_file(tmp_path, **search):
    f = tmp_path / "tiny.yaml"
    f.write_text(tiny_config_yaml(**search))
    return str(f)


def test_cli_refuses_a_second_search_into_the_same_folder(images, tmp_path, capsys):
    out, cfg = tmp_path / "r", _tiny_cfg_file(tmp_path, epochs=1)
    assert main(["search", "--config", cfg, "--train", str(images), "--out", str(out)]) == 0
    assert (out / "checkpoint.pt").is_file()
    capsys.readouterr()
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["search", "--config", cfg, "--train", str(images), "--out", str(out)]) == 2
    assert "--resume" in _one_line_error(capsys)
    assert (out / "checkpoint.pt").read_bytes() == before  # the first search is untouched


def test_cli_refuses_a_resume_without_a_checkpoint(images, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["search", "--config", _tiny_cfg_file(tmp_path), "--train", str(images), "--out", str(out),
                 "--resume"]) == 2
    line = _one_line_error(capsys)
    assert "--resume" in line and "checkpoint.pt" in line
    assert not (out / "metrics.jsonl").exists()


def test_cli_under_torchrun_needs_an_explicit_out_folder(images, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # a default runs/search-<time> could differ between processes
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--config", _tiny_cfg_file(tmp_path), "--train", str(images)]) == 2
    assert "--out" in _one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_other_images_and_keeps_absolute_paths(images, tmp_path, capsys, monkeypatch):
    other = tiny_images(tmp_path / "other", seed=1)
    monkeypatch.chdir(images.parent)  # a relative --train ...
    out, cfg = tmp_path / "r", _tiny_cfg_file(tmp_path, epochs=1)
    assert main(["search", "--config", cfg, "--train", images.name, "--out", str(out)]) == 0
    prov = json.loads((out / "data.json").read_text())
    assert prov["train_dir"] == [str(images.resolve())]  # ... is stored absolute
    capsys.readouterr()
    for extra in (["--train", str(other)], ["--val", str(other)]):
        assert main(["search", "search.epochs=2", "--out", str(out), "--resume", *extra]) == 2
        line = _one_line_error(capsys)
        assert extra[0] in line and "differs" in line
    monkeypatch.chdir(tmp_path)  # another working directory: same images by an absolute path, or none given
    assert main(["search", "search.epochs=2", "--out", str(out), "--resume", "--train", str(images)]) == 0
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2


def test_a_damaged_checkpoint_or_data_json_is_a_one_line_error(images, tmp_path, capsys):
    out, cfg = tmp_path / "r", _tiny_cfg_file(tmp_path, epochs=1)
    run_search(tiny_config(epochs=1), images, None, out, progress=False)
    resume = ["search", "--config", cfg, "--out", str(out), "--resume", "search.epochs=2"]
    data = (out / "data.json").read_text()
    for content in (None, "{not json", json.dumps({"train_dir": "built-in"})):
        if content is None:
            (out / "data.json").unlink()
        else:
            (out / "data.json").write_text(content)
        assert main(resume) == 2
        assert "data.json" in _one_line_error(capsys)
    (out / "data.json").write_text(data)
    good = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(good[: len(good) // 2])
    assert main(resume) == 2
    assert "checkpoint.pt" in _one_line_error(capsys)
    torch.save({"epoch": 1}, out / "checkpoint.pt")
    assert main(resume) == 2
    assert "checkpoint.pt" in _one_line_error(capsys)


def test_the_checkpoint_is_written_before_the_metrics_record(images, tmp_path, monkeypatch):
    from deconas.search import loop as search_mod
    order = []
    real_save, real_write = search_mod.atomic_torch_save, search_mod.JsonlLog.write
    monkeypatch.setattr(search_mod, "atomic_torch_save", lambda *a, **k: (order.append("checkpoint"),
                                                                          real_save(*a, **k))[1])
    monkeypatch.setattr(search_mod.JsonlLog, "write", lambda self, rec: (order.append("metrics"),
                                                                         real_write(self, rec))[1])
    run_search(tiny_config(epochs=2), images, None, tmp_path / "r", progress=False)
    assert order == ["checkpoint", "metrics"] * 2


def _sampled_p_one_and_params(cfg, controller, n=40):
    from deconas.search.runs import build_supernet

    supernet = build_supernet(cfg)
    ops = [i for i, k in enumerate(controller.decision_names()) if not k.startswith(("lff.", "gff."))]
    torch.manual_seed(123)
    p, params = [], []
    with torch.no_grad():
        for _ in range(n):
            smp = controller.sample()
            p.append(smp.p_one[ops].mean().item())
            params.append(supernet.num_params(smp.genotype))
    return sum(p) / n, sum(params) / n


def test_reinforce_with_a_large_size_penalty_moves_the_controller_to_smaller_networks(images, tmp_path):
    """The sign of the policy gradient: with alpha = 50 the reward is dominated by -alpha *
    params / params_max, so a few trained epochs must lower P(bit = 1) of the op decisions and
    the size of the sampled networks (a flipped sign raises both)."""
    from deconas.runtime import seed_everything
    from deconas.search.runs import build_controller

    cfg = tiny_config(alpha=50.0, epochs=4, warmup_epochs=1, child_steps=1, controller_steps=10,
                      controller_lr=5e-2)
    run_search(cfg, images, None, tmp_path / "r", progress=False)
    seed_everything(cfg.seed)
    fresh = build_controller(cfg)  # the controller the search started from
    trained = build_controller(cfg)
    trained.load_state_dict(_state(tmp_path / "r")["controller"])
    p0, n0 = _sampled_p_one_and_params(cfg, fresh)
    p1, n1 = _sampled_p_one_and_params(cfg, trained)
    assert p1 < p0 - 0.03, (p0, p1)  # 0.50 -> 0.43 here; a flipped sign gives 0.71
    assert n1 < n0, (n0, n1)


def test_cli_search_runs_a_tiny_config(images, tmp_path):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(tiny_config_yaml(epochs=1))
    assert main(["search", "--config", str(cfg_file), "--train", str(images), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "checkpoint.pt").is_file()


def test_resume_after_an_interruption_mid_epoch_continues_exactly(images, tmp_path, monkeypatch):
    from deconas.search import loop as search_mod
    cfg = tiny_config(epochs=3, warmup_epochs=1)
    run_search(cfg, images, None, tmp_path / "straight", progress=False)
    original = search_mod.Search.run_epoch

    def crashing(self, bar=None):
        if self.epoch == 2:  # epoch 3 starts: draw some patches and random numbers, then "crash"
            self.train_sampler.sample()
            torch.rand(5)
            raise KeyboardInterrupt
        return original(self, bar)

    monkeypatch.setattr(search_mod.Search, "run_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, images, None, tmp_path / "crashed", progress=False)
    monkeypatch.setattr(search_mod.Search, "run_epoch", original)
    run_search(cfg, images, None, tmp_path / "crashed", resume=True, progress=False)
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "crashed")
    for part in ("controller", "supernet"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert len((tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()) == 3


def test_threads_setting_is_restored_after_the_search(images, tmp_path):
    before = torch.get_num_threads()
    cfg = tiny_config(epochs=1)
    cfg.threads = 1
    run_search(cfg, images, None, tmp_path / "r", progress=False)
    assert torch.get_num_threads() == before
