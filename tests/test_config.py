"""The config schema: one default per setting, presets that only override, typos refused
with the nearest key, and docs/config.md generated from the schema."""

from pathlib import Path

import pytest
import yaml

from deconas import config
from deconas.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_generated_from_the_schema():
    # Regenerate with: python -m deconas.config > docs/config.md
    assert (ROOT / "docs" / "config.md").read_text() == config.markdown()
    text = config.markdown()
    for key in config.SCHEMA:
        assert f"| `{key}` |" in text


def test_an_empty_config_is_the_papers_search_and_training(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing\n")
    cfg = config.load(str(p))
    # The paper's figures (section III.A), written out here independently of the schema.
    assert (cfg.scale, cfg.model.channels, cfg.model.blocks, cfg.model.nodes) == (2, 64, 4, 4)
    assert (cfg.data.lr_patch, cfg.data.batch) == (64, 16)
    s = cfg.search
    assert (s.epochs, s.child_steps, s.controller_steps, s.warmup_epochs) == (200, 1000, 100, 5)
    assert (s.lr, s.controller_lr, s.alpha, s.entropy_weight) == (1e-4, 3e-4, 2.0, 1e-4)
    assert (s.val_patch, s.val_batch, s.ff) == (48, 10, False)
    t = cfg.train
    assert (t.steps, t.lr, t.schedule, t.lr_step, t.lr_gamma) == (1_000_000, 1e-4, "step", 200_000, 0.5)
    assert config.load("search-paper") == cfg


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + k + ".")
        else:
            yield prefix + k, v


@pytest.mark.parametrize("name", [n for n in config.presets() if n != "study-cpu"])
def test_a_preset_lists_only_what_it_changes(name):
    raw = yaml.safe_load((config.PRESET_DIR / f"{name}.yaml").read_text()) or {}
    base = raw.pop("base", None)
    under = config.to_dict(config.load(base)) if base else config.complete({})
    same = [k for k, v in _flat(raw) if under_value(under, k) == v]
    assert same == [], f"{name} repeats its base's value for {same}"


def under_value(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def test_cpu_preset_is_search_paper_plus_its_differences():
    cpu, paper = (dict(_flat(config.to_dict(config.load(n)))) for n in ("cpu", "search-paper"))
    changed = {k for k in cpu if cpu[k] != paper[k]}
    assert {"model.channels", "model.blocks", "search.epochs", "search.val_patch"} <= changed
    assert cpu["search.alpha"] == paper["search.alpha"] == 2.0  # the CB1 setting is kept


def test_an_unknown_override_suggests_the_nearest_key():
    with pytest.raises(UserError, match="did you mean 'search.val_patch'"):
        config.load("cpu", ["search.val_pach=40"])
    with pytest.raises(UserError, match="unknown key 'nonsense'"):
        config.load("cpu", ["nonsense=1"])
    with pytest.raises(UserError, match=r"'model' is a section; set one of its settings, e.g. model\.channels="):
        config.load("cpu", ["model=3"])


def test_a_key_the_yaml_leaves_out_can_still_be_overridden(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("scale: 3\nmodel: {channels: 8}\n")
    cfg = config.load(str(p), ["search.val_patch=40", "study.top=2"])
    assert (cfg.scale, cfg.model.channels, cfg.search.val_patch, cfg.study.top) == (3, 8, 40, 2)


def test_a_hand_made_config_gets_the_defaults_and_its_values_checked():
    cfg = config.validate({"model": {"channels": 8}})
    assert cfg.model == config.Model(channels=8, blocks=4, nodes=4) and cfg.train.amp == "none"
    with pytest.raises(UserError, match="train.amp='fp8'"):
        config.validate({"train": {"amp": "fp8"}})
    with pytest.raises(UserError, match="search.val_resample"):
        config.load("cpu", ["search.val_resample=sometimes"])


def test_a_config_reads_as_attributes_and_round_trips_through_yaml(tmp_path):
    cfg = config.load("cpu")
    assert (cfg.search.val_patch, cfg.search.val_resample, cfg.search.alpha) == (32, "run", 2.0)
    p = tmp_path / "as-run.yaml"
    p.write_text(config.dump(cfg))
    assert config.load(str(p)) == cfg
    assert yaml.safe_load(p.read_text())["search"]["val_patch"] == 32  # the file is plain YAML


def test_a_changed_attribute_is_checked_when_the_config_is_validated_again():
    cfg = config.load("cpu")
    cfg.train.amp = "fp8"
    with pytest.raises(UserError, match="train.amp='fp8'"):
        config.validate(cfg)
    cfg.train.amp = "bf16"
    assert config.validate(cfg).train.amp == "bf16"
