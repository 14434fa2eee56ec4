"""Configs are data: YAML files (presets ship in ``deconas/configs``), overridden by
``key=value`` pairs on the command line (dotted keys reach nested sections)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Optional

import yaml

from .errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"


def presets() -> list:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise UserError(f"config file {name_or_path} does not exist")
        return p
    q = PRESET_DIR / f"{name_or_path}.yaml"
    if q.is_file():
        return q
    raise UserError(f"config {name_or_path!r} is neither a YAML file nor a preset; presets: {', '.join(presets())}")


def load(name_or_path: str, overrides: Optional[Iterable[str]] = None) -> dict:
    path = resolve(name_or_path)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"config {path}: expected a mapping of settings at the top level")
    base = cfg.pop("base", None)  # a config may extend a preset and change a few keys
    if base:
        merged = load(base)
        _merge(merged, cfg)
        cfg = merged
    return apply_overrides(cfg, overrides or [])  # validates


# The type and range of every known setting: a bad value is one clear line, before any work.
# (kind, argument): int/float with a minimum, a fraction in [0, 1), a bool, one of a few choices.
SCHEMA = {
    "scale": ("choice", (2, 3, 4)), "seed": ("int", 0), "threads": ("int", 0),
    "deterministic": ("bool", None), "plot": ("bool", None), "tensorboard": ("bool", None),
    "model.channels": ("int", 1), "model.blocks": ("int", 1), "model.nodes": ("int", 1),
    "data.lr_patch": ("int", 1), "data.batch": ("int", 1), "data.augment": ("bool", None),
    "data.val_fraction": ("fraction", None), "data.val_max": ("int", 0),
    "train.steps": ("int", 1), "train.epoch_steps": ("int", 1), "train.val_every": ("int", 1),
    "train.lr": ("float", 1e-12), "train.schedule": ("choice", ("step", "cosine")), "train.lr_min": ("float", 0),
    "train.warmup_steps": ("int", 0), "train.lr_step": ("int", 1), "train.lr_gamma": ("float", 1e-12),
    "train.grad_clip": ("float", 0), "train.amp": ("choice", ("none", "bf16")),
    "search.epochs": ("int", 1), "search.child_steps": ("int", 1), "search.controller_steps": ("int", 0),
    "search.warmup_epochs": ("int", 0), "search.lr": ("float", 1e-12), "search.lr_step_epochs": ("int", 1),
    "search.lr_gamma": ("float", 1e-12), "search.grad_clip": ("float", 0), "search.controller_lr": ("float", 1e-12),
    "search.alpha": ("float", 0), "search.ff": ("bool", None), "search.entropy_weight": ("float", 0),
    "search.baseline_decay": ("fraction", None), "search.lstm_size": ("int", 1), "search.lstm_layers": ("int", 1),
    "search.tanh_constant": ("float?", 1e-12), "search.op_tanh_reduce": ("float", 1e-12),
    "search.temperature": ("float?", 1e-12), "search.tie_embeddings": ("bool", None),
    "search.val_patch": ("int", 1), "search.val_batch": ("int", 1),
    "search.val_resample": ("choice", ("step", "epoch", "run")), "search.derive_samples": ("int", 1),
    "search.derive_max_images": ("int", 0), "search.derive_max_size": ("int", 0),
    "test_fraction": ("fraction", None), "derive_samples": ("int", 1),
}


def _check_value(key: str, v) -> None:
    kind, arg = SCHEMA[key]
    bad = None
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int) or v < arg:
            bad = f"an integer >= {arg}"
    elif kind in ("float", "float?"):
        if v is None and kind == "float?":
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < arg:
            bad = "a positive number" if arg > 0 else f"a number >= {arg}"
    elif kind == "fraction":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            bad = "a fraction in [0, 1)"
    elif kind == "bool":
        if not isinstance(v, bool):
            bad = "true or false"
    elif kind == "choice":
        if v not in arg:
            bad = "one of " + ", ".join(map(str, arg))
    if bad:
        raise UserError(f"config: {key}={v!r}: expected {bad}")


def validate(cfg: dict, required: Iterable[str] = ()) -> dict:
    """Check every known setting's type and range, and that ``required`` keys exist."""
    def walk(node, prefix=""):
        for k, v in node.items():
            key = prefix + k
            if isinstance(v, dict):
                walk(v, key + ".")
            elif key in SCHEMA:
                if SCHEMA[key][0].startswith("float") and isinstance(v, str):
                    try:  # YAML 1.1 reads 1e-3 (no dot) as a string
                        v = node[k] = float(v)
                    except ValueError:
                        pass
                _check_value(key, v)
    walk(cfg)
    for key in required:
        node = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"config: '{key}' is missing; start from a preset (see --help)")
            node = node[part]
    return cfg


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """``search.alpha=0`` sets cfg['search']['alpha'] = 0; unknown keys are an error (typos)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. search.alpha=0")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise UserError(f"override {item!r}: unknown section {p!r}; sections: {', '.join(k for k, v in node.items() if isinstance(v, dict))}")
            node = node[p]
        if parts[-1] not in node:
            raise UserError(f"override {item!r}: unknown key {key!r}; known here: {', '.join(sorted(node))}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node[parts[-1]] = value
    return validate(cfg)


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
