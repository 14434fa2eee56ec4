"""Tiny search configs, image folders, photos and checkpoints for the tests (seconds on 2 cores)."""

import numpy as np
from PIL import Image

from deconas import config
def tiny_images(folder, n=6, size=40, seed=0):
    """Smooth random colour images (a few sinusoids plus noise), PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        img = np.zeros((size, size, 3))
        for c in range(3):
            for _ in range(3):
                fy, fx, ph = rng.uniform(0.5, 4, 2).tolist() + [rng.uniform(0, 6.3)]
                img[:, :, c] += np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
        img = (img - img.min()) / (np.ptp(img) + 1e-9) * 230 + rng.normal(0, 4, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


TINY_SEARCH = {"epochs": 2, "child_steps": 3, "controller_steps": 3, "warmup_epochs": 1, "val_patch": 8,
               "val_batch": 2, "val_resample": "step", "controller_lr": 5e-2, "derive_samples": 4,
               "derive_max_images": 2, "derive_max_size": 12}


def tiny_config(**search):
    """The cpu preset shrunk to seconds; ``search``: search.* settings to change."""
    sets = {"model.channels": 4, "model.blocks": 2, "model.nodes": 2, "data.lr_patch": 8, "data.batch": 2,
            "data.val_fraction": 0.34, "data.val_max": 0, "tensorboard": False,
            **{f"search.{k}": v for k, v in {**TINY_SEARCH, **search}.items()}}
    return config.load("cpu", [f"{k}={'null' if v is None else v}" for k, v in sets.items()])


def tiny_config_yaml(**search) -> str:
    return config.dump(tiny_config(**search))


def photo(h, w, seed):
    """A synthetic colour photo: sinusoids and a ramp plus noise, 8-bit."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(x / 5.0), 128 + 90 * np.cos(y / 7.0), (x * 3 + y * 2) % 256], axis=2)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def tiny_checkpoint(path, seed):
    """A tiny random x2 network (genotype 7,6,4, C=8, N=1) saved as a checkpoint at ``path``."""
    import torch

    from deconas.checkpoint import save_model
    from deconas.space.genotype import parse
    from deconas.space.network import DeCoNASNet

    torch.manual_seed(seed)
    save_model(path, DeCoNASNet(parse("7,6,4"), scale=2, channels=8, blocks=1))
    return path
