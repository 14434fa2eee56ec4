"""deconas export, the ONNX Runtime backend and its cache (XDG_CACHE_HOME is a temporary folder
of the test session: see conftest.py)."""

import pytest
import hashlib
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from deconas.infer import backends as backend_mod
from deconas.infer.onnx_cache import cache_path
from deconas.runtime import file_digest
from deconas.infer import export as export_mod
from deconas.checkpoint import load_model
from deconas.cli import main
from deconas.space.network import receptive_radius


# The ONNX Runtime path these tests are about, on any CPU (auto is bf16 with torch on AMX).
FP32 = ["--precision", "fp32"]


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def plain_session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def photo(path, h=20, w=24, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_exported_shipped_network_matches_torch_on_97x131_in_a_plain_session(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--scale", "2", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    net, meta = load_model("pretrained", scale=2)
    x = torch.rand(1, 3, 97, 131, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = net(x).clamp(0, 1).numpy()  # the graph clamps its output
    got = plain_session(out).run(None, {"lr": x.numpy()})[0]
    assert got.shape == (1, 3, 194, 262)
    assert np.abs(got - want).max() <= 1e-3  # the acceptance bound; fp32 lands near 1e-6
    props = {p.key: p.value for p in __import__("onnx").load(str(out)).metadata_props}
    assert props["genotype"] == str(meta["genotype"]) and props["scale"] == "2"
    assert props["channels"] == str(meta["channels"]) and props["blocks"] == str(meta["blocks"])
    assert props["receptive_radius"] == str(receptive_radius(net)) == "37"
    ckpt = file_digest(__import__("deconas.checkpoint").checkpoint.pretrained_path(2))
    assert props["checkpoint_sha256"] == ckpt


def test_export_has_dynamic_batch_height_and_width_and_fp32_matches_torch_to_1e_4(tmp_path, ckpt):
    out = tmp_path / "t.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(out), "--opset", "13"]) == 0
    net = load_model(ckpt)[0]
    sess = plain_session(out)
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 3, 16, 16), (2, 3, 17, 29), (3, 3, 33, 8), (1, 3, 1, 5)]:  # odd, batched, tiny
        x = torch.rand(*shape, generator=g)
        with torch.inference_mode():
            want = net(x).clamp(0, 1).numpy()  # the graph clamps its output
        got = sess.run(None, {"lr": x.numpy()})[0]
        assert got.shape == want.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
        assert np.abs(got - want).max() <= 1e-4


def test_export_refuses_to_replace_a_file_without_overwrite_and_bad_options_are_one_line(tmp_path, ckpt, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"mine")
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(out)]) == 2
    one_line_error(capsys, "--overwrite")
    assert out.read_bytes() == b"mine"
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(out), "--overwrite"]) == 0
    assert out.stat().st_size > 1000
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(tmp_path / "n.onnx"), "--opset", "9"]) == 2
    one_line_error(capsys, "--opset 9")
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(tmp_path / "n.txt")]) == 2
    one_line_error(capsys, ".onnx")
    assert main(["export", "--checkpoint", str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "n.onnx")]) == 2
    one_line_error(capsys, "does not exist")
    assert not (tmp_path / "n.onnx").exists()


@pytest.mark.slow
def test_upscale_caches_the_graph_by_checkpoint_hash_and_exports_it_once(tmp_path, ckpt, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    photo(tmp_path / "a.png")
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()  # computed here, independently
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o2"), "--checkpoint", str(ckpt), *FP32]) == 0
    entries = list((tmp_path / "cache" / "deconas" / "onnx").iterdir())
    assert len(entries) == 1 and digest[:40] in entries[0].name and entries[0].suffix == ".onnx"
    assert {p.key: p.value for p in __import__("onnx").load(str(entries[0])).metadata_props}[
        "checkpoint_sha256"] == digest

    def no_export(*a, **k):
        raise AssertionError("exported again")
    monkeypatch.setattr(export_mod, "onnx_bytes", no_export)
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o3"), "--checkpoint", str(ckpt), *FP32]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o2" / "a_x2.png")),
                          np.asarray(Image.open(tmp_path / "o3" / "a_x2.png")))


@pytest.mark.slow
def test_a_damaged_cache_entry_is_exported_again(tmp_path, ckpt, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    photo(tmp_path / "a.png")
    digest = file_digest(ckpt)
    entry = cache_path(digest)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"\x00" * 100)  # a torn write
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FP32]) == 0
    assert entry.stat().st_size > 1000 and (tmp_path / "o" / "a_x2.png").is_file()


@pytest.mark.slow
def test_an_unwritable_cache_still_upscales_with_one_notice(tmp_path, ckpt, monkeypatch, capsys):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(backend_mod, "_notified", set())
    photo(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FP32]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot cache" in err[0]
    assert (tmp_path / "o" / "a_x2.png").is_file()


def test_auto_falls_back_to_torch_with_one_notice_without_onnxruntime(tmp_path, ckpt, monkeypatch, capsys):
    monkeypatch.setattr(backend_mod, "have_onnxruntime", lambda: False)
    monkeypatch.setattr(backend_mod, "_notified", set())
    d = tmp_path / "in"
    d.mkdir()
    photo(d / "a.png"), photo(d / "b.png", seed=1)
    assert main(["upscale", str(d), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FP32]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "onnxruntime" in ln]
    assert len(err) == 1 and "torch" in err[0]
    assert main(["upscale", str(d), "-o", str(tmp_path / "o2"), "--checkpoint", str(ckpt), *FP32,
                 "--backend", "onnxruntime"]) == 2
    one_line_error(capsys, "onnxruntime is not installed")


@pytest.mark.slow
def test_backends_agree_through_the_cli_and_eval_takes_backend(tmp_path, ckpt, capsys):
    d = tmp_path / "in"
    d.mkdir()
    photo(d / "a.png", 33, 47), photo(d / "b.png", 40, 40, seed=1)
    for b in ("torch", "onnxruntime"):
        assert main(["upscale", str(d), "-o", str(tmp_path / b), "--checkpoint", str(ckpt), *FP32, "--backend", b]) == 0
    for n in ("a_x2.png", "b_x2.png"):
        t, o = (np.asarray(Image.open(tmp_path / b / n)).astype(int) for b in ("torch", "onnxruntime"))
        assert (t == o).mean() >= 0.999 and np.abs(t - o).max() <= 1
    capsys.readouterr()
    photo(tmp_path / "hr.png", 64, 64)
    for b in ("torch", "onnxruntime"):
        assert main(["eval", "--checkpoint", str(ckpt), "--benchmark", str(tmp_path / "hr.png"),
                     "--backend", b]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("hr ")]
    assert len(rows) == 2 and abs(float(rows[0].split()[2]) - float(rows[1].split()[2])) <= 0.01


def test_out_of_memory_in_onnxruntime_is_one_line_naming_the_image_and_tile(tmp_path, ckpt, monkeypatch, capsys):
    class Fail(Exception):  # ORT raises its own exception types, saying it in words
        pass

    def oom(self, x):
        raise Fail("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer")
    monkeypatch.setattr(backend_mod.OnnxRuntimeBackend, "__call__", oom)
    photo(tmp_path / "big.png")
    assert main(["upscale", str(tmp_path / "big.png"), "-o", str(tmp_path / "o"),
                 "--checkpoint", str(ckpt), *FP32]) == 2
    one_line_error(capsys, "big.png", "out of memory", "--tile")


@pytest.mark.slow
def test_a_cached_run_never_imports_torch(tmp_path, ckpt):
    photo(tmp_path / "a.png")
    code = ("import sys; from deconas.cli import main; r = main(sys.argv[1:]); "
            "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(r)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = ["upscale", str(tmp_path / "a.png"), "--checkpoint", str(ckpt), *FP32, "--overwrite", "-o"]
    first = subprocess.run([sys.executable, "-c", code, *argv, str(tmp_path / "o")], capture_output=True,
                           text=True, env=env, timeout=300)
    again = subprocess.run([sys.executable, "-c", code, *argv, str(tmp_path / "o")], capture_output=True,
                           text=True, env=env, timeout=300)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "no torch" in again.stdout  # the graph was cached by the first run (or an earlier test)


@pytest.mark.slow
def test_a_cached_graph_of_another_network_is_not_trusted(tmp_path, ckpt, monkeypatch):
    """A valid graph saved under this checkpoint's cache name (a poisoned cache): its recorded
    checkpoint digest differs, so it is exported again and the output is this network's."""
    from deconas.infer.export import export_onnx
    from deconas.space.genotype import parse
    from deconas.space.network import DeCoNASNet

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    photo(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "right"),
                 "--checkpoint", str(ckpt), *FP32]) == 0
    torch.manual_seed(5)
    other = DeCoNASNet(parse("1,2,4"), 2, 8, 1)
    entry = cache_path(file_digest(ckpt))
    export_onnx(other, entry, source="0" * 64)  # another network, recorded as another checkpoint's
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "again"),
                 "--checkpoint", str(ckpt), *FP32]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "right" / "a_x2.png")),
                          np.asarray(Image.open(tmp_path / "again" / "a_x2.png")))
    meta = {p.key: p.value for p in __import__("onnx").load(str(entry)).metadata_props}
    assert meta["checkpoint_sha256"] == file_digest(ckpt)


def test_the_graph_clamps_its_output_to_the_unit_range(tmp_path, ckpt):
    out = tmp_path / "t.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
    net = load_model(ckpt)[0]
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(3)) * 1.5  # pushes outputs out of range
    with torch.inference_mode():
        raw = net(x).numpy()
    assert raw.min() < 0 or raw.max() > 1  # so the clamp has something to do
    got = plain_session(out).run(None, {"lr": x.numpy()})[0]
    assert got.min() >= 0 and got.max() <= 1
    assert np.abs(got - np.clip(raw, 0, 1)).max() <= 1e-4


class Host:
    """A host that knows nothing of deconas (as chaiNNer's ONNX path): plain onnxruntime, the
    input's name from the graph, the scale from two trial sizes, RGB BCHW float32 in [0, 1]."""

    def __init__(self, path):
        self.sess = plain_session(path)
        self.name = self.sess.get_inputs()[0].name
        scales = set()
        for side in (16, 64):
            y = self.sess.run(None, {self.name: np.zeros((1, 3, side, side), np.float32)})[0]
            assert y.shape[2] % side == 0 and y.shape[3] % side == 0
            scales.add(y.shape[2] // side)
        assert len(scales) == 1
        self.scale = scales.pop()

    def upscale(self, rgb):
        x = rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        y = self.sess.run(None, {self.name: x})[0][0].transpose(1, 2, 0)
        return np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8)  # a host's own clip is harmless


@pytest.mark.parametrize("precision, bound", [("fp32", 0.01), ("fp16", 0.05)])
def test_a_host_that_knows_nothing_of_deconas_matches_deconas_upscale(tmp_path, precision, bound):
    from deconas.data.datasets import builtin_images
    from deconas.data.imresize import bicubic_lr
    from deconas.metrics import psnr_y

    hr = dict(builtin_images())["astronaut.png"][96:288, 160:352]  # 192 x 192: a face and a flag
    lr = bicubic_lr(hr, 2)
    Image.fromarray(lr).save(tmp_path / "lr.png")
    assert main(["upscale", str(tmp_path / "lr.png"), "-o", str(tmp_path / "ours"), "--scale", "2"]) == 0
    ours = np.asarray(Image.open(tmp_path / "ours" / "lr_x2.png"))
    graph = tmp_path / f"{precision}.onnx"
    assert main(["export", "--scale", "2", "-o", str(graph), "--precision", precision]) == 0
    host = Host(graph)
    assert host.scale == 2 and host.name == "lr"
    theirs = host.upscale(lr)
    assert theirs.shape == ours.shape
    gap = abs(psnr_y(theirs, hr, 2) - psnr_y(ours, hr, 2))
    assert gap <= bound, (precision, gap)
    if precision == "fp16":  # really half precision inside: not the fp32 graph under another name
        import onnx

        types = {t.data_type for t in onnx.load(str(graph)).graph.initializer}
        assert onnx.TensorProto.FLOAT16 in types


def test_an_int8_export_is_quantized_and_stays_close_to_fp32(tmp_path, ckpt, capsys):
    import onnx

    out = tmp_path / "q.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(out), "--precision", "int8"]) == 0
    assert "int8" in capsys.readouterr().out
    m = onnx.load(str(out))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    props = {p.key: p.value for p in m.metadata_props}
    assert props["precision"] == "int8" and abs(float(props["int8_cost_db"])) < 1.0
    net = load_model(ckpt)[0]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        want = net(x).clamp(0, 1).numpy()
    got = plain_session(out).run(None, {"lr": x.numpy()})[0]
    assert got.shape == want.shape and 0 < np.abs(got - want).max() < 0.1  # quantized, yet the same network


def test_calib_is_refused_without_int8_and_a_missing_calib_folder_is_one_line(tmp_path, ckpt, capsys):
    out = tmp_path / "q.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(out), "--calib", str(tmp_path)]) == 2
    one_line_error(capsys, "--calib", "int8")
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(out), "--precision", "int8",
                 "--calib", str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys, "nowhere")
    assert not out.exists()


def test_eval_takes_precision_int8_and_labels_its_row(tmp_path, ckpt, capsys):
    from deconas.data.datasets import builtin_images

    d = tmp_path / "set"
    d.mkdir()
    for name, img in list(builtin_images())[:2]:
        Image.fromarray(img[:64, :64]).save(d / f"{name}.png")
    js = {}
    for precision in ("fp32", "int8"):
        js[precision] = tmp_path / f"{precision}.json"
        assert main(["eval", "--checkpoint", str(ckpt), "--benchmark", str(d), "--precision", precision,
                     "--json", str(js[precision])]) == 0
    out = capsys.readouterr().out
    assert "(int8)" in out
    import json

    a, b = (json.loads(js[p].read_text()) for p in ("fp32", "int8"))
    pa, pb = (r["datasets"][0]["psnr"] for r in (a, b))
    assert pa != pb and abs(pa - pb) < 1.0  # quantized: different, yet the same network
    assert main(["eval", "--checkpoint", str(ckpt), "--benchmark", str(d), "--precision", "int8",
                 "--backend", "torch"]) == 2
    one_line_error(capsys, "ONNX Runtime")
