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
    return apply_overrides(cfg, overrides or [])


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
    return cfg


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
