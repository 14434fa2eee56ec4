"""deconas.runtime: atomic files, RNG snapshots, the safe loader, JSONL logs, digests."""

import hashlib
import importlib
import io
import json
import os
import random
import stat

import numpy as np
import pytest
import torch

from deconas import runtime
from deconas.errors import UserError
from deconas.runtime import (JsonlLog, atomic_torch_save, atomic_write, atomic_write_text, file_digest, pick_device,
                             parse_json, read_json, read_jsonl, rng_state, seed_everything, set_rng_state, torch_load)


def process_umask():
    u = os.umask(0)
    os.umask(u)
    return u


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# atomic_write


def test_atomic_write_replaces_the_file_with_what_the_writer_wrote(tmp_path):
    target = tmp_path / "sub" / "f.txt"  # the folder is made
    atomic_write(target, lambda tmp: open(tmp, "w").write("one"))
    atomic_write(target, lambda tmp: open(tmp, "w").write("two"))
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def _crash(exc):
    """A writer that writes half of the new file, then fails with ``exc``."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half of the new")
        raise exc
    return write


@pytest.mark.parametrize("exc, raised, words", [
    (RuntimeError("writer died"), RuntimeError, "writer died"),  # a bug in the writer: it propagates
    (OSError(28, "No space left on device"), UserError, "No space left on device"),  # the disk: one line
])
def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path, exc, raised, words):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(raised) as e:
        atomic_write(target, _crash(exc))
    assert words in str(e.value)
    if raised is UserError:
        assert str(target) in str(e.value)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_writer_that_never_creates_its_file_is_an_error_and_the_old_file_stays(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(UserError):
        atomic_write(target, lambda tmp: os.unlink(tmp))
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_an_unwritable_place_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(UserError, match="cannot write"):
        atomic_write(tmp_path / "file" / "x.txt", lambda tmp: None)


def _write_with_mode(writer_mode):
    def write(tmp):
        if writer_mode is None:
            open(tmp, "wb").write(b"data")
        else:  # replace the temporary file with one of this mode, as safetensors does
            os.unlink(tmp)
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, writer_mode)
            os.write(fd, b"data")
            os.close(fd)
            os.chmod(tmp, writer_mode)
    return write


@pytest.fixture
def under_umask():
    """Run with another umask: deconas.runtime reads the umask once, when it is imported, so the
    module is imported again under it (and once more under the old one afterwards)."""
    old = process_umask()

    def set_(mask):
        os.umask(mask)
        importlib.reload(runtime)
        return runtime
    try:
        yield set_
    finally:
        os.umask(old)
        importlib.reload(runtime)


@pytest.mark.parametrize("writer_mode", [None, 0o600, 0o777])
def test_the_written_file_has_the_ordinary_mode_of_the_umask_whatever_the_writer_left(tmp_path, writer_mode):
    # mkstemp makes 0600 files and some writers (safetensors) replace the file with their own:
    # the result is what open() would have made, 0666 minus the umask.
    target = tmp_path / "out.bin"
    atomic_write(target, _write_with_mode(writer_mode))
    assert mode(target) == 0o666 & ~process_umask()
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert mode(target) == mode(plain)  # the same as an ordinary file written here


@pytest.mark.parametrize("mask", [0o077, 0o002, 0o027])
@pytest.mark.parametrize("writer_mode", [None, 0o600, 0o777])
def test_the_file_mode_follows_another_umask(tmp_path, under_umask, mask, writer_mode):
    rt = under_umask(mask)
    rt.atomic_write(tmp_path / "out.bin", _write_with_mode(writer_mode))
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")  # what open() makes under this umask
    assert mode(tmp_path / "out.bin") == mode(plain) == 0o666 & ~mask


def test_atomic_write_text_and_atomic_torch_save_write_what_they_are_given(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text() == "héllo\n"
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 3}
    atomic_torch_save(tmp_path / "s.pt", state)
    back = torch.load(tmp_path / "s.pt", weights_only=True)
    assert torch.equal(back["w"], state["w"]) and back["step"] == 3


# RNG state


def draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), float(np.random.standard_normal()),
            torch.rand(3).tolist(), torch.randn(2).tolist())


def test_rng_state_round_trips_python_numpy_and_torch_streams_through_a_weights_only_file(tmp_path):
    seed_everything(123)
    draws()
    # leave a cached Gaussian in python's and numpy's generators: it is part of the state
    # (both draw Gaussians in pairs and hold the second of one)
    if random.getstate()[2] is None:
        random.gauss(0, 1)
    if np.random.get_state()[3] == 0:
        np.random.standard_normal()
    assert np.random.get_state()[3] == 1 and random.getstate()[2] is not None
    snap = rng_state()
    expected = [draws() for _ in range(3)]
    torch.save(snap, tmp_path / "rng.pt")
    seed_everything(999)  # something else happens in between
    draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert [draws() for _ in range(3)] == expected


def test_seed_everything_seeds_each_stream_as_its_own_seed_call_would():
    seed = 2 ** 32 + 17  # numpy's legacy seed must be < 2**32: it gets the seed modulo 2**32
    seed_everything(seed)
    got = draws()
    random.seed(seed)
    np.random.seed(17)
    torch.manual_seed(seed)
    assert draws() == got


# torch_load


def _never_called(tag):  # unpickling the payload below would call this
    raise AssertionError(f"unpickled code ran: {tag}")


class Payload:
    def __reduce__(self):
        return (_never_called, ("payload",))


def test_torch_load_reads_tensors_and_plain_containers(tmp_path):
    state = {"a": torch.ones(2, 2), "b": [1, 2.5, "x", None], "c": {"d": (torch.zeros(1), True)}}
    torch.save(state, tmp_path / "ok.pt")
    back = torch_load(tmp_path / "ok.pt")
    assert torch.equal(back["a"], state["a"]) and back["b"] == state["b"]
    assert torch.equal(back["c"]["d"][0], torch.zeros(1)) and back["c"]["d"][1] is True


def test_torch_load_refuses_a_pickle_holding_arbitrary_objects_without_running_them(tmp_path):
    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as e:
        torch_load(tmp_path / "evil.pt")
    msg = str(e.value)
    assert "refused" in msg and "evil.pt" in msg
    assert "weights_only" not in msg  # never points at the unsafe loader
    assert len(msg.splitlines()) == 1


def test_torch_load_of_a_missing_or_damaged_file_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        torch_load(tmp_path / "none.pt")
    buf = io.BytesIO()
    torch.save({"a": torch.ones(100)}, buf)
    (tmp_path / "torn.pt").write_bytes(buf.getvalue()[:50])
    with pytest.raises(UserError, match="unreadable") as e:
        torch_load(tmp_path / "torn.pt")
    assert len(str(e.value).splitlines()) == 1


# JSONL


def test_jsonl_log_appends_one_object_per_line_and_writes_numpy_floats_as_numbers(tmp_path):
    log = JsonlLog(tmp_path / "deep" / "m.jsonl")  # the folder is made
    log.write({"epoch": 1, "loss": np.float32(0.5)})
    log.write({"epoch": 2, "loss": 0.25})
    lines = (tmp_path / "deep" / "m.jsonl").read_text().splitlines()
    assert [json.loads(ln) for ln in lines] == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]


def test_truncate_after_drops_the_records_written_after_the_checkpoint(tmp_path):
    log = JsonlLog(tmp_path / "m.jsonl")
    recs = [{"epoch": e, "i": i} for i, e in enumerate([1, 2, 2, 3, 4, 5])]
    for r in recs:
        log.write(r)
    log.truncate_after("epoch", 2)
    assert read_jsonl(log.path) == [r for r in recs if r["epoch"] <= 2]
    log.write({"epoch": 3, "i": 99})  # the resumed run appends after what was kept
    assert [r["i"] for r in read_jsonl(log.path)] == [0, 1, 2, 99]


def test_truncate_after_on_a_log_that_does_not_exist_creates_nothing(tmp_path):
    log = JsonlLog(tmp_path / "m.jsonl")
    log.truncate_after("epoch", 3)
    assert not log.path.exists()


def test_read_jsonl_skips_a_torn_last_line_and_a_missing_file_is_empty(tmp_path):
    p = tmp_path / "m.jsonl"
    assert read_jsonl(p) == []
    p.write_text('{"epoch": 1}\n{"epoch": 2, "loss": 0.1}\n{"epoch": 3, "lo')  # a killed writer
    assert read_jsonl(p) == [{"epoch": 1}, {"epoch": 2, "loss": 0.1}]


def test_json_nested_past_the_parsers_recursion_is_malformed_json_not_a_recursion_error(tmp_path):
    deep = "[" * 200_000 + "]" * 200_000
    assert parse_json("[[1], {\"a\": [2]}]") == [[1], {"a": [2]}]
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(deep)
    (tmp_path / "deep.json").write_text(deep)
    with pytest.raises(UserError, match="^--rows x: not JSON$"):
        read_json(tmp_path / "deep.json", "--rows x", 10_000_000)
    (tmp_path / "m.jsonl").write_text('{"epoch": 1}\n' + deep + '\n{"epoch": 2}\n')
    assert read_jsonl(tmp_path / "m.jsonl") == [{"epoch": 1}, {"epoch": 2}]  # skipped as a damaged line


# file_digest


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (5 << 20) // 2])
def test_file_digest_is_hashlibs_sha256_of_the_files_bytes(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    (tmp_path / "f.bin").write_bytes(data)
    assert file_digest(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


# pick_device


def test_pick_device_names_and_refusals(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="not a device name"):
        pick_device("gpu0")
    with pytest.raises(UserError, match="CUDA is not available"):
        pick_device("cuda:1")


def test_save_figure_writes_a_png_atomically_and_closes_the_figure(tmp_path):
    plt = runtime.pyplot()
    fig = plt.figure()
    plt.plot([0, 1], [1, 0])
    runtime.save_figure(fig, tmp_path / "f.png", dpi=50)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_read_json_refuses_in_one_line_what_is_missing_too_large_or_not_json(tmp_path, monkeypatch):
    from deconas.runtime import read_json

    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "ok.json", "x", 100) == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text("{no")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    for name, says in (("none.json", "no such file"), ("bad.json", "not JSON"), ("bin.json", "not JSON")):
        with pytest.raises(UserError, match=f"^the thing: {says}"):
            read_json(tmp_path / name, "the thing", 100)
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("read before its size was checked"))
    with pytest.raises(UserError, match="13 bytes, more than such a file holds"):
        read_json(tmp_path / "ok.json", "the thing", 12)
