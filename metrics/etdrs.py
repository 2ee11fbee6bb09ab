"""The ETDRS grid of a macular OCT volume: retinal thickness per sector, the central subfield thickness (CST) and
fluid per sector, as retina clinics read them.

The grid (Early Treatment Diabetic Retinopathy Study) is centred on the fovea: a central subfield 1 mm across, an
inner ring to 3 mm and an outer ring to 6 mm, both rings cut by the diagonals into four sectors. Thickness is the
inner limiting membrane to Bruch's membrane (``data.retina``'s boundaries, as in the normative studies), per A-scan.

Orientation. Sectors are named first as they lie on the en-face map (B-scan 1 at the top, A-scan 1 on the left):
``top``, ``right``, ``bottom``, ``left``. Their anatomical names follow only from what the file says: superior /
inferior from the B-scan order (``ScanMeta.bscan_order``), nasal / temporal from the laterality, with the A-scans
taken to run from the viewer's left to right as in a fundus photograph (every vendor's display convention), so that
the nasal side of a right eye (OD) is on the right. Where a file does not say, the name stays None.

Hand-written: no library computes an ETDRS grid on an OCT en-face lattice (OCTExplorer and the vendors' software do
it inside closed tools).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from metrics.quantify import NL_PER_MM3, SECTORS

RADII_MM = (0.5, 1.5, 3.0)  # central subfield, inner ring, outer ring (diameters 1, 3, 6 mm)
SIDES = (
    "top",
    "right",
    "bottom",
    "left",
)  # SECTORS: central, then the inner ring's and the outer ring's, in this order
# The fovea is searched for within this distance of the scan's centre (macular scans are centred on fixation; an
# eccentric fixation of more than 1 mm is rare and is better caught by the reader than guessed).
SEARCH_RADIUS_MM = 1.0
# A foveal pit: the retina at its centre at least this much thinner than the ring 0.75-1.25 mm around it. A healthy
# fovea is 60-100 um thinner than that ring (normative: about 270 um centre, 330-350 um in the inner ring); edema that
# fills the pit leaves no such dip, and the grid is then centred on the scan (the report says so).
MIN_PIT_DEPTH_UM = 25.0
PIT_RING_MM = (0.75, 1.25)
SMOOTH_MM = 0.1  # thickness smoothed over about this much before the pit is sought (one bad A-scan does not decide)
MIN_MEASURED = 0.5  # share of a sector's A-scans with a confident thickness, below which its thickness is not given
MIN_COVERED = 0.5  # share of a sector's area the scan covers, below which its thickness is not given (a few lines)
# The thinnest point is sought this far beyond the search circle and refused when it lies beyond the circle: a pit
# just outside it would otherwise be "found" on the circle's edge, on its slope
EDGE_MM = 0.15
COVERAGE_STEP_MM = 0.01


@dataclass(frozen=True)
class Fovea:
    """The grid's centre in (fractional, 0-based) B-scan and A-scan index, whether a foveal pit was found there and,
    where not, why the scan's centre was taken."""

    bscan: float
    ascan: float
    found: bool
    note: str


def thickness_map(ilm: np.ndarray, bruch: np.ndarray, valid: np.ndarray, depth_mm: float) -> np.ndarray:
    """(Z, W) rows of the ILM and of Bruch's membrane and where both were found -> thickness in um, NaN where not."""
    thickness = (np.asarray(bruch, np.float64) - np.asarray(ilm, np.float64)) * depth_mm * 1000.0
    return np.where(np.asarray(valid, bool) & np.isfinite(thickness), thickness, np.nan).astype(np.float32)


def _smooth(values: np.ndarray, sigma: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware Gaussian smoothing (normalised convolution): the smoothed values and the weight of measured values
    behind each (1 where every neighbour was measured)."""
    known = np.isfinite(values)
    weight = ndimage.gaussian_filter(known.astype(np.float64), sigma, mode="nearest")
    total = ndimage.gaussian_filter(np.where(known, values, 0.0).astype(np.float64), sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 1e-6, total / weight, np.nan), weight


def _offsets_mm(shape: tuple[int, int], spacing: tuple[float, float, float], z0: float, x0: float):
    """(Z, W) en-face offsets in mm of every A-scan from (z0, x0): down (towards the last B-scan) and right."""
    z, w = shape
    down = (np.arange(z)[:, None] - z0) * spacing[0]
    right = (np.arange(w)[None, :] - x0) * spacing[2]
    return np.broadcast_to(down, shape), np.broadcast_to(right, shape)


def find_fovea(thickness_um: np.ndarray, spacing: tuple[float, float, float]) -> Fovea:
    """The foveal pit: the thinnest smoothed retina within ``SEARCH_RADIUS_MM`` of the scan's centre, taken only
    where it is a pit (``MIN_PIT_DEPTH_UM`` thinner than the ring around it, measured there); else the centre."""
    z, w = thickness_um.shape
    centre = Fovea((z - 1) / 2, (w - 1) / 2, False, "")
    if z < 3:
        return Fovea(
            centre.bscan, centre.ascan, False, "too few B-scans to find the fovea; the grid is centred on the scan"
        )
    sigma = (max(0.5, SMOOTH_MM / spacing[0]), max(0.5, SMOOTH_MM / spacing[2]))
    smooth, weight = _smooth(thickness_um, sigma)
    down, right = _offsets_mm((z, w), spacing, centre.bscan, centre.ascan)
    near = (np.hypot(down, right) <= SEARCH_RADIUS_MM + EDGE_MM) & (weight > 0.5) & np.isfinite(smooth)
    if not near.any():
        return Fovea(
            centre.bscan,
            centre.ascan,
            False,
            "no retina measured near the scan's centre; the grid is centred on the scan",
        )
    k = np.flatnonzero(np.where(near, smooth, np.inf).ravel() == np.where(near, smooth, np.inf).min())[0]
    bz, bx = divmod(int(k), w)
    beyond = math.hypot((bz - centre.bscan) * spacing[0], (bx - centre.ascan) * spacing[2]) > SEARCH_RADIUS_MM
    down, right = _offsets_mm((z, w), spacing, bz, bx)
    ring = (np.hypot(down, right) >= PIT_RING_MM[0]) & (np.hypot(down, right) <= PIT_RING_MM[1])
    measured = ring & np.isfinite(thickness_um)
    if measured.sum() < 0.5 * max(ring.sum(), 1):
        return Fovea(
            centre.bscan,
            centre.ascan,
            False,
            "the retina around the thinnest point is not measured; the grid is centred on the scan",
        )
    depth = float(np.nanmean(thickness_um[measured]) - smooth[bz, bx])
    if depth < MIN_PIT_DEPTH_UM:
        return Fovea(
            centre.bscan,
            centre.ascan,
            False,
            f"no foveal pit (the thinnest retina near the centre is only {depth:.0f} um thinner than the ring around "
            f"it, under {MIN_PIT_DEPTH_UM:.0f} um: fluid or a thick fovea?); the grid is centred on the scan",
        )
    if beyond:
        return Fovea(
            centre.bscan,
            centre.ascan,
            False,
            f"the thinnest retina near the centre lies at the edge of the {SEARCH_RADIUS_MM:g} mm searched (fixation "
            "off centre?); the grid is centred on the scan",
        )
    return Fovea(float(bz), float(bx), True, f"foveal pit {depth:.0f} um deep")


def sector_index(shape: tuple[int, int], spacing: tuple[float, float, float], fovea: Fovea) -> np.ndarray:
    """(Z, W) int8: each A-scan's sector (an index into ``SECTORS``), -1 outside the 6 mm grid."""
    down, right = _offsets_mm(shape, spacing, fovea.bscan, fovea.ascan)
    return _sectors(down, right)


def _sectors(down: np.ndarray, right: np.ndarray) -> np.ndarray:
    r = np.hypot(down, right)
    # the side: top / right / bottom / left, split by the diagonals
    side = np.where(np.abs(down) >= np.abs(right), np.where(down < 0, 0, 2), np.where(right > 0, 1, 3))
    out = np.full(r.shape, -1, dtype=np.int8)
    out[r < RADII_MM[2]] = 5 + side[r < RADII_MM[2]]
    out[r < RADII_MM[1]] = 1 + side[r < RADII_MM[1]]
    out[r < RADII_MM[0]] = 0
    return out


def coverage(shape: tuple[int, int], spacing: tuple[float, float, float], fovea: Fovea) -> np.ndarray:
    """(9,) the share of each sector's area that the scan covers (each A-scan standing for its dz x dx cell)."""
    z, w = shape
    axis = np.arange(-RADII_MM[2], RADII_MM[2] + COVERAGE_STEP_MM / 2, COVERAGE_STEP_MM)
    down, right = np.meshgrid(axis, axis, indexing="ij")
    sector = _sectors(down, right)
    bz = fovea.bscan * spacing[0] + down  # mm from B-scan 0's centre
    ax = fovea.ascan * spacing[2] + right
    inside = (
        (bz >= -spacing[0] / 2)
        & (bz <= (z - 0.5) * spacing[0])
        & (ax >= -spacing[2] / 2)
        & (ax <= (w - 0.5) * spacing[2])
    )
    total = np.bincount(sector[sector >= 0], minlength=len(SECTORS))
    covered = np.bincount(sector[(sector >= 0) & inside], minlength=len(SECTORS))
    return covered / np.maximum(total, 1)


def orientation(
    laterality: str | None, bscan_order: str | None, ascan_order: str | None = None
) -> dict[str, str | None]:
    """The anatomical name of each side of the en-face map (B-scan 1 at the top, A-scan 1 on the left), None where
    the file does not say. ``ascan_order`` "left-first" (a DICOM whose rows run towards the patient's right) swaps
    nasal and temporal; None is taken as the vendors' "right-first" (see the module docstring)."""
    top = {"superior-first": "superior", "inferior-first": "inferior"}.get(bscan_order or "")
    bottom = {"superior": "inferior", "inferior": "superior"}.get(top or "")
    right = {"OD": "nasal", "OS": "temporal"}.get(laterality or "")
    if ascan_order == "left-first":
        right = {"nasal": "temporal", "temporal": "nasal"}.get(right or "")
    left = {"nasal": "temporal", "temporal": "nasal"}.get(right or "")
    return {"top": top, "right": right, "bottom": bottom, "left": left}


def etdrs(
    labels: np.ndarray,
    thickness_um: np.ndarray,
    spacing: tuple[float, float, float],
    class_names: tuple[str, ...],
    laterality: str | None = None,
    bscan_order: str | None = None,
    ascan_order: str | None = None,
) -> dict[str, object]:
    """labels (Z, H, W) classes, thickness_um (Z, W) (``thickness_map``), spacing (dz, dy, dx) mm -> the grid's
    figures, JSON-ready: ``fovea`` (1-based B-scan and A-scan, found, note), ``orientation``, ``sectors`` (one dict
    per sector: key, ring, side, anatomical name or None, covered share, A-scans, fluid nL per lesion, mean thickness
    um or None with the measured share) and ``cst_um`` (the central subfield's mean thickness, None where not
    measured)."""
    labels = np.asarray(labels)
    z, _, w = labels.shape
    if thickness_um.shape != (z, w):
        raise ValueError(f"thickness map {thickness_um.shape} does not match the labels' en-face shape {(z, w)}")
    fovea = find_fovea(thickness_um, spacing)
    sector = sector_index((z, w), spacing, fovea)
    covered = coverage((z, w), spacing, fovea)
    names = orientation(laterality, bscan_order, ascan_order)
    voxel_nl = float(np.prod(spacing)) * NL_PER_MM3
    columns = {n: (labels == k).sum(axis=1) for k, n in enumerate(class_names, start=1)}  # (Z, W) voxels per A-scan
    sectors = []
    for i, key in enumerate(SECTORS):
        ring, _, side = key.partition("-")
        inside = sector == i
        measured = inside & np.isfinite(thickness_um)
        share = float(measured.sum() / inside.sum()) if inside.any() else 0.0
        anatomical = "central" if ring == "central" else (f"{ring} {names[side]}" if names[side] else None)
        sectors.append(
            {
                "key": key,
                "ring": ring,
                "side": side or None,
                "name": anatomical,
                "covered": round(float(covered[i]), 4),
                "ascans": int(inside.sum()),
                "fluid_nl": {n: float(c[inside].sum()) * voxel_nl for n, c in columns.items()},
                "thickness_um": float(thickness_um[measured].mean())
                if share >= MIN_MEASURED and covered[i] >= MIN_COVERED
                else None,
                "thickness_measured": round(share, 4),
            }
        )
    return {
        "fovea": {
            "bscan": round(fovea.bscan + 1, 2),
            "ascan": round(fovea.ascan + 1, 2),
            "found": fovea.found,
            "note": fovea.note,
        },
        "orientation": names,
        "sectors": sectors,
        "cst_um": sectors[0]["thickness_um"],
    }
