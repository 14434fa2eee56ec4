"""``deconas eval --report DIR``: one self-contained HTML page of an evaluation.

``DIR/index.html`` holds the table (PSNR / SSIM on Y, and RGB PSNR with ``--rgb``, for every
method on every set) and, for every image, a small thumbnail of the HR image with the crop
marked on it and the same crop of HR, bicubic and each network, enlarged by pixel repetition
(nearest neighbour) and written as PNG files beside the page, with each method's PSNR under its
crop.  No script, no server, nothing fetched: the CSS is inline and every image is a local file,
so the folder can be zipped, mailed or opened from disk.

The crop is the window where the networks differ most from bicubic: the ``CROP`` x ``CROP``
window (inside the ``scale``-pixel border that the metrics ignore) with the largest mean of
``|Y(SR) - Y(bicubic)|`` over the networks, found for all windows at once with an integral
image.  Without a network (``--bicubic`` alone), or where every network equals bicubic, it is
the window where bicubic is furthest from HR.

Which folders it writes to (docs/eval.md): a new or empty DIR; a DIR holding an earlier report
of deconas (its ``.deconas-report.json`` lists the files that report wrote), which is replaced:
the new page's images go to a new folder, the page is renamed into place, and only then are
the old report's own files removed, so the folder always holds one whole page; any other
non-empty DIR only with ``--overwrite``, and then only the report's own names are written
(``index.html``, the manifest, a new ``img-*`` folder) and every other file is left alone.
"""

from __future__ import annotations

import html
import json
import math
import secrets
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw

from deconas import __version__
from deconas.data.images import write_image
from deconas.errors import UserError
from deconas.metrics import rgb_to_y
from deconas.runtime import atomic_write_text, check_writable, parse_json

__all__ = ["EvalReport", "busiest_window", "crop_box", "enlarge", "INDEX", "MANIFEST"]

INDEX = "index.html"
MANIFEST = ".deconas-report.json"  # marks the folder as a deconas report and lists its files
FORMAT = "deconas eval --report"
CROP = 64  # side of the crop in HR pixels
SHOWN = 256  # about how wide a crop is shown, in screen pixels
THUMB = 200  # longest side of the thumbnail


def busiest_window(diff: np.ndarray, size: int):
    """``(y, x)``, the top-left corner of the ``size`` x ``size`` window of ``diff`` (2-D, >= 0)
    with the largest sum; the first such window in row-major order on ties.  Every window's sum
    comes from one integral image (four look-ups each), not from summing each window."""
    d = np.asarray(diff, dtype=np.float64)
    h, w = d.shape
    if not 1 <= size <= min(h, w):
        raise ValueError(f"window {size} does not fit in {h}x{w}")
    ii = np.zeros((h + 1, w + 1))
    np.cumsum(np.cumsum(d, axis=0), axis=1, out=ii[1:, 1:])
    sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def crop_box(hr: np.ndarray, baseline: np.ndarray, networks: Sequence[np.ndarray], border: int,
             size: int = CROP):
    """``(y, x, side)`` of the crop to show: the window of mean ``|Y(net) - Y(baseline)|`` over
    ``networks`` (or of ``|Y(hr) - Y(baseline)|`` when there is none or all equal the baseline),
    kept inside ``border`` pixels from every edge."""
    b = int(border)
    h, w = hr.shape[:2]
    side = max(1, min(size, h - 2 * b, w - 2 * b))
    inner = (slice(b, h - b), slice(b, w - b))
    yb = rgb_to_y(baseline[inner])
    diff = None
    if networks:
        diff = sum(np.abs(rgb_to_y(n[inner]) - yb) for n in networks) / len(networks)
        if not diff.any():
            diff = None
    if diff is None:
        diff = np.abs(rgb_to_y(hr[inner]) - yb)
    y, x = busiest_window(diff, side)
    return y + b, x + b, side


def enlarge(img: np.ndarray, zoom: int) -> np.ndarray:
    """Nearest-neighbour enlargement: every pixel becomes a ``zoom`` x ``zoom`` block."""
    return np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)


def _thumbnail(hr: np.ndarray, y: int, x: int, side: int) -> np.ndarray:
    """The HR image at most ``THUMB`` pixels on its long side, in colour (a red box must show on
    grey images too), with the crop drawn as a red box inside a white one."""
    h, w = hr.shape[:2]
    f = min(1.0, THUMB / max(h, w))
    tw, th = max(1, round(w * f)), max(1, round(h * f))
    im = Image.fromarray(hr).convert("RGB")
    if f < 1.0:
        im = im.resize((tw, th), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(im)
    x0, y0 = math.floor(x * f), math.floor(y * f)
    x1, y1 = max(x0 + 3, math.ceil((x + side) * f) - 1), max(y0 + 3, math.ceil((y + side) * f) - 1)
    draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), outline=(255, 255, 255), width=1)
    draw.rectangle((x0, y0, x1, y1), outline=(230, 0, 0), width=2)
    return np.asarray(im)


def _slug(name: str, limit: int = 40) -> str:
    """A file-name-safe short form of an image name (the files need no other meaning)."""
    s = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in Path(name).stem)
    return s[:limit] or "image"


def _read_manifest(folder: Path) -> Optional[List[str]]:
    """The files an earlier report listed, or None where the folder holds no (readable) report."""
    try:
        rec = parse_json((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT or not isinstance(rec.get("files"), list):
        return None
    return [f for f in rec["files"] if isinstance(f, str)]


def _inside(folder: Path, rel: str) -> Optional[Path]:
    """``folder/rel`` when ``rel`` is a plain relative path that stays in ``folder`` (a hand-edited
    manifest must never make deconas delete anything outside its report)."""
    p = Path(rel)
    if p.is_absolute() or not p.parts or ".." in p.parts:
        return None
    return folder / p


def _fmt(v: float, digits: int) -> str:
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


_CSS = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fff; --muted: #5b5b60; --line: #d6d6da;
        --head: #f2f2f5; --best: #0b6b2e; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #ececef; --bg: #16161a; --muted: #a4a4ab; --line: #3a3a40; --head: #24242a; --best: #6fdc95; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 16px 20px 40px; font: 15px/1.45 system-ui, -apple-system,
       "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 1.5em; margin: 0.2em 0; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.4em; border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
h3 { font-size: 1em; margin: 1.2em 0 0.4em; }
h3 .dims { color: var(--muted); font-weight: normal; }
p, li { max-width: 60em; }
.muted { color: var(--muted); }
nav a { margin-right: 1em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
caption { text-align: left; padding-bottom: 4px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: var(--head); }
th:first-child, td:first-child { text-align: left; }
td.best { color: var(--best); font-weight: 700; }
.row { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 0.88em; line-height: 1.35; margin-top: 4px; font-variant-numeric: tabular-nums; }
figcaption b { font-size: 1.05em; }
img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
img.crop { image-rendering: pixelated; }
.gain { color: var(--best); }
.loss { color: #c0392b; }
footer { margin-top: 3em; font-size: 0.85em; color: var(--muted); }
"""


class EvalReport:
    """Collects an evaluation's crops as it runs (:meth:`add` writes them at once, so no image is
    kept), then writes the page (:meth:`write`).  The folder is checked when this is made, before
    anything is evaluated; :meth:`discard` removes what a failed run had written."""

    def __init__(self, folder, overwrite: bool = False):
        self.folder = Path(folder)
        self._old = self._check(self.folder, overwrite)
        self._existed = self.folder.exists()
        self._written: List[str] = []
        self._images: List[Dict] = []
        self._count: Dict[int, int] = {}
        self._made_dir: Optional[Path] = None
        self._published = False
        self.labels: List[str] = []

    @staticmethod
    def _check(out: Path, overwrite: bool) -> Optional[List[str]]:
        """The files of the earlier report in ``out`` (to remove after the new one is written);
        a one-line error where ``out`` cannot take a report."""
        if out.exists() and not out.is_dir():
            raise UserError(f"--report {out}: a file is in the way (it must be a folder)")
        old = None
        if out.is_dir():
            try:
                entries = [e.name for e in out.iterdir()]
            except OSError as e:
                raise UserError(f"--report {out}: cannot list the folder ({e.strerror or e})") from None
            old = _read_manifest(out)
            # temporary files of an atomic write that was killed are no one's files
            others = [n for n in entries if not (n.startswith(".") and n.endswith(".tmp"))]
            if others and old is None and not overwrite:
                raise UserError(f"--report {out}: the folder holds other files and no deconas report; pick an "
                                f"empty or new folder, or pass --overwrite to add the report's own files to it "
                                f"(index.html, img-*/; nothing else is touched)")
        check_writable(out, "--report")
        return old

    def start(self, labels: Sequence[str], baseline: int, scale: int, rgb: bool, about: Dict[str, str]) -> None:
        """``labels``: the methods in evaluation order; ``baseline``: which is bicubic; ``about``:
        lines for the page's header (what was evaluated, with which options)."""
        self.labels, self.baseline, self.scale, self.rgb = list(labels), int(baseline), int(scale), bool(rgb)
        self.about = dict(about)
        self.networks = [i for i in range(len(self.labels)) if i != self.baseline]
        # a folder of its own for this page's images: the earlier page keeps its own until the
        # new page has replaced it
        while True:
            name = f"img-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            if not (self.folder / name).exists():
                break
        self.img_dir = name

    def _put(self, rel: str, pixels: np.ndarray) -> None:
        target = self.folder / rel
        if self._made_dir is None:
            self._made_dir = self.folder / self.img_dir
        try:
            write_image(target, pixels)
        except UserError as e:
            raise UserError(f"--report: {e}") from None
        except OSError as e:
            raise UserError(f"--report: cannot write {target} ({e.strerror or e})") from None
        self._written.append(rel)

    def add(self, set_index: int, set_name: str, image_name: str, hr: np.ndarray, srs: Sequence[np.ndarray],
            rows: Sequence[Dict]) -> None:
        """One measured image: choose its crop, write the thumbnail and the enlarged crops."""
        nets = [srs[i] for i in self.networks]
        y, x, side = crop_box(hr, srs[self.baseline], nets, self.scale)
        zoom = max(1, round(SHOWN / side))
        k = self._count[set_index] = self._count.get(set_index, -1) + 1  # the image's number in its set
        stem = f"{self.img_dir}/s{set_index}/{k:03d}-{_slug(image_name)}"
        thumb = _thumbnail(hr, y, x, side)
        self._put(f"{stem}-where.png", thumb)
        crops = {"hr": f"{stem}-hr.png"}
        self._put(crops["hr"], enlarge(hr[y:y + side, x:x + side], zoom))
        for i, sr in enumerate(srs):
            crops[i] = f"{stem}-m{i}.png"
            self._put(crops[i], enlarge(sr[y:y + side, x:x + side], zoom))
        self._images.append({"set": set_index, "set_name": set_name, "name": image_name,
                             "h": hr.shape[0], "w": hr.shape[1], "grey": hr.ndim == 2,
                             "y": y, "x": x, "side": side, "zoom": zoom,
                             "thumb": (f"{stem}-where.png", thumb.shape[1], thumb.shape[0]),
                             "crops": crops, "rows": [dict(r) for r in rows]})

    def discard(self) -> None:
        """Remove this run's image folder (made by this run, so holding nothing of anyone else's),
        unless the page that shows it is already in place."""
        if self._published:
            return
        if self._made_dir is not None and self._made_dir.is_dir():
            shutil.rmtree(self._made_dir, ignore_errors=True)
        if not self._existed:
            try:
                self.folder.rmdir()  # made by this run; only if nothing else went in meanwhile
            except OSError:
                pass

    # -- the page ---------------------------------------------------------------------------

    def _order(self) -> List[int]:
        """Columns of the page: bicubic first, then the networks in the order given."""
        return [self.baseline] + self.networks

    def _table(self, results: Sequence[Dict]) -> str:
        sets = results[0]["datasets"]
        per = 3 if self.rgb else 2
        head1 = "".join(f'<th colspan="{per}" scope="colgroup">{html.escape(d["name"])} '
                        f'<span class="muted">({d["images"]})</span></th>' for d in sets)
        sub = "<th scope=\"col\">PSNR</th><th scope=\"col\">SSIM</th>" + (
            "<th scope=\"col\">PSNR RGB</th>" if self.rgb else "")
        keys = [("psnr", 2), ("ssim", 4)] + ([("psnr_rgb", 2)] if self.rgb else [])
        best = {(j, key): max(r["datasets"][j][key] for r in results) for j in range(len(sets)) for key, _ in keys}
        body = []
        for i in self._order():
            cells = []
            for j in range(len(sets)):
                for key, digits in keys:
                    v = results[i]["datasets"][j][key]
                    cls = ' class="best"' if len(results) > 1 and v == best[(j, key)] else ""
                    cells.append(f"<td{cls}>{_fmt(v, digits)}</td>")
            body.append(f'<tr><th scope="row">{html.escape(self.labels[i])}</th>{"".join(cells)}</tr>')
        return (f'<div class="scroll"><table>\n<caption class="muted">Mean over each set\'s images; PSNR in dB. '
                f'Best of each column in bold.</caption>\n'
                f'<thead><tr><th rowspan="2" scope="col">Method</th>{head1}</tr><tr>{sub * len(sets)}</tr></thead>\n'
                f'<tbody>\n' + "\n".join(body) + "\n</tbody></table></div>")

    def _caption(self, i: int, row: Dict, base: Dict) -> str:
        parts = [f"<b>{html.escape(self.labels[i])}</b>",
                 f"PSNR {_fmt(row['psnr'], 2)} dB" + (f" · RGB {_fmt(row['psnr_rgb'], 2)}" if self.rgb else ""),
                 f"SSIM {_fmt(row['ssim'], 4)}"]
        if i != self.baseline and math.isfinite(row["psnr"]) and math.isfinite(base["psnr"]):
            d = row["psnr"] - base["psnr"]
            parts.append(f'<span class="{"gain" if d >= 0 else "loss"}">{d:+.2f} dB vs bicubic</span>')
        return "<br>".join(parts)

    def _image(self, im: Dict, anchor: str) -> str:
        name = html.escape(im["name"])
        side, zoom, x, y = im["side"], im["zoom"], im["x"], im["y"]
        where = f"{side}x{side} pixels at x={x}, y={y}"
        tsrc, tw, th = im["thumb"]
        figs = [f'<figure><img src="{quote(tsrc)}" width="{tw}" height="{th}" '
                f'alt="{name}, whole image ({im["w"]}x{im["h"]}); a red box marks the crop, {where}">'
                f'<figcaption><b>Where</b><br>crop {where}<br>shown {zoom}x, nearest neighbour</figcaption></figure>']
        px = side * zoom
        figs.append(f'<figure><img class="crop" src="{quote(im["crops"]["hr"])}" width="{px}" height="{px}" '
                    f'alt="{name}, HR (ground truth), crop {where}, enlarged {zoom}x">'
                    f'<figcaption><b>HR</b><br>ground truth</figcaption></figure>')
        base = im["rows"][self.baseline]
        for i in self._order():
            label = html.escape(self.labels[i])
            row = im["rows"][i]
            figs.append(f'<figure><img class="crop" src="{quote(im["crops"][i])}" width="{px}" height="{px}" '
                        f'alt="{name}, {label} x{self.scale}, crop {where}, enlarged {zoom}x; PSNR '
                        f'{_fmt(row["psnr"], 2)} dB">'
                        f'<figcaption>{self._caption(i, row, base)}</figcaption></figure>')
        grey = ' · <span class="muted">greyscale</span>' if im["grey"] else ""
        return (f'<article id="{anchor}"><h3>{name} <span class="dims">{im["w"]}x{im["h"]}</span>{grey}</h3>'
                f'<div class="row">' + "".join(figs) + "</div></article>")

    def write(self, results: Sequence[Dict]) -> Path:
        """Write ``index.html`` (after every image it shows), then the manifest, then remove the
        files of the earlier report that the new one does not use.  Returns the page's path."""
        sets = results[0]["datasets"]
        title = f"deconas eval x{self.scale}: " + ", ".join(d["name"] for d in sets)
        nets = [self.labels[i] for i in self.networks]
        if nets:
            how = ("the window where the networks differ most from bicubic: the largest mean |SR − bicubic| "
                   "on Y" + (", averaged over the networks" if len(nets) > 1 else ""))
        else:
            how = "the window where bicubic is furthest from HR: the largest mean |HR − bicubic| on Y"
        about = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in self.about.items())
        nav = " ".join(f'<a href="#set-{j}">{html.escape(d["name"])}</a>' for j, d in enumerate(sets))
        parts = [
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="deconas {html.escape(__version__)}">',
            '<link rel="icon" href="data:,">',  # no favicon request: the page fetches nothing
            f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
            f"<header><h1>{html.escape(title)}</h1><ul>{about}</ul>",
            f'<p class="muted">{html.escape(results[0]["protocol"])}.</p></header>',
            f'<nav aria-label="sets">Sets: <a href="#table">table</a> {nav}</nav>',
            '<section id="table"><h2>Results</h2>', self._table(results), "</section>",
            f'<p>Crops: in each image, the {CROP}x{CROP} window (smaller where the image is) inside the '
            f'{self.scale}-pixel border that the metrics ignore, chosen as {html.escape(how)}; enlarged by '
            f"pixel repetition. The thumbnail marks where it is. Under each crop: that method's PSNR and SSIM "
            f"on Y for the whole image.</p>",
        ]
        for j, d in enumerate(sets):
            parts.append(f'<section id="set-{j}"><h2>{html.escape(d["name"])} '
                         f'<span class="muted">({d["images"]} images, x{self.scale})</span></h2>')
            if d.get("skipped"):
                parts.append(f'<p class="muted">Skipped (too small for x{self.scale}): '
                             f'{html.escape(", ".join(d["skipped"]))}</p>')
            mine = [im for im in self._images if im["set"] == j]
            parts += [self._image(im, f"set-{j}-{k}") for k, im in enumerate(mine)]
            parts.append("</section>")
        parts += [f"<footer>Made by deconas {html.escape(__version__)} on {time.strftime('%Y-%m-%d %H:%M')}. "
                  f"Self-contained: this page and the <code>{html.escape(self.img_dir)}/</code> folder beside it."
                  f"</footer>", "</body>", "</html>", ""]
        page = self.folder / INDEX
        mine = [INDEX] + self._written
        try:
            try:
                # at every moment the manifest lists every file of ours that is there: first the
                # old and the new ones, then, once the new page is in place, the new ones only
                self._manifest(list(dict.fromkeys((self._old or []) + mine)))
                atomic_write_text(page, "\n".join(parts))
            except BaseException:
                self.discard()  # the earlier page (if any) is still whole and still the page
                raise
            self._published = True
            self._manifest(mine)
        except UserError as e:
            raise UserError(f"--report: {e}") from None
        self._remove_old()
        return page

    def _manifest(self, files: List[str]) -> None:
        atomic_write_text(self.folder / MANIFEST, json.dumps(
            {"format": FORMAT, "version": __version__, "files": files}, indent=1) + "\n")

    def _remove_old(self) -> None:
        """The earlier report's files that the new one does not use, and its folders left empty."""
        keep = set(self._written) | {INDEX, MANIFEST}
        folders = set()
        for rel in self._old or []:
            p = _inside(self.folder, rel)
            if p is None or rel in keep:
                continue
            try:
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    folders |= {d for d in p.parents if self.folder in d.parents}
            except OSError:
                pass  # a file already gone or not ours to remove: the new page does not need it
        for d in sorted(folders, key=lambda d: len(d.parts), reverse=True):
            try:
                d.rmdir()  # only if empty: never a file someone put there
            except OSError:
                pass
        if self._old is not None:
            for tmp in self.folder.glob(".*.tmp"):  # left by a killed writer of an earlier report
                try:
                    tmp.unlink()
                except OSError:
                    pass
