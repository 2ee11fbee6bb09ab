"""Self-contained HTML reports: one page per patient (slice viewer with the predicted lesions, detection scores along
the volume, fluid volumes, en-face maps) and an index page across patients.

A page needs nothing but itself: images are ``data:`` URIs, the script and the styles are inline, and its Content
Security Policy forbids any request and any script but its own, so it can be mailed or opened from a USB stick.
Every text a page shows is escaped (patient names come from file names).

    python -m reports.html screenshot predictions/report/P01.html p01.png   # a picture of a page (for the README)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from data.oct import CLASS_COLOURS, OVERLAY_ALPHA
from metrics.etdrs import SIDES, orientation
from metrics.quantify import ranges
from utils.errors import ToolkitError
from utils.io import atomic_write

LESION_COLOURS = CLASS_COLOURS  # (4, 3) RGB: background, then the lesions in class order (REA, SRF, PED)

MAX_WIDTH = 512  # px: wider B-scans are shown downscaled (the aspect kept)
# the first quality whose slices fit IMAGE_BUDGET; below the last, the slices are downscaled instead. Pure noise
# 128 x 1024 x 512 needs the downscale; real B-scans fit at the first quality
JPEG_QUALITIES = (85, 70, 55, 40)
IMAGE_BUDGET = 24 * 2**20  # bytes of B-scan JPEGs and overlay PNGs in one page (base64 adds a third)
# px on screen: narrower B-scans are shown enlarged, taller ones shrunk (the detection plot and the volumes stay in
# view beside them); the aspect is kept
MIN_VIEWER_WIDTH, MAX_VIEWER_HEIGHT = 384, 540
VIEWER_WIDTH = 560  # px on screen of a B-scan shown at its physical aspect (a 6 x 2 mm scan: 560 x 187)
ENFACE_WIDTH = 192  # px on screen; the height follows the scan's physical aspect
COLORMAP = "viridis"
NOTE = (
    "These figures come from an automatic segmentation of the OCT volume. They are measurements to be checked by a "
    "clinician, not a diagnosis."
)
CHROMIUM_NAMES, CHROMEDRIVER_NAMES = ("chromium", "chromium-browser"), ("chromedriver",)
INSTALL_HINT = "install them with `sudo apt-get install -y chromium chromium-driver` (Debian, Ubuntu; .ci/run does it)"

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1240px; margin: 0 auto; padding: 12px 20px; }
h1 { font-size: 22px; margin: 4px 0; overflow-wrap: anywhere; }
h2 { font-size: 16px; margin: 22px 0 8px; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: 6px 10px; }
.columns { display: flex; flex-wrap: wrap; align-items: flex-start; column-gap: 32px; }
.side { flex: 1 1 480px; min-width: 0; }
.main { flex: 0 1 640px; min-width: 0; }
.controls { display: flex; flex-wrap: wrap; align-items: center; gap: 14px; margin-bottom: 8px; }
#slider { width: 240px; }
.viewer { position: relative; max-width: 100%; background: #000; }
#bscan { display: block; width: 100%; height: auto; }
#overlay { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
.legend span, td .swatch { margin-right: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
#det-plot { max-width: 100%; height: auto; font-size: 10px; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#enface { display: flex; flex-wrap: wrap; column-gap: 0; }
figure { margin: 0; }
.map-box { position: relative; }
.enface-map { display: block; cursor: pointer; image-rendering: pixelated; }
.enface-marker { position: absolute; left: 0; right: 0; border-top: 1px dashed #fff; pointer-events: none; }
.colourbar { height: 10px; margin-top: 4px; }
.range { display: flex; justify-content: space-between; }
.small { color: #666; font-size: 12px; }
.meta td, .meta th { padding: 2px 12px 2px 0; border: 0; }
.scalebar { box-sizing: border-box; border: solid #222; border-width: 0 2px 2px; height: 6px; margin-top: 4px; }
.orient { position: absolute; font-size: 11px; color: #222; background: rgba(255, 255, 255, 0.8); padding: 0 2px; }
.orient.top { top: -16px; left: 50%; transform: translateX(-50%); }
.orient.bottom { bottom: -16px; left: 50%; transform: translateX(-50%); }
.orient.left { left: -4px; top: 50%; transform: translate(-100%, -50%); }
.orient.right { right: -4px; top: 50%; transform: translate(100%, -50%); }
.map-frame { position: relative; margin: 18px 56px; }
.grid { position: absolute; left: 0; top: 0; pointer-events: none; overflow: visible; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " ↕"; color: #aaa; }
tr.total td { font-weight: 600; border-top: 2px solid #888; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  .controls, .no-print, .small.keys { display: none; }
  .columns { display: block; }
  section { break-inside: avoid; }
  .enface-marker { display: none; }
}
"""

# The page's only script: the slider, the arrow keys and the overlay toggle show a slice; the detection plot's
# marker and the en-face maps' lines follow it; a click on an en-face map shows that B-scan.
JS = """
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($("slice-data").textContent);
  const n = data.bscan.length;
  const slider = $("slider"), label = $("slice-label"), bscan = $("bscan"), overlay = $("overlay");
  const toggle = $("overlay-toggle"), marker = $("det-marker"), values = $("det-values"), mode = $("overlay-mode");
  function show(k) {
    k = Math.min(n, Math.max(1, k));
    slider.value = k;
    label.textContent = `slice ${k} / ${n}`;
    bscan.src = data.bscan[k - 1];
    overlay.src = (mode.value === "contour" ? data.contour : data.overlay)[k - 1];
    if (marker) {
      const x = Number(marker.dataset.x0) + (k - 1) * Number(marker.dataset.dx);
      marker.setAttribute("x1", x);
      marker.setAttribute("x2", x);
      values.textContent = data.names.map((name, c) => `${name} ${data.det[k - 1][c].toFixed(2)}`).join(" · ");
    }
    for (const m of document.querySelectorAll(".enface-marker")) m.style.top = `${((k - 0.5) / n) * 100}%`;
  }
  slider.addEventListener("input", () => show(Number(slider.value)));
  toggle.addEventListener("change", () => { overlay.style.display = toggle.checked ? "" : "none"; });
  mode.addEventListener("change", () => show(Number(slider.value)));
  document.addEventListener("keydown", (e) => {
    // a focused slider steps itself (and fires "input")
    if (e.target === slider || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
    e.preventDefault();
    show(Number(slider.value) + (e.key === "ArrowRight" ? 1 : -1));
  });
  for (const map of document.querySelectorAll(".enface-map")) {
    map.addEventListener("click", (e) => show(Math.floor((e.offsetY / map.clientHeight) * n) + 1));
  }
  show(Number(slider.value));
})();
"""


# ---------------------------------------------------------------------------------------------------------- text


def _sig(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, never in exponent form: 1234.5 -> "1230", 0.012345 -> "0.0123",
    1.2 -> "1.20", 0 -> "0"."""
    value = float(value)
    if not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    rounded = round(value, digits - 1 - math.floor(math.log10(abs(value))))
    decimals = digits - 1 - math.floor(math.log10(abs(rounded)))  # again: rounding may add a digit (999.6 -> 1000)
    return f"{rounded:.{max(decimals, 0)}f}"


def _ranges(slices: Sequence[int]) -> str:
    """1-based slice numbers as ranges, in any order, repeats allowed: [12, 3, 4, 5, 6, 7] -> "3-7, 12"; none ->
    "none"."""
    return ranges(sorted({int(s) for s in slices})) or "none"


def _rgb(c: int) -> str:
    r, g, b = (int(v) for v in LESION_COLOURS[c])
    return f"rgb({r}, {g}, {b})"


def _spacing_text(spacing: Sequence[float] | None) -> str:
    if spacing is None:
        return "unknown: volumes are not given in nL, en-face maps are in voxels with square voxels"
    dz, dy, dx = spacing
    return f"{dz:.6g} mm between B-scans, {dy:.6g} mm along depth, {dx:.6g} mm between A-scans"


def _page(title: str, body: str, script: str | None = None) -> str:
    """A whole page; its policy allows ``data:`` images, inline styles, and ``script`` only (by its hash)."""
    script_src = "'none'"
    if script is not None:
        script_src = "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_src}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        + ("" if script is None else f"<script>{script}</script>\n")
        + "</body>\n</html>\n"
    )


# -------------------------------------------------------------------------------------------------------- images


def _data_uri(im: Image.Image, fmt: str, **save_kwargs) -> str:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_kwargs)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _encoded_size(uri: str) -> int:
    return len(uri) - uri.index(",") - 1


def _bscan_uri(grey: np.ndarray, size: tuple[int, int], quality: int) -> str:
    """(H, W) uint8 -> a greyscale JPEG of ``size``."""
    im = Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8)).resize(size, Image.BILINEAR)
    return _data_uri(im, "JPEG", quality=quality)


def _slice_encoding(image: np.ndarray, labels: np.ndarray) -> tuple[tuple[int, int], int]:
    """image, labels (Z, H, W) -> (display (width, height), JPEG quality) that keeps the B-scans and their overlays
    within IMAGE_BUDGET, judged on a few slices spread over the volume."""
    z, h, w = image.shape
    scale = min(1.0, MAX_WIDTH / w)
    sample = np.unique(np.linspace(0, z - 1, min(z, 5)).round().astype(int))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    overlays = z * np.mean(
        [
            _encoded_size(_overlay_uri(np.asarray(labels[i]), size))
            + _encoded_size(_contour_uri(np.asarray(labels[i]), size))
            for i in sample
        ]
    )
    for quality in JPEG_QUALITIES:
        total = overlays + z * np.mean([_encoded_size(_bscan_uri(image[i], size, quality)) for i in sample])
        if total <= IMAGE_BUDGET * 4 / 3:  # base64 sizes
            break
    else:
        scale *= 0.95 * math.sqrt(IMAGE_BUDGET * 4 / 3 / total)  # an image's bytes go with its pixel count
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return size, quality


def _overlay_uri(labels: np.ndarray, size: tuple[int, int]) -> str:
    """(H, W) classes -> a palette PNG of ``size``: transparent background, lesions in their colours."""
    im = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8)).resize(size, Image.NEAREST)
    im.putpalette(LESION_COLOURS.astype(np.uint8).tobytes())  # 4 entries: a 2-bit PNG
    alpha = round(255 * OVERLAY_ALPHA)
    return _data_uri(im, "PNG", transparency=bytes([0] + [alpha] * (len(LESION_COLOURS) - 1)))


def _contour_uri(labels: np.ndarray, size: tuple[int, int]) -> str:
    """(H, W) classes -> a palette PNG of ``size``: each lesion's outline (its pixels with a neighbour of another
    class) in its colour, opaque; the rest transparent. What a reader sees the B-scan through."""
    small = np.asarray(Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8)).resize(size, Image.NEAREST))
    padded = np.pad(small, 1, mode="edge")
    edge = (
        (padded[:-2, 1:-1] != small)
        | (padded[2:, 1:-1] != small)
        | (padded[1:-1, :-2] != small)
        | (padded[1:-1, 2:] != small)
    )
    im = Image.fromarray(np.where(edge & (small > 0), small, 0).astype(np.uint8))
    im.putpalette(LESION_COLOURS.astype(np.uint8).tobytes())
    return _data_uri(im, "PNG", transparency=bytes([0] + [255] * (len(LESION_COLOURS) - 1)))


def _display_size(size: tuple[int, int], shape: tuple[int, int], spacing: Sequence[float] | None) -> tuple[int, int]:
    """(width, height) px on screen of a B-scan encoded at ``size`` of ``shape`` (H, W): at its physical aspect
    where the spacing is known (depth and width at one scale), else its pixels' aspect; at least MIN_VIEWER_WIDTH
    wide and at most MAX_VIEWER_HEIGHT high."""
    h, w = shape
    aspect = (h * spacing[1]) / (w * spacing[2]) if spacing is not None else h / w  # height over width
    width = float(VIEWER_WIDTH) if spacing is not None else max(float(size[0]), MIN_VIEWER_WIDTH)
    width = min(width, MAX_VIEWER_HEIGHT / aspect, 2 * MIN_VIEWER_WIDTH)
    return round(width), max(1, round(width * aspect))


def _scale_bar(width_px: int, width_mm: float) -> str:
    """A horizontal bar of a round length (0.1, 0.2, 0.5, 1, 2 mm ...) about a quarter of ``width_px``."""
    per_mm = width_px / width_mm
    target = width_mm / 4
    length = next(v for v in (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 1e9) if v >= target * 0.7)
    label = f"{length * 1000:.0f} &micro;m" if length < 1 else f"{length:g} mm"
    return (
        f'<div id="scale-bar"><div class="scalebar" style="width: {length * per_mm:.1f}px"></div>'
        f'<span class="small">{label} (depth and width at one scale)</span></div>'
    )


def _colormap(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] -> (..., 3) uint8 RGB."""
    import matplotlib

    return matplotlib.colormaps[COLORMAP](values, bytes=True)[..., :3]


def _enface_size(z: int, w: int, spacing: Sequence[float] | None) -> tuple[int, int]:
    """(width, height) on screen of a (Z, W) en-face map: the scan's physical aspect, or square voxels."""
    dz, dx = (1.0, 1.0) if spacing is None else (spacing[0], spacing[2])
    height = ENFACE_WIDTH * (z * dz) / (w * dx)
    return ENFACE_WIDTH, int(min(max(round(height), 8), 4 * ENFACE_WIDTH))


# ------------------------------------------------------------------------------------------------------ sections


def _viewer(
    image: np.ndarray, labels: np.ndarray, names: tuple[str, ...], spacing: Sequence[float] | None = None
) -> tuple[str, dict]:
    """The slice viewer's HTML and its slices as data URIs (shown by the script)."""
    z, h, w = image.shape
    size, quality = _slice_encoding(image, labels)
    bscans = [_bscan_uri(image[i], size, quality) for i in range(z)]
    overlays = [_overlay_uri(np.asarray(labels[i]), size) for i in range(z)]
    contours = [_contour_uri(np.asarray(labels[i]), size) for i in range(z)]
    area = (np.asarray(labels) > 0).sum(axis=(1, 2))
    first = int(area.argmax()) + 1  # open on the slice with the most lesion (the first slice when there is none)
    legend = "".join(
        f'<span><i class="swatch" style="background: {_rgb(c + 1)}"></i>{html.escape(n)}</span>'
        for c, n in enumerate(names)
    )
    shown = _display_size(size, (h, w), spacing)
    scaled = "" if size[0] == image.shape[2] else f" (stored at {size[0]} &times; {size[1]} px of {w} &times; {h})"
    if spacing is None:
        bar = '<p class="small" id="scale-bar">Pixel aspect: the spacing is unknown, so no scale.</p>'
    else:
        bar = _scale_bar(shown[0], w * spacing[2])
    body = f"""<section>
<h2>B-scans with the predicted lesions</h2>
<div class="controls">
<input type="range" id="slider" min="1" max="{z}" step="1" value="{first}" aria-label="B-scan">
<span id="slice-label">slice {first} / {z}</span>
<label><input type="checkbox" id="overlay-toggle" checked> lesions</label>
<label>as <select id="overlay-mode"><option value="fill">fills</option><option value="contour">outlines</option>
</select></label>
</div>
<div class="viewer" style="width: {shown[0]}px; height: {shown[1]}px">
<img id="bscan" alt="B-scan" style="width: {shown[0]}px; height: {shown[1]}px"><img id="overlay" alt="">
</div>
{bar}
<p class="legend">{legend}</p>
<p class="small keys">&larr; / &rarr; step through the B-scans{scaled}.</p>
</section>"""
    return body, {"bscan": bscans, "overlay": overlays, "contour": contours}


def _det_plot(det: np.ndarray | None, names: tuple[str, ...]) -> str:
    """Detection scores along the volume as an inline SVG, with a marker at the shown slice."""
    if det is None:
        return '<section>\n<h2>Detection scores per B-scan</h2>\n<p class="small">No detection scores.</p>\n</section>'
    width, height, left, right, top, bottom = 600, 160, 34, 10, 10, 26
    z = det.shape[0]
    dx = (width - left - right) / max(z - 1, 1)
    xs = left + dx * np.arange(z)
    ys = top + (1 - np.clip(det, 0, 1)) * (height - top - bottom)
    y0, y1 = height - bottom, top
    grid = "".join(
        f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{v}</text>'
        for v, y in ((0, y0), (0.5, (y0 + y1) / 2), (1, y1))
    )
    lines = "".join(
        f'<polyline fill="none" stroke="{_rgb(c + 1)}" stroke-width="1.5" '
        f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys[:, c]))}"><title>{html.escape(n)}</title>'
        "</polyline>"
        for c, n in enumerate(names)
    )
    axis = (
        f'<text x="{left}" y="{height - 8}" text-anchor="middle">1</text>'
        f'<text x="{width - right}" y="{height - 8}" text-anchor="middle">{z}</text>'
        f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">B-scan</text>'
    )
    marker = (
        f'<line id="det-marker" data-x0="{left}" data-dx="{dx:.4f}" x1="{left}" x2="{left}" y1="{y1}" y2="{y0}" '
        'stroke="#222" stroke-dasharray="3 2"/>'
    )
    return f"""<section>
<h2>Detection scores per B-scan</h2>
<svg id="det-plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"
 aria-label="detection probability of each lesion along the volume">{grid}{axis}{lines}{marker}</svg>
<p class="small">Probability that a B-scan holds each lesion. At the shown B-scan: <span id="det-values"></span></p>
</section>"""


def _volumes_table(quant: dict, names: tuple[str, ...]) -> str:
    volumes = quant["volume_nl"]
    rows = []
    for c, n in enumerate(names):
        affected = quant["affected_bscans"][n]
        volume = "unknown (no spacing)" if volumes is None else _sig(volumes[n])
        rows.append(
            f'<tr data-class="{html.escape(n)}"><td><i class="swatch" style="background: {_rgb(c + 1)}"></i>'
            f'{html.escape(n)}</td><td class="num">{volume}</td><td class="num">{int(quant["voxels"][n])}</td>'
            f'<td class="num">{len(set(affected))}</td><td>{_ranges(affected)}</td></tr>'
        )
    return f"""<section>
<h2>Fluid volumes</h2>
<table id="volumes">
<thead><tr><th>Lesion</th><th>Volume (nL)</th><th>Voxels</th><th>Affected B-scans</th><th>Which</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</section>"""


def _grid_svg(size: tuple[int, int], shape: tuple[int, int], spacing: Sequence[float], fovea: dict) -> str:
    """The ETDRS grid (circles of 1, 3 and 6 mm, the diagonals between the rings) over an en-face map of ``size``
    (width, height) px showing ``shape`` (Z, W), centred on ``fovea`` (1-based B-scan and A-scan)."""
    z, w = shape
    x0 = (fovea["ascan"] - 0.5) / w * size[0]
    y0 = (fovea["bscan"] - 0.5) / z * size[1]
    sx, sy = size[0] / (w * spacing[2]), size[1] / (z * spacing[0])  # px per mm across and down
    rings = "".join(
        f'<ellipse cx="{x0:.1f}" cy="{y0:.1f}" rx="{r * sx:.1f}" ry="{r * sy:.1f}"/>' for r in (0.5, 1.5, 3.0)
    )
    c = math.sqrt(0.5)
    spokes = "".join(
        f'<line x1="{x0 + a * 0.5 * c * sx:.1f}" y1="{y0 + b * 0.5 * c * sy:.1f}" '
        f'x2="{x0 + a * 3 * c * sx:.1f}" y2="{y0 + b * 3 * c * sy:.1f}"/>'
        for a, b in ((1, 1), (1, -1), (-1, 1), (-1, -1))
    )
    return (
        f'<svg class="grid" width="{size[0]}" height="{size[1]}" viewBox="0 0 {size[0]} {size[1]}" aria-hidden="true">'
        f'<g fill="none" stroke="#fff" stroke-width="1.2" opacity="0.9">{rings}{spokes}</g>'
        f'<g fill="none" stroke="#000" stroke-width="0.5" opacity="0.6">{rings}{spokes}</g></svg>'
    )


def _orientation_labels(names: dict | None) -> str:
    """Labels on the sides of a map whose anatomical side is known (none where the file does not say)."""
    if not names:
        return ""
    return "".join(
        f'<span class="orient {side}">{html.escape(names[side])}</span>' for side in SIDES if names.get(side)
    )


def _map_figure(
    name: str, caption: str, values: np.ndarray, top: float, size, shape, quant: dict, unit: str, low: float = 0.0
) -> str:
    """One en-face map (Z, W) coloured on ``low``..``top`` with its colour bar, the grid where there is one and
    the orientation labels where known."""
    z = values.shape[0]
    finite = np.isfinite(values)
    filled = np.where(finite, values, low).astype(np.float32)
    # across A-scans smoothly, across B-scans (sparse, far apart) each row as it was measured
    rows = Image.fromarray(filled).resize((size[0], z), Image.BILINEAR)
    smooth = np.asarray(rows.resize(size, Image.NEAREST))
    known = np.asarray(Image.fromarray(finite.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    rgb = _colormap(np.clip((smooth - low) / (top - low), 0, 1) if top > low else np.zeros_like(smooth))
    rgb[~known] = 128  # not measured: grey
    uri = _data_uri(Image.fromarray(rgb), "PNG")
    grid, spacing = quant.get("etdrs"), quant["spacing"]
    overlay = "" if grid is None or spacing is None else _grid_svg(size, shape, spacing, grid["fovea"])
    stops = ", ".join(f"rgb({r}, {g}, {b})" for r, g, b in _colormap(np.linspace(0, 1, 9)))
    return (
        f'<figure data-class="{html.escape(name)}"><figcaption>{caption}</figcaption>\n'
        f'<div class="map-frame" style="width: {size[0]}px"><div class="map-box">'
        f'<img class="enface-map" src="{uri}" width="{size[0]}" height="{size[1]}" '
        f'alt="{html.escape(name)} en-face map">'
        f'{overlay}<div class="enface-marker"></div></div>{_orientation_labels(_orientation(quant))}</div>\n'
        f'<div class="colourbar" style="width: {size[0]}px; margin-left: 56px; background: linear-gradient(to right, '
        f'{stops})"></div><div class="range" style="width: {size[0]}px; margin-left: 56px">'
        f"<span>{_sig(low)} {unit}</span>"
        f"<span>{_sig(top)} {unit}</span></div></figure>"
    )


def _orientation(quant: dict) -> dict | None:
    grid = quant.get("etdrs")
    if grid is not None:
        return grid["orientation"]
    scan = quant.get("scan") or {}
    return orientation(scan.get("laterality"), scan.get("bscan_order"), scan.get("ascan_order"))


def _enface(quant: dict, names: tuple[str, ...]) -> str:
    """The fluid height maps of every lesion on one colour scale (um where the spacing is known), and the retina's
    thickness map, each with the ETDRS grid where there is one."""
    spacing = quant["spacing"]
    scale, unit = (1.0, "voxels") if spacing is None else (1000.0 if quant["enface_unit"] == "mm" else 1.0, "&micro;m")
    heights = {n: np.nan_to_num(np.asarray(quant["enface"][n], dtype=np.float32)) * scale for n in names}
    z, w = next(iter(heights.values())).shape
    size = _enface_size(z, w, spacing)
    top = max((float(h.max()) for h in heights.values() if h.size), default=0.0)
    figures = [
        _map_figure(
            n,
            html.escape(n) if heights[n].max() > 0 else f"{html.escape(n)}: none",
            heights[n],
            top,
            size,
            (z, w),
            quant,
            unit,
        )
        for n in names
    ]
    thickness = quant.get("thickness_um")
    if thickness is not None and np.isfinite(thickness).any():
        lo, hi = np.nanpercentile(thickness, [1, 99])
        figures.append(
            _map_figure(
                "thickness",
                "Retinal thickness (ILM to Bruch's membrane)",
                thickness,
                float(hi),
                size,
                (z, w),
                quant,
                "&micro;m",
                float(lo),
            )
        )
    if spacing is None:
        shape = "square voxels (the spacing is unknown)"
    else:
        shape = f"{_sig(w * spacing[2])} mm (A-scans) &times; {_sig(z * spacing[0])} mm (B-scans), to scale"
    names_known = _orientation(quant) or {}
    order = "B-scan 1 is at the top" + (
        "" if names_known.get("top") else " (the file does not say which way the B-scans run: the order is as stored)"
    )
    side = "" if names_known.get("left") else "; without the eye's laterality, nasal and temporal are not marked"
    return f"""<section>
<h2>En-face maps</h2>
<p class="small">Fluid height seen from the front, every lesion on one colour scale ({unit}); grey: not measured.
Rows are B-scans 1 to {z}, columns A-scans; {shape}. {order}{side}.<br>The dashed line is the shown B-scan; click a map
to show another. Circles: the ETDRS grid (1, 3, 6 mm) centred on the fovea.</p>
<div id="enface">
{chr(10).join(figures)}
</div>
</section>"""


def _etdrs_table(quant: dict, names: tuple[str, ...]) -> str:
    """The grid's sectors: position, share covered, mean thickness, fluid per lesion; the CST and the fovea."""
    grid = quant.get("etdrs")
    if grid is None:
        note = html.escape(quant.get("etdrs_note") or "no grid")
        return f'<section>\n<h2>ETDRS grid</h2>\n<p id="etdrs-note">No sectors: {note}.</p>\n</section>'
    rows = []
    for sec in grid["sectors"]:
        label = sec["name"] or f"{sec['ring']}, {sec['side']}"
        thick = "not measured" if sec["thickness_um"] is None else _sig(sec["thickness_um"])
        fluid = "".join(f'<td class="num">{_sig(sec["fluid_nl"][n])}</td>' for n in names)
        rows.append(
            f'<tr data-sector="{sec["key"]}"><td>{html.escape(label)}</td><td class="num">{sec["covered"]:.0%}</td>'
            f'<td class="num">{thick}</td>{fluid}</tr>'
        )
    fovea = grid["fovea"]
    where = f"B-scan {fovea['bscan']:.0f}, A-scan {fovea['ascan']:.0f}"
    found = "found" if fovea["found"] else "not found"
    cst = "not measured" if grid["cst_um"] is None else f"{_sig(grid['cst_um'])} &micro;m"
    head = "".join(f"<th>{html.escape(n)} (nL)</th>" for n in names)
    known = grid["orientation"]["top"] and grid["orientation"]["left"]
    sides = "" if known else " (sides as on the en-face map)"
    return f"""<section>
<h2>ETDRS grid</h2>
<p id="cst"><b>Central subfield thickness: {cst}</b></p>
<p class="small" id="fovea">Fovea {found} ({html.escape(fovea["note"])}); grid centre at {where}.</p>
<table id="etdrs">
<thead><tr><th>Sector{sides}</th>
<th>Covered</th><th>Thickness (&micro;m)</th>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</section>"""


def _meta_table(quant: dict, model: dict | None) -> str:
    """The scan (spacing, eye, date, device, B-scan order, as the file gives them) and the model that made the
    figures."""
    scan = quant.get("scan") or {}
    eye = {"OD": "right (OD)", "OS": "left (OS)"}.get(scan.get("laterality") or "", "not given by the file")
    order = {
        "superior-first": "superior first (from the file)",
        "inferior-first": "inferior first (from the file)",
    }.get(scan.get("bscan_order") or "", "as stored (the file does not say which way they run)")
    rows = [
        ("Voxel spacing", f'<span id="spacing">{_spacing_text(quant["spacing"])}</span>'),
        ("Eye", f'<span id="laterality">{eye}</span>'),
        ("Scan date", html.escape(scan.get("date") or "not given by the file")),
        ("Device", html.escape(scan.get("device") or "not given by the file")),
        ("B-scan order", html.escape(order)),
    ]
    if model:
        files = "; ".join(
            f'{html.escape(c["file"])} <span class="small" title="SHA-256 {c["sha256"]}">SHA-256 {c["sha256"][:12]}'
            "&hellip;</span>"
            for c in model.get("checkpoints", [])
        )
        rows.append(("Model", f'<span id="model">{files} ({html.escape(model.get("toolkit", ""))})</span>'))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


# -------------------------------------------------------------------------------------------------------- pages


def write_patient_report(
    path: Path,
    name: str,
    image: np.ndarray,
    labels: np.ndarray,
    det: np.ndarray | None,
    quant: dict,
    class_names: tuple[str, ...] = ("REA", "SRF", "PED"),
    model: dict | None = None,
) -> Path:
    """One patient's self-contained page: image (Z, H, W) uint8 B-scans, labels (Z, H, W) predicted classes,
    det (Z, C) detection probabilities or None, quant the quantification dict (spacing, volume_nl, voxels,
    affected_bscans, enface, enface_unit; where there are: scan, thickness_um, etdrs, etdrs_note), model the
    checkpoints that made it (predict.py's ``model_info``). Returns ``path``."""
    path = Path(path)
    if image.ndim != 3 or labels.shape != image.shape:
        raise ValueError(
            f"{name}: image {image.shape} and labels {labels.shape} must both be (Z, H, W) of the same shape"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: image is {image.dtype}; pass the B-scans as uint8 (0..255)")
    if len(class_names) >= len(LESION_COLOURS):
        raise ValueError(f"{len(class_names)} class names {class_names}, but only {len(LESION_COLOURS) - 1} colours")
    if det is not None and np.shape(det) != (image.shape[0], len(class_names)):
        raise ValueError(f"{name}: det is {np.shape(det)}, expected (Z, C) = {(image.shape[0], len(class_names))}")
    if int(np.max(labels, initial=0)) > len(class_names):
        raise ValueError(f"{name}: labels hold class {int(np.max(labels))}, but there are {len(class_names)} lesions")
    det = None if det is None else np.nan_to_num(np.asarray(det, dtype=np.float64))  # NaN is not JSON
    viewer, slices = _viewer(image, labels, class_names, quant["spacing"])
    data = {"names": list(class_names), "det": None if det is None else np.round(det, 4).tolist(), **slices}
    data_json = json.dumps(data).replace("</", "<\\/")  # no "</script>" inside the script element
    body = f"""<header>
<h1 id="patient">{html.escape(name)}</h1>
{_meta_table(quant, model)}
<p class="note">{NOTE}</p>
</header>
<div class="columns">
<div class="main">
{viewer}
{_enface(quant, class_names)}
</div>
<div class="side">
{_det_plot(det, class_names)}
{_volumes_table(quant, class_names)}
{_etdrs_table(quant, class_names)}
</div>
</div>
<script type="application/json" id="slice-data">{data_json}</script>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(_page(f"{name} - OCT fluid report", body, JS))
    return path


# The index's only script: a click on a column's heading sorts the patients by it (again: the other way); the totals
# row stays last.
INDEX_JS = """
"use strict";
(() => {
  const table = document.getElementById("volumes");
  const body = table.tBodies[0];
  table.querySelectorAll("th.sortable").forEach((th, column) => {
    th.addEventListener("click", () => {
      const down = th.dataset.order !== "asc";
      table.querySelectorAll("th.sortable").forEach((h) => delete h.dataset.order);
      th.dataset.order = down ? "asc" : "desc";
      const rows = Array.from(body.rows).filter((r) => !r.classList.contains("total"));
      const key = (r) => r.cells[column].dataset.value ?? r.cells[column].textContent;
      rows.sort((a, b) => {
        const x = key(a), y = key(b), nx = Number(x), ny = Number(y);
        const c = x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny) ? nx - ny : String(x).localeCompare(String(y));
        return down ? c : -c;
      });
      const total = body.querySelector("tr.total");
      rows.forEach((r) => body.insertBefore(r, total));
    });
  });
})();
"""


def write_index(path: Path, rows: list[dict], title: str = "OCT fluid report") -> Path:
    """A page linking to every patient's report with the fluid volumes across patients, a totals row, and columns
    that sort on a click. Each row: ``name``, ``report`` (the report's file path relative to this page; it is
    percent-encoded here), ``volume_nl`` (a dict class -> nL, or None when the spacing is unknown), ``slices`` (the
    number of B-scans) and optionally ``cst_um`` (the central subfield thickness). Returns ``path``."""
    path = Path(path)
    names = next((tuple(r["volume_nl"]) for r in rows if r.get("volume_nl")), ("REA", "SRF", "PED"))
    head = "".join(
        f'<th class="sortable"><i class="swatch" style="background: '
        f'{_rgb(c + 1) if c + 1 < len(LESION_COLOURS) else "#999"}"></i>{html.escape(n)} (nL)</th>'
        for c, n in enumerate(names)
    )
    lines = []
    for r in rows:
        volumes = r.get("volume_nl")
        cells = "".join(
            '<td class="num" data-value="">unknown (no spacing)</td>'
            if volumes is None
            else f'<td class="num" data-value="{volumes[n]!r}">{_sig(volumes[n])}</td>'
            for n in names
        )
        cst = r.get("cst_um")
        cst_cell = (
            '<td class="num" data-value="">n/a</td>'
            if cst is None
            else f'<td class="num" data-value="{cst!r}">{_sig(cst)}</td>'
        )
        href = html.escape(quote(Path(r["report"]).as_posix()))
        lines.append(
            f'<tr><td><a href="{href}">{html.escape(str(r["name"]))}</a></td>'
            f'<td class="num" data-value="{int(r["slices"])}">{int(r["slices"])}</td>{cells}{cst_cell}</tr>'
        )
    known = [r["volume_nl"] for r in rows if r.get("volume_nl") is not None]
    totals = "".join(f'<td class="num">{_sig(sum(v[n] for v in known))}</td>' for n in names)
    unknown = len(rows) - len(known)
    total_label = f"Total ({len(known)} with a spacing{f'; {unknown} without, not counted' if unknown else ''})"
    total_row = f'<tr class="total"><td>{total_label}</td><td class="num">{sum(int(r["slices"]) for r in rows)}</td>'
    total_row += f"{totals}<td></td></tr>"
    body = f"""<header>
<h1>{html.escape(title)}</h1>
<p class="note">{NOTE}</p>
</header>
<section>
<h2>Patients ({len(rows)})</h2>
<p class="small no-print">Click a column's heading to sort by it.</p>
<table id="volumes">
<thead><tr><th class="sortable">Patient</th><th class="sortable">B-scans</th>{head}
<th class="sortable">CST (&micro;m)</th></tr></thead>
<tbody>
{chr(10).join(lines) or f'<tr><td colspan="{len(names) + 3}">no patients</td></tr>'}
{total_row if rows else ""}
</tbody>
</table>
</section>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(_page(title, body, INDEX_JS))
    return path


def _change(a: float | None, b: float | None, digits: int = 3) -> tuple[str, str, str, str]:
    """(first, second, change, change in %) as text; "n/a" where a figure is missing."""
    if a is None or b is None:
        return tuple("n/a" if v is None else _sig(v, digits) for v in (a, b)) + ("n/a", "n/a")
    pct = "n/a" if a == 0 else f"{100 * (b - a) / a:+.0f}%"
    diff = b - a
    return _sig(a, digits), _sig(b, digits), ("+" if diff > 0 else "") + _sig(diff, digits), pct


def _matched_sectors(first: dict, second: dict) -> tuple[list[tuple[dict, dict]], str]:
    """The two visits' sectors in pairs: by their anatomical names where both files name every sector (one eye
    scanned once superior-first and once inferior-first still pairs superior with superior), else by their place on
    the en-face map, with a note where the two files say different things about the orientation."""
    if all(s["name"] for g in (first, second) for s in g["sectors"]):
        by_name = {s["name"]: s for s in second["sectors"]}
        return [(s, by_name[s["name"]]) for s in first["sectors"]], ""
    note = ""
    if first["orientation"] != second["orientation"]:
        note = (
            '<p class="note" id="sectors-warning">The two files say different things about which way the scan runs '
            "(the eye or the B-scan order is given by one only): sectors are matched by their place on the en-face "
            "map, which may not be the same place in the eye.</p>\n"
        )
    return list(zip(first["sectors"], second["sectors"])), note


def write_compare_report(
    path: Path,
    names: tuple[str, str],
    quants: tuple[dict, dict],
    reports: tuple[str, str],
    class_names: tuple[str, ...] = ("REA", "SRF", "PED"),
    model: dict | None = None,
) -> Path:
    """Two visits of one eye on one page: the change of each lesion's volume, of the CST, and per ETDRS sector of
    each lesion's fluid and of the thickness, with both visits' thickness maps; ``reports``: each visit's page,
    relative to this one. Sectors are matched by their place on the grid, each visit's grid centred on its own
    fovea."""
    path = Path(path)
    (n1, n2), q2 = names, quants[1]
    link = " &rarr; ".join(f'<a href="{html.escape(quote(r))}">{html.escape(n)}</a>' for n, r in zip(names, reports))
    dates = [(q.get("scan") or {}).get("date") for q in quants]
    when = f" ({html.escape(dates[0])} &rarr; {html.escape(dates[1])})" if all(dates) else ""
    head = f"<tr><th></th><th>{html.escape(n1)}</th><th>{html.escape(n2)}</th><th>Change</th><th>Change (%)</th></tr>"
    volume_rows = []
    for c, n in enumerate(class_names):
        cells = _change(*(None if q["volume_nl"] is None else q["volume_nl"][n] for q in quants))
        volume_rows.append(
            f'<tr data-class="{html.escape(n)}"><td><i class="swatch" style="background: {_rgb(c + 1)}"></i>'
            f"{html.escape(n)} (nL)</td>" + "".join(f'<td class="num">{v}</td>' for v in cells) + "</tr>"
        )
    grids = [q.get("etdrs") for q in quants]
    cst = _change(*(None if g is None else g["cst_um"] for g in grids))
    volume_rows.append(
        '<tr data-class="cst"><td>CST (&micro;m)</td>' + "".join(f'<td class="num">{v}</td>' for v in cst)
    )
    sector_html = '<p id="sectors-note">No sector comparison: a visit has no ETDRS grid.</p>'
    if all(g is not None for g in grids):
        lines = []
        pairs, match_note = _matched_sectors(*grids)
        for s1, s2 in pairs:
            label = s1["name"] or f"{s1['ring']}, {s1['side']} (on the map)"
            fluid = "".join(
                f'<td class="num">{_change(s1["fluid_nl"][n], s2["fluid_nl"][n])[2]}</td>' for n in class_names
            )
            thick = _change(s1["thickness_um"], s2["thickness_um"])
            covered = min(s1["covered"], s2["covered"])
            lines.append(
                f'<tr data-sector="{s1["key"]}"><td>{html.escape(label)}</td><td class="num">{covered:.0%}</td>'
                f"{fluid}" + "".join(f'<td class="num">{v}</td>' for v in thick[:3]) + "</tr>"
            )
        fluid_head = "".join(f"<th>{html.escape(n)} change (nL)</th>" for n in class_names)
        sector_html = (
            match_note
            + f"""<table id="sector-change">
<thead><tr><th>Sector</th><th>Covered (both)</th>{fluid_head}<th>Thickness {html.escape(n1)} (&micro;m)</th>
<th>{html.escape(n2)}</th><th>Change</th></tr></thead>
<tbody>
{chr(10).join(lines)}
</tbody>
</table>"""
        )
    maps = []
    for n, q in zip(names, quants):
        th = q.get("thickness_um")
        if th is not None and q["spacing"] is not None and np.isfinite(th).any():
            z, w = th.shape
            both = [np.ravel(x["thickness_um"]) for x in quants if x.get("thickness_um") is not None]
            lo, hi = np.nanpercentile(np.concatenate(both), [1, 99])
            maps.append(
                _map_figure(
                    "thickness",
                    html.escape(n),
                    th,
                    float(hi),
                    _enface_size(z, w, q["spacing"]),
                    (z, w),
                    q,
                    "&micro;m",
                    float(lo),
                )
            )
    body = f"""<header>
<h1 id="compare">{link}{when}</h1>
{_meta_table(q2, model)}
<p class="note">{NOTE}</p>
</header>
<section>
<h2>Change between the visits</h2>
<table id="change">
<thead>{head}</thead>
<tbody>
{chr(10).join(volume_rows)}
</tbody>
</table>
</section>
<section>
<h2>Change per ETDRS sector</h2>
<p class="small">Each visit's grid is centred on its own fovea; sectors are matched by place in the eye where both
files give the eye's orientation, else by their place on the en-face map.</p>
{sector_html}
</section>
<section>
<h2>Retinal thickness at each visit (one colour scale)</h2>
<div id="enface">{"".join(maps) or '<p class="small">No thickness maps.</p>'}</div>
</section>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(_page(f"{n1} to {n2} - OCT fluid change", body))
    return path


# ------------------------------------------------------------------------------------------------------ browser


def start_chrome(width: int = 1280, height: int = 900):
    """A headless Chromium driven by Selenium, its viewport ``width`` x ``height`` px, its console kept for
    ``driver.get_log("browser")``. Chromium and chromedriver are the system's (Selenium Manager never downloads
    one); a missing one raises a RuntimeError that says how to install it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = {
        names[0]: next((p for p in map(shutil.which, names) if p), None)
        for names in (CHROMIUM_NAMES, CHROMEDRIVER_NAMES)
    }
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise ToolkitError(f"{' and '.join(missing)} not found on PATH; {INSTALL_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = found["chromium"]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=found["chromedriver"]), options=options)
    # the page's viewport itself is width x height (the window's size would include the browser's own bars)
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 900) -> Path:
    """A PNG of the top ``width`` x ``height`` px of the page ``html``, as headless Chromium shows it."""
    driver = start_chrome(width, height)
    try:
        driver.get(Path(html).resolve().as_uri())
        picture = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    with atomic_write(png) as f:
        f.write(picture)
    return Path(png)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m reports.html", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("screenshot", help="a PNG of a report page, taken with headless Chromium")
    s.add_argument("html", type=Path, help="the page")
    s.add_argument("png", type=Path, help="the picture to write")
    s.add_argument("--width", type=int, default=1280, help="window width in px [default: %(default)s]")
    s.add_argument("--height", type=int, default=900, help="window height in px [default: %(default)s]")
    args = p.parse_args(argv)
    print(screenshot(args.html, args.png, args.width, args.height))


if __name__ == "__main__":
    main()
