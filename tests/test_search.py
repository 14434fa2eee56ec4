"""The search loop: exact resume, the reward, warm-up, the run folder, the CLI's errors."""

import json

import pytest
import torch

from deconas.cli import main
from deconas.metrics import psnr_y
from deconas.runtime import torch_load
from deconas.search import psnr_y_batch, run_search

from search_helpers import tiny_config, tiny_images


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
    from deconas.search import build_controller

    cfg = tiny_config(epochs=2, warmup_epochs=2)
    run_search(cfg, images, None, tmp_path / "r", progress=False)
    seed_everything(cfg["seed"])
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


def test_cli_refuses_a_second_search_into_the_same_folder_and_a_resume_without_checkpoint(images, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["search", "--train", str(images), "--out", str(out), "--resume"]) == 2
    assert "no" in capsys.readouterr().err
    assert main(["search", "--train", str(images), "--out", str(out), "search.no_such_key=1"]) == 2


def test_cli_search_runs_a_tiny_config(images, tmp_path):
    import yaml

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_config(epochs=1)))
    assert main(["search", "--config", str(cfg_file), "--train", str(images), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "checkpoint.pt").is_file()


def test_resume_after_an_interruption_mid_epoch_continues_exactly(images, tmp_path, monkeypatch):
    from deconas import search as search_mod

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
    cfg["threads"] = 1
    run_search(cfg, images, None, tmp_path / "r", progress=False)
    assert torch.get_num_threads() == before
