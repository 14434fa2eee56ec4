"""Where HR images come from, and the protocol's LR images made from them.

A source is a folder of HR images.  Common layouts are understood too:

* ``NAME/HR/*`` (EDSR / BasicSR benchmark folders; ``GTmod12/`` and ``original/`` likewise);
* ``NAME/image_SRF_<s>/*_HR.png`` (Huang et al.'s SelfExSR benchmark folders): the files whose
  name ends in ``_HR``, from ``image_SRF_<scale>`` when there is one;
* a DIV2K root holding ``DIV2K_train_HR/`` and ``DIV2K_valid_HR/``: training takes
  ``DIV2K_train_HR`` (``purpose="train"``, the default of the loaders) and evaluation or
  validation takes ``DIV2K_valid_HR`` (``purpose="eval"``), as in the paper (train on the
  800 training images, validate on the 100 validation images).  If only one of the two is
  there, it is used for both.

HR images are cropped to a multiple of the scale and LR images are made with the MATLAB
bicubic of :mod:`deconas.data.imresize`, rounded to uint8, so a model trains and is evaluated on
exactly what the protocol's LR images are.  Greyscale images stay 2-D.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from deconas.errors import UserError
from deconas.data.images import iter_folder, list_image_files, read_image
from deconas.data.imresize import bicubic_lr, modcrop

__all__ = ["find_hr_folder", "hr_files", "load_hr_images", "load_pairs", "holdout_split", "builtin_images",
           "BUILTIN_NAMES"]

log = logging.getLogger("deconas")

_HR_SUBFOLDERS = ("HR", "GTmod12", "original")
_DIV2K = {"train": ("DIV2K_train_HR", "DIV2K_valid_HR"), "eval": ("DIV2K_valid_HR", "DIV2K_train_HR")}

# The colour photographs shipped inside scikit-image's package (no download needed).
BUILTIN_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                 "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")


def _srf_folder(d: Path, scale) -> Path | None:
    """``d/image_SRF_<scale>`` (or the lowest-numbered image_SRF_* folder) if it holds *_HR images."""
    subs = sorted((s for s in d.glob("image_SRF_*") if s.is_dir()),
                  key=lambda s: (s.name != f"image_SRF_{scale}", s.name))
    for s in subs:
        if any(f.stem.endswith("_HR") for f in list_image_files(s)):
            return s
    return None


def hr_files(folder) -> List[Path]:
    """The HR image files of an HR folder: all of them, or only ``*_HR`` ones in an image_SRF_* folder."""
    files = list_image_files(folder)
    if Path(folder).name.startswith("image_SRF_"):
        files = [f for f in files if f.stem.endswith("_HR")]
    return files


def find_hr_folder(dir, purpose: str = "train", scale: int | None = None) -> Path:
    """The folder that holds the HR images of source ``dir`` (see the module docstring).

    ``purpose``: ``"train"`` or ``"eval"``; it only matters for a DIV2K root.  ``scale``: which
    ``image_SRF_<s>`` folder to prefer in a SelfExSR layout.
    """
    if purpose not in _DIV2K:
        raise ValueError(f"purpose must be 'train' or 'eval', got {purpose!r}")
    d = Path(dir)
    if not d.exists():
        raise UserError(f"{d}: no such folder")
    if not d.is_dir():
        raise UserError(f"{d}: not a folder (give a folder of HR images)")
    for _ in range(3):  # a few levels: DIV2K/DIV2K_train_HR/DIV2K_train_HR/*.png happens with some zips
        if list_image_files(d):
            return d
        nxt = None
        for sub in _HR_SUBFOLDERS + _DIV2K[purpose]:
            if (d / sub).is_dir():
                nxt = d / sub
                break
        if nxt is None:
            nxt = _srf_folder(d, scale)
            if nxt is not None:
                return nxt
            subs = [s for s in d.iterdir() if s.is_dir() and not s.name.startswith(".")]
            if len(subs) == 1 and subs[0].name == d.name:
                nxt = subs[0]
        if nxt is None:
            break
        d = nxt
    raise UserError(f"{Path(dir)}: no image files in it, nor an HR/, image_SRF_<s>/ or DIV2K_{{train,valid}}_HR/ "
                    f"subfolder")


def load_hr_images(dir, purpose: str = "train", warn: bool = True, scale: int | None = None
                   ) -> List[Tuple[str, np.ndarray]]:
    """``[(file name, uint8 HR)]`` of a source (unreadable files skipped with a warning)."""
    folder = find_hr_folder(dir, purpose, scale=scale)
    return list(iter_folder(folder, warn=warn, files=hr_files(folder)))


def make_pairs(items: Sequence[Tuple[str, np.ndarray]], scale: int, warn: bool = True):
    """``[(name, HR modcropped to the scale, protocol LR)]``; images smaller than the scale are left out."""
    out = []
    for name, hr in items:
        hr = modcrop(hr, scale)
        if hr.shape[0] == 0 or hr.shape[1] == 0:
            if warn:
                log.warning("skipping %s: smaller than the scale %d", name, scale)
            continue
        out.append((name, hr, bicubic_lr(hr, scale)))
    return out


def load_pairs(dir, scale: int, purpose: str = "train", warn: bool = True):
    """``[(file name, HR modcropped, LR)]`` with LR = ``bicubic_lr(HR, scale)`` (uint8)."""
    return make_pairs(load_hr_images(dir, purpose, warn=warn, scale=scale), scale, warn=warn)


def _name(item):
    return item[0] if isinstance(item, tuple) else str(item)


def holdout_split(items: Sequence, fraction: float, seed: int = 0) -> Tuple[list, list]:
    """Split ``items`` (``(name, ...)`` tuples or names) into (train, val), deterministically.

    Items are sorted by name, then a permutation drawn from ``seed`` picks
    ``round(fraction * n)`` of them for validation, at least 1 and at most n - 1 when n >= 2
    and fraction > 0.  Both parts keep name order.
    """
    if not 0 <= fraction < 1:
        raise UserError(f"holdout fraction must be in [0, 1), got {fraction}")
    ordered = sorted(items, key=_name)
    n = len(ordered)
    k = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    else:
        k = min(k, max(n - 1, 0))
    pick = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    train = [it for i, it in enumerate(ordered) if i not in pick]
    val = [it for i, it in enumerate(ordered) if i in pick]
    return train, val


def builtin_images() -> List[Tuple[str, np.ndarray]]:
    """The colour photographs in scikit-image's package data, as ``[(file name, uint8 RGB)]``.

    Read from the installed files, so no network is needed; a missing one is skipped.
    """
    import skimage

    folder = Path(skimage.__file__).resolve().parent / "data"
    out = []
    for name in BUILTIN_NAMES:
        f = folder / name
        if not f.is_file():
            continue
        pixels, _ = read_image(f, warn=False)
        if pixels.ndim == 2:  # every listed one is colour; keep the promise of RGB regardless
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        out.append((name, pixels))
    if not out:
        raise UserError(f"{folder}: none of scikit-image's sample photographs were found; give a folder of images")
    return out


def expand_sources(train_dir) -> List[Path]:
    """``--train`` may be one folder, several, or a folder of image folders (e.g. T91/ and BSD200/)."""
    dirs = [train_dir] if isinstance(train_dir, (str, Path)) else list(train_dir)
    out = []
    for d in dirs:
        d = Path(d)
        try:
            find_hr_folder(d)
            out.append(d)
        except UserError:
            subs = sorted(s for s in d.iterdir() if s.is_dir() and not s.name.startswith(".")) if d.is_dir() else []
            good = []
            for s in subs:
                try:
                    find_hr_folder(s)
                    good.append(s)
                except UserError:
                    pass
            if not good:
                raise
            out.extend(good)
    return out


def load_train_val(train_dir, val_dir, scale: int, val_fraction: float, val_max: int = 0, seed: int = 0,
                   require_val: bool = True):
    """(train pairs, val pairs, provenance) with pairs ``(name, hr_uint8, lr_uint8)``, for search and training.

    Validation: ``val_dir`` if given, else a deterministic held-out fraction (seeded) of the
    training images. Without ``train_dir`` the built-in images are used. Names carry their
    folder when there are several, so they stay unique.
    """
    if train_dir is None:
        train = make_pairs(builtin_images(), scale)
        dirs = None
    else:
        dirs = expand_sources(train_dir)
        multi = len(dirs) > 1
        train = [((f"{p.name}/{n}" if multi else n), hr, lr) for p in dirs for n, hr, lr in load_pairs(p, scale)]
    frac = float(val_fraction or 0.0)
    if val_dir is not None:
        val = load_pairs(val_dir, scale, purpose="eval")
        if not val:  # asked for: an empty validation would be a run that silently validates nothing
            raise UserError(f"--val {val_dir}: no image there is usable for validation at x{scale}")
    elif frac > 0:
        train, val = holdout_split(train, frac, seed)
    elif require_val:
        raise UserError("no validation images: give --val DIR or set data.val_fraction > 0")
    else:
        val = []
    vmax = int(val_max or 0)
    val = val[:vmax] if vmax else val
    if not train or (require_val and not val):
        raise UserError(f"need training and validation images; got {len(train)} and {len(val)}")
    prov = {"train_dir": [str(p.resolve()) for p in dirs] if dirs else "built-in",
            "val_dir": str(Path(val_dir).resolve()) if val_dir is not None else None,
            "val_fraction": frac if val_dir is None else None, "val_max": vmax, "seed": seed,
            "train_images": len(train), "val_images": [n for n, _, _ in val]}
    return train, val, prov
