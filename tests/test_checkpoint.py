"""Self-describing safetensors checkpoints and the shipped pretrained network."""

import numpy as np
import pytest
import torch

from deconas.checkpoint import load_model, pretrained_path, pretrained_scales, read_meta, save_model
from deconas.errors import UserError
from deconas.space.genotype import PAPER_GENOTYPE, parse
from deconas.space.network import DeCoNASNet


def test_checkpoint_rebuilds_the_same_network_from_its_metadata(tmp_path):
    net = DeCoNASNet(parse("7,6,4|01|101"), scale=3, channels=8, blocks=3)
    save_model(tmp_path / "n.safetensors", net, step=12)
    back, meta = load_model(tmp_path / "n.safetensors")
    assert str(meta["genotype"]) == "7,6,4|01|101" and meta["scale"] == 3 and meta["step"] == "12"
    x = torch.rand(1, 3, 9, 11)
    assert torch.equal(net.eval()(x), back(x))


def test_bad_checkpoints_are_user_errors(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.safetensors"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    net = DeCoNASNet(parse("7"), scale=2, channels=4, blocks=1)
    save_model(tmp_path / "x2.safetensors", net)
    with pytest.raises(UserError, match="x2 network"):
        load_model(tmp_path / "x2.safetensors", scale=4)


def test_a_network_ships_for_every_scale():
    assert pretrained_scales() == [2, 3, 4]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_network_is_the_paper_genotype_and_loads_without_code(scale):
    meta = read_meta(pretrained_path(scale))  # safetensors: a header and raw tensors, nothing to execute
    assert meta["genotype"] == PAPER_GENOTYPE and meta["scale"] == str(scale)
    model, _ = load_model("pretrained", scale=scale)
    assert model.scale == scale
    assert pretrained_path(scale).stat().st_size < 10 * 2 ** 20


# Well above bicubic on Set5 (x2 +3.2 dB, x3 +2.4 dB, x4 +2.0 dB measured): a guard against a
# broken file or inference path, with the margin well inside what each network gains.
MARGIN = {2: 2.5, 3: 1.8, 4: 1.5}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_network_beats_bicubic_clearly_on_set5(shared_data, scale):
    # The protocol's bicubic row is computed here too, and the network must stay well above it.
    from deconas.evaluate import evaluate
    from deconas.data.imresize import bicubic_up
    from deconas.infer.inference import upscale_array

    model, _ = load_model("pretrained", scale=scale)
    bench = [shared_data / "benchmark" / "Set5"]
    net = evaluate(lambda lr: upscale_array(model, lr), bench, scale, progress=False)["datasets"][0]
    bic = evaluate(lambda lr: bicubic_up(lr, scale), bench, scale, progress=False)["datasets"][0]
    assert net["psnr"] > bic["psnr"] + MARGIN[scale]
    assert net["ssim"] > bic["ssim"]
    assert np.isfinite(net["psnr"])
