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
#enface { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; }
.map-box { position: relative; }
.enface-map { display: block; cursor: pointer; image-rendering: pixelated; }
.enface-marker { position: absolute; left: 0; right: 0; border-top: 1px dashed #fff; pointer-events: none; }
.colourbar { height: 10px; margin-top: 4px; }
.range { display: flex; justify-content: space-between; }
.small { color: #666; font-size: 12px; }
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
  const toggle = $("overlay-toggle"), marker = $("det-marker"), values = $("det-values");
  function show(k) {
    k = Math.min(n, Math.max(1, k));
    slider.value = k;
    label.textContent = `slice ${k} / ${n}`;
    bscan.src = data.bscan[k - 1];
    overlay.src = data.overlay[k - 1];
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
    overlays = z * np.mean([_encoded_size(_overlay_uri(np.asarray(labels[i]), size)) for i in sample])
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


def _viewer(image: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> tuple[str, dict]:
    """The slice viewer's HTML and its slices as data URIs (shown by the script)."""
    z, h, w = image.shape
    size, quality = _slice_encoding(image, labels)
    bscans = [_bscan_uri(image[i], size, quality) for i in range(z)]
    overlays = [_overlay_uri(np.asarray(labels[i]), size) for i in range(z)]
    area = (np.asarray(labels) > 0).sum(axis=(1, 2))
    first = int(area.argmax()) + 1  # open on the slice with the most lesion (the first slice when there is none)
    legend = "".join(
        f'<span><i class="swatch" style="background: {_rgb(c + 1)}"></i>{html.escape(n)}</span>'
        for c, n in enumerate(names)
    )
    zoom = min(max(1.0, MIN_VIEWER_WIDTH / size[0]), MAX_VIEWER_HEIGHT / size[1])
    scaled = "" if size[0] == image.shape[2] else f" (shown at {size[0]} &times; {size[1]} px of {w} &times; {h})"
    body = f"""<section>
<h2>B-scans with the predicted lesions</h2>
<div class="controls">
<input type="range" id="slider" min="1" max="{z}" step="1" value="{first}" aria-label="B-scan">
<span id="slice-label">slice {first} / {z}</span>
<label><input type="checkbox" id="overlay-toggle" checked> lesions</label>
</div>
<div class="viewer" style="width: {round(size[0] * zoom)}px">
<img id="bscan" alt="B-scan" width="{size[0]}" height="{size[1]}"><img id="overlay" alt="">
</div>
<p class="legend">{legend}</p>
<p class="small">&larr; / &rarr; step through the B-scans{scaled}.</p>
</section>"""
    return body, {"bscan": bscans, "overlay": overlays}


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


def _enface(quant: dict, names: tuple[str, ...]) -> str:
    unit, spacing = quant["enface_unit"], quant["spacing"]
    stops = ", ".join(f"rgb({r}, {g}, {b})" for r, g, b in _colormap(np.linspace(0, 1, 9)))
    figures = []
    z = w = 0
    for n in names:
        height = np.nan_to_num(np.asarray(quant["enface"][n], dtype=np.float32))  # (Z, W)
        z, w = height.shape
        size = _enface_size(z, w, spacing)
        top = float(height.max()) if height.size else 0.0
        # across A-scans smoothly, across B-scans (sparse, far apart) each row as it was measured
        rows = Image.fromarray(height).resize((size[0], z), Image.BILINEAR)
        smooth = np.asarray(rows.resize(size, Image.NEAREST))
        rgb = _colormap(smooth / top if top > 0 else np.zeros_like(smooth))
        uri = _data_uri(Image.fromarray(rgb), "PNG")
        top_text = f"{_sig(top)} {html.escape(unit)}" if top > 0 else f"no {html.escape(n)}"
        figures.append(
            f'<figure data-class="{html.escape(n)}"><figcaption>{html.escape(n)}</figcaption>\n'
            f'<div class="map-box"><img class="enface-map" src="{uri}" width="{size[0]}" height="{size[1]}" '
            f'alt="{html.escape(n)} en-face map"><div class="enface-marker"></div></div>\n'
            f'<div class="colourbar" style="width: {size[0]}px; background: linear-gradient(to right, {stops})"></div>'
            f'<div class="range" style="width: {size[0]}px"><span>0 {html.escape(unit)}</span>'
            f"<span>{top_text}</span></div></figure>"
        )
    if spacing is None:
        shape = "square voxels (the spacing is unknown)"
    else:
        shape = f"{_sig(w * spacing[2])} mm (A-scans) &times; {_sig(z * spacing[0])} mm (B-scans), to scale"
    return f"""<section>
<h2>En-face fluid maps</h2>
<p class="small">Fluid height ({html.escape(unit)}) seen from the front: rows are B-scans 1 (top) to {z}
(bottom), columns are A-scans; {shape}.<br>The dashed line is the shown B-scan; click a map to show another.</p>
<div id="enface">
{chr(10).join(figures)}
</div>
</section>"""


# -------------------------------------------------------------------------------------------------------- pages


def write_patient_report(
    path: Path,
    name: str,
    image: np.ndarray,
    labels: np.ndarray,
    det: np.ndarray | None,
    quant: dict,
    class_names: tuple[str, ...] = ("REA", "SRF", "PED"),
) -> Path:
    """One patient's self-contained page: image (Z, H, W) uint8 B-scans, labels (Z, H, W) predicted classes,
    det (Z, C) detection probabilities or None, quant the quantification dict (spacing, volume_nl, voxels,
    affected_bscans, enface, enface_unit). Returns ``path``."""
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
    viewer, slices = _viewer(image, labels, class_names)
    data = {"names": list(class_names), "det": None if det is None else np.round(det, 4).tolist(), **slices}
    data_json = json.dumps(data).replace("</", "<\\/")  # no "</script>" inside the script element
    body = f"""<header>
<h1 id="patient">{html.escape(name)}</h1>
<p id="spacing">Voxel spacing: {_spacing_text(quant["spacing"])}.</p>
<p class="note">{NOTE}</p>
</header>
<div class="columns">
{viewer}
<div class="side">
{_det_plot(det, class_names)}
{_volumes_table(quant, class_names)}
{_enface(quant, class_names)}
</div>
</div>
<script type="application/json" id="slice-data">{data_json}</script>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(_page(f"{name} - OCT fluid report", body, JS))
    return path


def write_index(path: Path, rows: list[dict], title: str = "OCT fluid report") -> Path:
    """A page linking to every patient's report with the fluid volumes across patients. Each row: ``name``,
    ``report`` (the report's file path relative to this page; it is percent-encoded here), ``volume_nl`` (a dict
    class -> nL, or None when the spacing is unknown) and ``slices`` (the number of B-scans). Returns ``path``."""
    path = Path(path)
    names = next((tuple(r["volume_nl"]) for r in rows if r.get("volume_nl")), ("REA", "SRF", "PED"))
    head = "".join(
        f'<th><i class="swatch" style="background: {_rgb(c + 1) if c + 1 < len(LESION_COLOURS) else "#999"}"></i>'
        f"{html.escape(n)} (nL)</th>"
        for c, n in enumerate(names)
    )
    lines = []
    for r in rows:
        volumes = r.get("volume_nl")
        cells = (
            f'<td colspan="{len(names)}">unknown (no spacing)</td>'
            if volumes is None
            else "".join(f'<td class="num">{_sig(volumes[n])}</td>' for n in names)
        )
        href = html.escape(quote(Path(r["report"]).as_posix()))
        lines.append(
            f'<tr><td><a href="{href}">{html.escape(str(r["name"]))}</a></td>'
            f'<td class="num">{int(r["slices"])}</td>{cells}</tr>'
        )
    body = f"""<header>
<h1>{html.escape(title)}</h1>
<p class="note">{NOTE}</p>
</header>
<section>
<h2>Patients ({len(rows)})</h2>
<table id="volumes">
<thead><tr><th>Patient</th><th>B-scans</th>{head}</tr></thead>
<tbody>
{chr(10).join(lines) or f'<tr><td colspan="{len(names) + 2}">no patients</td></tr>'}
</tbody>
</table>
</section>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(_page(title, body))
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
