"""Configs are data: YAML files (presets ship in ``deconas/configs``), overridden by
``key=value`` pairs on the command line (dotted keys reach nested sections)."""

from __future__ import annotations

import copy
import difflib
import math
import os
import reprlib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Optional

import yaml

from deconas.constants import MAX_THREADS, SCALES, STUDY_STRATEGIES
from deconas.errors import UserError

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


def load(name_or_path: str, overrides: Optional[Iterable[str]] = None) -> Config:
    """The config with every default filled in, the overrides applied, and every value checked."""
    return apply_overrides(complete(_load_chain(name_or_path, ())), overrides or [])  # validates


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
    except RecursionError:
        raise UserError(f"config {path}: nested too deeply to be a config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config {path}: unreadable ({e})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"config {path}: expected a mapping of settings at the top level")
    base = cfg.pop("base", None)  # a config may extend a preset and change a few keys
    check_keys(cfg, f"config {path}")
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise UserError(f"config {path}: base: {_short(base)} must be the name of a preset or a YAML file")
        merged = _load_chain(base if Path(base).is_absolute() or base in presets() else str(path.parent / base)
                             if (path.parent / base).is_file() else base, seen + (path.resolve(),))
        _merge(merged, cfg)
        cfg = merged
    return cfg


# ----------------------------------------------------------------------------- the schema
# Every setting is declared once, here: its section, type, default, allowed range and a line
# of documentation. Loading a config gives a :class:`Config` with every default filled in (so
# code reads attributes, ``cfg.search.alpha``, and never supplies a default of its own), a
# preset only lists what it changes, and docs/config.md
# is generated from these classes (``python -m deconas.config > docs/config.md``; a test keeps
# it up to date). The defaults are the paper's: its search (section III.A) and its training.


SUPERNET_SAMPLING = ("strategy", "uniform", "fair")


def setting(default, kind: str, arg=None, maximum=None, doc: str = ""):
    """One setting. ``kind``: int or float (``arg`` = minimum), float? (a float or null),
    fraction ([0, 1)), bool, choice (``arg`` = the choices), choices (a list of them, each at most once), path? (a
    file, or null), name? (a preset or YAML file, or null), list (of KEY=VALUE strings)."""
    meta = {"kind": kind, "arg": arg, "max": maximum, "doc": doc}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Common:
    """Top-level settings of every config."""
    scale: int = setting(2, "choice", SCALES, doc="upscaling factor s")
    seed: int = setting(0, "int", 0, doc="seed of every random stream (weights, patches, data split, controller)")
    threads: object = setting("auto", "threads", 0, MAX_THREADS, doc="CPU threads of a search or training: auto fits the free cores and re-checks by timing (README, Speed); a count fixes it (0 = auto)")
    deterministic: bool = setting(False, "bool", doc="deterministic torch algorithms (bit-identical reruns and resumes, slower on GPU)")
    plot: bool = setting(True, "bool", doc="training: write curves.png every epoch")
    tensorboard: bool = setting(True, "bool", doc="search: write TensorBoard scalars to RUN/tb (when tensorboard is installed)")


@dataclass
class Run:
    """Top-level settings of a `deconas run` config (search -> derive -> train -> evaluate)."""
    test_fraction: float = setting(0.0, "fraction", doc="images held out of search and training for the final evaluation")
    derive_samples: int = setting(100, "int", 1, doc="architectures sampled from the trained controller")
    search_config: Optional[str] = setting(None, "name?", doc="the search stage's preset or YAML file (a run config must name it)")
    search_overrides: list = setting([], "list", doc="KEY=VALUE overrides of the search stage's config")
    train_config: Optional[str] = setting(None, "name?", doc="the training stage's preset or YAML file (a run config must name it)")
    train_overrides: list = setting([], "list", doc="KEY=VALUE overrides of the training stage's config")


@dataclass
class Model:
    """The network: DeCoNASNet of a genotype, or the supernet of a search space."""
    channels: int = setting(64, "int", 1, 1024, doc="C, feature channels")
    blocks: int = setting(4, "int", 1, 64, doc="N, densely connected network blocks (DNBs)")
    nodes: int = setting(4, "int", 1, 32, doc="M, mix nodes per DNB (search; training takes M from the genotype)")


@dataclass
class Data:
    """Training patches and the validation split."""
    lr_patch: int = setting(64, "int", 1, 1024, doc="LR patch size; the HR patch is scale x lr_patch")
    batch: int = setting(16, "int", 1, 4096, doc="patches per step")
    augment: bool = setting(True, "bool", doc="random horizontal flips and 90-degree rotations")
    val_fraction: float = setting(0.1, "fraction", doc="share of --train held out for validation when no --val is given")
    val_max: int = setting(0, "int", 0, doc="validate on at most this many images (0 = all)")
    split_seed: Optional[int] = setting(None, "int?", 0, doc="seed of the held-out split (null = seed): other training seeds, one validation set")


@dataclass
class Search:
    """The ENAS-style search: shared-weight child steps, then controller (REINFORCE) steps, per epoch."""
    epochs: int = setting(200, "int", 1, doc="search epochs")
    child_steps: int = setting(1000, "int", 1, doc="supernet steps per epoch, one sampled architecture each")
    controller_steps: int = setting(100, "int", 0, doc="controller updates per epoch")
    warmup_epochs: int = setting(5, "int", 0, doc="epochs without controller updates (the first update is in epoch warmup_epochs + 1)")
    lr: float = setting(1e-4, "float", 1e-12, doc="supernet Adam learning rate")
    lr_step_epochs: int = setting(50, "int", 1, doc="multiply the supernet learning rate by lr_gamma every this many epochs")
    lr_gamma: float = setting(0.5, "float", 1e-12, doc="the supernet learning rate's step factor")
    grad_clip: float = setting(0.0, "float", 0, doc="supernet gradient-norm clip (0 = off)")
    controller_lr: float = setting(3e-4, "float", 1e-12, doc="controller Adam learning rate")
    strategy: str = setting("controller", "choice", ("controller", "random", "evolution"), doc="what proposes the architectures: the paper's LSTM (REINFORCE), random search, or regularized evolution (docs/search.md)")
    population: int = setting(20, "int", 2, doc="evolution: the population's size (the oldest member is removed)")
    tournament: int = setting(5, "int", 1, doc="evolution: members drawn for a tournament; the best is the parent")
    supernet_sampling: str = setting("strategy", "choice", SUPERNET_SAMPLING, doc="child steps train what the strategy proposes, a uniform draw, or a uniform draw and its bit complement (FairNAS)")
    uniform_epochs: int = setting(0, "int", 0, doc="child steps of the first this many epochs sample uniformly (a warm-up, as SPOS)")
    samples_per_step: int = setting(1, "int", 1, doc="architectures scored on one reward batch per controller step (per process)")
    reward_baseline: str = setting("moving_average", "choice", ("moving_average", "leave_one_out"), doc="advantage r - b with the moving-average b, or r_i - mean of the other samples of the step")
    penalty: str = setting("params", "choice", ("params", "mult_adds", "latency"), doc="what the CB penalty counts, over the space's largest network")
    alpha: float = setting(2.0, "float", 0, doc="CB penalty weight: reward = PSNR - alpha x cost / cost of the largest network (2 = CB1, 0 = CB0)")
    latency_table: Optional[str] = setting(None, "path?", doc="penalty latency: the table of `deconas profile` (JSON)")
    ff: bool = setting(False, "bool", doc="search the GFF inputs too (FF1); false = FF0")
    entropy_weight: float = setting(1e-4, "float", 0, doc="weight of the policy's entropy in the reward")
    baseline_decay: float = setting(0.99, "fraction", doc="decay of the reward's moving-average baseline")
    lstm_size: int = setting(64, "int", 1, 4096, doc="controller LSTM width")
    lstm_layers: int = setting(2, "int", 1, doc="controller LSTM layers")
    tanh_constant: Optional[float] = setting(1.1, "float?", 1e-12, doc="logits = tanh_constant x tanh(logits) (null = off)")
    op_tanh_reduce: float = setting(2.5, "float", 1e-12, doc="the operation logits' tanh_constant is divided by this")
    temperature: Optional[float] = setting(None, "float?", 1e-12, doc="logits divided by this before sampling (null = 1)")
    tie_embeddings: bool = setting(True, "bool", doc="the controller's input embeddings are its output weights")
    val_patch: int = setting(48, "int", 1, 1024, doc="LR size of the reward's validation patches")
    val_batch: int = setting(10, "int", 1, 4096, doc="validation patches per reward")
    val_resample: str = setting("step", "choice", ("step", "epoch", "run"), doc="draw a new reward batch every controller step, epoch, or once per run")
    derive_samples: int = setting(100, "int", 1, doc="architectures `deconas derive` samples and scores")
    derive_max_images: int = setting(0, "int", 0, doc="derive scores on at most this many validation images (0 = all)")
    derive_max_size: int = setting(0, "int", 0, doc="derive scores centre crops of at most this many LR pixels a side (0 = whole images)")


@dataclass
class Train:
    """Training one DeCoNASNet from scratch: L1 loss, Adam."""
    steps: int = setting(1_000_000, "int", 1, doc="optimizer steps")
    lr: float = setting(1e-4, "float", 1e-12, doc="Adam learning rate")
    schedule: str = setting("step", "choice", ("step", "cosine"), doc="learning-rate schedule after the warm-up")
    lr_min: float = setting(0.0, "float", 0, doc="cosine schedule: the final learning rate")
    warmup_steps: int = setting(0, "int", 0, doc="linear warm-up from lr / warmup_steps")
    lr_step: int = setting(200_000, "int", 1, doc="step schedule: multiply the learning rate by lr_gamma every this many steps")
    lr_gamma: float = setting(0.5, "float", 1e-12, doc="step schedule: the factor")
    grad_clip: float = setting(0.0, "float", 0, doc="gradient-norm clip (0 = off)")
    amp: str = setting("none", "choice", ("none", "bf16"), doc="bf16 autocast (faster with AMX or tensor cores; 10x slower on CPUs without bf16 units)")
    epoch_steps: int = setting(1000, "int", 1, doc="steps per epoch: a checkpoint (and validation) every epoch")
    val_every: int = setting(1, "int", 1, doc="validate every this many epochs (and after the last step)")


@dataclass
class Study:
    """`deconas study`: searched against parameter-matched random architectures, each trained standalone."""
    top: int = setting(8, "int", 1, doc="the K best derived architectures (by shared-weight PSNR)")
    random: int = setting(8, "int", 0, doc="uniform random architectures, each matched to a searched one")
    param_tolerance: float = setting(0.1, "fraction", doc="a random architecture is within this share of its partner's parameters")
    jobs: int = setting(2, "int", 1, doc="architectures trained at once, each in its own process")
    threads: object = setting("auto", "threads", 0, MAX_THREADS, doc="threads per job: auto shares the free cores among study.jobs (0 = auto)")
    screen: int = setting(3, "int", 0, doc="re-score derive's best screen x top architectures (0 = every derived one)")
    shared_max_images: int = setting(0, "int", 0, doc="shared-weight PSNR on at most this many validation images (0 = all)")
    shared_max_size: int = setting(0, "int", 0, doc="... on centre crops of at most this many LR pixels a side (0 = whole)")
    noise_batches: int = setting(20, "int", 2, doc="reward batches of the reward-noise measurement")
    # The study without a run folder (`deconas study --train DIR`): its own searches.
    pool: int = setting(20, "int", 3, doc="the random pool: uniform architectures (stratified by parameters) trained standalone")
    pool_seeds: int = setting(1, "int", 1, 100, doc="training seeds per pool architecture")
    schedules: list = setting(["strategy", "uniform", "fair"], "choices", SUPERNET_SAMPLING, doc="supernet schedules whose shared-weight ranking of the pool is measured (the controller proposes)")
    strategies: list = setting(list(STUDY_STRATEGIES), "choices", tuple(STUDY_STRATEGIES), doc="strategies searched on the best schedule, at one budget; each one's top architectures are trained standalone")
    seeds: int = setting(2, "int", 1, 100, doc="training seeds per picked architecture")
    loo_samples: int = setting(5, "int", 2, doc="controller-loo: architectures per controller step (search.controller_steps must divide by it)")
    bootstrap: int = setting(2000, "int", 100, 1_000_000, doc="bootstrap resamples of every interval")


# (section, class): "" is the top level.
SECTIONS = (("", Common), ("", Run), ("model", Model), ("data", Data), ("search", Search), ("train", Train),
            ("study", Study))
SCHEMA = {(f"{sec}." if sec else "") + f.name: f for sec, cls in SECTIONS for f in fields(cls)}
SECTION_NAMES = frozenset(sec for sec, _ in SECTIONS if sec)


@dataclass
class Config(Run, Common):
    """A whole config: the top-level settings as attributes, each section as its dataclass
    (``cfg.scale``, ``cfg.train.lr``). Made by :func:`load` or :func:`validate`, so every
    value has been checked; :func:`to_dict` gives the plain mapping that YAML files hold."""
    model: Model = field(default_factory=Model)
    data: Data = field(default_factory=Data)
    search: Search = field(default_factory=Search)
    train: Train = field(default_factory=Train)
    study: Study = field(default_factory=Study)


def to_dict(cfg: Config) -> dict:
    """The plain nested mapping (what ``config.yaml`` holds, and what JSON records take)."""
    return asdict(cfg)


def flatten(cfg: Config) -> dict:
    """Every setting by its dotted key (``"train.lr"``), as in overrides and docs/config.md."""
    flat = {}
    for key in SCHEMA:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        flat[key] = node
    return flat


def _from_dict(d: dict) -> Config:
    """A complete, checked mapping as a :class:`Config`."""
    sections = {sec: cls(**d[sec]) for sec, cls in SECTIONS if sec}
    top = {f.name: d[f.name] for sec, cls in SECTIONS if not sec for f in fields(cls)}
    return Config(**top, **sections)


def default(key: str):
    f = SCHEMA[key]
    return f.default_factory() if f.default is MISSING else f.default


def bounds(key: str) -> tuple:
    """(minimum, maximum) of a numeric setting (None where it has none)."""
    m = SCHEMA[key].metadata
    return m["arg"], m["max"]


def complete(cfg: dict) -> dict:
    """Fill in (in place) every setting ``cfg`` leaves out with the schema's default."""
    for key in SCHEMA:
        node, parts = cfg, key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if parts[-1] not in node:
            node[parts[-1]] = default(key)
    return cfg


def markdown() -> str:
    """docs/config.md: every setting, from the schema."""
    kinds = {"int": "integer", "int?": "integer or null", "float": "number", "float?": "number or null", "fraction": "fraction in [0, 1)",
             "bool": "true / false", "choice": "one of", "name?": "preset name or YAML file", "path?": "file path or null", "list": "list of KEY=VALUE", "choices": "list of", "threads": "auto or integer"}
    out = ["# Configuration settings", "",
           "Generated from the schema in `src/deconas/config.py` (`python -m deconas.config > docs/config.md`);",
           "a test checks that this page is up to date.", "",
           "A config is a YAML file or a shipped preset (`src/deconas/configs/`). A preset lists only the settings",
           "it changes; every other setting has the default below, which is the paper's. `base: NAME` starts",
           "from another preset or file. On the command line, `KEY=VALUE` overrides any setting (dotted keys",
           "reach sections: `search.alpha=0`). An unknown key is refused, with the nearest valid one suggested.", ""]
    for sec, cls in SECTIONS:
        out += [f"## {('`' + sec + '`') if sec else 'top level'}: {cls.__doc__.strip()}", "",
                "| key | type | default | range | meaning |", "|---|---|---|---|---|"]
        for f in fields(cls):
            m = f.metadata
            key = (f"{sec}." if sec else "") + f.name
            d = default(key)
            d = "null" if d is None else ("[]" if d == [] else str(d).lower() if isinstance(d, bool) else str(d))
            kind = kinds[m["kind"]]
            if m["kind"] in ("choice", "choices"):
                rng = ", ".join(map(str, m["arg"]))
            elif m["kind"] in ("int", "int?", "float", "float?", "threads"):
                rng = (f">= {m['arg']}" if m["arg"] == 0 or m["kind"].startswith("int") else "> 0") + (
                    f", <= {m['max']}" if m["max"] else "")
            else:
                rng = ""
            out.append(f"| `{key}` | {kind} | `{d}` | {rng} | {m['doc']} |")
        out.append("")
    return "\n".join(out)


def _nearest(key: str) -> str:
    near = difflib.get_close_matches(key, sorted(set(SCHEMA) | SECTION_NAMES), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def check_keys(cfg: dict, where: str) -> None:
    """Every key is a known setting or section; a typo is refused with the nearest valid key."""
    def walk(node, prefix=""):
        if not isinstance(node, dict):
            raise UserError(f"{where}: section {prefix[:-1]!r} must be a mapping of settings")
        for k, v in node.items():
            key = prefix + str(k)
            if not prefix and key in SECTION_NAMES:
                walk(v, key + ".")
            elif key not in SCHEMA:
                raise UserError(f"{where}: unknown setting {key!r}" + _nearest(key))
            elif isinstance(v, dict):
                raise UserError(f"{where}: {key} is a single value, not a section")

    walk(cfg)


# The largest integer a setting may hold: what torch's and numpy's seeds and counters take.
INT_MAX = 2 ** 63 - 1
# A list setting's length limit (an alias bomb expands to billions of entries).
LIST_MAX = 1000
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 40, 40, 4, 4, 2


def _short(v) -> str:
    """A value as a message shows it: bounded, whatever the value (a YAML bomb is not expanded)."""
    return _REPR.repr(v)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_value(key: str, v) -> None:
    m = SCHEMA[key].metadata
    kind, arg, maximum = m["kind"], m["arg"], m["max"]
    bad = None
    if kind == "int?" and v is None:
        return
    if kind == "threads":
        if v == "auto":
            return
        kind = "int"
    if kind in ("int", "int?"):
        if isinstance(v, bool) or not isinstance(v, int) or not arg <= v <= (maximum or INT_MAX):
            bad = f"an integer >= {arg}" + (f", at most {maximum or INT_MAX}" if isinstance(v, int) and v > arg else "")
    elif kind in ("float", "float?"):
        if v is None and kind == "float?":
            return
        if not _number(v) or v < arg:
            bad = ("a positive number" if arg > 0 else f"a number >= {arg}") + " (finite)"
    elif kind == "fraction":
        if not _number(v) or not 0 <= v < 1:
            bad = "a fraction in [0, 1)"
    elif kind == "bool":
        if not isinstance(v, bool):
            bad = "true or false"
    elif kind == "choice":
        if not isinstance(v, (str, int)) or isinstance(v, bool) or v not in arg:
            bad = "one of " + ", ".join(map(str, arg))
    elif kind == "path?":
        if v is not None and not (isinstance(v, str) and v.strip()):
            bad = "the path of a file, or null"
    elif kind == "name?":
        if v is not None and not (isinstance(v, str) and v.strip()):
            bad = "the name of a preset or a YAML file"
    elif kind == "choices":
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x in arg for x in v) \
                or len(set(v)) != len(v):
            bad = "a list of distinct names from " + ", ".join(map(str, arg))
    elif kind == "list":
        if not isinstance(v, list) or len(v) > LIST_MAX or not all(isinstance(x, str) for x in v):
            bad = f"a list of at most {LIST_MAX} KEY=VALUE strings"
    if not bad and maximum is not None and kind not in ("int", "int?") and v > maximum:
        bad = f"at most {maximum}"
    if bad:
        raise UserError(f"config: {key}={_short(v)}: expected {bad}")


def check_memory(cfg: dict) -> None:
    """Refuse a training batch whose activations cannot fit in this machine's memory, before
    any data is loaded. The estimate counts the feature maps a backward pass keeps (fp32):
    a few maps of C channels per mix node and per block, at the LR patch size."""
    m, d = cfg["model"], cfg["data"]
    c, n, nodes = m["channels"], m["blocks"], m["nodes"]
    b, p, scale = d["batch"], d["lr_patch"], cfg["scale"]
    need = 4 * b * p * p * (c * (n * (nodes * 8 + 4) + 8) + 3 * scale * scale * (c + 2))
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > ram:
        raise UserError(f"config: data.batch={b} x data.lr_patch={p} at C={c}, N={n} needs about "
                        f"{need / 2 ** 30:.0f} GiB for one training step; this machine has {ram / 2 ** 30:.0f} GiB")


def validate(cfg) -> Config:
    """A :class:`Config` from a mapping (a hand-made one may leave settings out: they get
    their defaults) or from a Config whose attributes were changed, every setting's type and
    range checked."""
    cfg = to_dict(cfg) if isinstance(cfg, Config) else copy.deepcopy(cfg)
    check_keys(cfg, "config")
    complete(cfg)

    def walk(node, prefix=""):
        for k, v in node.items():
            key = prefix + k
            if isinstance(v, dict):
                walk(v, key + ".")
            else:
                if SCHEMA[key].metadata["kind"].startswith("float") and isinstance(v, str):
                    try:  # YAML 1.1 reads 1e-3 (no dot) as a string
                        v = node[k] = float(v)
                    except ValueError:
                        pass
                _check_value(key, v)
    walk(cfg)
    check_memory(cfg)
    return _from_dict(cfg)


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def apply_overrides(cfg, overrides: Iterable[str]) -> Config:
    """``search.alpha=0`` sets ``cfg.search.alpha = 0``; an unknown key is an error (a typo).
    ``cfg``: a :class:`Config` or a mapping; the result is a new, checked Config."""
    cfg = to_dict(cfg) if isinstance(cfg, Config) else complete(copy.deepcopy(cfg))
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. search.alpha=0")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in SCHEMA:
            if key in SECTION_NAMES:  # `model=3`: "did you mean 'model'" would not help
                first = next(k for k in SCHEMA if k.startswith(key + "."))
                raise UserError(f"override {item!r}: {key!r} is a section; set one of its settings, e.g. {first}=...")
            raise UserError(f"override {item!r}: unknown key {key!r}" + _nearest(key))
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        except RecursionError:
            raise UserError(f"override {key}: nested too deeply to be a value") from None
        node, parts = cfg, key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return validate(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


if __name__ == "__main__":
    print(markdown(), end="")
