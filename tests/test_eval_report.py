"""`deconas eval --report`: the crop search, the folder rules, and the page itself in headless
Chromium (loads without console errors, every image resolves, the screenshot is not blank)."""

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from deconas.cli import main
from deconas.data.images import read_image, write_image
from deconas.data.imresize import bicubic_lr, bicubic_up
from deconas.eval_report import INDEX, MANIFEST, busiest_window, crop_box, enlarge

from search_helpers import photo, tiny_checkpoint

CHROMIUM = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if Path(p).is_file()), None)


@pytest.fixture
def bench(tmp_path):
    d = tmp_path / "Tiny"
    write_image(d / "a.png", photo(60, 72, 0))
    write_image(d / "g.png", photo(48, 50, 1)[..., 1])  # greyscale member
    write_image(d / 'odd <b>&"name.png', photo(40, 40, 2))  # the page must escape it
    write_image(d / "dot.png", photo(12, 12, 3))  # too small: listed as skipped
    return d


@pytest.fixture(scope="module")
def ckpt2(tmp_path_factory):
    """A second tiny x2 network (other weights than conftest's ckpt): a --compare column."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt2") / "other_x2.safetensors", seed=1)


def _report(args, capsys=None):
    rc = main(["eval", *map(str, args), "--device", "cpu"])
    return rc, (capsys.readouterr() if capsys is not None else None)


def test_busiest_window_is_the_brute_force_argmax():
    rng = np.random.default_rng(0)
    for h, w, k in [(9, 13, 4), (20, 17, 1), (16, 16, 16), (30, 41, 7)]:
        d = rng.random((h, w))
        sums = np.array([[d[y:y + k, x:x + k].sum() for x in range(w - k + 1)] for y in range(h - k + 1)])
        assert busiest_window(d, k) == tuple(int(v) for v in np.unravel_index(np.argmax(sums), sums.shape))
    with pytest.raises(ValueError):
        busiest_window(np.zeros((5, 5)), 6)


def test_crop_is_where_the_networks_differ_most_from_bicubic():
    hr = photo(96, 120, 4)
    bic = bicubic_up(bicubic_lr(hr, 2), 2)
    net = bic.copy()
    net[50:70, 80:100] = 255 - net[50:70, 80:100]  # the one place this "network" differs
    y, x, side = crop_box(hr, bic, [net], border=2, size=20)
    assert (y, x, side) == (50, 80, 20)
    # no network (or none that differs): where bicubic is furthest from HR, inside the border
    hr2 = bic.copy()
    hr2[3:13, 5:15] = 0
    assert crop_box(hr2, bic, [], border=2, size=10)[:2] == (3, 5)
    assert crop_box(hr2, bic, [bic.copy()], border=2, size=10)[:2] == (3, 5)
    # never in the border the metrics ignore, and never larger than what is inside it
    hr3 = bic.copy()
    hr3[0:2, 0:2] = 0
    y, x, side = crop_box(hr3, bic, [], border=4, size=500)
    assert y >= 4 and x >= 4 and side == 96 - 8


def test_enlarge_repeats_pixels():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert enlarge(a, 2).tolist() == [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]]


def _img_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def test_report_writes_a_page_with_its_images_and_the_table(bench, ckpt, ckpt2, tmp_path, capsys):
    out, js = tmp_path / "rep", tmp_path / "r.json"
    rc, io = _report(["--checkpoint", ckpt, "--compare", ckpt2, "--benchmark", bench, "--rgb",
                      "--report", out, "--json", js], capsys)
    assert rc == 0, io.err
    res = json.loads(js.read_text())
    assert [r["method"] for r in [res] + res["compare"]] == ["tiny_x2.safetensors", "other_x2.safetensors"]
    assert "tiny_x2.safetensors x2" in io.out and "other_x2.safetensors x2" in io.out
    page = (out / INDEX).read_text()
    # self-contained: no script, no external address, every src a file beside the page
    assert "<script" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(srcs) == 3 * 5  # 3 measured images x (thumbnail, HR, bicubic, 2 networks)
    assert all((out / unquote(s)).is_file() for s in srcs)
    assert all(re.search(r'alt="[^"]{10,}"', tag) for tag in re.findall(r"<img [^>]*>", page))
    assert "odd &lt;b&gt;&amp;&quot;name.png" in page and '<b>&"' not in page
    assert "dot.png" in page  # listed as skipped
    ds = res["datasets"][0]
    for key, digits in (("psnr", 2), ("ssim", 4), ("psnr_rgb", 2)):
        assert f">{ds[key]:.{digits}f}<" in page
    a = next(r for r in ds["per_image"] if r["name"] == "a.png")
    assert f"PSNR {a['psnr']:.2f} dB · RGB {a['psnr_rgb']:.2f}" in page
    # the crops are enlarged copies of the images: HR's equals the HR pixels, repeated
    hr = read_image(bench / "a.png")[0][:60, :72]
    m = re.search(r'crop (\d+)x\1 pixels at x=(\d+), y=(\d+)<br>shown (\d+)x', page)
    side, x, y, zoom = map(int, m.groups())
    hr_src = next(s for s in srcs if s.endswith("-hr.png") and "a-hr" in s)
    assert np.array_equal(read_image(out / hr_src)[0], enlarge(hr[y:y + side, x:x + side], zoom))
    assert json.loads((out / MANIFEST).read_text())["files"][0] == INDEX


def test_report_page_loads_cleanly_in_headless_chromium(bench, ckpt, ckpt2, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):  # .ci/run installs it: its absence in CI is a failure
            pytest.fail("chromium not found; .ci/run installs the Debian package 'chromium'")
        pytest.skip("chromium not found (Debian: apt-get install chromium): the page is not checked in a browser")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    out = tmp_path / "rep"
    rc, _ = _report(["--checkpoint", ckpt, "--compare", ckpt2, "--benchmark", bench, "--rgb", "--report", out])
    assert rc == 0
    errors, failed = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto((out / INDEX).as_uri(), wait_until="load")
            imgs = page.evaluate("Array.from(document.images, i => [i.getAttribute('src'), i.complete, "
                                 "i.naturalWidth, i.alt])")
            title = page.title()
            shot = page.screenshot(full_page=True, path=str(tmp_path / "shot.png"))
        finally:
            browser.close()
    assert not errors and not failed, (errors, failed)
    assert len(imgs) == 15
    assert all(done and width > 0 for _, done, width, _ in imgs), [i for i in imgs if not i[2]]
    assert all(alt for *_, alt in imgs)
    assert title.startswith("deconas eval x2")
    px = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    assert len(shot) > 0 and px.shape[0] > 800
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 100  # text, tables and photos, not one colour


def test_a_folder_of_other_files_is_refused_and_overwrite_adds_only_the_reports_files(bench, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc, io = _report(["--bicubic", "--scale", "2", "--benchmark", bench, "--report", out], capsys)
    assert rc == 2 and len(io.err.strip().splitlines()) == 1
    assert "--report" in io.err and "--overwrite" in io.err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # refused before anything was written
    rc, io = _report(["--bicubic", "--scale", "2", "--benchmark", bench, "--report", out, "--overwrite"], capsys)
    assert rc == 0, io.err
    assert (out / "notes.txt").read_text() == "keep me" and (out / INDEX).is_file()


def test_a_second_report_replaces_the_first_and_removes_only_its_files(bench, ckpt, tmp_path, capsys):
    out = tmp_path / "rep"
    assert _report(["--checkpoint", ckpt, "--benchmark", bench, "--report", out])[0] == 0
    first = _img_files(out)
    (out / "extra.txt").write_text("a file the user added to the report folder")
    assert _report(["--bicubic", "--scale", "2", "--benchmark", bench, "--report", out])[0] == 0
    second = _img_files(out)
    assert not set(first) & set(second) and len(second) == 3 * 3  # thumbnail, HR, bicubic
    assert (out / "extra.txt").is_file()
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(f for f in listed if f.endswith(".png")) == second
    assert [p.name for p in out.iterdir() if p.is_dir()] == [second[0].split("/")[0]]  # old folder gone


def test_a_failed_run_leaves_no_report_behind(bench, tmp_path, capsys):
    out = tmp_path / "rep"
    tiny = tmp_path / "TooSmall"
    write_image(tiny / "dot.png", photo(12, 12, 5))  # no image large enough: an error after bench's images
    rc, io = _report(["--bicubic", "--scale", "2", "--benchmark", bench, tiny, "--report", out], capsys)
    assert rc == 2 and "TooSmall" in io.err
    assert not out.exists()  # the folder it had made, and the images it had written, are gone


@pytest.mark.parametrize("case", ["file", "same-twice", "same-as-checkpoint", "other-scale", "missing"])
def test_bad_report_and_compare_arguments_are_one_line_errors(case, bench, ckpt, tmp_path, capsys):
    args = ["--checkpoint", ckpt, "--benchmark", bench]
    if case == "file":
        (tmp_path / "f").write_text("x")
        args += ["--report", tmp_path / "f"]
    elif case == "same-twice":
        args = ["--bicubic", "--scale", "2", "--benchmark", bench, "--compare", ckpt, ckpt]
    elif case == "same-as-checkpoint":
        args += ["--compare", ckpt]
    elif case == "other-scale":
        from deconas.checkpoint import save_model
        from deconas.space.genotype import parse
        from deconas.space.network import DeCoNASNet
        x3 = tmp_path / "x3.safetensors"
        save_model(x3, DeCoNASNet(parse("7,6,4"), scale=3, channels=4, blocks=1))
        args += ["--compare", x3]
    else:
        args += ["--compare", tmp_path / "nope.safetensors"]
    rc, io = _report(args, capsys)
    lines = io.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in io.err, io.err
    assert ("--report" if case == "file" else "--compare") in lines[0]
