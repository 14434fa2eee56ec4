"""The full study (deconas study --train): the pool, the searches per schedule and strategy,
the picks, the rows and the figures, each against a second route."""

import csv
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from deconas import config
from deconas.checkpoint import load_model
from deconas.cli import main
from deconas.constants import STUDY_STRATEGIES
from deconas.errors import UserError
from deconas.infer.inference import upscale_array
from deconas.metrics import psnr_y
from deconas.search.evidence import (defaults_rule, format_summary, recipe, recipe_changes, run_full_study,
                                     search_config,
                                     stratified_pool)
from deconas.search.runs import build_supernet, read_checkpoint, reload_val_pairs
from deconas.search.study import uniform_genotype
from deconas.space.complexity import count_params
from deconas.space.genotype import parse
from deconas.space.network import DeCoNASNet

from search_helpers import tiny_config_yaml, tiny_images
from test_stats import _tau_by_hand

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}  # Student t, printed tables

STRATEGIES = ["controller", "controller-loo", "random", "evolution"]


def tiny_full_config(root, *extra):
    (root / "search.yaml").write_text(tiny_config_yaml(controller_steps=4))
    return config.load("study-cpu", ["train.steps=4", "train.epoch_steps=2", "train.warmup_steps=0",
                                     "data.lr_patch=8", "data.batch=2", "study.pool=4", "study.top=2",
                                     "study.seeds=2", "study.jobs=1", "study.bootstrap=200",
                                     f"search_config={root / 'search.yaml'}",
                                     f"study.strategies=[{','.join(STRATEGIES)}]", "study.schedules=[strategy,uniform]",
                                     "study.param_tolerance=0.9", "study.loo_samples=2", *extra])


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    imgs = tiny_images(root / "imgs", n=6, size=48)
    cfg = tiny_full_config(root)
    doc = run_full_study(cfg, [str(imgs)], None, root / "study", progress=False)
    return root, imgs, cfg, doc


def _by_slug(out):
    return {p.parent.name: p for p in (out / "arch").glob("*/row.json")}


def test_the_pool_spans_the_sizes_and_is_still_a_uniform_sample():
    params = lambda g: count_params(g, 2, 16, 3)  # noqa: E731
    pools = [stratified_pool(10, 4, params, np.random.default_rng(s), reference=4000) for s in range(50)]
    rng = np.random.default_rng(1000)
    sizes = [params(uniform_genotype(4, rng)) for _ in range(4000)]
    lo, hi = np.percentile(sizes, [12, 88])  # the bottom and top tenth, with room for the bands' estimate
    for pool in pools:
        p = [params(g) for g in pool]
        assert len(set(pool)) == 10 and p == sorted(p)  # one per band, bands in size order
        assert p[0] <= lo and p[-1] >= hi
    # Equal-probability bands, one draw each: every op bit is still a fair coin over the pools.
    bits = np.array([[int(b) for b in g.bits().split()] for pool in pools for g in pool])
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.1) and abs(bits.mean() - 0.5) < 0.02


def test_every_strategy_searches_with_the_same_budget():
    cfg = config.load("study-cpu")
    budgets = set()
    for s in STUDY_STRATEGIES:
        for sched in ("strategy", "uniform", "fair"):
            c = search_config(cfg, s, sched).search
            assert c.supernet_sampling == sched
            budgets.add((c.epochs * c.child_steps, c.epochs * c.controller_steps * c.samples_per_step))
    assert len(budgets) == 1
    loo = search_config(cfg, "controller-loo", "fair").search
    assert loo.reward_baseline == "leave_one_out" and loo.samples_per_step == cfg.study.loo_samples
    with pytest.raises(UserError, match="study.loo_samples=3"):
        search_config(config.apply_overrides(cfg, ["study.loo_samples=3"]), "controller-loo", "uniform")


def test_the_study_writes_a_row_per_architecture_seed_and_group(full):
    root, _, cfg, doc = full
    out = root / "study"
    rows, st = doc["rows"], cfg.study
    assert len(doc["pool"]) == 4 and set(doc["picks"]) == set(STRATEGIES)
    partners = set(doc["partners"].values())
    assert len(rows) == 4 * st.pool_seeds + sum(len(v) * st.seeds for v in doc["picks"].values()) \
        + len(partners) * st.seeds
    assert {r["group"] for r in rows} == {"pool", "matched", *STRATEGIES}
    m = doc["search_config"]["model"]
    for r in rows:
        net = DeCoNASNet(parse(r["genotype"]), scale=2, channels=m["channels"], blocks=m["blocks"])
        assert r["params"] == sum(p.numel() for p in net.parameters())
        assert np.isfinite(r["standalone_psnr"]) and set(r["shared_psnr"]) == set(doc["searches"])
    # The searches: one per schedule for the controller, one per strategy on the best schedule.
    best = doc["best_schedule"]
    assert set(doc["searches"]) == {"controller-strategy", "controller-uniform"} | {f"{s}-{best}" for s in STRATEGIES}
    with open(out / "study.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and float(table[0]["standalone_psnr"]) == pytest.approx(rows[0]["standalone_psnr"])
    for f in ("study.json", "fidelity.png", "picks.png", "plan.json", "config.yaml", "shared.json"):
        assert (out / f).is_file()
    assert (out / "study.log").read_text().strip().splitlines()[-1].endswith("done")


def test_picks_train_round_robin_over_strategies_and_every_first_seed_before_a_second(full):
    """A study stopped half-way has picks of every strategy, each with one seed, rather than all
    of the first strategy's picks with both: the order the log shows the trainings in."""
    root, _, cfg, doc = full
    log = (root / "study" / "study.log").read_text().splitlines()
    start = next(i for i, ln in enumerate(log) if ln.split("  ", 1)[1].startswith("picks:"))
    done = [(ln.split("trained ")[1].split(" seed ")[0], int(ln.split(" seed ")[1].split(":")[0]))
            for ln in log[start:] if "  trained " in ln]
    pooled = {(r["genotype"], r["seed"]) for r in doc["rows"] if r["group"] == "pool"}
    want = []
    for i in range(cfg.study.seeds):
        for rank in range(cfg.study.top):
            for s in STRATEGIES:
                pick = doc["picks"][s][rank]
                for job in ((pick, cfg.seed + i), (doc["partners"][pick], cfg.seed + i)):  # its partner next
                    if job not in want and job not in pooled:
                        want.append(job)
    assert done == want and len({g for g, _ in done}) > 1


def test_every_pick_has_a_size_matched_random_partner_and_the_summary_compares_them(full):
    root, _, cfg, doc = full
    st = cfg.study
    params = {r["genotype"]: r["params"] for r in doc["rows"]}
    picks = {g for gs in doc["picks"].values() for g in gs}
    assert set(doc["partners"]) == picks
    partners = list(doc["partners"].values())
    assert len(set(partners)) == len(partners)  # one each
    assert not set(partners) & (picks | set(doc["pool"]))  # none is a pick or in the pool
    for pick, partner in doc["partners"].items():
        assert abs(params[partner] - params[pick]) <= st.param_tolerance * params[pick]
    psnr = {}
    for r in doc["rows"]:
        psnr.setdefault((r["group"], r["genotype"]), set()).add((r["seed"], r["standalone_psnr"]))
    for s in STRATEGIES:  # pick minus partner, each the mean over its seeds, by hand
        diffs = [np.mean([v for _, v in psnr[s, g]]) - np.mean([v for _, v in psnr["matched", doc["partners"][g]]])
                 for g in doc["picks"][s]]
        m = doc["summary"]["strategies"][s]["size_matched_random"]
        assert m["n"] == len(diffs) and m["mean_db"] == pytest.approx(np.mean(diffs))
        assert m["wins"] == sum(d > 0 for d in diffs)
        se = np.std(diffs, ddof=1) / np.sqrt(len(diffs))
        half = T975[len(diffs) - 1] * se
        assert m["ci95"] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half], abs=1e-3 * se)
        assert m["z"] == pytest.approx(np.mean(diffs) / se)
    assert doc["summary"]["bound_partners_db"] == max(
        v["size_matched_random"]["ci95"][1] for v in doc["summary"]["strategies"].values())


def _verdict_case(z_by_strategy, missing=(), pairs=2):
    """``pairs`` picks per strategy, each with its own partner, two seeds; ``missing`` rows untrained."""
    plan = {"picks": {s: [f"{s}-{i}" for i in range(pairs)] for s in z_by_strategy}, "partners": {}}
    rows = []
    for s, gs in plan["picks"].items():
        for g in gs:
            plan["partners"][g] = f"partner-of-{g}"
            for k in range(2):
                for group, geno in ((s, g), ("matched", f"partner-of-{g}")):
                    psnr = None if (group, geno, k) in missing else 31.5
                    rows.append({"group": group, "genotype": geno, "seed": k, "standalone_psnr": psnr})
    strategies = {s: {"size_matched_random": {"z": z, "n": pairs}} for s, z in z_by_strategy.items()}
    return rows, plan, strategies


def _t3_cdf(t):
    """Student t with 3 degrees of freedom, in closed form."""
    u = t / math.sqrt(3)
    return 0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi


def test_the_defaults_rule_waits_for_both_seeds_of_every_pick_and_partner():
    rows, plan, strategies = _verdict_case({"controller": 0.1, "random": 30.0},
                                           missing={("matched", "partner-of-random-1", 1), ("random", "random-0", 0)})
    d = defaults_rule(rows, plan, 2, strategies, 0.07)
    assert (d["status"], d["strategy"], d["trainings"], d["missing"]) == ("pending", None, 16, 2)
    assert d["beats_chance"] == ["random"]  # shown, not acted on
    rows, plan, strategies = _verdict_case({"controller": 0.1, "random": 30.0})
    d = defaults_rule(rows, plan, 2, strategies, 0.07)
    assert (d["status"], d["strategy"], d["missing"]) == ("decided", "random", 0)


def test_the_defaults_rule_is_a_bonferroni_t_test_over_the_strategies_compared():
    # Four pairs: 3 degrees of freedom; 5% over four strategies = 0.625% in each tail.
    rows, plan, strategies = _verdict_case({s: 0.0 for s in STRATEGIES}, pairs=4)
    need = defaults_rule(rows, plan, 2, strategies, 0.05)["t_needed"]["random"]
    assert _t3_cdf(need) == pytest.approx(1 - 0.05 / 8, abs=1e-9)
    assert need > 5 > 2.5  # far above the normal z of 2.5: four pairs say little
    zs = {"controller": need - 0.01, "controller-loo": need, "random": need + 3, "evolution": None}
    rows, plan, strategies = _verdict_case(zs, pairs=4)
    d = defaults_rule(rows, plan, 2, strategies, 0.05)
    assert d["beats_chance"] == ["random", "controller-loo"] and d["strategy"] == "random"
    zs = {"controller": 2.4, "controller-loo": -1.0, "random": 3.0, "evolution": None}
    rows, plan, strategies = _verdict_case(zs, pairs=4)
    d = defaults_rule(rows, plan, 2, strategies, 0.05)
    assert (d["beats_chance"], d["strategy"], d["bound_partners_db"]) == ([], "controller", 0.05)
    rows, plan, strategies = _verdict_case({"random": 3.0, "evolution": 0.0}, pairs=4)  # two compared: 1.25% a tail
    assert _t3_cdf(defaults_rule(rows, plan, 2, strategies, 0.05)["t_needed"]["random"]) == pytest.approx(1 - 0.05 / 4)


def test_the_summary_states_the_defaults_rule_on_the_studys_own_rows(full):
    _, _, cfg, doc = full
    s = doc["summary"]
    zs = {n: x["size_matched_random"]["z"] for n, x in s["strategies"].items()}
    need = s["defaults"]["t_needed"]
    passing = [n for n, z in zs.items() if z is not None and need[n] is not None and z >= need[n]]
    want = max(passing, key=lambda n: zs[n]) if passing else "controller"
    assert (s["defaults"]["status"], s["defaults"]["strategy"]) == ("decided", want)  # every seed trained
    line = format_summary(doc).splitlines()[-1]
    assert line.startswith("defaults: ") and ("the cpu preset takes it" in line if passing else
                                              "keeps the controller" in line)


def test_standalone_psnr_is_the_trained_networks_psnr_on_the_searches_split(full):
    """A second route: the training's weights, run through deconas eval's inference path, on the
    validation images the searches held out."""
    root, _, _, doc = full
    out = root / "study"
    val = reload_val_pairs(out / "searches" / "controller-strategy")
    for r in doc["rows"][::3]:
        slug = f"{r['genotype'].replace(',', '-')}-s{r['seed']}"
        model, _ = load_model(out / "arch" / slug / "last.safetensors")
        ref = np.mean([psnr_y(upscale_array(model, lr), hr, 2) for _, hr, lr in val])
        assert r["standalone_psnr"] == pytest.approx(ref, abs=1e-6)


def test_shared_psnr_is_the_extracted_networks_psnr(full):
    root, _, _, doc = full
    run = root / "study" / "searches" / "controller-uniform"
    scfg = config.load(str(run / "config.yaml"))
    sn = build_supernet(scfg)
    sn.load_state_dict(read_checkpoint(run / "checkpoint.pt", keys=("supernet",))["supernet"])
    val = reload_val_pairs(run)
    for r in doc["rows"][::4]:
        net = sn.extract_standalone(parse(r["genotype"])).eval()
        ref = np.mean([psnr_y(upscale_array(net, lr), hr, 2) for _, hr, lr in val])
        assert r["shared_psnr"]["controller-uniform"] == pytest.approx(ref, abs=1e-3)


def test_picks_are_the_best_candidates_by_shared_weight_psnr(full):
    root, _, cfg, doc = full
    out = root / "study"
    shared = json.loads((out / "shared.json").read_text())
    for s, picks in doc["picks"].items():
        name = f"{s}-{doc['best_schedule']}"
        with open(out / "searches" / name / "candidates.csv", newline="") as f:
            cands = list(dict.fromkeys(r["genotype"] for r in sorted(csv.DictReader(f),
                                                                     key=lambda r: -float(r["val_psnr"]))))
        screened = cands[:cfg.study.screen * cfg.study.top]
        assert picks == sorted(screened, key=lambda g: -shared[name][g])[:cfg.study.top]


def test_the_summary_is_recomputed_from_the_rows(full):
    _, _, _, doc = full
    rows, s = doc["rows"], doc["summary"]
    pool = [r for r in rows if r["group"] == "pool"]
    for name, f in s["fidelity"].items():
        want = _tau_by_hand([r["shared_psnr"][name] for r in pool], [r["standalone_psnr"] for r in pool])
        assert f["tau"] == pytest.approx(want, abs=1e-12)
        assert f["ci95"][0] <= f["tau"] + 1e-12 and f["ci95"][1] >= f["tau"] - 1e-12
    b, a = np.polyfit(np.log([r["params"] for r in pool]), [r["standalone_psnr"] for r in pool], 1)
    for strat, v in s["strategies"].items():
        mine = {}
        for r in rows:
            if r["group"] == strat:
                mine.setdefault(r["genotype"], []).append(r)
        want = np.mean([np.mean([r["standalone_psnr"] for r in rs]) - a - b * np.log(rs[0]["params"])
                        for rs in mine.values()])
        assert v["gain_over_pool_fit"]["mean_db"] == pytest.approx(want, abs=1e-9)
    assert s["bound_db"] == max(v["gain_over_pool_fit"]["ci95"][1] for v in s["strategies"].values())
    # Pick and partner trainings, with two seeds each, are the ground truth's seed-noise sample.
    assert s["ground_truth"]["with_seeds"] == len({g for v in doc["picks"].values() for g in v}
                                                  | set(doc["partners"].values()))
    # Its two-way split, by hand for two seeds: the seed effect is |mean difference| / sqrt 2 and
    # the rest the std of the differences / sqrt 2.
    by = {}
    for r in rows:
        by.setdefault(r["genotype"], {})[r["seed"]] = r["standalone_psnr"]
    d = np.array([v[min(v)] - v[max(v)] for v in by.values() if len(v) == 2])
    tw = s["ground_truth"]["two_way"]
    assert (tw["architectures"], tw["seeds"]) == (len(d), 2)
    assert tw["seed_effect_std_db"] == pytest.approx(abs(d.mean()) / np.sqrt(2), abs=1e-12)
    assert tw["residual_std_db"] == pytest.approx(d.std(ddof=1) / np.sqrt(2), abs=1e-12)


def test_resume_redoes_only_what_is_missing_and_lands_on_the_same_rows(full):
    root, imgs, cfg, doc = full
    out = root / "study"
    rows = _by_slug(out)
    gone = sorted(rows)[0]
    keep = {k: p.stat().st_mtime_ns for k, p in rows.items() if k != gone}
    shutil.rmtree(out / "arch" / gone)
    shutil.rmtree(out / "searches" / f"random-{doc['best_schedule']}")
    plan = json.loads((out / "plan.json").read_text())
    plan["searches"][f"random-{doc['best_schedule']}"].pop("search_seconds")
    (out / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(UserError, match="--train .* differs"):
        run_full_study(cfg, [str(root)], None, out, resume=True, progress=False)
    again = run_full_study(cfg, None, None, out, resume=True, progress=False)  # its own images
    assert {k: p.stat().st_mtime_ns for k, p in _by_slug(out).items() if k != gone} == keep
    assert again["picks"] == doc["picks"]
    assert [r["standalone_psnr"] for r in again["rows"]] == pytest.approx([r["standalone_psnr"] for r in doc["rows"]],
                                                                          abs=1e-9)


def test_committed_rows_are_not_trained_again(full, tmp_path, capsys):
    root, imgs, cfg, doc = full
    committed = tmp_path / "committed.json"
    shutil.copy(root / "study" / "study.json", committed)
    again = run_full_study(cfg, [str(imgs)], None, tmp_path / "s2", rows_file=committed, progress=False)
    assert not list((tmp_path / "s2" / "arch").glob("*/last.safetensors"))  # nothing trained
    assert not (tmp_path / "s2" / "searches").exists()  # nor searched: the committed plan is taken
    assert " trained " not in (tmp_path / "s2" / "study.log").read_text()  # taken without a job each
    assert [r["standalone_psnr"] for r in again["rows"]] == pytest.approx([r["standalone_psnr"] for r in doc["rows"]])
    assert [r["shared_psnr"] for r in again["rows"]] == [r["shared_psnr"] for r in doc["rows"]]
    was = json.loads(committed.read_text())  # (earlier tests resumed the study: its searches' costs moved)
    assert (again["picks"], again["partners"], again["searches"]) == (was["picks"], was["partners"], was["searches"])
    # A pick and its partner missing from the committed rows: exactly those two are trained.
    pick = doc["picks"][STRATEGIES[0]][0]
    gone = {pick, doc["partners"][pick]}
    part = json.loads(committed.read_text())
    part["rows"] = [r for r in part["rows"] if not (r["genotype"] in gone and r["seed"] == cfg.seed)]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(part))
    again = run_full_study(cfg, [str(imgs)], None, tmp_path / "s4", rows_file=partial, progress=False)
    trained = {p.parent.name for p in (tmp_path / "s4" / "arch").glob("*/last.safetensors")}
    assert trained == {f"{g.replace(',', '-')}-s{cfg.seed}" for g in gone}
    assert not (tmp_path / "s4" / "searches").exists()
    assert all(r["standalone_psnr"] is not None for r in again["rows"])
    # Rows of another recipe cannot be reused: one line, nothing planned.
    assert main(["study", "--train", str(imgs), "--out", str(tmp_path / "s3"), "--rows", str(committed),
                 "--config", str(root / "study" / "config.yaml"), "train.steps=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.steps" in err[0] and "--rows" in err[0], err
    # Rows written before a setting existed: reused where the study keeps its default, refused where not.
    was = json.loads(committed.read_text())
    same = next(k for k, v in was["recipe"].items() if v == config.default(k))
    changed = next(k for k, v in was["recipe"].items() if v != config.default(k))
    for gone, ok in ((same, True), (changed, False)):
        older = dict(was, recipe={k: v for k, v in was["recipe"].items() if k != gone})
        (tmp_path / "older.json").write_text(json.dumps(older))
        out = tmp_path / f"s-{gone}"
        rc = main(["study", "--train", str(imgs), "--out", str(out), "--rows", str(tmp_path / "older.json"),
                   "--config", str(root / "study" / "config.yaml")])
        err = capsys.readouterr().err.strip().splitlines()
        if ok:
            assert rc == 0 and not list((out / "arch").glob("*/last.safetensors")), err  # nothing trained
        else:
            assert rc == 2 and len(err) == 1 and f"{gone} at its default" in err[0], err


def test_a_recorded_recipe_lacking_a_newer_setting_reads_as_its_default():
    cfg = config.load("study-cpu")
    ours = recipe(cfg, search_config(cfg, "controller", "strategy"))
    assert "train.lr" in ours and "data.lr_patch" in ours and not any(k.startswith("search.") for k in ours)
    assert recipe_changes(dict(ours), ours) == []
    # Rows written before a setting existed: taken where this study keeps its default ...
    older = {k: v for k, v in ours.items() if k != "train.lr_min"}
    assert ours["train.lr_min"] != config.default("train.lr_min")  # (the preset sets it)
    assert recipe_changes(older, ours) == ["train.lr_min"]  # ... refused where it does not
    at_default = dict(ours, **{"train.lr_min": config.default("train.lr_min")})
    assert recipe_changes(older, at_default) == []
    # A recorded value that differs is a change, whatever the default.
    assert recipe_changes(dict(ours, **{"train.steps": ours["train.steps"] + 1}), ours) == ["train.steps"]


def test_study_cli_refusals_are_one_line(full, tmp_path, capsys):
    root, imgs, _, _ = full
    out = root / "study"
    assert main(["study", "--run", str(out / "searches" / "controller-strategy"), "--train", str(imgs)]) == 2
    assert "--train" in capsys.readouterr().err
    assert main(["study", "--train", str(imgs), "--top", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--top" in capsys.readouterr().err
    assert main(["study", "--train", str(imgs), "--out", str(out)]) == 2  # a study is there
    assert "--resume" in capsys.readouterr().err
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "plan.json").write_text("[1, 2")
    assert main(["study", "--train", str(imgs), "--out", str(damaged), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plan.json" in err[0], err
    assert not (tmp_path / "x").exists()


def test_a_search_state_with_nan_shared_weights_is_one_line_naming_it(full, tmp_path):
    import torch

    from deconas.search.study import SharedScorer

    root, _, _, _ = full
    run = tmp_path / "run"
    shutil.copytree(root / "study" / "searches" / "controller-strategy", run)
    st = torch.load(run / "checkpoint.pt", weights_only=True)
    k = next(iter(st["supernet"]))
    st["supernet"][k] = torch.full_like(st["supernet"][k], float("nan"))
    torch.save(st, run / "checkpoint.pt")
    with pytest.raises(UserError, match=r"checkpoint\.pt.*NaN"):
        SharedScorer(run)


def test_a_committed_study_with_a_damaged_plan_is_one_line_and_plans_nothing(full, tmp_path, capsys):
    root, imgs, _, _ = full
    doc = json.loads((root / "study" / "study.json").read_text())
    doc["picks"][STRATEGIES[0]][0] = "9,9,9"  # not a genotype of this space
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["study", "--train", str(imgs), "--out", str(tmp_path / "s"), "--rows", str(bad),
                 "--config", str(root / "study" / "config.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rows" in err[0] and "damaged plan" in err[0], err
    assert not (tmp_path / "s").exists()


def test_report_recomputes_the_studys_own_summary_and_writes_nothing(full, tmp_path, capsys):
    root, _, _, doc = full
    path = tmp_path / "study.json"
    shutil.copy(root / "study" / "study.json", path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["study", "--report", str(path), "--config", str(root / "study" / "config.yaml")]) == 0
    assert capsys.readouterr().out.strip() == format_summary(doc)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("damage", ["nan", "params", "genotype", "kind", "rows", "bool"])
def test_report_of_a_damaged_study_json_is_one_line(full, tmp_path, capsys, damage):
    root, _, _, _ = full
    doc = json.loads((root / "study" / "study.json").read_text())
    row = doc["rows"][0]
    if damage == "nan":
        row["standalone_psnr"] = float("nan")
    elif damage == "params":
        row["params"] = -5
    elif damage == "genotype":
        row["genotype"] = "9,9,9"
    elif damage == "kind":
        doc["kind"] = "one-run"
    elif damage == "rows":
        doc["rows"] = {"a": 1}
    else:
        row["params"] = True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["study", "--report", str(bad)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "not a study.json" in err[0], err
    assert captured.out == ""


def test_report_refuses_the_options_of_a_running_study(full, tmp_path, capsys):
    root, imgs, _, _ = full
    assert main(["study", "--report", str(root / "study" / "study.json"), "--train", str(imgs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--train" in err[0] and "writes nothing" in err[0], err
    assert main(["study", "--report", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.json" in err[0] and "no such file" in err[0], err


def test_report_refuses_a_file_too_large_for_a_study_before_reading_it(full, monkeypatch, capsys):
    from deconas.search import evidence

    root, _, _, _ = full
    monkeypatch.setattr(evidence, "MAX_STUDY_BYTES", 100)
    monkeypatch.setattr(evidence.json, "loads", lambda *a, **k: pytest.fail("read"))
    assert main(["study", "--report", str(root / "study" / "study.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bytes" in err[0] and "study.json" in err[0], err


def test_rows_too_large_for_a_study_are_refused_before_reading(full, tmp_path, monkeypatch, capsys):
    from deconas.search import evidence

    root, imgs, _, _ = full
    monkeypatch.setattr(evidence, "MAX_STUDY_BYTES", 100)
    assert main(["study", "--train", str(imgs), "--out", str(tmp_path / "s"), "--rows",
                 str(root / "study" / "study.json"), "--config", str(root / "study" / "config.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rows" in err[0] and "bytes" in err[0], err
    assert not (tmp_path / "s").exists()


def test_report_draws_the_plots_where_asked_and_never_over_files_unless_told(full, tmp_path, capsys):
    root, _, _, _ = full
    study = str(root / "study" / "study.json")
    conf = ["--config", str(root / "study" / "config.yaml")]
    figs = tmp_path / "figs"
    assert main(["study", "--report", study, "--plots", str(figs), *conf]) == 0
    assert sorted(p.name for p in figs.iterdir()) == ["fidelity.png", "picks.png"]
    with Image.open(figs / "picks.png") as im:
        assert im.format == "PNG" and im.width > 300
    (figs / "picks.png").write_bytes(b"the user's")
    capsys.readouterr()
    assert main(["study", "--report", study, "--plots", str(figs), *conf]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "picks.png" in err[0] and "--overwrite" in err[0], err
    assert (figs / "picks.png").read_bytes() == b"the user's"
    assert main(["study", "--report", study, "--plots", str(figs), "--overwrite", *conf]) == 0
    assert (figs / "picks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["study", "--train", str(root / "imgs"), "--plots", str(figs)]) == 2
    assert "--report" in capsys.readouterr().err


def test_report_plots_refusals_are_one_line_and_write_nothing(full, tmp_path, capsys):
    root, imgs, _, _ = full
    study = str(root / "study" / "study.json")
    (tmp_path / "file").write_text("the user's")
    assert main(["study", "--report", study, "--plots", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a file is in the way" in err[0], err
    assert (tmp_path / "file").read_text() == "the user's"
    assert main(["study", "--train", str(imgs), "--out", str(tmp_path / "s"), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite is for --report" in err[0], err
    assert not (tmp_path / "s").exists()
    assert main(["study", "--train", str(imgs), "--out", str(tmp_path / "s"), "--markdown"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--markdown is for --report" in err[0], err
    assert not (tmp_path / "s").exists()


def test_report_as_markdown_puts_each_figure_of_the_summary_in_its_column(full, capsys):
    root, _, _, doc = full
    assert main(["study", "--report", str(root / "study" / "study.json"), "--markdown",
                 "--config", str(root / "study" / "config.yaml")]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")] if line.startswith("| `") else None
        if cells:
            rows[cells[0].strip("`")] = cells
    s = doc["summary"]
    for n, x in s["fidelity"].items():
        lo, hi = x["ci95"]
        assert rows[n][1:3] == [f"{x['tau']:.2f}", f"{lo:.2f} .. {hi:.2f}"]
        assert rows[n][3] == f"{x['residual_tau']:.2f}" and rows[n][5] == f"{x['size_tau']:.2f}"
    assert set(s["strategies"]) == set(STRATEGIES)
    for n, x in s["strategies"].items():
        m, g = x["size_matched_random"], x["gain_over_pool_fit"]
        assert rows[n][1] == str(x["picks"]) and rows[n][2] == f"{x['mean_params']:,.0f}"
        assert rows[n][3:7] == [f"{m['mean_db']:.3f} dB", f"{m['ci95'][0]:.3f} .. {m['ci95'][1]:.3f}",
                                f"{m['z']:.1f}", f"{m['wins']}/{m['n']}"]
        assert rows[n][7:10] == [f"{g['mean_db']:.3f} dB", f"{g['ci95'][0]:.3f} .. {g['ci95'][1]:.3f}",
                                 f"{g['z']:.1f}"]
