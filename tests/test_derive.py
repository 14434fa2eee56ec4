"""derive: samples from the trained controller, scores them, writes the files."""

import csv
import json

import pytest
from PIL import Image

from deconas.cli import main
from deconas.search.derive import derive, pareto_front
from deconas.errors import UserError
from deconas.space.genotype import parse
from deconas.search.loop import run_search

from search_helpers import tiny_config, tiny_images


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("derive")
    run_search(tiny_config(), tiny_images(root / "imgs"), None, root / "run", progress=False)
    return root / "run"


def test_derive_writes_candidates_best_summary_and_scatter_plot(run_dir):
    res = derive(run_dir, samples=5, device="cpu", progress=False)
    rows = list(csv.DictReader(open(run_dir / "candidates.csv")))
    assert len(rows) == 5
    assert set(rows[0]) >= {"genotype", "params", "mult_adds", "val_psnr", "pareto"}
    best = json.loads((run_dir / "best.json").read_text())
    assert float(best["val_psnr"]) == pytest.approx(max(float(r["val_psnr"]) for r in rows), abs=1e-4)
    g = parse(best["genotype"])
    assert g.to_dict() == best["genotype_dict"] and best["scale"] == 2 and best["channels"] == 4
    assert any(r["pareto"] == "1" for r in rows)
    assert "| Best | PSNR |" in (run_dir / "summary.md").read_text()
    assert Image.open(run_dir / "scatter.png").size[0] > 100
    assert res["genotype"] == best["genotype"]


def test_derive_is_repeatable(run_dir):
    a = derive(run_dir, samples=3, device="cpu", progress=False)
    b = derive(run_dir, samples=3, device="cpu", progress=False)
    assert a["genotype"] == b["genotype"] and a["mean_psnr"] == b["mean_psnr"]


def test_cli_derive_prints_the_table(run_dir, capsys):
    assert main(["derive", str(run_dir), "--samples", "2"]) == 0
    assert "Mean" in capsys.readouterr().out


def test_derive_of_a_folder_without_a_search_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        derive(tmp_path, samples=2)


def test_pareto_front_keeps_the_best_psnr_for_each_size():
    params = [10, 20, 30, 20, 5]
    psnr = [30.0, 31.0, 30.5, 30.0, 29.0]
    assert pareto_front(params, psnr) == [True, True, False, False, True]


def test_score_turns_the_output_of_a_grey_image_grey_with_the_luma_weights():
    import numpy as np
    import torch

    from deconas.search.derive import score
    from deconas.infer.tiling import rgb_to_grey_uint8
    from deconas.metrics import psnr_y

    rng = np.random.default_rng(0)
    out = rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)  # unequal channels: mean != luma
    hr = rng.integers(0, 256, (12, 12)).astype(np.uint8)
    net = lambda lr, g: torch.from_numpy(out).permute(2, 0, 1)[None].float().div(255)
    got = score(net, None, [(torch.zeros(1, 3, 6, 6), hr)], 2)
    assert got == pytest.approx(psnr_y(rgb_to_grey_uint8(out), hr, 2), abs=1e-9)
    mean = np.round(out.astype(np.float64).mean(2)).astype(np.uint8)
    assert got != pytest.approx(psnr_y(mean, hr, 2), abs=1e-3)


def test_derive_names_a_missing_or_damaged_checkpoint_or_data_json(run_dir, tmp_path):
    import shutil

    import torch

    for name, damage in (("data.json", None), ("data.json", "{oops"), ("data.json", "[]"),
                         ("checkpoint.pt", None), ("checkpoint.pt", b"\x00" * 64), ("checkpoint.pt", {"epoch": 1})):
        run = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(run_dir, run)
        f = run / name
        if damage is None:
            f.unlink()
        elif isinstance(damage, str):
            f.write_text(damage)
        elif isinstance(damage, bytes):
            f.write_bytes(damage)
        else:
            torch.save(damage, f)
        with pytest.raises(UserError) as e:
            derive(run, samples=2, device="cpu", progress=False)
        assert name in str(e.value) and "\n" not in str(e.value)
