"""Small shared pieces of running long jobs: the device, seeding, atomic files, JSONL logs."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deconas.errors import UserError


class _LazyTorch:
    """``torch``, imported on first use: image files are written through this module, and the
    ONNX Runtime upscaling path never needs torch (its import costs seconds and ~220 MB)."""

    def __getattr__(self, name):
        import torch as _torch

        globals()["torch"] = _torch
        return getattr(_torch, name)


torch = _LazyTorch()


def pick_device(name: str | None = None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: not a device name (cpu, cuda, cuda:1, ...)") from None
    if dev.type not in ("cpu", "cuda"):  # meta, xla, mps, ...: devices deconas does not run on
        raise UserError(f"--device {name}: deconas runs on cpu or cuda (cuda:1, ...)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available in this torch build")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: a crash leaves the old file or the new one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers (safetensors) replace the file with a 0600 one
        os.replace(tmp, path)
    except OSError as e:  # disk full, permissions: nothing half-written, one clear line
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def name_too_long(path) -> bool:
    """Whether the file system refuses ``path``'s name, or that of the temporary
    :func:`atomic_write` writes first (``.NAME.XXXXXXXX.tmp``, 14 characters more)."""
    path = Path(path)
    where = next((d for d in (path.parent, *path.parent.parents) if d.exists()), Path("."))
    try:
        limit = os.pathconf(where, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    return len(path.name.encode()) + 14 > limit


def check_writable(out: Path, option: str) -> None:
    """The folder ``out`` can be written, or made and written (probed in the nearest folder
    that exists): one line naming ``option`` otherwise, before any work is done."""
    probe_dir = Path(out)
    while not probe_dir.exists():  # where the folder will be made
        probe_dir = probe_dir.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".deconas-probe.", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{option} {out}: cannot write in {probe_dir} ({e.strerror or e})") from None


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_torch_save(path, obj) -> None:
    def save(tmp):
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch reports a full disk or a failed write as a RuntimeError
            if "write" not in str(e).lower() and "file" not in str(e).lower():
                raise
            raise OSError(f"the write failed ({' '.join(str(e).split())[:120]}); is the disk full?") from None
    atomic_write(path, save)


def _check_zip_crcs(path) -> None:
    """torch.load does not check the CRC-32 that torch.save writes for every record: a flipped
    byte in a tensor would resume silently with other numbers. zipfile checks them all."""
    try:
        if not zipfile.is_zipfile(path):
            return  # not torch's zip format: torch.load says what it is
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except FileNotFoundError:
        return
    except Exception as e:  # a damaged directory or header
        raise UserError(f"{path}: damaged ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if bad is not None:
        raise UserError(f"{path}: damaged (the checksum of its record {bad[:80]} does not match: "
                        f"the file changed after it was written)")


def torch_load(path, map_location="cpu"):
    """Resume states hold only tensors and plain containers: load them without executing code,
    after checking the file's checksums."""
    _check_zip_crcs(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except Exception as e:  # truncated, corrupt or foreign files: say which, no traceback
        if "weights only load failed" in str(e).lower() or "unsupported global" in str(e).lower():
            # Never suggest the unsafe loader: such a file can run code when unpickled.
            raise UserError(f"{path}: refused: it holds Python objects other than tensors, which could run "
                            f"code when loaded; deconas resume states hold only tensors and plain values") from None
        first = str(e).splitlines()[0][:200] if str(e).strip() else type(e).__name__  # EOFError() says nothing
        raise UserError(f"{path}: unreadable checkpoint ({first})") from None


# What the integers of a resume state may be: a count no 64-bit integer (torch's, numpy's) overflows.
STATE_INT_MAX = 2 ** 63 - 1


def state_number(v, what: str, lo: float = -math.inf, hi: float = math.inf, integer: bool = False):
    """``v``, a number read from a resume state, checked: an int when ``integer`` (else an int or
    a float), not NaN, within [lo, hi]. ValueError naming ``what`` otherwise (the caller names
    the file)."""
    ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
    if not ok or v != v or not lo <= v <= hi:
        raise ValueError(f"{what} is {str(v)[:40]!r}")
    return v


def _finite(t) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def check_tensors_like(saved, template, what: str) -> None:
    """``saved`` (a state dict read from a file) has exactly ``template``'s tensors: names,
    shapes and dtypes (load_state_dict would convert another dtype silently), and numbers
    only, no NaN or inf. ValueError naming the first that is not."""
    if not isinstance(saved, dict):
        raise ValueError(f"{what} is a {type(saved).__name__}, not a mapping of tensors")
    missing = [k for k in template if k not in saved]
    extra = [k for k in saved if k not in template]
    if missing or extra:
        raise ValueError(f"{what} " + (f"lacks {missing[0]}" if missing else f"has an unknown {str(extra[0])[:40]}"))
    for k, want in template.items():
        t = saved[k]
        if not isinstance(t, torch.Tensor) or t.dtype != want.dtype or t.shape != want.shape:
            got = f"{t.dtype} {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{what} {k} is {got}, expected {want.dtype} {list(want.shape)}")
        if not _finite(t):
            raise ValueError(f"{what} {k} holds NaN or inf")


def _state_keys(opt) -> set:
    """The per-parameter state ``opt``'s class keeps once a parameter has stepped (for Adam:
    step, exp_avg, exp_avg_sq), from one step of the same optimizer on a throwaway parameter."""
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    probe = type(opt)([p], **opt.defaults)
    probe.step()
    return set(probe.state[p])


def check_optimizer_state(saved, opt, what: str) -> None:
    """``saved`` (an ``opt.state_dict()`` read from a file) fits ``opt``: the same settings but
    the learning rate (set every step), one index per parameter, and for each stepped parameter
    the tensors its class keeps, of the parameter's shape and floating dtype, holding numbers.
    torch checks little of this on load; a damaged value would fail deep inside a later step
    or be cast silently. ValueError naming what is wrong."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), list):
        raise ValueError(f"{what} is not an optimizer state")
    params = [p for g in opt.param_groups for p in g["params"]]
    groups = saved["param_groups"]
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"{what} has {len(groups)} parameter groups, expected {len(opt.param_groups)}")
    if not all(isinstance(g, dict) for g in groups):
        raise ValueError(f"{what} has a parameter group that is not a mapping")
    for g in groups:
        for k, v in opt.defaults.items():
            if k != "lr" and k in g and g[k] != v:  # a setting a state of another version lacks takes its default
                raise ValueError(f"{what} setting {k} is {str(g[k])[:40]}, expected {v}")
    if [i for g in groups for i in g.get("params", [])] != list(range(len(params))):
        raise ValueError(f"{what} does not list this network's {len(params)} parameters")
    keys = _state_keys(opt)
    for i, st in saved["state"].items():
        if not isinstance(i, int) or not 0 <= i < len(params) or not isinstance(st, dict) or set(st) != keys:
            raise ValueError(f"{what} state {str(i)[:20]} is not {', '.join(sorted(keys))} of a parameter")
        for k, t in st.items():
            shape = () if k == "step" else params[i].shape
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.shape != shape or not _finite(t):
                raise ValueError(f"{what} state {i} {k} is not a finite {'scalar' if k == 'step' else list(shape)}"
                                 f" floating tensor")
            if k == "step" and not 0 <= float(t) <= STATE_INT_MAX:
                raise ValueError(f"{what} state {i} step is {float(t)}")


def parse_json(text: str):
    """``json.loads``, with nesting too deep for the parser's recursion (``[[[[...``, a crafted file)
    a ``ValueError`` like any other malformed JSON rather than a ``RecursionError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_jsonl(path) -> list:
    """The records of a JSONL log; a torn last line (a killed writer) is skipped."""
    out = []
    if not Path(path).is_file():
        return out
    for ln in Path(path).read_text().splitlines():
        try:
            out.append(parse_json(ln))
        except ValueError:
            continue
    return out


def read_json(path, what: str, max_bytes: int):
    """A JSON file a user hands in, refused in one line (naming ``what``) when it is missing,
    larger than ``max_bytes`` (before it is read), unreadable or not JSON."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UserError(f"{what}: {size:,} bytes, more than such a file holds ({max_bytes:,})")
        return parse_json(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what}: no such file") from None
    except OSError as e:
        raise UserError(f"{what}: unreadable ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{what}: not JSON") from None


def rng_state() -> dict:
    """Every RNG a run draws from, as plain containers and tensors (weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {
        "python": _py_state_to_list(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_py_state_from_list(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(s):
    return [s[0], list(s[1]), s[2]]


def _py_state_from_list(s):
    return (s[0], tuple(s[1]), s[2])


class JsonlLog:
    """One JSON object per line; appended and flushed so a crash loses at most the current line."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def truncate_after(self, key: str, value) -> None:
        """On resume, drop records written after the checkpoint (e.g. epoch > last saved)."""
        if not self.path.exists():
            return
        keep = [r for r in read_jsonl(self.path) if r.get(key, -1) <= value]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))


def file_digest(path) -> str:
    """SHA-256 of a file's bytes, read in chunks (checkpoints name their ONNX cache entries by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pyplot():
    """matplotlib's pyplot on the Agg backend (files, no display). Imported on first use: it
    costs a second of start-up, and most commands draw nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 120) -> None:
    """Write a matplotlib figure as PNG atomically, then free it."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    pyplot().close(fig)
