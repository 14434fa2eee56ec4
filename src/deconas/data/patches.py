"""Training minibatches: aligned random LR/HR patches with flips and 90-degree rotations.

LR images are made once per image with the protocol's MATLAB bicubic and rounded to uint8
(``datasets.load_pairs``), so the network trains on exactly what it is evaluated on; the
sampler only crops. Its random stream is its own (a numpy PCG64 generator) so that a
resumed run draws the very same patches.
"""

from __future__ import annotations

import json
from typing import Sequence, Tuple

import numpy as np
import torch

from deconas.errors import UserError


def _rgb(a: np.ndarray) -> np.ndarray:
    """Greyscale images train as three equal channels: the network is RGB in, RGB out."""
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


class PatchSampler:
    """Draw ``batch`` aligned patches (LR ``lr_patch`` px, HR ``scale * lr_patch`` px).

    ``pairs`` holds ``(hr_uint8, lr_uint8)`` with ``hr.shape == scale * lr.shape``.
    Images smaller than the patch are skipped; if none is large enough it is a UserError.
    """

    def __init__(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]], scale: int, lr_patch: int,
                 batch: int, seed: int = 0, augment: bool = True):
        self.scale, self.lr_patch, self.batch, self.augment = scale, lr_patch, batch, augment
        self.pairs = []
        for hr, lr in pairs:
            if lr.shape[0] >= lr_patch and lr.shape[1] >= lr_patch:
                if hr.shape[0] != lr.shape[0] * scale or hr.shape[1] != lr.shape[1] * scale:
                    raise ValueError("HR must be exactly scale x LR (modcrop the HR first)")
                self.pairs.append((_rgb(hr), _rgb(lr)))
        if not self.pairs:
            raise UserError(f"no training image is at least {lr_patch * scale}x{lr_patch * scale} pixels "
                            f"(LR patch {lr_patch} at x{scale}); lower data.lr_patch")
        # Bigger images hold more distinct patches: pick images in proportion to their area.
        areas = np.array([lr.shape[0] * lr.shape[1] for _, lr in self.pairs], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(lr, hr) float32 tensors in [0, 1], shapes (B, 3, p, p) and (B, 3, sp, sp)."""
        p, s = self.lr_patch, self.scale
        idx = self.rng.choice(len(self.pairs), size=self.batch, p=self.weights)
        lrs = np.empty((self.batch, p, p, 3), np.uint8)
        hrs = np.empty((self.batch, p * s, p * s, 3), np.uint8)
        for b, i in enumerate(idx):
            hr, lr = self.pairs[i]
            y = int(self.rng.integers(0, lr.shape[0] - p + 1))
            x = int(self.rng.integers(0, lr.shape[1] - p + 1))
            lp = lr[y:y + p, x:x + p]
            hp = hr[y * s:(y + p) * s, x * s:(x + p) * s]
            if self.augment:
                if self.rng.random() < 0.5:
                    lp, hp = lp[:, ::-1], hp[:, ::-1]
                k = int(self.rng.integers(0, 4))
                lp, hp = np.rot90(lp, k), np.rot90(hp, k)
            lrs[b], hrs[b] = lp, hp
        to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255.0)
        return to_t(lrs), to_t(hrs)

    def state_dict(self) -> dict:
        # JSON text: PCG64's 128-bit integers survive weights_only loading as a string.
        return {"rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
