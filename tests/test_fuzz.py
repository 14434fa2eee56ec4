"""Fuzzing the entry points that read user files and strings: random bytes and random
mutations of valid PNG, JPEG, safetensors, YAML and genotype strings either work or raise the
project's own error (UserError: one line, exit 2 at the CLI). Nothing else escapes, and every
call runs under an address-space limit of 2 GiB above what the process already holds."""

import contextlib
import copy
import io
import json
import resource
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from safetensors.torch import load_file

from deconas import config
from deconas.checkpoint import load_model, save_model
from deconas.cli import main
from deconas.errors import UserError
from deconas.runtime import torch_load
from deconas.space.genotype import parse
from deconas.data.images import read_image
from deconas.space.network import DeCoNASNet

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@contextlib.contextmanager
def memory_bound(extra=2 << 30):
    """Soft RLIMIT_AS at the current virtual size + ``extra``; an allocation past it fails."""
    vm = next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith("VmSize"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def works_or_user_error(fn, *args):
    with memory_bound():
        try:
            return fn(*args)
        except UserError as e:
            assert str(e) and "\n" not in str(e)
            return None


def mutate(data: bytes, draw_ops) -> bytes:
    b = bytearray(data)
    for kind, pos, val in draw_ops:
        if not b:
            break
        i = pos % len(b)
        if kind == "flip":
            b[i] = val
        elif kind == "cut":
            del b[i:]
        elif kind == "insert":
            b[i:i] = bytes([val]) * (1 + val % 64)
        else:  # a run of 0xFF: huge sizes in headers
            b[i:i + 4] = b"\xff\xff\xff\x7f"
    return bytes(b)


OPS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "big"]), st.integers(0, 1 << 20),
                         st.integers(0, 255)), min_size=1, max_size=4)


def _image_bytes(fmt):
    a = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt)
    return buf.getvalue()


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width, height, depth, colour_type, idat):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _la16_bytes():
    """16-bit grey+alpha, the PNG that Pillow cannot decode (deconas reads it with pypng)."""
    rows = np.random.default_rng(0).integers(0, 1 << 16, (12, 10 * 2)).astype(">u2")
    return _png(10, 12, 16, 4, zlib.compress(b"".join(b"\0" + r.tobytes() for r in rows)))


PNG, JPEG, LA16 = _image_bytes("PNG"), _image_bytes("JPEG"), _la16_bytes()


@FUZZ
@given(data=st.one_of(st.binary(max_size=2048), st.builds(mutate, st.sampled_from([PNG, JPEG, LA16]), OPS)))
def test_image_reader_works_or_says_why(tmp_path, data):
    p = tmp_path / "x.png"
    p.write_bytes(data)
    out = works_or_user_error(read_image, p)
    if out is not None:
        pixels, alpha = out
        assert pixels.dtype == np.uint8 and pixels.size > 0


def test_a_png_whose_data_inflates_far_past_its_header_is_refused_in_bounded_memory(tmp_path):
    # 64x64 pixels of 16-bit grey+alpha need 32 KiB; the data inflates to 400 MiB. The decoder of
    # this format (pypng) inflates a chunk at once, so the size is measured before it runs.
    deflate = zlib.compressobj(9)
    zeros = bytes(16 << 20)
    idat = b"".join(deflate.compress(zeros) for _ in range(25)) + deflate.flush()
    (tmp_path / "bomb.png").write_bytes(_png(64, 64, 16, 4, idat))
    with memory_bound(256 << 20):
        with pytest.raises(UserError) as e:
            read_image(tmp_path / "bomb.png")
    assert "bomb.png" in str(e.value) and "header" in str(e.value)


@pytest.fixture(scope="module")
def ckpt_bytes(tmp_path_factory):
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("ck") / "n.safetensors"
    save_model(p, DeCoNASNet(parse("7,6,4"), scale=2, channels=4, blocks=1))
    return p.read_bytes()


@FUZZ
@given(ops=OPS, header_only=st.booleans())
def test_checkpoint_loader_works_or_says_why(tmp_path, ckpt_bytes, ops, header_only):
    head = 8 + int.from_bytes(ckpt_bytes[:8], "little")
    data = mutate(ckpt_bytes[:head], ops) + ckpt_bytes[head:] if header_only else mutate(ckpt_bytes, ops)
    p = tmp_path / "m.safetensors"
    p.write_bytes(data)
    out = works_or_user_error(load_model, p)
    if out is not None:
        assert isinstance(out[0], DeCoNASNet)


@FUZZ
@given(meta_key=st.sampled_from(["genotype", "scale", "channels", "blocks"]),
       value=st.one_of(st.integers(-10 ** 6, 10 ** 9).map(str), st.text(max_size=40)))
def test_checkpoint_metadata_values_are_bounded(tmp_path, ckpt_bytes, meta_key, value):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src.safetensors"
    src.write_bytes(ckpt_bytes)
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    meta[meta_key] = value
    save_file(load_file(str(src)), str(tmp_path / "m.safetensors"), metadata=meta)
    works_or_user_error(load_model, tmp_path / "m.safetensors")


PRESET = (config.PRESET_DIR / "train-cpu.yaml").read_text()


@FUZZ
@given(text=st.one_of(st.text(max_size=300),
                      st.builds(lambda t, ops: mutate(t.encode(), ops).decode("utf-8", "replace"),
                                st.just(PRESET), OPS)))
def test_config_loader_works_or_says_why(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    out = works_or_user_error(config.load, str(p))
    if out is not None:
        assert isinstance(out, config.Config)


@FUZZ
@given(s=st.one_of(st.text(alphabet="0123456789, -+_.xX\n", max_size=80), st.text(max_size=40)))
def test_genotype_strings_work_or_say_why(s):
    g = works_or_user_error(parse, s)
    if g is not None:
        assert parse(str(g)) == g  # what parses, prints back to itself


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=st.text(alphabet="0123456789,", min_size=1, max_size=60))
def test_arch_cli_exits_0_or_2(s, capsys):
    with memory_bound():
        rc = main(["arch", s])
    assert rc in (0, 2)
    if rc == 2:
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


# Every numeric setting, from the schema: NaN, inf and values no code can hold are refused in one
# line; the message stays short whatever the value.
NUMERIC = [k for k, f in config.SCHEMA.items() if f.metadata["kind"] in ("int", "int?", "float", "float?", "fraction")]


def _bad_values(key):
    """NaN, infinities and a value too large for the setting: an integer past what the code holds,
    a float past its maximum (a float without one has no huge value that is wrong)."""
    m = config.SCHEMA[key].metadata
    huge = ["99999999999999999999"] if m["kind"].startswith("int") else (
        ["1e308"] if m["max"] is not None or m["kind"] == "fraction" else [])
    return [(key, v) for v in [".nan", ".inf", "-.inf", "1e400", *huge]]


@pytest.mark.parametrize("key, value", [kv for key in NUMERIC for kv in _bad_values(key)])
def test_every_numeric_setting_refuses_nan_inf_and_what_no_code_can_hold(key, value):
    with pytest.raises(UserError) as e:
        config.load("cpu", [f"{key}={value}"])
    msg = str(e.value)
    assert key in msg and "\n" not in msg and len(msg) < 300


def billion_laughs(levels: int = 9) -> str:
    """A YAML flow sequence of ``levels`` anchored lists, each nine aliases of the one before:
    9**levels leaves if anything expanded it (387 million for 9)."""
    items = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, levels):
        items.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize("setting", ["seed", "search_overrides", "search.alpha", "search.strategy"])
def test_a_yaml_alias_bomb_is_refused_in_one_short_line_in_bounded_memory(tmp_path, setting):
    top, _, sub = setting.rpartition(".")
    path = tmp_path / "bomb.yaml"
    path.write_text(f"{top}:\n  {sub}: {billion_laughs()}\n" if top else f"{sub}: {billion_laughs()}\n")
    with memory_bound(1 << 30):
        with pytest.raises(UserError) as e:
            config.load(str(path))
    msg = str(e.value)
    assert setting in msg and "\n" not in msg and len(msg) < 300, msg[:300]


@pytest.mark.parametrize("text", ["[" * 20000 + "]" * 20000, "a: " + "{b: " * 20000 + "1" + "}" * 20000])
def test_deeply_nested_yaml_is_a_one_line_error(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        config.load(str(path))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError):
        config.load("cpu", ["seed=" + text.split(": ", 1)[-1]])


# Files deconas wrote and reads back: resume states, best.json, candidates.csv, ONNX cache entries.
# Each is damaged the ways a disk, a killed writer or a careless hand damages it: bytes flipped or cut,
# and a value anywhere in the structure replaced by one of another type, shape or value.

def _children(obj):
    if isinstance(obj, dict):
        return list(obj.keys())
    if isinstance(obj, (list, tuple)):
        return list(range(len(obj)))
    return []


def _replacement(kind, old):
    floating = isinstance(old, torch.Tensor) and old.is_floating_point() and old.numel() > 0
    return {"a dict": lambda: {"a": 1}, "a list": lambda: [1, 2, 3], "a string": lambda: "x", "None": lambda: None,
            "a huge int": lambda: 10 ** 30, "-1": lambda: -1, "NaN": lambda: float("nan"), "inf": lambda: float("inf"),
            "0": lambda: 0, "a tensor of another shape": lambda: torch.zeros(3),
            "a NaN tensor": lambda: torch.full_like(old, float("nan")) if floating else torch.full((2,), float("nan")),
            "an int tensor": lambda: old.long() if isinstance(old, torch.Tensor) else torch.arange(4),
            "an empty tensor": lambda: torch.empty(0)}[kind]()


REPLACEMENTS = ["a dict", "a list", "a string", "None", "a huge int", "-1", "0", "NaN", "inf",
                "a tensor of another shape", "a NaN tensor", "an int tensor", "an empty tensor"]
FIRST = object()  # in a key path: the first child, whatever its key


def replace_at(state, keys, kind):
    """``state`` with the value at the key path ``keys`` replaced by a value of ``kind``."""
    root = copy.deepcopy(state)
    node = root
    for i, k in enumerate(keys):
        k = _children(node)[0] if k is FIRST else k
        if i == len(keys) - 1:
            node[k] = _replacement(kind, node[k])
        else:
            node = node[k]
    return root


def replace_somewhere(state, walk, kind):
    """``state`` with the value at the end of ``walk`` (child indices, taken modulo the number of
    children, stopping at a leaf) replaced by a value of ``kind``; an empty walk replaces it all."""
    if not walk:
        return _replacement(kind, state)
    root = copy.deepcopy(state)
    parent, key = None, None
    node = root
    for step in walk:
        keys = _children(node)
        if not keys:
            break
        parent, key = node, keys[step % len(keys)]
        node = node[key]
    if isinstance(parent, tuple):  # tuples are rebuilt one level up; replace the tuple as a whole
        return replace_somewhere(state, walk[:-1], kind)
    parent[key] = _replacement(kind, node)
    return root


STATE_DAMAGE = st.one_of(
    st.tuples(st.just("bytes"), OPS),
    st.tuples(st.just("value"),
              st.tuples(st.lists(st.integers(0, 1 << 16), max_size=4), st.sampled_from(REPLACEMENTS))))


def write_damaged_state(path, state, damage):
    how, what = damage
    if how == "bytes":
        buf = io.BytesIO()
        torch.save(state, buf)
        path.write_bytes(mutate(buf.getvalue(), what))
    else:
        torch.save(replace_somewhere(state, *what), path)


def exits_0_or_one_error_line(capsys, argv, naming=None):
    """The CLI under a memory bound: 0, or 2 with one error line on stderr (a progress bar or a
    banner may precede it) that names ``naming``, and no traceback. Anything else escapes and
    fails the test."""
    capsys.readouterr()
    with memory_bound():
        rc = main(argv)
    err = capsys.readouterr().err
    assert rc in (0, 2) and "Traceback" not in err, (rc, err)
    if rc == 2:
        errors = [ln for ln in err.replace("\r", "\n").splitlines() if "error:" in ln]
        assert len(errors) == 1 and len(errors[0]) < 500, err
        assert naming is None or naming in errors[0], errors[0]
    return rc


STATEFUL = settings(FUZZ, max_examples=25)
TINY_TRAIN = ["model.channels=4", "model.blocks=1", "data.lr_patch=8", "data.batch=2", "data.val_fraction=0.34",
              "train.epoch_steps=2", "train.warmup_steps=0", "train.steps=2", "plot=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from search_helpers import tiny_images

    root = tmp_path_factory.mktemp("trained")
    images = tiny_images(root / "imgs", n=4, size=40)
    assert main(["train", "--genotype", "7,6,4", "--train", str(images), "--out", str(root / "run"), *TINY_TRAIN]) == 0
    return root / "run"


@STATEFUL
@given(damage=STATE_DAMAGE)
def test_train_resume_from_a_damaged_state_works_or_says_why(tmp_path, capsys, trained, damage):
    run = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(trained, run)
    write_damaged_state(run / "state.pt", torch.load(trained / "state.pt", weights_only=True), damage)
    rc = exits_0_or_one_error_line(capsys, ["train", "--genotype", "7,6,4", "--out", str(run), "--resume",
                                            "train.steps=4"], naming="state.pt")
    if rc == 0:  # resumed: the run went on to its 4 steps, and its weights are numbers
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == 4, summary
        assert all(torch.isfinite(t).all() for t in load_file(str(run / "last.safetensors")).values())


# The damage that escaped before these files were checked as data (each was a traceback, or a run
# that went on with NaN or with numbers nobody wrote): held here case by case.
TRAIN_STATE_CASES = [
    (("optimizer", "state", 0, "exp_avg"), "a list"),  # failed deep inside the first step
    (("optimizer", "state", 0, "step"), "inf"),
    (("optimizer", "param_groups", 0, "betas"), "a string"),
    (("optimizer", "param_groups", 0, "capturable"), "a huge int"),
    (("model", FIRST), "an int tensor"),  # load_state_dict casts it: the weights would be truncated silently
    (("model", FIRST), "a NaN tensor"),  # reported as a diverged training, not as a damaged file
    (("best",), "NaN"),  # best.safetensors would never be written again
    (("best",), "inf"),
    (("step",), "a huge int"),  # a run "finished" at step 10**30
    (("step",), "-1"),
    (("rng", "python", 1, 0), "a huge int"),  # OverflowError
]


@pytest.mark.parametrize("keys, kind", TRAIN_STATE_CASES, ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple)
                         else v)
def test_train_resume_refuses_a_state_damaged_where_it_once_escaped(tmp_path, capsys, trained, keys, kind):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    torch.save(replace_at(torch.load(trained / "state.pt", weights_only=True), keys, kind), run / "state.pt")
    before = (run / "last.safetensors").read_bytes()
    rc = exits_0_or_one_error_line(capsys, ["train", "--genotype", "7,6,4", "--out", str(run), "--resume",
                                            "train.steps=4"], naming="state.pt")
    assert rc == 2 and (run / "last.safetensors").read_bytes() == before


def test_train_resume_refuses_a_state_whose_tensor_bytes_changed_after_it_was_written(tmp_path, capsys, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    st = torch.load(trained / "state.pt", weights_only=True)
    data = bytearray((trained / "state.pt").read_bytes())
    at = data.find(st["model"]["sfe1.weight"].numpy().tobytes())  # the tensor's bytes, stored as they are
    assert at > 0
    data[at + 5] ^= 0x10  # still a valid float: only the checksum shows it
    (run / "state.pt").write_bytes(bytes(data))
    assert exits_0_or_one_error_line(capsys, ["train", "--genotype", "7,6,4", "--out", str(run), "--resume",
                                              "train.steps=4"]) == 2
    with pytest.raises(UserError, match="state.pt: damaged .*checksum"):
        torch_load(run / "state.pt")


def _searched(root, strategy):
    from deconas.search.loop import run_search
    from search_helpers import tiny_config, tiny_images

    run_search(tiny_config(epochs=1, warmup_epochs=0, strategy=strategy), tiny_images(root / "imgs", n=6, size=40),
               None, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    return _searched(tmp_path_factory.mktemp("searched"), "controller")


@pytest.fixture(scope="module")
def searched_random(tmp_path_factory):
    return _searched(tmp_path_factory.mktemp("searched-random"), "random")


def _resume_and_derive(capsys, run):
    """search --resume to a second epoch, then derive: each ends well or in one line."""
    rc = exits_0_or_one_error_line(capsys, ["search", "--out", str(run), "--resume", "search.epochs=2"],
                                   naming="checkpoint.pt")
    if rc == 0:  # the second epoch ran, on numbers
        recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in recs] == [1, 2]
        assert all(v == v for v in recs[-1].values() if isinstance(v, float)), recs[-1]
    if exits_0_or_one_error_line(capsys, ["derive", str(run), "--samples", "3"], naming="checkpoint.pt") == 0:
        best = json.loads((run / "best.json").read_text())
        assert best["val_psnr"] == best["val_psnr"]  # not NaN
    return rc


@settings(FUZZ, max_examples=15)
@given(damage=STATE_DAMAGE, random_strategy=st.booleans())
def test_search_resume_and_derive_from_a_damaged_checkpoint_work_or_say_why(tmp_path, capsys, searched,
                                                                          searched_random, damage, random_strategy):
    src = searched_random if random_strategy else searched
    run = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(src, run)
    write_damaged_state(run / "checkpoint.pt", torch.load(src / "checkpoint.pt", weights_only=True), damage)
    _resume_and_derive(capsys, run)


SEARCH_STATE_CASES = [
    ("controller", ("epoch",), "-1"),  # resumed "at epoch -1"
    ("controller", ("baseline",), "NaN"),  # the controller's update turned its weights to NaN
    ("controller", ("controller", "op_w"), "an int tensor"),
    ("controller", ("ctrl_opt", "state", FIRST, "exp_avg"), "a list"),
    ("controller", ("child_opt", "state", FIRST, "step"), "inf"),
    ("controller", ("supernet", FIRST), "a NaN tensor"),
    ("controller", ("structure",), "a NaN tensor"),  # its == is not a truth value
    ("controller", ("structure", "channels"), "a NaN tensor"),
    ("controller", ("val_batch", 0), "a NaN tensor"),
    ("controller", ("val_batch",), "a list"),
    ("controller", ("world_size",), "None"),
    ("controller", ("elapsed",), "a string"),
    ("controller", ("cost", "scored"), "inf"),
    ("random", ("strategy", "history", FIRST, 1), "0"),  # derive divided by the count
    ("random", ("strategy", "history", FIRST, 0), "NaN"),
    ("random", ("strategy", "baseline"), "a tensor of another shape"),
]


@pytest.mark.parametrize("strategy, keys, kind", SEARCH_STATE_CASES,
                         ids=lambda v: "/".join("*" if k is FIRST else str(k) for k in v) if isinstance(v, tuple) else v)
def test_search_resume_and_derive_refuse_a_checkpoint_damaged_where_it_once_escaped(tmp_path, capsys, searched,
                                                                                    searched_random, strategy, keys,
                                                                                    kind):
    src = searched_random if strategy == "random" else searched
    run = tmp_path / "run"
    shutil.copytree(src, run)
    torch.save(replace_at(torch.load(src / "checkpoint.pt", weights_only=True), keys, kind), run / "checkpoint.pt")
    assert _resume_and_derive(capsys, run) == 2


# best.json, read by train --from (and deconas run): the fields a training takes (genotype, scale,
# N with FF bits) are checked, naming the file; a training that starts trains best.json's genotype.
BEST = {"genotype": "7,6,4", "genotype_dict": {"nodes": 3}, "bits": "1 1 1 1 1 0 1 0 0", "scale": 2, "channels": 4,
        "blocks": 1, "nodes": 3, "ff": False, "val_psnr": 10.5, "params": 2000, "mult_adds": 5e8, "reward": 9.5}
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=8)
GENOTYPE_LIKE = st.sampled_from(["", "x", "9,9,9", "7,6,4|1|1", "7,6,4,3,0,2,2,3,4,1|1011|1101", "1," * 5000 + "1"])


def _best_text(damage) -> bytes:
    how, what = damage
    if how == "bytes":
        return mutate(json.dumps(BEST, indent=2).encode(), what)
    if how == "whole":
        return json.dumps(what).encode()
    key, value = what
    return json.dumps({**BEST, key: value}).encode()


BEST_DAMAGE = st.one_of(st.tuples(st.just("bytes"), OPS), st.tuples(st.just("whole"), JSON),
                        st.tuples(st.just("value"), st.tuples(st.sampled_from(sorted(BEST)), JSON | GENOTYPE_LIKE)))


@STATEFUL
@given(damage=BEST_DAMAGE)
def test_train_from_a_damaged_best_json_works_or_says_why(tmp_path, capsys, trained, damage):
    run = Path(tempfile.mkdtemp(dir=tmp_path))
    (run / "best.json").write_bytes(_best_text(damage))
    rc = exits_0_or_one_error_line(capsys, ["train", "--from", str(run), "--train", str(trained.parent / "imgs"),
                                            "--out", str(run / "t"), *TINY_TRAIN], naming="best.json")
    if rc == 0:  # it trained the genotype the file names
        best = json.loads((run / "best.json").read_text())
        assert json.loads((run / "t" / "run.json").read_text())["genotype"] == str(parse(best["genotype"]))


@pytest.mark.parametrize("key, value", [("genotype", "x"), ("genotype", "7,6,4,3,0,2,2,3,4,1|1011|1101"),
                                        ("scale", 7), ("blocks", 0)])
def test_train_from_a_best_json_with_a_bad_field_names_the_file(tmp_path, capsys, trained, key, value):
    # once said as a genotype or config error, without naming best.json
    (tmp_path / "best.json").write_text(json.dumps({**BEST, key: value}))
    assert exits_0_or_one_error_line(capsys, ["train", "--from", str(tmp_path), "--train", str(trained.parent / "imgs"),
                                              "--out", str(tmp_path / "t"), *TINY_TRAIN], naming="best.json") == 2


# candidates.csv, read back by deconas study (deconas.search.derive.read_candidates).
CANDIDATES = ("genotype,params,mult_adds,val_psnr,reward,log_prob,pareto\n"
              '"7,6,4",2171,563097632,10.5000,9.1000,-6.3846,1\n'
              '"3,3,5",2755,677376032,11.2500,9.0000,-6.4883,1\n'
              '"7,6,4",2171,563097632,10.5000,9.1000,-6.3846,1\n')
CELLS = st.sampled_from(["", "x", "nan", "inf", "-inf", "1e400", "9,9,9", '"', "\x00", "x" * 200_000, "1," * 3000 + "1"])


def _candidates_text(damage) -> bytes:
    how, what = damage
    if how == "bytes":
        return mutate(CANDIDATES.encode(), what)
    (row, col), cell = what
    lines = [ln.split(",") for ln in CANDIDATES.splitlines()]
    r = lines[row % len(lines)]
    r[col % len(r)] = cell
    return "\n".join(",".join(ln) for ln in lines).encode()


@FUZZ
@given(damage=st.one_of(st.tuples(st.just("bytes"), OPS),
                        st.tuples(st.just("cell"), st.tuples(st.tuples(st.integers(0, 9), st.integers(0, 9)), CELLS))))
def test_candidates_csv_reader_works_or_says_why(tmp_path, damage):
    from deconas.search.derive import read_candidates

    run = Path(tempfile.mkdtemp(dir=tmp_path))
    (run / "candidates.csv").write_bytes(_candidates_text(damage))
    out = works_or_user_error(read_candidates, run)
    if out is not None:  # distinct genotypes, finite scores, best first
        scores = [v for _, v in out]
        assert out and all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
        assert len({g for g, _ in out}) == len(out)


def test_candidates_csv_reader_gives_the_distinct_architectures_best_first(tmp_path):
    (tmp_path / "candidates.csv").write_text(CANDIDATES)
    from deconas.search.derive import read_candidates

    assert [(str(g), v) for g, v in read_candidates(tmp_path)] == [("3,3,5", 11.25), ("7,6,4", 10.5)]


# ONNX cache entries: an entry damaged in any byte is exported again, never run (ONNX Runtime
# would run a graph with a changed weight without a word).
@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from deconas.infer.export import onnx_bytes
    from deconas.runtime import file_digest

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("graph")
    net = DeCoNASNet(parse("7,6,4"), scale=2, channels=4, blocks=1).eval()
    ck = root / "n.safetensors"
    save_model(ck, net)
    probe = np.random.default_rng(0).random((1, 3, 10, 12), dtype=np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(probe)).clamp(0, 1).numpy()  # the graph clamps its output
    return ck, onnx_bytes(net, source=file_digest(ck)), probe, want


@FUZZ
@given(ops=OPS)
def test_a_damaged_onnx_cache_entry_is_exported_again_and_never_run(graph, monkeypatch, ops):
    from deconas.infer import onnx_cache
    from deconas.runtime import file_digest

    ck, good, probe, want = graph
    entry = onnx_cache.cache_path(file_digest(ck))
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(mutate(good, ops))
    exported = []

    def export_again(path, cached, opset, digest, precision="fp32"):  # stands in for the child process's export
        exported.append(cached)
        cached.write_bytes(good)
        return True
    monkeypatch.setattr(onnx_cache, "_export_in_child", export_again)
    with memory_bound():
        run = onnx_cache.onnxruntime_for_checkpoint(ck, load=lambda: pytest.fail("exported in this process"),
                                                    threads=1)
    np.testing.assert_allclose(run(probe), want, rtol=1e-4, atol=1e-5)
    assert exported or entry.read_bytes() == good  # used as it was only when undamaged
