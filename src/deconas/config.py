"""Configs are data: YAML files (presets ship in ``deconas/configs``), overridden by
``key=value`` pairs on the command line (dotted keys reach nested sections)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable, Optional

import yaml

from .errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"


def presets() -> list:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    # A folder that happens to share a preset's name (a run folder) is not a config file.
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise UserError(f"config file {name_or_path} does not exist")
        return p
    q = PRESET_DIR / f"{name_or_path}.yaml"
    if q.is_file():
        return q
    raise UserError(f"config {name_or_path!r} is neither a YAML file nor a preset; presets: {', '.join(presets())}")


def load(name_or_path: str, overrides: Optional[Iterable[str]] = None) -> dict:
    return apply_overrides(_load_chain(name_or_path, ()), overrides or [])  # validates


def _load_chain(name_or_path: str, seen: tuple) -> dict:
    path = resolve(name_or_path)
    if path.resolve() in seen:
        chain = " -> ".join(p.name for p in seen + (path.resolve(),))
        raise UserError(f"config {path}: its base: chain is a cycle ({chain})")
    try:
        if path.stat().st_size > 1_000_000:
            raise UserError(f"config {path}: {path.stat().st_size:,} bytes is not a config file")
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config {path}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config {path}: unreadable ({e})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"config {path}: expected a mapping of settings at the top level")
    base = cfg.pop("base", None)  # a config may extend a preset and change a few keys
    check_keys(cfg, f"config {path}")
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise UserError(f"config {path}: base: {base!r} must be the name of a preset or a YAML file")
        merged = _load_chain(base if Path(base).is_absolute() or base in presets() else str(path.parent / base)
                             if (path.parent / base).is_file() else base, seen + (path.resolve(),))
        _merge(merged, cfg)
        cfg = merged
    return cfg


# Keys that are not single values: the `run` pipeline names the presets of its stages.
RUN_KEYS = {"search_config": str, "train_config": str, "search_overrides": list, "train_overrides": list}


def check_keys(cfg: dict, where: str) -> None:
    """Every key is a known setting or section; a typo is refused with the nearest valid key."""
    import difflib

    known = set(SCHEMA) | set(RUN_KEYS)
    sections = {k.split(".")[0] for k in SCHEMA if "." in k}

    def walk(node, prefix=""):
        if not isinstance(node, dict):
            raise UserError(f"{where}: section {prefix[:-1]!r} must be a mapping of settings")
        for k, v in node.items():
            key = prefix + str(k)
            if not prefix and key in sections:
                walk(v, key + ".")
            elif key not in known:
                near = difflib.get_close_matches(key, sorted(known | sections), n=1)
                raise UserError(f"{where}: unknown setting {key!r}" + (f"; did you mean {near[0]!r}?" if near else ""))
            elif isinstance(v, dict):
                raise UserError(f"{where}: {key} is a single value, not a section")

    walk(cfg)


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
    "study.top": ("int", 1), "study.random": ("int", 0), "study.param_tolerance": ("fraction", None),
    "study.jobs": ("int", 1), "study.threads": ("int", 1), "study.shared_max_images": ("int", 0),
    "study.shared_max_size": ("int", 0), "study.noise_batches": ("int", 2), "study.screen": ("int", 0),
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
    if not bad and key in MAXIMUM and v > MAXIMUM[key]:
        bad = f"at most {MAXIMUM[key]}"
    if bad:
        raise UserError(f"config: {key}={v!r}: expected {bad}")


# Upper bounds, far above any real run: a value past them is a typo, not a wish.
MAXIMUM = {"model.channels": 1024, "model.blocks": 64, "model.nodes": 32, "data.lr_patch": 1024,
           "data.batch": 4096, "search.val_patch": 1024, "search.val_batch": 4096, "search.lstm_size": 4096}


def check_memory(cfg: dict) -> None:
    """Refuse a training batch whose activations cannot fit in this machine's memory, before
    any data is loaded. The estimate counts the feature maps a backward pass keeps (fp32):
    a few maps of C channels per mix node and per block, at the LR patch size."""
    m, d = cfg.get("model") or {}, cfg.get("data") or {}
    try:
        c, n, nodes = int(m["channels"]), int(m["blocks"]), int(m.get("nodes", 4))
        b, p = int(d["batch"]), int(d["lr_patch"])
        scale = int(cfg.get("scale", 2))
    except (KeyError, TypeError, ValueError):
        return
    need = 4 * b * p * p * (c * (n * (nodes * 8 + 4) + 8) + 3 * scale * scale * (c + 2))
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > ram:
        raise UserError(f"config: data.batch={b} x data.lr_patch={p} at C={c}, N={n} needs about "
                        f"{need / 2 ** 30:.0f} GiB for one training step; this machine has {ram / 2 ** 30:.0f} GiB")


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
    check_memory(cfg)
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
