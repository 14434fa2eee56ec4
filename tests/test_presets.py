"""Every shipped preset loads (with its base: chain), validates, and builds its network."""

import pytest
import torch

from deconas import config
from deconas.space.complexity import count_params
from deconas.space.genotype import PAPER_GENOTYPE, parse
from deconas.space.network import DeCoNASNet
from deconas.search.supernet import SuperNet
from deconas.pipeline import stage_configs


def _build(cfg):
    """The paper's network at the preset's size, and the supernet of its search space."""
    m = cfg.model
    with torch.device("meta"):  # shapes only: the paper-size networks cost no memory here
        net = DeCoNASNet(parse(PAPER_GENOTYPE), scale=cfg.scale, channels=m.channels, blocks=m.blocks)
        sup = SuperNet(scale=cfg.scale, channels=m.channels, blocks=m.blocks, nodes=m.nodes)
    assert sum(p.numel() for p in net.parameters()) == count_params(parse(PAPER_GENOTYPE), cfg.scale,
                                                                   m.channels, m.blocks)
    # The supernet holds every op's weights for every input: exactly the largest network of its space.
    assert sum(p.numel() for p in sup.parameters()) == sup.max_params(False)


@pytest.mark.parametrize("name", config.presets())
def test_every_preset_loads_validates_and_builds(name):
    cfg = config.load(name)
    if cfg.search_config is not None and cfg.train_config is not None:  # a `run` preset names its stages' presets
        for stage in stage_configs(cfg):
            _build(stage)
    elif cfg.search_config is not None:  # the study's: its searches' preset, and its recipe on their network
        _build(config.load(cfg.search_config, cfg.search_overrides))
        _build(cfg)
    else:
        _build(cfg)


def test_the_shipped_network_presets_are_the_paper_genotype_at_their_scale():
    for s in (2, 3, 4):
        cfg = config.load(f"pretrained-x{s}")
        assert cfg.scale == s and cfg.model.channels == 32 and cfg.model.blocks == 4


def test_a_folder_named_like_a_preset_does_not_hide_the_preset(tmp_path, monkeypatch):
    (tmp_path / "pretrained-x3").mkdir()  # e.g. the run folder of that preset
    monkeypatch.chdir(tmp_path)
    assert config.load("pretrained-x3").scale == 3
