"""Synthetic OCT volumes written in the exact AI Challenger 2018 on-disk layout.

The real images are not redistributable, so this is the embedded default for the demo and the tests.
Each B-scan shows dark vitreous, a curved layered retina with a foveal pit, a bright RPE band and a textured
choroid under multiplicative speckle. Lesions are 3-D blobs spanning adjacent slices:
REA (dark intraretinal fluid that thickens the retina), SRF (a dark dome between photoreceptors and RPE) and
PED (the RPE lifted into a dome). Vessel shadows and choroidal vessels are dark but are not lesions, and
some patients have no lesion. Output is a pure function of the seed.

    python -m data.synthetic --out data/synthetic --seed 0 --train 8 --val 3 --test 3 \
        --slices 32 --height 256 --width 128

``--variety wide`` (what the shipped OCT model is trained on; ``classic``, the default, keeps the demo's and the
tests' data as it was) widens every eye: retina position, tilt, curvature (myopic eyes curve the other way) and
thickness, foveal pits from shallow to deep, clusters of small intraretinal cysts beside the thickening domes, drusen
and hyperreflective foci (not lesions: the model must learn to leave them), columns of lost signal under media
opacities, the posterior hyaloid and epiretinal membranes over the retina, layer contrasts of other devices, log
display curves over a raised noise floor, and B-scans passed on by a publisher (shrunk along either axis and blown
back up, JPEG-compressed).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, uniform_filter1d

from data.oct import IMAGE_SUFFIX, LABEL_SUFFIX, SPLIT_FOLDERS, classes_to_grey
from utils.io import jpeg_copy, staged_output_dir

# retinal layers from the ILM down: (name, fraction of nominal thickness, mean intensity)
LAYERS = (
    ("rnfl", 0.10, 205.0),
    ("gcl", 0.11, 125.0),
    ("ipl", 0.10, 150.0),
    ("inl", 0.10, 72.0),
    ("opl", 0.07, 145.0),
    ("onl", 0.24, 58.0),
    ("is", 0.07, 95.0),
    ("ellipsoid", 0.04, 215.0),
    ("os", 0.05, 95.0),
    ("rpe", 0.08, 235.0),
)
INNER = {"rnfl", "gcl", "ipl", "inl", "opl"}  # thinned by the foveal pit
# where each lesion band is inserted (after this layer) and its class
LESIONS = {"REA": ("opl", 1), "SRF": ("os", 2), "PED": ("rpe", 3)}

# What a scanner changes in the picture (at 1024 x 512 pixels; blur scales with the size): the grey curve
# (gamma, contrast, brightness of the vitreous), the speckle (gamma shape: higher is smoother, as frame averaging
# makes it), the detector noise, and the axial / lateral blur of its optics. Cirrus: single-frame, speckled;
# Spectralis: averaged frames, high contrast, dark vitreous, sharp; Topcon: brighter background, softer, noisier.
STYLES = {
    "cirrus": {"gamma": 1.0, "contrast": 1.0, "vitreous": 10.0, "speckle": 2.5, "noise": 4.0, "blur": (0.6, 0.8)},
    "spectralis": {"gamma": 0.8, "contrast": 1.2, "vitreous": 3.0, "speckle": 9.0, "noise": 1.5, "blur": (0.4, 0.5)},
    "topcon": {"gamma": 1.2, "contrast": 0.8, "vitreous": 22.0, "speckle": 3.5, "noise": 7.0, "blur": (1.2, 1.6)},
}


@dataclass
class Blob:
    """A dome of height ``amp`` (rows) over an ellipse centred at (cx, cz) with semi-axes (ax, az)."""

    cx: float
    cz: float
    ax: float
    az: float
    amp: float
    wobble: np.ndarray  # (3, 2) low-order boundary perturbation

    def height(self, x: np.ndarray, z: float) -> np.ndarray:
        dx, dz = (x - self.cx) / self.ax, (z - self.cz) / self.az
        theta = np.arctan2(dz, dx)
        k = np.arange(1, 4)[:, None]
        rim = 1 + (self.wobble[:, :1] * np.cos(k * theta + self.wobble[:, 1:] * 6.283)).sum(0) * 0.15
        r2 = (dx**2 + dz**2) / rim**2
        return self.amp * np.sqrt(np.clip(1 - r2, 0, None))


def _style(rng: np.random.Generator, style: str) -> dict:
    """A scanner style's parameters, each jittered by up to 15% per patient (``mixed``: a random scanner each)."""
    name = str(rng.choice(sorted(STYLES))) if style == "mixed" else style
    base = STYLES[name]
    out = {k: v * rng.uniform(0.85, 1.15) for k, v in base.items() if k != "blur"}
    out["blur"] = tuple(b * rng.uniform(0.85, 1.15) for b in base["blur"])
    out["name"] = name
    return out


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


VARIETIES = ("classic", "wide")


def _patient(rng: np.random.Generator, height: int, width: int, style: str = "mixed", variety: str = "classic") -> dict:
    healthy = rng.random() < 0.2
    lesions: dict[str, list[Blob]] = {k: [] for k in LESIONS}
    if not healthy:
        present = {"REA": rng.random() < 0.8, "SRF": rng.random() < 0.55, "PED": rng.random() < 0.5}
        if not any(present.values()):
            present[str(rng.choice(list(LESIONS)))] = True
        # dome height (fraction of the image) and radius (fraction of the width): most lesions in a typical range,
        # one in five log-uniform over a wide one, from a few pixels to large detachments
        typical = {"REA": (0.05, 0.11, 0.10, 0.28), "SRF": (0.03, 0.07, 0.07, 0.18), "PED": (0.035, 0.075, 0.05, 0.14)}
        for name, on in present.items():
            if not on:
                continue
            for _ in range(int(rng.integers(1, 3))):
                if rng.random() < 0.2:
                    amp, ax, az = (_log_uniform(rng, 0.01, 0.2), *(_log_uniform(rng, 0.025, 0.35) for _ in range(2)))
                else:
                    a_lo, a_hi, r_lo, r_hi = typical[name]
                    amp, ax, az = rng.uniform(a_lo, a_hi), rng.uniform(r_lo, r_hi), rng.uniform(r_lo, r_hi)
                lesions[name].append(
                    Blob(
                        cx=rng.uniform(0.15, 0.85),
                        cz=rng.uniform(0.15, 0.85),
                        ax=ax,
                        az=az * 1.2,
                        amp=amp * height,
                        wobble=rng.uniform(-1, 1, (3, 2)),
                    )
                )
    # the look of each lesion type in this eye: intraretinal fluid dark and mottled; SRF dark, or bright
    # (hyperreflective subretinal material) in about one eye of seven; PED serous (dark) or fibrovascular (mid-grey,
    # heterogeneous) in three of ten
    looks = {
        "REA": {"level": rng.uniform(15, 45), "mottle": rng.uniform(0.4, 1.2)},
        "SRF": {"level": rng.uniform(90, 150) if rng.random() < 0.15 else rng.uniform(5, 30), "mottle": 0.2},
        "PED": (
            {"level": rng.uniform(70, 130), "mottle": 0.9}
            if rng.random() < 0.3
            else {"level": rng.uniform(15, 50), "mottle": 0.2}
        ),
    }
    n_vessels = int(rng.integers(4, 9))
    p = {
        "top": rng.uniform(0.22, 0.30) * height,
        "curve": rng.uniform(0.03, 0.10) * height,
        "tilt": rng.uniform(-0.05, 0.05) * height,
        "thick": rng.uniform(0.18, 0.22) * height,
        "fovea": (rng.uniform(0.42, 0.58), rng.uniform(0.4, 0.6)),
        "pit": rng.uniform(0.7, 0.9),
        "choroid": rng.uniform(0.10, 0.14) * height,
        "choroid_grain": rng.uniform(0.6, 1.6),  # texture scale
        "choroid_lumen": rng.uniform(-0.9, -0.35),  # how much of it is dark vessel lumen
        "layer_gain": rng.uniform(0.85, 1.15, len(LAYERS)),  # layer contrasts differ between eyes
        "gain": rng.uniform(0.8, 1.15),
        "vessels": [
            (rng.uniform(0.05, 0.95), rng.uniform(-0.15, 0.15), rng.uniform(1.5, 4.0) * width / 512)
            for _ in range(n_vessels)
        ],
        "lesions": lesions,
        "looks": looks,
        "style": _style(rng, style),
        "wide": _wide(np.random.default_rng(rng.integers(2**63)), height, width) if variety == "wide" else None,
    }
    if variety == "wide":  # the eye's shape, redrawn over the ranges real eyes and devices span
        w = p["wide"]
        p.update({k: w[k] for k in ("top", "curve", "tilt", "thick", "pit", "layer_gain")})
        if not any(p["lesions"].values()):  # a healthy eye keeps no cysts
            w["cysts"] = []
    return p


def _wide(rng: np.random.Generator, height: int, width: int) -> dict:
    """What ``--variety wide`` adds to an eye (drawn from its own generator, so the classic eye stays as it was)."""
    thick = rng.uniform(0.12, 0.26) * height
    top = rng.uniform(0.10, max(0.11, 0.62 - thick / height - 0.12)) * height
    cysts = []
    if rng.random() < 0.6:  # cystoid oedema: many small dark cysts in the inner and outer nuclear layers
        fx, fz = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        spread = rng.uniform(0.05, 0.25)
        for _ in range(int(rng.integers(3, 30))):
            ay = _log_uniform(rng, 0.004, 0.035) * height  # half height in rows, from a few pixels
            ax = ay / width * rng.uniform(1.0, 3.0)  # wider than tall, as fraction of the width
            cysts.append(
                (
                    float(np.clip(rng.normal(fx, spread), 0.05, 0.95)),  # x
                    float(np.clip(rng.normal(fz, spread), 0.05, 0.95)),  # z
                    rng.uniform(0.25, 0.65),  # depth in the retina (0: ILM, 1: RPE)
                    ax,
                    ay,
                    ax * rng.uniform(0.8, 2.0),  # across slices
                )
            )
    drusen = []
    if rng.random() < 0.35:  # drusen: small bumps lifting the RPE, filled with medium-bright material (not fluid)
        for _ in range(int(rng.integers(2, 12))):
            drusen.append(
                Blob(
                    cx=rng.uniform(0.1, 0.9),
                    cz=rng.uniform(0.1, 0.9),
                    ax=rng.uniform(0.015, 0.06),
                    az=rng.uniform(0.02, 0.08),
                    amp=rng.uniform(0.006, 0.035) * height,
                    wobble=rng.uniform(-1, 1, (3, 2)),
                )
            )
    publisher = None
    if rng.random() < 0.45:  # passed on: shrunk along either axis, blown back up, maybe JPEG-compressed
        quality = int(rng.integers(50, 96)) if rng.random() < 0.7 else 0
        publisher = (rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0), quality)
    opacity = (rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.3), rng.uniform(0.3, 0.75)) if rng.random() < 0.3 else None
    # how the device or its export displays the signal: half of the eyes on a log curve over a raised noise floor
    # (dark fluid only somewhat darker than the retina, a grey vitreous), as many exported B-scans look
    display = (rng.uniform(15, 90), _log_uniform(rng, 2, 40)) if rng.random() < 0.5 else None
    # membranes over the retina, bright and thin, never fluid, though what lies under them is dark: the posterior
    # hyaloid arching over the vitreous (attached at the ends of a span), an epiretinal membrane close to the ILM
    hyaloid = (rng.uniform(0.0, 0.5), rng.uniform(0.5, 1.0), rng.uniform(0.02, 0.15), rng.uniform(110, 220))
    erm = (rng.uniform(0.0, 0.6), rng.uniform(0.3, 1.0), rng.uniform(0.004, 0.012), rng.uniform(150, 240))
    return {
        "top": top,
        "thick": thick,
        "curve": rng.uniform(-0.04, 0.14) * height,
        "tilt": rng.uniform(-0.12, 0.12) * height,
        "pit": rng.uniform(0.3, 0.95),
        "cysts": cysts,
        "drusen": drusen,
        "drusen_level": rng.uniform(110, 190),
        "foci": int(rng.integers(0, 25)) if rng.random() < 0.5 else 0,
        "opacity": opacity,
        "publisher": publisher,
        "display": display,
        "hyaloid": hyaloid if rng.random() < 0.35 else None,
        "erm": erm if rng.random() < 0.2 else None,
        "layer_gain": rng.uniform(0.6, 1.4, len(LAYERS)),  # layer contrasts differ more between devices than eyes
    }


def _bands(p: dict, z: float, height: int, width: int) -> tuple[list, list]:
    """The retina's bands at normalised slice position z, bottom-up: [(thickness per column, intensity, class)], and
    their lower edges (rows per column, the last the ILM), Bruch's membrane first."""
    x = (np.arange(width) + 0.5) / width
    fx, fz = p["fovea"]
    g = np.exp(-((x - fx) ** 2 + (z - fz) ** 2) / (2 * 0.07**2))
    # RPE row of the healthy retina: a curved, tilted floor
    floor = p["top"] + p["thick"] + p["curve"] * (1 - (2 * x - 1) ** 2) + p["tilt"] * (x - 0.5)

    # walk up from Bruch's membrane, stacking bands; a lesion band pushes everything above it up
    bands: list[tuple[np.ndarray, float, int]] = []  # (thickness per column, intensity, class)
    for (name, frac, level), gain in zip(LAYERS, p["layer_gain"]):
        t = np.full(width, frac * p["thick"])
        if name in INNER:
            t = t * (1 - p["pit"] * g)
        elif name == "onl":
            t = t * (1 + 0.35 * g)
        bands.append((t, level * gain, 0))
        for lesion, (after, cls) in LESIONS.items():
            if after == name:
                h = sum((b.height(x, z) for b in p["lesions"][lesion]), np.zeros(width))
                bands.append((h, p["looks"][lesion]["level"], cls))
        if name == "rpe" and p["wide"] and p["wide"]["drusen"]:  # under the RPE, beside any PED: not a lesion
            h = sum((b.height(x, z) for b in p["wide"]["drusen"]), np.zeros(width))
            bands.append((h, p["wide"]["drusen_level"], 0))
    # order bottom-up: PED sits under the RPE, so reverse the top-down list
    bands = bands[::-1]
    bottom = floor  # Bruch's membrane stays in place; bands above it are lifted
    edges = [bottom]
    for t, _, _ in bands:
        edges.append(edges[-1] - t)
    return bands, edges


def retina_surfaces(p: dict, slices: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The true ILM and Bruch's membrane rows (each (slices, width), sub-pixel) of the eye ``p`` (``_patient``):
    what boundary finders and thickness maps are tested against."""
    edges = [_bands(p, (i + 0.5) / slices, height, width)[1] for i in range(slices)]
    return np.stack([e[-1] for e in edges]), np.stack([e[0] for e in edges])


def _bscan(p: dict, z: float, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One B-scan at normalised slice position z: (image uint8 (H, W), classes uint8 (H, W))."""
    x = (np.arange(width) + 0.5) / width
    bands, edges = _bands(p, z, height, width)
    bottom = edges[0]
    # edges[k] is the lower edge of band k (bottom-up); a row belongs to band k when edges[k+1] <= y < edges[k]
    yy = np.arange(height)[:, None] + 0.5
    lower = np.stack(edges[:-1])  # (K, W)
    upper = np.stack(edges[1:])
    inside = (yy[None] >= upper[:, None]) & (yy[None] < lower[:, None])  # (K, H, W)
    levels = np.array([lev for _, lev, _ in bands], dtype=np.float32)
    classes_k = np.array([c for _, _, c in bands], dtype=np.uint8)
    any_band = inside.any(0)
    k_idx = inside.argmax(0)
    img = np.where(any_band, levels[k_idx], 0.0).astype(np.float32)
    cls = np.where(any_band, classes_k[k_idx], 0).astype(np.uint8)

    ilm = edges[-1]
    vitreous = yy < ilm[None]
    below = yy >= bottom[None]
    # choroid: bright, lobular, with dark vessel lumens; fades with depth into the sclera
    depth = (yy - bottom[None]) / p["choroid"]
    grain = max(height / 170, 1.5) * p["choroid_grain"]
    field = gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), sigma=grain)
    field /= field.std() + 1e-6
    choroid = np.where(field < p["choroid_lumen"], 35.0, 150.0 + 25 * field) * np.exp(-np.clip(depth, 0, None) * 0.9)
    img = np.where(below, choroid + 18, img)
    img = np.where(vitreous, 0.0, img)  # the scanner adds its background level
    if p["wide"]:
        img, cls = _wide_bscan(p, img, cls, x, z, yy, ilm, bottom, height, width, rng)

    # fluid and detachments are mottled (septa, fibrovascular tissue); every band gets a low-frequency texture
    septa = gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), max(height / 256, 1.0))
    septa = np.clip(septa / (septa.std() + 1e-6), 0, None)
    for lesion, (_, c) in LESIONS.items():
        img = np.where(cls == c, img * (1 + p["looks"][lesion]["mottle"] * septa), img)
    img *= 1 + 0.12 * gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 3.0)
    # shadows under vessels (dark, full-depth stripes: not lesions)
    shadow = np.ones(width, dtype=np.float32)
    for x0, drift, w in p["vessels"]:
        xv = x0 + drift * (z - 0.5) + 0.01 * np.sin(6 * z + x0 * 10)
        d = np.abs(x - xv) * width
        shadow = np.minimum(shadow, 1 - 0.7 * np.clip(1.5 - d / w, 0, 1))
    rnfl_bottom = ilm + bands[-1][0]
    img = np.where(yy > rnfl_bottom[None] + 2, img * shadow[None], img)
    out = _scanner(img, p, height, width, rng)
    if p["wide"] and p["wide"]["display"]:
        out = _displayed(out, *p["wide"]["display"])
    if p["wide"] and p["wide"]["publisher"]:
        out = _published(out, *p["wide"]["publisher"])
    return out, cls


def _wide_bscan(p, img, cls, x, z, yy, ilm, bottom, height, width, rng):
    """Cysts (REA), hyperreflective foci and lost signal (neither a lesion) in one B-scan of a ``wide`` eye."""
    w = p["wide"]
    retina = (yy >= ilm[None]) & (yy < bottom[None])
    for cx, cz, depth, ax, ay, az in w["cysts"]:
        dz = (z - cz) / az
        if abs(dz) >= 1:
            continue
        shrink = np.sqrt(1 - dz**2)
        centre = ilm + depth * (bottom - ilm)  # (W,) rows
        inside = ((x[None] - cx) / (ax * shrink)) ** 2 + ((yy - centre[None]) / (ay * shrink)) ** 2 < 1
        inside &= retina & (cls == 0)
        cls = np.where(inside, 1, cls).astype(np.uint8)
        img = np.where(inside, p["looks"]["REA"]["level"], img)
    for _ in range(w["foci"]):  # bright dots in the inner retina, a pixel or two across
        col = int(rng.integers(width))
        row = ilm[col] + rng.uniform(0.1, 0.8) * (bottom[col] - ilm[col])
        r = rng.uniform(0.6, 2.0) * max(height / 512, 1.0)
        dot = ((yy - row) ** 2 + ((np.arange(width)[None] - col) * height / width / 2) ** 2 < r**2) & (cls == 0)
        img = np.where(dot, rng.uniform(190, 250), img)
    for membrane in ("hyaloid", "erm"):
        if w.get(membrane):
            x0, span, lift, level = w[membrane]
            t = (x - x0) / max(span, 1e-3)
            on = (t > 0) & (t < 1)
            gap = (lift * height) * np.sin(np.pi * np.clip(t, 0, 1)) ** (0.5 if membrane == "hyaloid" else 0.1)
            row = ilm - 1.5 - gap  # (W,) rows: above the ILM by the gap
            line = (np.abs(yy - row[None]) < max(height / 512, 0.6)) & on[None] & (yy < ilm[None])
            img = np.where(line, level, img)
    if w["opacity"]:  # a floater or cataract dims a band of A-scans through their whole depth
        c, half, gain = w["opacity"]
        d = np.clip(1 - np.abs(x - c) / half, 0, 1)
        img = img * (1 - (1 - gain) * d)[None]
    return img, cls


def _displayed(img: np.ndarray, floor: float, k: float) -> np.ndarray:
    """A B-scan on a log display curve of strength ``k`` over a noise floor of grey ``floor``."""
    x = np.log1p(k * img.astype(np.float32) / 255.0) / np.log1p(k)
    return np.clip(floor + (255.0 - floor) * x, 0, 255).astype(np.uint8)


def _published(img: np.ndarray, fy: float, fx: float, quality: int) -> np.ndarray:
    """A B-scan as a publisher passes it on: shrunk by (fy, fx), blown back up to its size, JPEG at ``quality``."""
    h, w = img.shape
    pic = Image.fromarray(img).resize((max(8, round(w * fx)), max(8, round(h * fy))), Image.Resampling.BILINEAR)
    pic = pic.resize((w, h), Image.Resampling.BICUBIC)
    out = np.asarray(pic.convert("L"), dtype=np.uint8)
    return jpeg_copy(out, quality)[0] if quality else out


def _scanner(img: np.ndarray, p: dict, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The scanner's picture of the reflectivity ``img``: grey curve, speckle, optical blur, detector noise."""
    st = p["style"]
    x = st["vitreous"] + np.clip(img / 255.0, 0, None) ** st["gamma"] * 255.0 * st["contrast"] * p["gain"]
    speckle = rng.gamma(st["speckle"], 1 / st["speckle"], (height, width)).astype(np.float32)
    x = x * uniform_filter1d(speckle, size=3, axis=1)  # elongated along the A-line sweep
    sigma = (st["blur"][0] * height / 1024, st["blur"][1] * width / 512)
    x = gaussian_filter(x, sigma=sigma) + rng.normal(st["noise"] * 1.5, st["noise"], (height, width))
    return np.clip(x, 0, 255).astype(np.uint8)


def generate_volume(
    rng: np.random.Generator, slices: int, height: int, width: int, style: str = "mixed", variety: str = "classic"
) -> tuple[np.ndarray, np.ndarray]:
    """(image (N, H, W) uint8, classes (N, H, W) uint8) for one synthetic patient scanned in ``style``."""
    if style not in (*STYLES, "mixed"):
        raise ValueError(f"style must be one of {sorted(STYLES)} or 'mixed', got {style!r}")
    if variety not in VARIETIES:
        raise ValueError(f"variety must be one of {', '.join(VARIETIES)}, got {variety!r}")
    p = _patient(rng, height, width, style, variety)
    image = np.empty((slices, height, width), np.uint8)
    classes = np.empty_like(image)
    for i in range(slices):
        image[i], classes[i] = _bscan(p, (i + 0.5) / slices, height, width, rng)
    return image, classes


def generate_visits(
    rng: np.random.Generator,
    slices: int,
    height: int,
    width: int,
    growth: dict[str, float],
    style: str = "mixed",
    variety: str = "classic",
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], dict]:
    """Two visits of one eye: the same retina, lesions and scanner, each lesion's domes ``growth[name]`` times as high
    at the second visit (1.5: grown by half; 0: resolved), with fresh speckle. -> ((image, classes) of visit 1, the
    same of visit 2, the eye's parameters (``retina_surfaces``)). The true change is the difference of the two label
    volumes; with heights scaled it is about ``growth - 1`` of each lesion's volume."""
    unknown = sorted(set(growth) - set(LESIONS))
    if unknown or any(not (np.isfinite(g) and g >= 0) for g in growth.values()):
        raise ValueError(f"growth: a factor >= 0 per lesion of {', '.join(LESIONS)}, got {growth}")
    if style not in (*STYLES, "mixed") or variety not in VARIETIES:
        raise ValueError(f"style {style!r} or variety {variety!r} unknown")
    p = _patient(rng, height, width, style, variety)
    later = dict(
        p, lesions={k: [replace(b, amp=b.amp * growth.get(k, 1.0)) for b in v] for k, v in p["lesions"].items()}
    )
    visits = []
    for eye in (p, later):
        image = np.empty((slices, height, width), np.uint8)
        classes = np.empty_like(image)
        for i in range(slices):
            image[i], classes[i] = _bscan(eye, (i + 0.5) / slices, height, width, rng)
        visits.append((image, classes))
    return visits[0], visits[1], p


def write_follow_up(
    out: str | Path,
    seed: int,
    growth: dict[str, float],
    slices: int = 32,
    height: int = 512,
    width: int = 256,
    name: str = "P0001",
    force: bool = False,
) -> Path:
    """Two visits of one eye in the AI Challenger layout, for ``predict.py --compare``: ``out/<name>_V1.img/``,
    ``out/<name>_V2.img/`` and their labels under ``out/label_images/``, and ``out/follow_up.json`` with the growth
    and the true voxels of each lesion at each visit. Written atomically, as ``write_dataset``."""
    import json

    first, second, _ = generate_visits(np.random.default_rng(seed), slices, height, width, growth)
    truth = {"seed": seed, "growth": growth, "voxels": {}}
    with staged_output_dir(out, force) as tmp:
        for visit, (image, classes) in (("V1", first), ("V2", second)):
            _write_slices(tmp / f"{name}_{visit}{IMAGE_SUFFIX}", image)
            _write_slices(tmp / "label_images" / f"{name}_{visit}{LABEL_SUFFIX}", classes_to_grey(classes))
            counts = np.bincount(classes.reshape(-1), minlength=len(LESIONS) + 1)
            truth["voxels"][visit] = {k: int(counts[c]) for k, (_, c) in LESIONS.items()}
        (tmp / "follow_up.json").write_text(json.dumps(truth, indent=1) + "\n")
    return Path(out)


def _write_slices(folder: Path, volume: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, s in enumerate(volume, start=1):
        Image.fromarray(s, mode="L").save(folder / f"{i}.bmp")


def write_dataset(
    out: str | Path,
    seed: int = 0,
    train: int = 8,
    val: int = 3,
    test: int = 3,
    slices: int = 128,
    height: int = 1024,
    width: int = 512,
    force: bool = False,
    jobs: int = 1,
    style: str = "mixed",
    test_labels: bool = True,
    layout: str = "challenger",
    variety: str = "classic",
) -> Path:
    """Write the three splits under ``out``, atomically (a staging folder renamed at the end; ``force`` replaces
    only a folder this toolkit wrote). The test split's labels are written too unless ``test_labels`` is off (the
    challenge kept them back), so eval.py can score it.

    ``layout="retouch"`` writes the RETOUCH layout instead: ``RETOUCH-TrainingSet-<Style>/TRAIN001/oct.mhd`` and
    ``reference.mhd`` (0 background, 1 IRF, 2 SRF, 3 PED; the generator's REA is written as IRF) for the training
    and validation patients (RETOUCH has no validation folder: the reader holds ``--val-count`` cases out), and
    ``RETOUCH-TestSet-<Style>/TEST001/`` for the test ones, with the voxel spacing of a 6 x 6 x 2 mm cube."""
    if style not in (*STYLES, "mixed"):
        raise ValueError(f"style must be one of {sorted(STYLES)} or 'mixed', got {style!r}")
    if layout not in ("challenger", "retouch"):
        raise ValueError(f"layout must be challenger or retouch, got {layout!r}")
    if variety not in VARIETIES:
        raise ValueError(f"variety must be one of {', '.join(VARIETIES)}, got {variety!r}")
    with staged_output_dir(out, force) as tmp:
        _write_splits(tmp, seed, train, val, test, slices, height, width, jobs, style, test_labels, layout, variety)
    return Path(out)


def _write_splits(tmp, seed, train, val, test, slices, height, width, jobs, style, test_labels, layout, variety):
    rng = np.random.default_rng(seed)
    jobs_list = []
    for split, count in (("train", train), ("val", val), ("test", test)):
        if layout == "challenger":
            (tmp / SPLIT_FOLDERS[split] / "original_images").mkdir(parents=True)
        for _ in range(count):
            # each patient's seed is drawn in order, so the output does not depend on --jobs
            n = len(jobs_list) + 1
            labelled = split != "test" or test_labels
            seed_p = int(rng.integers(2**63))
            if layout == "challenger":
                where, pid = tmp / SPLIT_FOLDERS[split], f"P{n:04d}_MacularCube{width}x{slices}_synthetic"
            else:
                kind = "TestSet" if split == "test" else "TrainingSet"
                where, pid = (
                    tmp / f"RETOUCH-{kind}-{style.capitalize()}",
                    f"{'TEST' if split == 'test' else 'TRAIN'}{n:03d}",
                )
            jobs_list.append((where, pid, labelled, seed_p, slices, height, width, style, layout, variety))
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_write_patient, jobs_list))
    else:
        for job in jobs_list:
            _write_patient(job)


def _write_patient(job) -> None:
    base, pid, labelled, seed, slices, height, width, style, layout, variety = job
    image, classes = generate_volume(np.random.default_rng(seed), slices, height, width, style, variety)
    if layout == "retouch":
        case = base / pid
        case.mkdir(parents=True)
        spacing = (6.0 / width, 2.0 / height, 6.0 / slices)  # x, y, z: a 6 x 6 mm cube, 2 mm deep
        _write_metaimage(case / "oct.mhd", image, spacing)
        if labelled:
            _write_metaimage(case / "reference.mhd", classes, spacing)  # class k is RETOUCH value k
        return
    _write_slices(base / "original_images" / f"{pid}{IMAGE_SUFFIX}", image)
    if labelled:
        _write_slices(base / "label_images" / f"{pid}{LABEL_SUFFIX}", classes_to_grey(classes))


def _write_metaimage(path: Path, volume: np.ndarray, spacing_xyz: tuple[float, float, float]) -> None:
    """(Z, H, W) uint8 -> ``path`` (.mhd header) and its .raw data, as RETOUCH stores them (SimpleITK writes both)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume))
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path), useCompression=False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a synthetic OCT edema dataset in the AI Challenger 2018 layout")
    ap.add_argument("--out", required=True, help="dataset root to create")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=8, help="training patients")
    ap.add_argument("--val", type=int, default=3, help="validation patients")
    ap.add_argument("--test", type=int, default=3, help="test patients")
    ap.add_argument("--slices", type=int, default=128)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--force", action="store_true", help="replace a data set this generator wrote before")
    ap.add_argument("--style", default="mixed", choices=[*STYLES, "mixed"], help="scanner look (mixed: one per eye)")
    ap.add_argument("--no-test-labels", dest="test_labels", action="store_false", help="keep the test labels back")
    ap.add_argument("--jobs", type=int, default=1, help="patients generated in parallel (same output for any value)")
    ap.add_argument(
        "--layout",
        default="challenger",
        choices=["challenger", "retouch"],
        help="AI Challenger folders of BMP slices, or RETOUCH case folders of MetaImage volumes (oct.mhd and labels)",
    )
    ap.add_argument(
        "--variety",
        default="classic",
        choices=VARIETIES,
        help="classic: the demo's eyes; wide: what the shipped model learns from (eye shapes, cysts, drusen, foci, "
        "lost signal, publishers' copies)",
    )
    ap.add_argument(
        "--follow-up",
        metavar="LESION=FACTOR",
        nargs="+",
        help="instead of a data set, two visits of one eye (for predict.py --compare), each lesion grown by its "
        "factor (REA=1.5 SRF=0.5; others unchanged); --slices/--height/--width as given",
    )
    a = ap.parse_args(argv)
    if a.follow_up:
        try:
            growth = {k: float(v) for k, _, v in (item.partition("=") for item in a.follow_up)}
        except ValueError:
            ap.error(f"--follow-up takes LESION=FACTOR, e.g. REA=1.5, got {' '.join(a.follow_up)}")
        path = write_follow_up(a.out, a.seed, growth, a.slices, a.height, a.width, force=a.force)
        print(f"wrote two visits of one eye ({', '.join(f'{k} x{v:g}' for k, v in growth.items())}) to {path}")
        return
    path = write_dataset(
        a.out,
        a.seed,
        a.train,
        a.val,
        a.test,
        a.slices,
        a.height,
        a.width,
        a.force,
        a.jobs,
        a.style,
        a.test_labels,
        a.layout,
        a.variety,
    )
    print(f"wrote {a.train}/{a.val}/{a.test} train/val/test patients of {a.slices}x{a.height}x{a.width} to {path}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, RuntimeError) as e:  # an --out that must not be replaced, a full disk
        sys.exit("error: " + " ".join(str(e).split()))
