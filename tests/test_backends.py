"""deconas.infer.backends and deconas.infer.onnx_cache, where tests/test_export.py (the CLI's
cache, the fallback without onnxruntime through `upscale`) and tests/test_inference.py
(backends' agreement, the torch backend's overlap) do not go: resolve_backend's choices,
thread counts, the CUDA probe, the torch backend's details, the cache's naming and the cache
in-process (no child process here)."""

import copy
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deconas.errors import UserError
from deconas.infer import backends as backend_mod
from deconas.infer import export as export_mod
from deconas.infer import onnx_cache
from deconas.infer.backends import (OnnxRuntimeBackend, TorchBackend, notice_once, resolve_precision,
                                    resolve_backend)
from deconas.infer.onnx_cache import cache_dir, cache_path, model_digest
from deconas.infer.tiling import DEFAULT_OVERLAP
from deconas.space.genotype import parse
from deconas.space.network import DeCoNASNet, receptive_radius


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be a machine with or without CUDA and onnxruntime; notices start afresh."""
    monkeypatch.setattr(backend_mod, "_notified", set())

    def set_(cuda: bool, ort: bool):
        monkeypatch.setattr(backend_mod, "_cuda_available", lambda: cuda)
        monkeypatch.setattr(backend_mod, "have_onnxruntime", lambda: ort)
    return set_


# resolve_backend


@pytest.mark.parametrize("cuda, ort, device, want", [
    (False, True, None, "onnxruntime"),    # a CPU machine: ONNX Runtime
    (False, True, "cpu", "onnxruntime"),
    (True, True, None, "torch"),            # CUDA: torch, on the GPU
    (True, True, "cpu", "onnxruntime"),     # CUDA there, but the CPU asked for
    (True, True, "cuda:0", "torch"),
    (False, True, "mps", "torch"),          # any device that is not the CPU
])
def test_auto_is_onnxruntime_on_the_cpu_and_torch_elsewhere(machine, cuda, ort, device, want, capsys):
    machine(cuda, ort)
    assert resolve_backend("auto", device) == want
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("cuda, device", [(False, None), (True, None), (True, "cuda"), (False, "cpu")])
def test_an_explicit_torch_is_torch_everywhere(machine, cuda, device):
    machine(cuda, True)
    assert resolve_backend("torch", device) == "torch"
    machine(cuda, False)
    assert resolve_backend("torch", device) == "torch"


def test_auto_without_onnxruntime_on_the_cpu_is_torch_with_one_notice(machine, capsys):
    machine(False, False)
    assert resolve_backend("auto") == "torch"
    assert resolve_backend("auto", "cpu") == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnxruntime is not installed" in err[0] and "torch" in err[0]


def test_auto_without_onnxruntime_on_cuda_says_nothing(machine, capsys):
    machine(True, False)
    assert resolve_backend("auto") == "torch"
    assert capsys.readouterr().err == ""


def test_explicit_onnxruntime_is_checked(machine):
    machine(False, True)
    assert resolve_backend("onnxruntime") == "onnxruntime"
    assert resolve_backend("onnxruntime", "cpu") == "onnxruntime"
    with pytest.raises(UserError, match="--device cuda:1"):
        resolve_backend("onnxruntime", "cuda:1")
    machine(False, False)
    with pytest.raises(UserError, match="not installed"):
        resolve_backend("onnxruntime")


def test_an_unknown_backend_names_the_choices(machine):
    machine(False, True)
    with pytest.raises(UserError) as e:
        resolve_backend("tensorrt")
    assert "'tensorrt'" in str(e.value)
    for name in ("auto", "torch", "onnxruntime"):
        assert name in str(e.value)


# threads, probes, notices


def test_the_cuda_probe_agrees_with_torch():
    assert backend_mod._cuda_available() == torch.cuda.is_available()


def test_without_torch_or_onnxruntime_installed_the_probes_say_no(monkeypatch):
    real = backend_mod.importlib.util.find_spec
    monkeypatch.setattr(backend_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "onnxruntime") else real(name, *a))
    assert backend_mod._cuda_available() is False
    assert backend_mod.have_onnxruntime() is False


def test_have_onnxruntime_says_whether_it_imports():
    try:
        import onnxruntime  # noqa: F401
        importable = True
    except ImportError:
        importable = False
    assert backend_mod.have_onnxruntime() == importable


def test_notice_once_prints_each_key_once(monkeypatch, capsys):
    monkeypatch.setattr(backend_mod, "_notified", set())
    for _ in range(3):
        notice_once("a", "first thing")
        notice_once("b", "second thing")
    assert capsys.readouterr().err.splitlines() == ["deconas: first thing", "deconas: second thing"]


# TorchBackend


class Nearest3(nn.Module):
    """x3 nearest neighbour with no ``scale`` attribute; records whether it ran in eval mode."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.modes = []

    def forward(self, x):
        self.modes.append((self.training, torch.is_grad_enabled()))
        return F.interpolate(x, scale_factor=3, mode="nearest") * self.w


def test_torch_backend_runs_in_eval_mode_without_grad_and_learns_the_scale_from_the_output():
    m = Nearest3().train()
    run = TorchBackend(m)
    assert run.scale == 0 and run.radius == DEFAULT_OVERLAP
    x = np.random.default_rng(0).random((2, 3, 4, 5), dtype=np.float32)
    y = run(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (2, 3, 12, 15)
    assert np.array_equal(y, x.repeat(3, 2).repeat(3, 3))
    assert run.scale == 3 and m.modes == [(False, False)]


def test_torch_backend_takes_a_network_s_scale_and_radius_or_the_radius_given():
    net = DeCoNASNet(parse("7,6,4"), 3, 4, 1)
    assert (TorchBackend(net).scale, TorchBackend(net).radius) == (3, receptive_radius(net))
    assert TorchBackend(net, radius=0).radius == 0
    assert TorchBackend(Nearest3(), radius=9).radius == 9


# the ONNX cache: naming


def test_cache_dir_is_under_xdg_cache_home_when_set_else_the_platforms_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "deconas" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    platformdirs = pytest.importorskip("platformdirs")
    assert str(cache_dir()) == os.path.join(platformdirs.user_cache_dir("deconas"), "onnx")


def test_cache_path_changes_with_digest_opset_kind_and_export_version(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d1, d2 = hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest()
    base = cache_path(d1, 17)
    assert base.parent == tmp_path / "deconas" / "onnx" and base.suffix == ".onnx"
    assert d1[:40] in base.name and "17" in base.name
    others = {cache_path(d2, 17), cache_path(d1, 13), cache_path(d1, 17, kind="model")}
    assert base not in others and len(others) == 3
    assert cache_path(d1) == cache_path(d1, onnx_cache.DEFAULT_OPSET)  # the default opset
    monkeypatch.setattr(onnx_cache, "EXPORT_VERSION", onnx_cache.EXPORT_VERSION + 1)
    assert cache_path(d1, 17) != base  # a new exporter version leaves the old entries unused


def tiny(seed=0, genotype="7", scale=2):
    torch.manual_seed(seed)
    return DeCoNASNet(parse(genotype), scale, 4, 1).eval()


def test_model_digest_follows_the_weights_and_the_structure():
    a = tiny()
    assert model_digest(a) == model_digest(copy.deepcopy(a)) == model_digest(tiny())  # same seed, same weights
    assert len(model_digest(a)) == 64 and all(c in "0123456789abcdef" for c in model_digest(a))
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.tail.bias[0] += 1e-6  # one value changed by 1e-6
    assert model_digest(b) != model_digest(a)
    assert model_digest(tiny(seed=1)) != model_digest(a)
    assert model_digest(tiny(scale=3)) != model_digest(a)


# the ONNX cache in process


def test_a_model_is_exported_once_then_opened_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    net = tiny(genotype="5,6,3")
    first = onnx_cache.onnxruntime_for_model(net, threads=1)
    entries = list((tmp_path / "deconas" / "onnx").iterdir())
    assert entries == [cache_path(model_digest(net), kind="model")]
    assert isinstance(first, OnnxRuntimeBackend)
    assert first.scale == 2 and first.radius == receptive_radius(net)

    def no_export(*a, **k):
        raise AssertionError("exported again")
    monkeypatch.setattr(export_mod, "onnx_bytes", no_export)
    again = onnx_cache.onnxruntime_for_model(net, threads=1)
    x = np.random.default_rng(0).random((2, 3, 7, 9), dtype=np.float32)
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).clamp(0, 1).numpy()  # the graph clamps its output
    for run in (first, again):
        assert np.abs(run(x) - want).max() <= 1e-4


def test_a_cached_checkpoint_graph_opens_without_loading_the_network_or_a_child_process(
        monkeypatch, tmp_path, ckpt):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    net = tiny()
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()  # the file's SHA-256, computed here
    entry = cache_path(sha)
    export_mod.export_onnx(net, entry, source=sha)  # as the cache writes it: the graph names its checkpoint

    def forbidden(*a, **k):
        raise AssertionError("a child process was started")
    monkeypatch.setattr(subprocess, "run", forbidden)
    run = onnx_cache.onnxruntime_for_checkpoint(ckpt, load=lambda: forbidden(), threads=1)
    assert run.scale == 2 and run.radius == receptive_radius(net)


def test_a_damaged_cache_entry_is_removed_and_exported_again(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    net = tiny()
    entry = cache_path(model_digest(net), kind="model")
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"\x00" * 64)  # a torn write
    run = onnx_cache.onnxruntime_for_model(net, threads=1)
    assert entry.stat().st_size > 1000 and run.scale == 2
    assert any("unreadable" in r.getMessage() for r in caplog.records)


# precision: auto, bf16 and the allocator


@pytest.mark.parametrize("amx, cuda, backend, device, want", [
    (True, False, "auto", None, ("bf16", "torch")),  # a CPU with AMX-BF16: torch in bf16
    (False, False, "auto", None, ("fp32", "onnxruntime")),  # without: fp32 where auto puts it
    (True, False, "onnxruntime", None, ("fp32", "onnxruntime")),  # ONNX Runtime asked for: fp32
    (True, False, "torch", "cpu", ("bf16", "torch")),
    (True, True, "auto", None, ("fp32", "torch")),  # CUDA: bf16 there was not measured
    (True, True, "auto", "cpu", ("bf16", "torch")),
])
def test_auto_precision_is_bf16_with_torch_only_on_a_cpu_with_amx(machine, monkeypatch, amx, cuda, backend,
                                                                  device, want):
    machine(cuda=cuda, ort=True)
    monkeypatch.setattr(backend_mod, "native_bf16", lambda: amx)
    assert resolve_precision(None, backend, device) == want
    assert resolve_precision("auto", backend, device) == want


def test_an_explicit_precision_runs_where_it_can_or_is_one_line(machine, monkeypatch, capsys):
    machine(cuda=False, ort=True)
    monkeypatch.setattr(backend_mod, "_notified", set())
    monkeypatch.setattr(backend_mod, "native_bf16", lambda: False)
    assert resolve_precision("bf16", "auto") == ("bf16", "torch")  # asked for: even without AMX
    assert resolve_precision("bf16", "auto") == ("bf16", "torch")
    said = capsys.readouterr().err.strip().splitlines()  # once, naming why and what auto does
    assert len(said) == 1 and "AMX-BF16" in said[0] and "auto runs fp32" in said[0], said
    monkeypatch.setattr(backend_mod, "_notified", set())
    monkeypatch.setattr(backend_mod, "native_bf16", lambda: True)
    assert resolve_precision("bf16", "auto") == ("bf16", "torch")
    assert capsys.readouterr().err == ""  # where bf16 is native: nothing to say
    monkeypatch.setattr(backend_mod, "native_bf16", lambda: False)
    assert resolve_precision("fp32", "auto") == ("fp32", "onnxruntime")
    assert resolve_precision("int8", "auto") == ("int8", "onnxruntime")
    for p, b, says in (("bf16", "onnxruntime", "runs with torch"), ("int8", "torch", "ONNX Runtime"),
                       ("fp16", "auto", "use one of")):
        with pytest.raises(UserError, match=says):
            resolve_precision(p, b)


def test_native_bf16_is_the_amx_bf16_flag_of_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile amx_int8\n")
    assert backend_mod.native_bf16(str(f)) is False  # AVX512-BF16 alone: not measured faster
    f.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert backend_mod.native_bf16(str(f)) is True
    assert backend_mod.native_bf16(str(tmp_path / "none")) is False


@pytest.fixture(scope="module")
def shipped_x2():
    from deconas.checkpoint import load_model

    return load_model("pretrained", scale=2)[0]


def test_bf16_network_keeps_its_first_and_last_convs_fp32_and_stays_near_fp32(shipped_x2):
    from deconas.data.datasets import builtin_images
    from deconas.infer.backends import bf16_network
    before = {k: v.clone() for k, v in shipped_x2.state_dict().items()}
    b = bf16_network(shipped_x2)
    # the original is untouched (still fp32, same values)
    assert all(torch.equal(v, before[k]) for k, v in shipped_x2.state_dict().items())
    # the image's convs are the original's exact fp32 weights, not rounded through bf16
    assert torch.equal(b.sfe1[0].weight, shipped_x2.sfe1.weight) and b.sfe1[0].weight.dtype == torch.float32
    assert torch.equal(b.tail[1].weight, shipped_x2.tail.weight)
    assert all(p.dtype == torch.bfloat16 for n, p in b.named_parameters() if n.startswith(("dnbs", "gff", "upsample")))
    img = dict(builtin_images())["astronaut.png"][100:164, 180:244]
    x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / 255
    ref = TorchBackend(shipped_x2)(x)
    out = TorchBackend(shipped_x2, precision="bf16")(x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    # bf16 keeps 8 significant bits: the output is far closer to fp32's than one uint8 level
    to8 = lambda a: np.clip(np.rint(a[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)  # noqa: E731
    assert np.abs(out - ref).max() < 4 / 255
    mse = np.mean((to8(out).astype(float) - to8(ref)) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-12)) > 45


def test_bf16_refuses_a_module_that_is_not_a_deconas_network():
    with pytest.raises(UserError, match="not a deconas network"):
        TorchBackend(Nearest3(), precision="bf16")
    with pytest.raises(UserError, match="does not run with torch"):
        TorchBackend(Nearest3(), precision="int8")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_lets_a_large_block_be_reused_without_page_faults():
    """A feature map's size (64 MB) malloc'd, touched and freed twice in a fresh process: by
    default the second is a fresh mapping whose every page faults in; kept, it is the first."""
    code = """if True:
        import ctypes, resource, sys
        from deconas.infer.backends import keep_freed_memory
        if sys.argv[1] == "keep":
            assert keep_freed_memory()
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        def faults(n=64 << 20):
            a0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            p = libc.malloc(n)
            libc.memset(p, 1, n)
            libc.free(p)
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - a0
        faults()
        print(faults())
    """
    faults = {}
    for mode in ("default", "keep"):
        r = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        faults[mode] = int(r.stdout)
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert faults["keep"] < pages // 20  # the second 64 MB came from the freed first: few faults
    if faults["default"] < pages // 2:
        pytest.skip(f"this libc reuses the block by default too ({faults['default']} faults)")
