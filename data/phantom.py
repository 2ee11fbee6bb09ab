"""An independent B-scan phantom: 2-D OCT B-scans as published sets (Kermany OCT2017, Duke DME, OCTDL, AROI, UMN)
show them, from several devices, with the exact "any fluid" mask, the true retinal boundaries and the pixel spacing.

Written apart from ``data/synthetic.py`` (without reading it) so that a model or a measurement tuned on one generator
can be tested on the other: the anatomy, the lesions, the speckle and the devices are this module's own choices.

How a B-scan is made (every step a pure function of the random generator):

* Anatomy in micrometres. Bruch's membrane (BM) is a curve with a tilt (up to 10 degrees as the image shows it) and a
  curvature (flat to a myopic bowl). Above it the retina, ILM to BM, is 260-340 um thick away from the fovea, with a
  foveal pit 1-1.5 mm wide thinning it to 200-270 um; the pit may lie anywhere or outside the B-scan (an off-centre
  scan). Eleven layers (NFL bright, plexiform layers mid, nuclear layers dark, ellipsoid zone and RPE bright, the
  external limiting membrane a thin line), a choroid of 150-400 um with dark vessel lumens, sclera, dark vitreous.
* Fluid (the mask): intraretinal cysts (superellipses of 3 px to large confluent pockets in the nuclear and plexiform
  layers, which swell the retina by up to 400 um), subretinal fluid (a lens between the photoreceptors and the RPE,
  lifting the retina), serous PED (the RPE lifted into a dome over dark content). The mask is the set of pixels
  whose centre lies in fluid; the image shows the same fluid through the device's optics, so its borders are blurred.
* Distractors, never in the mask: drusen (RPE bumps over mid-grey material), retinal vessels and their shadows,
  hyperreflective foci, an epiretinal membrane, the posterior hyaloid, the choroid's vessel pattern.
* Acquisition: light attenuated along each A-scan (vessels, RPE and choroid cast shadows), the device's point spread
  function, speckle as the modulus of a complex field (Rayleigh amplitude) or as a log-normal factor, averaged over
  1-100 frames, a noise floor, depth roll-off, vignetting at the sides, a faint mirror image, a log or root display
  curve with a random gain (saturation) and tone curve, the export's smoothing, horizontal line noise and sometimes
  black columns at the sides (no data there, so no label either).

``ilm`` and ``rpe`` are rows (sub-pixel) per column: the ILM, and Bruch's membrane, i.e. the bottom of the RPE where
it lies on BM; over a PED or drusen the lifted RPE is above ``rpe`` and the thickness ``rpe - ilm`` includes the PED
(as ILM-to-BM thickness maps do). All fluid lies between ``ilm`` and ``rpe``.

    python -m data.phantom --out /tmp/phantom --count 200 --seed 1 [--device cirrus] [--size 496x512]

writes ``image/ph_0001.png`` (8-bit grey), ``mask/ph_0001.png`` (0 background, 255 fluid) and ``spacing.csv``
(``stem,device,kind,height,width,axial_um,lateral_um``). B-scan ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from utils.io import save_csv_atomic, save_image_atomic, staged_output_dir


# ------------------------------------------------------------------------------------------------------ devices
@dataclass(frozen=True)
class DeviceProfile:
    """How one OCT device samples and shows a B-scan."""

    name: str
    height: int  # rows of a B-scan
    widths: tuple[int, ...]  # A-scans per B-scan, one drawn per B-scan
    axial_um: float  # micrometres per row
    scan_mm: float  # width of the B-scan on the retina
    speckle: str  # "rayleigh": |complex field|, frames averaged; "lognormal": a correlated log-normal factor
    frames: tuple[int, int]  # frames averaged per B-scan, drawn log-uniformly
    curve: str  # "log": dB over a dynamic range; "power": intensity ** exponent (a root display)
    contrast: tuple[float, float]  # dynamic range in dB ("log") or exponent on intensity ("power")
    noise_db: tuple[float, float]  # noise floor relative to the RPE's reflectivity
    background: tuple[float, float]  # grey (0-1) the export adds to black
    rolloff_db: float  # signal lost from the top row to the bottom row
    psf_um: tuple[float, float]  # optical resolution (FWHM), axial and lateral
    smooth_px: float  # the export's own smoothing, sigma in pixels, drawn up to this
    line_noise: float  # std of the row offsets (0-1 grey)
    mirror: float  # chance of a faint mirror image
    blank: float  # chance of black columns at the sides

    def lateral_um(self, width: int) -> float:
        return self.scan_mm * 1000.0 / width


DEVICES: dict[str, DeviceProfile] = {
    d.name: d
    for d in (
        # Heidelberg Spectralis (Kermany, Duke DME, UMN): averaged (ART), root display, black background
        DeviceProfile(
            name="spectralis",
            height=496,
            widths=(512, 768, 1024),
            axial_um=3.87,
            scan_mm=6.0,
            speckle="rayleigh",
            frames=(9, 100),
            curve="power",
            contrast=(0.22, 0.3),
            noise_db=(-52, -46),
            background=(0.0, 0.02),
            rolloff_db=5.0,
            psf_um=(7.0, 14.0),
            smooth_px=0.6,
            line_noise=0.004,
            mirror=0.05,
            blank=0.15,
        ),
        # Zeiss Cirrus (AROI): single frames to a few, log display, grey background; 1024 A-scans for HD lines
        DeviceProfile(
            name="cirrus",
            height=1024,
            widths=(512, 1024),
            axial_um=1.96,
            scan_mm=6.0,
            speckle="rayleigh",
            frames=(1, 20),
            curve="log",
            contrast=(38.0, 50.0),
            noise_db=(-50, -44),
            background=(0.05, 0.15),
            rolloff_db=8.0,
            psf_um=(5.0, 15.0),
            smooth_px=0.4,
            line_noise=0.008,
            mirror=0.15,
            blank=0.05,
        ),
        # Topcon 3D OCT: grainy log-normal speckle, strongly smoothed export, banding
        DeviceProfile(
            name="topcon",
            height=885,
            widths=(512,),
            axial_um=2.6,
            scan_mm=6.0,
            speckle="lognormal",
            frames=(1, 16),
            curve="log",
            contrast=(32.0, 45.0),
            noise_db=(-48, -42),
            background=(0.03, 0.1),
            rolloff_db=10.0,
            psf_um=(6.0, 20.0),
            smooth_px=1.0,
            line_noise=0.015,
            mirror=0.1,
            blank=0.1,
        ),
        # Optovue RTVue / Avanti (OCTDL)
        DeviceProfile(
            name="optovue",
            height=640,
            widths=(400,),
            axial_um=3.1,
            scan_mm=6.0,
            speckle="rayleigh",
            frames=(1, 8),
            curve="log",
            contrast=(35.0, 48.0),
            noise_db=(-50, -44),
            background=(0.02, 0.08),
            rolloff_db=8.0,
            psf_um=(5.0, 15.0),
            smooth_px=0.6,
            line_noise=0.01,
            mirror=0.1,
            blank=0.05,
        ),
        # Bioptigen SD-OCT (Duke AMD-like): dense A-scans, root display
        DeviceProfile(
            name="bioptigen",
            height=1024,
            widths=(1000,),
            axial_um=2.0,
            scan_mm=6.6,
            speckle="lognormal",
            frames=(1, 5),
            curve="power",
            contrast=(0.25, 0.35),
            noise_db=(-50, -44),
            background=(0.01, 0.06),
            rolloff_db=6.0,
            psf_um=(4.5, 12.0),
            smooth_px=0.5,
            line_noise=0.01,
            mirror=0.2,
            blank=0.1,
        ),
    )
}

KIND_WEIGHTS = {"healthy": 0.30, "drusen": 0.15, "irf": 0.20, "srf": 0.13, "ped": 0.10, "mixed": 0.12}
FLUID_KINDS = ("irf", "srf", "ped", "mixed")  # what kind="fluid" draws from
KINDS = tuple(KIND_WEIGHTS)


@dataclass
class PhantomBScan:
    """One B-scan with its ground truth. ``ilm``, ``rpe``: rows (sub-pixel) per column, ILM above BM/RPE bottom."""

    image: np.ndarray  # (H, W) uint8
    fluid: np.ndarray  # (H, W) bool: intraretinal cysts, subretinal fluid, serous PED content
    ilm: np.ndarray  # (W,) float32
    rpe: np.ndarray  # (W,) float32
    axial_um: float  # micrometres per row
    lateral_um: float  # micrometres per column
    device: str
    kind: str

    def thickness_um(self) -> np.ndarray:
        """(W,) ILM to BM in micrometres."""
        return (self.rpe - self.ilm) * self.axial_um


# ---------------------------------------------------------------------------------------------------- layers
# Regions from the bottom up: a pixel's region is the number of boundaries (heights above BM, see _Retina) below it.
# Reflectivity in dB relative to the RPE and attenuation in 1/mm; fluid is near the noise floor and barely attenuates.
_FLUID_DB = -37.0
LAYERS = (
    ("sclera", -20.0, 3.0),
    ("choroid", -10.0, 4.0),
    ("ped", _FLUID_DB, 0.1),
    ("drusen", -14.0, 3.0),
    ("rpe", 0.0, 12.0),
    ("srf", _FLUID_DB, 0.1),
    ("iz", -9.0, 3.0),  # interdigitation zone
    ("os", -18.0, 2.0),  # photoreceptor outer segments
    ("ez", -4.0, 4.0),  # ellipsoid zone
    ("is", -21.0, 1.5),  # inner segments (myoid), the ELM on top
    ("onl", -26.0, 1.0),
    ("opl", -13.0, 1.5),
    ("inl", -22.0, 1.2),
    ("ipl", -12.0, 1.5),
    ("gcl", -17.0, 1.5),
    ("nfl", -6.0, 3.0),
    ("vitreous", -70.0, 0.0),
)
_REGION = {name: i for i, (name, _, _) in enumerate(LAYERS)}
_FLUID_REGIONS = (_REGION["ped"], _REGION["srf"])


@dataclass
class _Retina:
    """Per-column geometry (W,) in micrometres: ``bounds`` (16, W) heights above BM of the region boundaries
    (choroid bottom, BM, PED top, drusen top, RPE top, SRF top, IZ, OS, EZ, IS=ELM, ONL, OPL, INL, IPL, GCL, NFL=ILM),
    ``bm_row`` the row of BM, and the fluid and distractor objects to draw."""

    bounds: np.ndarray
    bm_row: np.ndarray
    x_um: np.ndarray
    fovea_um: float
    cysts: list[dict]
    kind: str


# ------------------------------------------------------------------------------------------------- helpers
def _noise_1d(rng: np.random.Generator, n: int, sigma_px: float) -> np.ndarray:
    """(n,) smooth random profile, unit standard deviation."""
    v = ndimage.gaussian_filter1d(rng.standard_normal(n), max(sigma_px, 0.5), mode="reflect")
    return v / (v.std() + 1e-12)


def _noise_2d(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """(H, W) smooth random field, unit standard deviation; wide kernels are filtered on a coarser grid."""
    step = [max(1, int(s // 3)) for s in sigma]
    small = [n if k == 1 else max(4, -(-n // k) + 1) for n, k in zip(shape, step)]
    v = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), [s / k for s, k in zip(sigma, step)])
    if step != [1, 1]:
        v = ndimage.zoom(v, [n / m for n, m in zip(shape, small)], order=1, grid_mode=True, mode="nearest")
        v = v[: shape[0], : shape[1]]
    return (v - v.mean()) / (v.std() + 1e-12)


def _dome(x: np.ndarray, centre: float, half_left: float, half_right: float, power: float) -> np.ndarray:
    """(1 - u^2)^power inside the (asymmetric) half-widths, 0 outside: the profile of a lens, dome or druse."""
    half = np.where(x < centre, half_left, half_right)
    u = (x - centre) / half
    return np.clip(1.0 - u * u, 0.0, None) ** power


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# ------------------------------------------------------------------------------------------------- anatomy
def _healthy_thickness(rng, x_um: np.ndarray, width_um: float):
    """ILM-to-BM thickness (W,) of a healthy macula, the fovea's position and its pit profile g (1 at the centre)."""
    if rng.random() < 0.75:
        fovea = rng.uniform(0.2, 0.8) * width_um
    else:  # an off-centre B-scan: the fovea lies beyond one side
        fovea = -rng.uniform(0.8, 3.0) * 1000 if rng.random() < 0.5 else width_um + rng.uniform(0.8, 3.0) * 1000
    mean = rng.uniform(260.0, 340.0)
    centre = rng.uniform(200.0, min(270.0, mean - 45.0))
    sigma = rng.uniform(1000.0, 1500.0) / 4  # the pit is about 4 sigma wide
    r = np.abs(x_um - fovea)
    g = np.exp(-0.5 * (r / sigma) ** 2)
    rim = rng.uniform(0.0, min(25.0, 350.0 - mean)) * np.exp(-0.5 * ((r - 2.6 * sigma) / sigma) ** 2)
    decline = rng.uniform(0.0, 25.0) * np.clip((r - 1500.0) / 1500.0, 0.0, 1.0)
    wobble = rng.uniform(1.0, 5.0) * _noise_1d(rng, len(x_um), 300.0 / (x_um[1] - x_um[0]))
    thickness = mean + rim - decline - (mean - centre) * g + wobble
    return np.clip(thickness, 200.0, 355.0), fovea, g


def _layer_stack(rng, x_um, thickness, fovea, g):
    """Healthy layer thicknesses (W,) in um, bottom up: rpe, iz, os, ez, is, onl, opl, inl, ipl, gcl, nfl."""
    rpe = np.full_like(thickness, rng.uniform(18.0, 26.0))
    iz = np.full_like(thickness, rng.uniform(8.0, 12.0))
    os_ = rng.uniform(22.0, 30.0) + 8.0 * g  # foveal cones have longer outer segments
    ez = np.full_like(thickness, rng.uniform(8.0, 12.0))
    is_ = np.full_like(thickness, rng.uniform(18.0, 25.0))
    outer = rpe + iz + os_ + ez + is_
    onl_far = rng.uniform(65.0, 95.0)
    onl_centre = max(40.0, thickness.min() - outer.max() - rng.uniform(4.0, 14.0))
    onl = onl_far + (min(onl_centre, 130.0) - onl_far) * g
    inner = np.maximum(thickness - outer - onl, 4.0)
    onl = thickness - outer - inner
    # the nerve fibre layer thickens towards the optic disc (nasal), the inner layers share the rest
    side = 1.0 if rng.random() < 0.5 else -1.0
    nasal = np.clip(side * (x_um - fovea) / 3000.0, 0.0, 1.0)
    weights = np.stack([np.full_like(g, w) for w in (0.18, 0.21, 0.22, 0.27)] + [0.08 + 0.3 * nasal])
    weights *= 1.0 + 0.1 * np.stack([_noise_1d(rng, len(g), 200.0 / (x_um[1] - x_um[0])) for _ in weights])
    opl, inl, ipl, gcl, nfl = inner * weights / weights.sum(axis=0)
    return [rpe, iz, os_, ez, is_, onl, opl, inl, ipl, gcl, nfl]


def _bend(rng, width: int, depth_um: float, axial: float) -> np.ndarray:
    """(W,) row offsets of BM: tilt (as the image shows it) plus a bowl (myopia), capped to 30% of the depth."""
    cols = np.arange(width, dtype=np.float64)
    tilt = math.tan(math.radians(rng.uniform(-10.0, 10.0)))
    sag = rng.choice([rng.uniform(0.0, 80.0), rng.uniform(80.0, 300.0), rng.uniform(300.0, 600.0)], p=[0.4, 0.45, 0.15])
    u = (cols - rng.uniform(0.3, 0.7) * width) / (width / 2)
    bend = tilt * (cols - width / 2) - sag / axial * u * u + 2.0 / axial * _noise_1d(rng, width, width / 20)
    span = (bend.max() - bend.min()) * axial
    return bend * min(1.0, 0.3 * depth_um / span) if span > 0 else bend


def _cysts(rng, x_um: np.ndarray, lat: float, axial: float, centre: float, cap_um: float):
    """Intraretinal cysts (dicts) near ``centre`` and the swelling (W,) in um they cause, at most ``cap_um``.

    Cysts are added one by one, large confluent ones first; one taller than the room the cap leaves in its columns is
    shrunk whole (keeping its shape) or left out, so no column holds more than ``cap_um`` of cysts."""
    width_um = x_um[-1] + lat / 2
    spread = rng.uniform(200.0, 1000.0)
    n_big = int(rng.random() < 0.4) + int(rng.random() < 0.15)
    cysts, occupied = [], np.zeros_like(x_um)
    for i in range(n_big + int(rng.integers(3, 40))):
        if i < n_big:
            a, b = rng.uniform(250.0, 600.0), rng.uniform(100.0, 250.0)
        else:
            a = _log_uniform(rng, max(1.5 * lat, 15.0), 250.0)
            b = max(a * _log_uniform(rng, 0.5, 1.5), 1.5 * axial)
        c = {
            "x": float(np.clip(centre + rng.normal(0.0, spread), 0.08 * width_um, 0.92 * width_um)),
            "a": a,
            "b": b,
            "p": rng.uniform(1.6, 3.5),  # superellipse: < 2 diamond-like, > 2 boxy
            "eps": rng.uniform(0.0, 0.15),  # polygonal wobble of the outline
            "k": int(rng.integers(3, 7)),
            "phi": rng.uniform(0.0, 2 * math.pi),
            "f": rng.uniform(0.1, 0.9),  # depth in the swollen INL-ONL zone, 0 = its top
            "db": rng.uniform(-39.0, -33.0),
        }
        chord = _cyst_chord(c, x_um)
        room = cap_um - occupied
        over = float((chord / np.maximum(room, 1e-6))[chord > 0].max())
        if over > 1.0:  # scaling both half-axes by 1/over scales every chord by at most that
            if c["b"] / over < 1.5 * axial or c["a"] / over < 1.5 * lat:
                continue
            c["a"], c["b"] = c["a"] / over, c["b"] / over
            chord = _cyst_chord(c, x_um)
        occupied += chord
        cysts.append(c)
    # the retina swells smoothly over the cysts (a smoothed upper envelope), never less than they take
    sigma = 100.0 / lat
    envelope = ndimage.gaussian_filter1d(ndimage.maximum_filter1d(occupied, int(6 * sigma) + 1), sigma)
    swelling = np.maximum(occupied, np.minimum(envelope * rng.uniform(0.9, 1.3), cap_um))
    return cysts, swelling


def _cyst_chord(c: dict, x_um: np.ndarray) -> np.ndarray:
    """(W,) the most height a cyst can take in each column (its wobbled superellipse's chord)."""
    u = np.abs(x_um - c["x"]) / (c["a"] * (1 + c["eps"]))
    return 2 * c["b"] * (1 + c["eps"]) * np.clip(1.0 - u ** c["p"], 0.0, None) ** (1 / c["p"])


def _anatomy(rng, kind: str, height: int, width: int, axial: float, lat: float) -> _Retina:
    x_um = (np.arange(width) + 0.5) * lat
    width_um, depth_um = width * lat, height * axial
    thickness, fovea, g = _healthy_thickness(rng, x_um, width_um)
    rpe, iz, os_, ez, is_, onl, opl, inl, ipl, gcl, nfl = _layer_stack(rng, x_um, thickness, fovea, g)
    bend = _bend(rng, width, depth_um, axial)

    # lesions: what each may reach; all are scaled down together below if the frame cannot hold them
    has_irf, has_srf, has_ped = kind in ("irf", "mixed"), kind in ("srf", "mixed"), kind in ("ped", "mixed")
    if kind == "irf":
        has_srf = rng.random() < 0.3
    elif kind == "srf":
        has_ped = rng.random() < 0.25
    elif kind == "ped":
        has_srf = rng.random() < 0.5
    has_drusen = kind == "drusen" or (kind in ("ped", "mixed") and rng.random() < 0.4)
    peaks = {
        "drusen": rng.uniform(30.0, 120.0) if has_drusen else 0.0,
        "ped": rng.uniform(60.0, 450.0) if has_ped else 0.0,
        "srf": rng.uniform(30.0, 350.0) if has_srf else 0.0,
        "irf": rng.uniform(60.0, 400.0) if has_irf else 0.0,
    }

    near_fovea = float(np.clip(fovea, 0.0, width_um)) if rng.random() < 0.8 else rng.uniform(0.2, 0.8) * width_um
    zeros = np.zeros(width)
    drusen = zeros.copy()
    if has_drusen:
        for _ in range(int(rng.integers(2, 13))):
            centre = np.clip(rng.normal(near_fovea, 900.0), 0.05 * width_um, 0.95 * width_um)
            half = rng.uniform(50.0, 300.0)
            tall = min(peaks["drusen"], half * rng.uniform(0.2, 0.5))
            drusen = np.maximum(drusen, tall * _dome(x_um, centre, half, half, rng.uniform(0.6, 1.2)))
    ped = zeros.copy()
    if has_ped:  # a dome, about 2-5 times as wide as it is tall
        centre = np.clip(near_fovea + rng.normal(0.0, 700.0), 0.15 * width_um, 0.85 * width_um)
        half = rng.uniform(400.0, 1300.0)
        tall = min(peaks["ped"], half * rng.uniform(0.2, 0.6))
        ped = tall * _dome(x_um, centre, half * rng.uniform(0.8, 1.2), half, rng.uniform(0.5, 0.9))
    srf = zeros.copy()
    if has_srf:  # a flat lens
        centre = np.clip(near_fovea + rng.normal(0.0, 500.0), 0.1 * width_um, 0.9 * width_um)
        half = rng.uniform(300.0, 1800.0)
        tall = min(peaks["srf"], half * rng.uniform(0.1, 0.35))
        srf = tall * _dome(x_um, centre, half * rng.uniform(0.7, 1.3), half, rng.uniform(0.8, 1.6))
    cysts, swelling = [], zeros.copy()
    if has_irf:
        centre = np.clip(near_fovea + rng.normal(0.0, 400.0), 0.15 * width_um, 0.85 * width_um)
        cysts, swelling = _cysts(rng, x_um, lat, axial, centre, peaks["irf"])

    # the photoreceptors' nuclei thin over drusen (the inner retina moves less than the RPE), and the cysts' zone
    # (ONL, OPL, INL) swells to hold them
    pressed = np.minimum(0.6 * drusen, 0.5 * onl)
    lift = ped + drusen - pressed + srf + swelling  # (W,) how much the lesions add to the healthy thickness

    # fit the frame: the top of the retina at least 5% down, BM and some choroid above the bottom; an eye bent too
    # much is flattened (to half its bend at most), then the lesions shrink, all in the same proportion
    top_margin, bottom_margin = 0.05 * depth_um, max(0.06 * depth_um, 100.0)
    bend_scale = scale = 1.0
    while True:
        bend_um = bend * bend_scale * axial
        span = bend_um.max() - (bend_um - thickness - scale * lift).min()
        if span <= depth_um - top_margin - bottom_margin or scale < 0.05:
            break
        if bend_scale > 0.5:
            bend_scale *= 0.9
        else:
            scale *= 0.9
    bend = bend * bend_scale
    ped, drusen, pressed, srf, swelling = (scale * v for v in (ped, drusen, pressed, srf, swelling))
    for c in cysts:  # scaling both half-axes scales every chord by at most as much: the swelling holds them
        c["a"], c["b"] = scale * c["a"], scale * c["b"]

    onl = onl - pressed
    zone = onl + opl + inl
    stretch = 1.0 + swelling / zone
    choroid = np.clip(rng.uniform(150.0, 400.0) + 20.0 * _noise_1d(rng, width, 400.0 / lat), 120.0, 450.0)
    steps = [ped, drusen, rpe, srf, iz, os_, ez, is_, onl * stretch, opl * stretch, inl * stretch, ipl, gcl, nfl]
    bounds = np.concatenate([[-choroid, zeros], np.cumsum(steps, axis=0)]).astype(np.float64)

    # place it: the top of the retina 10-45% down the frame where it fits
    ilm_off = bend - bounds[-1] / axial  # ILM rows relative to BM's base row
    base = rng.uniform(0.10, 0.45) * height - ilm_off.min()
    base = min(base, height - bottom_margin / axial - bend.max())
    base = max(base, top_margin / axial - ilm_off.min())
    for c in cysts:  # centre each cyst where it fits in its zone
        i = int(np.clip(c["x"] / lat, 0, width - 1))
        zone_i = bounds[12, i] - bounds[9, i]
        half = c["b"] * (1 + c["eps"]) / zone_i
        c["f"] = float(np.clip(c["f"], half, 1 - half)) if half < 0.5 else 0.5
    return _Retina(bounds, base + bend, x_um, fovea, cysts, kind)


# ---------------------------------------------------------------------------------------------------- render
def _draw_cysts(retina: _Retina, h: np.ndarray, lat: float, axial: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool cyst pixels and (H, W) their reflectivity in dB (NaN elsewhere)."""
    bounds, x_um = retina.bounds, retina.x_um
    height, width = h.shape
    mask = np.zeros(h.shape, dtype=bool)
    db = np.full(h.shape, np.nan, dtype=np.float32)
    zone_top, elm, gcl_top = bounds[12], bounds[9], bounds[14]
    for c in retina.cysts:
        reach = c["a"] * (1 + c["eps"])
        c0, c1 = max(0, int((c["x"] - reach) / lat)), min(width, int((c["x"] + reach) / lat) + 2)
        if c1 <= c0:
            continue
        centre = zone_top[c0:c1] - c["f"] * (zone_top[c0:c1] - elm[c0:c1])  # height above BM, per column
        extent = c["b"] * (1 + c["eps"])
        rows_top = retina.bm_row[c0:c1] - (centre + extent) / axial
        rows_bottom = retina.bm_row[c0:c1] - (centre - extent) / axial
        r0, r1 = max(0, int(rows_top.min()) - 1), min(height, int(rows_bottom.max()) + 2)
        if r1 <= r0:
            continue
        hh = h[r0:r1, c0:c1]
        u = (x_um[c0:c1] - c["x"]) / c["a"]
        v = (hh - centre) / c["b"]
        radius = (np.abs(u) ** c["p"] + np.abs(v) ** c["p"]) ** (1 / c["p"])
        outline = 1 + c["eps"] * np.cos(c["k"] * np.arctan2(v, u) + c["phi"])
        inside = (radius < outline) & (hh > elm[c0:c1] + 2.0) & (hh < gcl_top[c0:c1])
        mask[r0:r1, c0:c1] |= inside
        db[r0:r1, c0:c1][inside] = c["db"]
    return mask, db


def _line(h: np.ndarray, at: np.ndarray, sigma_um: float) -> np.ndarray:
    """(H, W) an anti-aliased thin bright line at heights ``at`` (W,)."""
    return np.exp(-0.5 * ((h - at) / sigma_um) ** 2)


def _blob(h: np.ndarray, retina: _Retina, axial: float, lat: float, x: float, y: float, rx: float, ry: float):
    """The pixels of an ellipse centred ``x`` um from the left, ``y`` um above BM, of half-axes ``rx``, ``ry`` um:
    (the box's rows and columns as slices, (rows, cols) bool inside the box)."""
    width = h.shape[1]
    c0, c1 = max(0, int((x - rx) / lat)), min(width, int((x + rx) / lat) + 2)
    c0 = min(c0, c1)
    bm = retina.bm_row[c0:c1]
    if c1 == c0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), dtype=bool)
    r0 = int(np.clip(bm.min() - (y + ry) / axial - 1, 0, h.shape[0]))
    r1 = int(np.clip(bm.max() - (y - ry) / axial + 2, r0, h.shape[0]))
    rows, cols = slice(r0, r1), slice(c0, c1)
    inside = ((retina.x_um[cols] - x) / rx) ** 2 + ((h[rows, cols] - y) / ry) ** 2 < 1.0
    return rows, cols, inside


def _reflectivity(rng, retina: _Retina, height: int, width: int, axial: float, lat: float):
    """Power reflectivity (H, W) relative to the RPE, attenuation (H, W) in 1/um, fluid mask (H, W)."""
    bounds, kind = retina.bounds, retina.kind
    width_um = width * lat
    rows = np.arange(height, dtype=np.float32)[:, None]
    h = (retina.bm_row[None, :].astype(np.float32) - rows) * np.float32(axial)  # height above BM, um
    region = np.zeros((height, width), dtype=np.uint8)
    for k in range(len(bounds)):
        region += h >= bounds[k].astype(np.float32)
    layer_db = np.array([db for _, db, _ in LAYERS], dtype=np.float32) + rng.uniform(-2, 2, len(LAYERS))
    layer_mu = np.array([mu for _, _, mu in LAYERS], dtype=np.float32) / 1000.0
    db = layer_db[region]
    mu = layer_mu[region]
    tissue = region != _REGION["vitreous"]
    fine = _noise_2d(rng, (height, width), (6.0 / axial, 30.0 / lat))
    coarse = _noise_2d(rng, (height, width), (60.0 / axial, 400.0 / lat))
    db += np.where(tissue, rng.uniform(1.5, 3.0) * fine + rng.uniform(0.5, 1.5) * coarse, 0.0).astype(np.float32)
    sclera = region == _REGION["sclera"]
    db[sclera] += (0.015 * (h - bounds[0])[sclera]).astype(np.float32)  # darker with depth

    # choroid: vessel lumens, small (Sattler's layer) under BM, large (Haller's) deeper
    choroid = region == _REGION["choroid"]
    lumen_db = layer_db[_REGION["choroid"]] - rng.uniform(8.0, 14.0)
    for _ in range(int(width_um / rng.uniform(80.0, 200.0))):
        x, depth = rng.uniform(0.0, width_um), rng.uniform(0.1, 0.95)
        thick = -bounds[0, min(int(x / lat), width - 1)]
        rx = (12.0 + 110.0 * depth**1.5) * rng.uniform(0.6, 1.4)
        ry = min(rx * rng.uniform(0.15, 0.35), 0.45 * thick)
        rs, cs, inside = _blob(h, retina, axial, lat, x, -depth * thick, rx, ry)
        inside &= choroid[rs, cs]
        db[rs, cs][inside] = lumen_db + rng.uniform(-2.0, 2.0)

    # retinal vessels in the inner retina (none in the foveal avascular zone) and the shadows they cast
    ilm = bounds[-1]
    inner = region >= _REGION["ipl"]
    for _ in range(int(rng.integers(0, 9))):
        x = rng.uniform(0.02, 0.98) * width_um
        if abs(x - retina.fovea_um) < 300.0:
            continue
        radius = rng.uniform(12.0, 45.0)
        y = ilm[min(int(x / lat), width - 1)] - rng.uniform(8.0, 40.0) - radius
        rs, cs, inside = _blob(h, retina, axial, lat, x, y, radius, radius)
        inside &= inner[rs, cs] & tissue[rs, cs]
        db[rs, cs][inside] = rng.uniform(-12.0, -6.0)
        mu[rs, cs][inside] = rng.uniform(6.0, 14.0) / (8.7 * 2 * radius)  # a shadow of 6-14 dB

    if kind != "healthy":  # hyperreflective foci in the nuclear and plexiform layers
        retinal = (region >= _REGION["is"]) & (region <= _REGION["inl"])
        for _ in range(int(rng.integers(0, 16))):
            x = rng.uniform(0.05, 0.95) * width_um
            col = min(int(x / lat), width - 1)
            r = rng.uniform(5.0, 12.0)
            rs, cs, dot = _blob(h, retina, axial, lat, x, rng.uniform(bounds[9, col], bounds[12, col]), r, r)
            dot &= retinal[rs, cs]
            db[rs, cs][dot] = rng.uniform(-9.0, -4.0)
            mu[rs, cs][dot] = 0.006

    cyst, cyst_db = _draw_cysts(retina, h, lat, axial)
    db[cyst] = cyst_db[cyst]
    mu[cyst] = layer_mu[_REGION["srf"]]
    reflect = np.power(10.0, db / 10.0, dtype=np.float32)

    # thin lines: external limiting membrane, Bruch's membrane (seen under a PED or drusen)
    elm = 10 ** (rng.uniform(-19, -15) / 10) * _line(h, bounds[9], max(2.0, 0.3 * axial))
    reflect += np.where(cyst, 0.0, elm).astype(np.float32)
    reflect += (10 ** (rng.uniform(-10, -6) / 10) * _line(h, bounds[1], max(2.5, 0.35 * axial))).astype(np.float32)
    cols = np.arange(width)
    if kind != "healthy" and rng.random() < 0.2:  # epiretinal membrane, detached here and there
        c0, span = rng.uniform(-0.2, 0.6) * width, rng.uniform(0.3, 0.8) * width
        window = np.sin(np.pi * np.clip((cols - c0) / span, 0.0, 1.0))  # fades in and out
        gap = np.clip(rng.uniform(5, 30) * _noise_1d(rng, width, width / 15) + rng.uniform(-10, 10), 0.0, None)
        membrane = 10 ** (rng.uniform(-8, -4) / 10) * _line(h, ilm + 3.0 + gap * window, 4.0)
        reflect += (membrane * np.clip(2 * window, 0.0, 1.0)[None, :]).astype(np.float32)
    if rng.random() < 0.2:  # the posterior hyaloid, faint, in the vitreous over the retina's smoothed top
        top = ndimage.gaussian_filter1d(ndimage.maximum_filter1d(ilm, width // 4 + 1), width / 12)
        lift = rng.uniform(100.0, 800.0) + rng.uniform(-0.05, 0.05) * (cols - width / 2) * lat
        hyaloid = 10 ** (rng.uniform(-32, -26) / 10) * _line(h, top + lift, 4.0)
        reflect += np.where(tissue, 0.0, hyaloid).astype(np.float32)
    fluid = np.isin(region, _FLUID_REGIONS) | cyst
    return reflect, mu, fluid


def _acquire(rng, dev: DeviceProfile, reflect: np.ndarray, mu: np.ndarray, lat: float):
    """The device's B-scan of a reflectivity map: (H, W) grey in 0-1 and the number of black columns at each side."""
    height, width = reflect.shape
    axial = dev.axial_um
    # light is attenuated on its way down and back (shadows under vessels, a darker choroid under a thick RPE)
    path = np.cumsum(mu, axis=0) - 0.5 * mu
    signal = reflect * np.exp(-2.0 * axial * path)
    signal *= np.power(10.0, -dev.rolloff_db * rng.uniform(0.7, 1.3) * (np.arange(height) / height) / 10.0)[:, None]
    u = np.abs(np.arange(width) - width / 2) / (width / 2)
    signal *= (1.0 - rng.uniform(0.0, 0.5) * u ** rng.uniform(2.0, 6.0))[None, :] ** 2

    frames = int(_log_uniform(rng, dev.frames[0], dev.frames[1] + 0.999))
    sigma = (max(0.35, dev.psf_um[0] / 2.355 / axial), max(0.35, dev.psf_um[1] / 2.355 / lat))
    # expected intensity through the point spread function (|psf|^2 is a Gaussian of sigma / sqrt 2)
    mean_int = ndimage.gaussian_filter(signal, [s / math.sqrt(2) for s in sigma])
    if dev.speckle == "rayleigh":
        # fully developed speckle: |psf * (sqrt(reflectivity) x complex white noise)|; frames beyond the first few are
        # folded in by shrinking the fluctuation about the mean as an average of that many frames would
        impulse = np.zeros((int(8 * sigma[0]) + 1, int(8 * sigma[1]) + 1))
        impulse[impulse.shape[0] // 2, impulse.shape[1] // 2] = 1.0
        gain = 1.0 / math.sqrt(float((ndimage.gaussian_filter(impulse, sigma) ** 2).sum()))
        direct = min(frames, 3)
        amp = np.zeros_like(signal)
        root = np.sqrt(signal / 2.0)
        for _ in range(direct):
            noise = rng.standard_normal((2, height, width), dtype=np.float32)
            re = ndimage.gaussian_filter(root * noise[0], sigma)
            im = ndimage.gaussian_filter(root * noise[1], sigma)
            amp += gain * np.hypot(re, im)
        amp /= direct
        expected = np.sqrt(np.pi / 4 * mean_int)
        amp = expected + (amp - expected) * math.sqrt(direct / frames)
    else:
        spread = rng.uniform(0.5, 0.8) / math.sqrt(frames)
        field = _noise_2d(rng, (height, width), sigma)
        amp = np.sqrt(mean_int) * np.exp(spread * field - spread**2 / 2)
    if frames > 1:  # frames are registered imperfectly: the average is a little blurred across
        amp = ndimage.gaussian_filter1d(amp, 0.25 * math.log10(frames) + 1e-3, axis=1)

    if rng.random() < dev.mirror:  # the complex-conjugate image: the retina folded about a zero delay in the frame
        zero = rng.uniform(0.35, 0.65) * height
        src = np.round(2 * zero - np.arange(height)).astype(int)
        ok = (src >= 0) & (src < height)
        mirror = np.zeros_like(amp)
        mirror[ok] = amp[src[ok]]
        mirror = ndimage.gaussian_filter(mirror, (3.0, 1.0)) * rng.uniform(0.05, 0.2)
        amp = np.sqrt(amp**2 + mirror**2)

    floor = 10 ** (rng.uniform(*dev.noise_db) / 20)
    noise = rng.standard_normal((2, height, width), dtype=np.float32)
    noise_amp = floor * np.hypot(noise[0], noise[1]) / math.sqrt(2)
    noise_mean = floor * math.sqrt(np.pi) / 2
    noise_amp = noise_mean + (noise_amp - noise_mean) / math.sqrt(frames)
    intensity = amp**2 + noise_amp**2

    # display: a log or root curve, a gain that may saturate the RPE, a random tone curve
    ref = float(np.percentile(intensity, 99.5)) * _log_uniform(rng, 0.6, 1.6)
    if dev.curve == "log":
        grey = 1.0 + 10.0 * np.log10(np.maximum(intensity / ref, 1e-12)) / rng.uniform(*dev.contrast)
    else:
        grey = (intensity / ref) ** rng.uniform(*dev.contrast)
    grey = np.clip(grey, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    background = rng.uniform(*dev.background)
    grey = background + (1.0 - background) * grey
    smooth = rng.uniform(0.0, dev.smooth_px)
    if smooth > 0.05:
        grey = ndimage.gaussian_filter(grey, (smooth * 0.7, smooth))
    rows = rng.normal(0.0, dev.line_noise, height)
    lines = rng.integers(0, height, int(rng.poisson(2.0)))
    rows[lines] += rng.choice([-1.0, 1.0], len(lines)) * rng.uniform(0.02, 0.08, len(lines))
    grey = grey + rows[:, None]
    blank = (0, 0)
    if rng.random() < dev.blank:
        blank = tuple(int(rng.integers(0, max(2, int(0.05 * width)))) for _ in range(2))
    return np.clip(grey, 0.0, 1.0), blank


# ---------------------------------------------------------------------------------------------------- public
def make_bscan(rng: np.random.Generator, device: str | None = None, kind: str | None = None) -> PhantomBScan:
    """One phantom B-scan. ``device``: a name of ``DEVICES`` (default: drawn); ``kind``: one of ``KINDS``, or "fluid"
    for any of ``FLUID_KINDS`` (default: drawn, 30% healthy, 15% drusen, the rest with fluid)."""
    if device is None:
        device = str(rng.choice(sorted(DEVICES)))
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not known; choose one of {', '.join(sorted(DEVICES))}")
    if kind is None:
        kind = str(rng.choice(KINDS, p=list(KIND_WEIGHTS.values())))
    elif kind == "fluid":
        kind = str(rng.choice(FLUID_KINDS))
    if kind not in KIND_WEIGHTS:
        raise ValueError(f"kind {kind!r} is not known; choose one of {', '.join(KINDS)} or 'fluid'")
    dev = DEVICES[device]
    height, width = dev.height, int(rng.choice(dev.widths))
    lat = dev.lateral_um(width)
    retina = _anatomy(rng, kind, height, width, dev.axial_um, lat)
    reflect, mu, fluid = _reflectivity(rng, retina, height, width, dev.axial_um, lat)
    grey, (left, right) = _acquire(rng, dev, reflect, mu, lat)
    # black columns hold no data: nothing there is labelled
    for sl in (slice(0, left), slice(width - right, width)):
        grey[:, sl] = 0.0
        fluid[:, sl] = False
    return PhantomBScan(
        image=np.round(grey * 255).astype(np.uint8),
        fluid=fluid,
        ilm=(retina.bm_row - retina.bounds[-1] / dev.axial_um).astype(np.float32),
        rpe=retina.bm_row.astype(np.float32),
        axial_um=dev.axial_um,
        lateral_um=lat,
        device=device,
        kind=kind,
    )


def resize_bscan(scan: PhantomBScan, height: int, width: int) -> PhantomBScan:
    """The B-scan resampled to ``height`` x ``width``: image bicubic, mask by area (a pixel is fluid when at least
    half of it is), boundaries and spacing following."""
    h0, w0 = scan.image.shape
    image = np.asarray(Image.fromarray(scan.image).resize((width, height), Image.BICUBIC))
    fluid = np.asarray(Image.fromarray(scan.fluid.astype(np.uint8) * 255).resize((width, height), Image.BILINEAR))
    cols = (np.arange(width) + 0.5) * w0 / width - 0.5  # new column centres in old columns

    def rows(r: np.ndarray) -> np.ndarray:
        return ((np.interp(cols, np.arange(w0), r) + 0.5) * height / h0 - 0.5).astype(np.float32)

    return replace(
        scan,
        image=image,
        fluid=fluid >= 128,
        ilm=rows(scan.ilm),
        rpe=rows(scan.rpe),
        axial_um=scan.axial_um * h0 / height,
        lateral_um=scan.lateral_um * w0 / width,
    )


# ------------------------------------------------------------------------------------------------ command line
SPACING_COLUMNS = ["stem", "device", "kind", "height", "width", "axial_um", "lateral_um"]


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> (H, W); each side 16 to 4096 pixels."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"--size must be HEIGHTxWIDTH, e.g. 496x512; got {text!r}")
    size = int(m.group(1)), int(m.group(2))
    if not all(16 <= s <= 4096 for s in size):
        raise ValueError(f"--size {text}: each side must be 16 to 4096 pixels")
    return size


def write_phantoms(
    out: str | Path,
    count: int,
    seed: int,
    device: str | None = None,
    size: tuple[int, int] | None = None,
    force: bool = False,
) -> Path:
    """Write ``count`` B-scans in the paired layout (``image/``, ``mask/``, ``spacing.csv``); B-scan ``i`` is drawn
    from ``np.random.default_rng((seed, i))``, so a larger count keeps the first ones."""
    if count < 1:
        raise ValueError(f"--count must be at least 1, got {count}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if device is not None and device not in DEVICES:
        raise ValueError(f"--device {device!r} is not known; choose one of {', '.join(sorted(DEVICES))}")
    digits = max(4, len(str(count)))
    rows = []
    with staged_output_dir(out, force) as stage:
        (stage / "image").mkdir()
        (stage / "mask").mkdir()
        for i in range(1, count + 1):
            scan = make_bscan(np.random.default_rng((seed, i)), device)
            if size is not None:
                scan = resize_bscan(scan, *size)
            stem = f"ph_{i:0{digits}d}"
            save_image_atomic(stage / "image" / f"{stem}.png", scan.image)
            save_image_atomic(stage / "mask" / f"{stem}.png", scan.fluid.astype(np.uint8) * 255)
            h, w = scan.image.shape
            rows.append(
                {
                    "stem": stem,
                    "device": scan.device,
                    "kind": scan.kind,
                    "height": h,
                    "width": w,
                    "axial_um": round(scan.axial_um, 6),
                    "lateral_um": round(scan.lateral_um, 6),
                }
            )
        save_csv_atomic(stage / "spacing.csv", rows, SPACING_COLUMNS)
    return Path(out)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the folder to write (image/, mask/, spacing.csv)")
    p.add_argument("--count", type=int, required=True, help="number of B-scans")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", help=f"one device for all B-scans: {', '.join(sorted(DEVICES))} (default: drawn)")
    p.add_argument("--size", metavar="HxW", help="resample every B-scan and mask to this size (spacing follows)")
    p.add_argument("--force", action="store_true", help="replace an earlier output of this toolkit at --out")
    a = p.parse_args(argv)
    size = parse_size(a.size) if a.size is not None else None
    path = write_phantoms(a.out, a.count, a.seed, a.device, size, a.force)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, RuntimeError) as e:  # a bad argument, an --out that must not be replaced, a full disk
        sys.exit("error: " + " ".join(str(e).split()))
