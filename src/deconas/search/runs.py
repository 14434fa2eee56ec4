"""Search run folders as other code reads them: the supernet and controller of a config's
space, the checkpoint, the data record and the validation images. ``deconas derive`` and
``deconas study`` start from a search's folder through these; the loop itself writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from deconas import config as config_mod
from deconas.config import Config
from deconas.data.datasets import load_train_val
from deconas.errors import UserError
from deconas.runfolder import CONFIG, SEARCH_DATA, SEARCH_STATE, read_data_record
from deconas.runtime import read_json, torch_load
from deconas.search.controller import Controller
from deconas.search.supernet import SuperNet
from deconas.space.latency import check_table


def build_controller(cfg: Config) -> Controller:
    """The controller of the config's space, freshly initialised (from the current torch seed)."""
    m, s = cfg.model, cfg.search
    return Controller(m.nodes, m.blocks, ff=s.ff, lstm_size=s.lstm_size, lstm_layers=s.lstm_layers,
                      tanh_constant=s.tanh_constant, op_tanh_reduce=float(s.op_tanh_reduce),
                      temperature=s.temperature, tie_embeddings=s.tie_embeddings)


def build_supernet(cfg: Config) -> SuperNet:
    """The shared weights of the config's space, freshly initialised."""
    m = cfg.model
    return SuperNet(cfg.scale, m.channels, m.blocks, m.nodes)


def check_search_folder(run) -> Path:
    """``run`` holds a search (its config, checkpoint and data record), or one line saying not."""
    run = Path(run)
    for f in (CONFIG, SEARCH_STATE, SEARCH_DATA):
        if not (run / f).is_file():
            raise UserError(f"{run}: no {f}; is this the folder of a 'deconas search' run?")
    return run


def load_search_data(cfg: Config, train_dir=None, val_dir=None):
    """(train pairs, val pairs, provenance): see :func:`deconas.data.datasets.load_train_val`."""
    d = cfg.data
    split = cfg.seed if d.split_seed is None else d.split_seed
    return load_train_val(train_dir, val_dir, cfg.scale, d.val_fraction, d.val_max, split)


def read_data_json(run_dir) -> dict:
    """A search's ``data.json`` (the images it used), checked: missing or damaged is one line."""
    return read_data_record(Path(run_dir) / SEARCH_DATA)


def read_checkpoint(path, device="cpu", keys=("epoch", "controller", "supernet")) -> dict:
    """``checkpoint.pt`` of a search, checked: missing, unreadable or incomplete is a one-line
    :class:`UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing; is this the folder of a 'deconas search' run?")
    try:
        st = torch_load(path, map_location=device)
    except UserError:
        raise
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: unreadable ({type(e).__name__}); the checkpoint is damaged") from None
    if not isinstance(st, dict):
        raise UserError(f"{path}: damaged (not a search checkpoint)")
    missing = [k for k in keys if k not in st]
    if missing:
        raise UserError(f"{path}: damaged or not a search checkpoint (no {', '.join(missing)})")
    return st


def reload_val_pairs(run_dir) -> list:
    """The validation pairs of a finished run, from its ``data.json`` and ``config.yaml``."""
    run = Path(run_dir)
    prov = read_data_json(run)
    cfg = config_mod.load(str(run / CONFIG))
    train = None if prov["train_dir"] == "built-in" else prov["train_dir"]
    _, val, _ = load_search_data(cfg, train, prov["val_dir"])
    if [n for n, _, _ in val] != prov["val_images"]:
        raise UserError(f"{run}: the validation images on disk differ from the ones the search used")
    return val


def read_latency_table(cfg: Config) -> Optional[dict]:
    """The latency table the ``latency`` penalty needs (``search.latency_table``), checked; None
    for the other penalties."""
    s, m = cfg.search, cfg.model
    if s.penalty != "latency":
        return None
    if s.latency_table is None:
        raise UserError("search.penalty=latency needs search.latency_table (made by 'deconas profile')")
    path = Path(s.latency_table)
    table = read_json(path, f"search.latency_table {path}", 1_000_000)
    check_table(table, m.nodes, m.blocks, f"search.latency_table {path}")
    if (table.get("channels"), table.get("blocks"), table.get("scale")) != (m.channels, m.blocks, cfg.scale):
        raise UserError(f"search.latency_table {path}: measured for C={table.get('channels')}, N={table.get('blocks')}, "
                        f"x{table.get('scale')}; this search is C={m.channels}, N={m.blocks}, x{cfg.scale}")
    return table
