"""The retina's boundaries in OCT B-scans, and the pixel scale they imply.

``find_boundaries(bscan)`` -> ``RetinaBoundaries(ilm, rpe, valid, bruch, fluid)``: per A-scan (column), the row of the
inner limiting membrane (the top of the retina under the vitreous) and of the outer retinal boundary (the bottom of the
bright RPE band, above the choroid), which columns were found with confidence, Bruch's membrane (the RPE's lower
envelope, under drusen) and which columns hold fluid.
``estimate_spacing(bscans)`` -> ``ScaleEstimate``: micrometres per row from the retina's thickness in rows against the
normative thickness of a healthy macula, micrometres per column from the assumed scan width
(``spacing_from_boundaries`` does the same from boundaries already found).

Method (after Chiu et al. 2010, "Automatic segmentation of seven retinal layers in SDOCT images congruent with expert
manual segmentation", Opt Express 18:19413): smooth, take vertical gradients, and find each boundary as a minimum-cost
path across the columns (``skimage.graph.MCP``), first on a coarse copy of the B-scan (about 250 x 256, so speckle is
averaged and the search is cheap), then at full resolution inside a narrow strip around the coarse path. Priors pick
the right edge among the many layer edges, keep fluid from being taken for the vitreous or the choroid, and keep the
artefacts of real scans (a mirror image of the retina folded in from beyond the zero delay, a detached posterior
hyaloid, a bright band over the vitreous, a bright choroid, a bright choroid-sclera junction) from being taken for
the retina:

- ILM: a dark-to-bright edge with vitreous-dark rows just above it, thick tissue (not a thin membrane) within ~0.2 mm
  beneath it, and nothing anywhere above it nearly as bright as that tissue (``ABOVE_ILM_RATIO``). The edge under a
  cyst or subretinal fluid has the inner retina above it, about as bright as the retina beneath, so it is not the
  ILM however large the fluid; a mirror image, a band over the vitreous or a hyaloid above the ILM is much weaker than
  the retina or thin, so it does not hide the ILM, and its own top edge, with weak tissue below, scores far less. The
  IS/OS line under a dim inner retina has the outer nuclear layer, not the vitreous, just above it.
- RPE: a thin bright band (brighter than the rows both above and below it, so not the bright side of an edge), weighed
  by its brightness, with nothing as bright below it (``BELOW_RPE_RATIO``; the structure below is taken over ~0.3 mm
  wide so the choroid's bright stroma is averaged with its dark vessels). The IS/OS line, the RNFL and the retina over
  any fluid have the RPE below them, as bright; the choroid below the RPE is dimmer, if not by much; a faint band at
  the bottom of the B-scan (the choroid-sclera junction, a mirror image) has nothing below it but is weaker than the
  RPE. The band is smoothed along a few slopes so the steep side of a detached RPE stays a band. The boundary is then
  the first bright-to-dark edge beneath the band's brightest rows. Under a pigment epithelial detachment the lifted RPE
  is the band, so the boundary follows the lifted RPE's bottom, not Bruch's membrane under the detachment.
- Bruch's membrane: drusen lift the RPE in domes up to ~0.5 mm wide, the photoreceptors over them thinned; the
  membrane under them is seldom visible, and is taken as the RPE's lower envelope (``BRUCH_SPAN_MM``). The thickness
  is ILM to Bruch's membrane, as in the normative studies: over drusen it is not read short, and a PED, wider than
  the span, does not thicken the retina.
- Fluid: columns whose retina darkens nearly to the vitreous level (``FLUID_LEVEL``) are thickened, and left out of the
  scale while enough dry columns are left.

A column is ``valid`` where both boundaries stand out: tissue brighter than the vitreous under the ILM, an RPE band
brighter than the choroid under it and not dimmed by a shadow to a fraction of the B-scan's usual RPE, a plausible
thickness, and not a blank column. A B-scan with no structure that survives smoothing (blank, noise) has none.

Filter sizes are set from the B-scan's height, taking the scan depth to be about 2 mm (``NOMINAL_DEPTH_UM``; Spectralis
496 rows x 3.87 um, Cirrus 1024 x 1.96 um, Topcon 885 x 2.6 um all span 1.9-2.3 mm), and from its width taken as
6 mm: a B-scan resized along its rows gives boundaries resized by the same factor. The spacing itself is never taken
from this nominal depth. Hand-written parts and why: the strip flattening and the sub-pixel peak (no library does
either for a path), the priors (specific to OCT), the shear for the sloped smoothing (whole-column integer shifts by
indexing, exactly undone, cheaper than an interpolating warp).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.graph import MCP

# Normative ILM to Bruch's membrane thickness of the healthy macula: Spectralis studies (e.g. Grover et al. 2009, Am J
# Ophthalmol 148:266, "Normative data for macular thickness by high-definition spectral-domain OCT"; Chan et al. 2006,
# Arch Ophthalmol 124:193, for the time-domain Stratus) report about 270 um in the central 1 mm, 330-350 um in the
# inner ETDRS ring (1-3 mm) and 290-320 um in the outer ring (3-6 mm). The statistic below (a low quantile of the
# thickness outside the foveal pit on a 6 mm line) falls mostly on the outer ring, hence about 300 um.
HEALTHY_THICKNESS_UM = 300.0
# The foveal pit is about 1-1.5 mm wide: the columns within this radius of the thinnest point are left out.
PIT_RADIUS_MM = 0.75
# Well below the median: with fluid over half of the columns and the pit's 1.5 mm left out, a third of the columns
# left are healthy, and this quantile still falls among them; above the lowest values, so that what is left of the
# pit's slope and a few wrong columns do not decide.
THICKNESS_QUANTILE = 0.2
# Drusen lift the RPE off Bruch's membrane in domes up to about 0.5 mm wide (Bruch's membrane itself, under them, is
# seldom visible): the membrane is taken as the RPE's lower envelope over this span. A wider lift (a pigment
# epithelial detachment) is followed, so the retina over it is measured to its lifted RPE.
BRUCH_SPAN_MM = 0.6
# Fluid (cysts, subretinal fluid) is nearly as dark as the vitreous, and darker than the darkest layer of a dry column
# (the outer nuclear layer): a column holds fluid where its retina darkens to within FLUID_LEVEL of the way from the
# vitreous level up to the retina's brightest, or to within FLUID_RELATIVE of the way from the vitreous level up to
# the darkest layer of the B-scan's usual column (its DRY_PERCENTILE percentile: dry even with fluid over most
# columns). Its thickness is not the healthy one. A dry column taken for fluid only leaves fewer columns to measure.
FLUID_LEVEL = 0.15
FLUID_RELATIVE = 0.6
DRY_PERCENTILE = 80
# The share of a B-scan's columns that must be left outside the pit and free of fluid for the fluid columns to be left
# out: below it (fluid nearly everywhere, or a dark outer nuclear layer taken for fluid) all the columns are used.
MIN_DRY_SHARE = 0.05
# The share of a B-scan's columns that must hold a confident retina before its thickness is used.
MIN_VALID_SHARE = 0.4
# Scan depth assumed only to size the filters (see the module docstring); never used as the spacing itself.
NOMINAL_DEPTH_UM = 2000.0
NOMINAL_WIDTH_MM = 6.0
COARSE_ROWS = 250  # rows of the coarse copy the first search runs on (about 8 um each at the nominal depth)
COARSE_COLUMNS = 256

# A structure's contrast after heavy smoothing, over the raw image's range, below which no retina is seen: speckle and
# noise average out, the retina against the vitreous does not.
MIN_STRUCTURE_CONTRAST = 0.3
MIN_EDGE_CONTRAST = 0.12  # ILM step (tissue below minus vitreous above) and RPE step, in units of the image's range
MIN_RPE_BRIGHTNESS = 0.35  # the RPE band's brightness over the B-scan's median RPE brightness: lower is a deep shadow
MIN_THICKNESS_UM = 60.0  # nominal; thinner is two edges of the same band, not a retina
# What lies above the ILM (the brightest thick structure anywhere above it) over the tissue beneath it: up to the first
# value the edge is the ILM, from the second on it is not. The inner retina over a cyst or subretinal fluid is about as
# bright as the retina beneath the fluid; a mirror image, a vitreous band or a detached hyaloid is much weaker.
ABOVE_ILM_RATIO = (0.55, 0.85)
# The brightest the rows just above the ILM may be on average (units of the image's range, bright tissue = 1): vitreous
# and fluid stay well below it, the outer nuclear layer above the IS/OS line does not.
VITREOUS_MAX = 0.5
# The brightest structure below the RPE band (the choroid, smoothed across ~0.3 mm) over the band's brightness: at
# this ratio or below the band is fully the RPE; at 1 (as bright below) not at all.
BELOW_RPE_RATIO = 0.8

# Minimal-path moves: one column to the right and up to two rows up or down, or one row up or down in the same column
# (Chiu et al.'s 8-neighbour graph without the moves back to the left, so the path has a row in every column, and with
# the steeper slopes a foveal pit, a PED or a cyst's dome need at the coarse scale). A move costs its target pixel.
_PATH_OFFSETS = ((-2, 1), (-1, 1), (0, 1), (1, 1), (2, 1), (-1, 0), (1, 0))
_MIN_COST = 1e-5  # Chiu et al.'s w_min: keeps every step's cost positive
# Slopes (coarse rows per coarse column) along which the RPE band is smoothed: up to the side of a tall, narrow PED
_BAND_SLOPES = (-2.0, -1.25, -0.6, 0.0, 0.6, 1.25, 2.0)


@dataclass
class RetinaBoundaries:
    """Per column of one B-scan: ``ilm`` and ``rpe`` rows (float32 (W,), sub-pixel, 0 = top), ``valid`` (bool (W,))
    where both were found with confidence (not blank columns, not deep shadows), and ``bruch``, Bruch's membrane
    (float32 (W,)): the RPE's lower envelope, which runs under drusen where the RPE is lifted over them, and ``fluid``
    (bool (W,)): valid columns whose retina holds a pocket nearly as dark as the vitreous (a cyst, subretinal fluid),
    so is thickened. Rows of invalid columns are the minimal path's guess between valid ones, NaN where the B-scan
    shows no retina at all."""

    ilm: np.ndarray
    rpe: np.ndarray
    valid: np.ndarray
    bruch: np.ndarray
    fluid: np.ndarray

    @property
    def thickness_px(self) -> np.ndarray:
        """(W,) float32 rows from the ILM to Bruch's membrane (the retinal thickness of the normative studies), NaN
        where not valid."""
        return np.where(self.valid, self.bruch - self.ilm, np.nan).astype(np.float32)


@dataclass
class ScaleEstimate:
    """Micrometres per row (``axial_um``) and per column (``lateral_um``) estimated from the retina, with the robust
    thickness in rows (``thickness_px``) and the number of columns (``columns``) it came from."""

    axial_um: float
    lateral_um: float
    thickness_px: float
    columns: int
    width_mm: float = NOMINAL_WIDTH_MM

    def explain(self) -> str:
        return (
            f"estimated spacing {self.axial_um:.2f} um/row: retina {self.thickness_px:.1f} rows thick "
            f"({THICKNESS_QUANTILE:.0%} quantile of {self.columns} columns outside the foveal pit and fluid) taken as "
            f"{HEALTHY_THICKNESS_UM:.0f} um; {self.lateral_um:.2f} um/column assuming a {self.width_mm:g} mm wide scan"
        )


def find_boundaries(bscan: np.ndarray) -> RetinaBoundaries:
    """ILM, outer RPE boundary, Bruch's membrane and fluid columns of one B-scan (H, W), uint8 or float, inner retina at
    the top. A B-scan with no retina in it (blank, noise) gives ``valid`` all False."""
    image = np.asarray(bscan)
    if image.ndim != 2 or min(image.shape) < 16:
        raise ValueError(
            f"find_boundaries expects one B-scan (H, W) of at least 16 x 16 pixels, got shape {image.shape}"
        )
    image = np.nan_to_num(image.astype(np.float32))
    height, width = image.shape
    rows_per_um = height / NOMINAL_DEPTH_UM
    columns_per_mm = width / NOMINAL_WIDTH_MM

    # coarse copy: block means, then the searches that must see the whole B-scan
    fy, fx = max(1, round(height / COARSE_ROWS)), max(1, round(width / COARSE_COLUMNS))
    hc, wc = height // fy, width // fx
    blocks = image[: hc * fy, : wc * fx].reshape(hc, fy, wc, fx).mean(axis=(1, 3))
    coarse_rows_per_um = rows_per_um / fy
    coarse = ndimage.gaussian_filter(blocks, (max(1.0, 8 * coarse_rows_per_um), 1.5))

    # blank columns (black padding, columns outside the scan): nothing brighter than the B-scan's dark level
    raw_low, raw_high = np.percentile(image, [0.5, 99.5])
    column_peak = ndimage.gaussian_filter1d(image, max(1.0, 4 * rows_per_um), axis=0).max(axis=0)
    blank = column_peak - np.percentile(coarse, 5) < 0.15 * max(raw_high - raw_low, 1e-6)  # (W,)
    blank_blocks = blank[: wc * fx].reshape(wc, fx).all(axis=1)
    if blank_blocks.all():
        return _nothing_found(width)
    low, high = np.percentile(coarse[:, ~blank_blocks], [5, 99.5])
    if high - low < MIN_STRUCTURE_CONTRAST * (raw_high - raw_low) or high - low <= 1e-6:
        return _nothing_found(width)  # no structure that survives smoothing: noise or a flat image
    scaled = (coarse - low) / (high - low)

    gap = max(1, round(16 * coarse_rows_per_um))  # rows between an edge and the region its prior looks at
    thick_sigma, tissue_reach = max(1.0, 15 * coarse_rows_per_um), max(2, round(200 * coarse_rows_per_um))
    ilm_coarse = _minimal_path(1 - _ilm_score(scaled, gap, thick_sigma, tissue_reach))
    # the RPE score sees a band continuous over ~0.05 mm; what lies below it is judged over ~0.3 mm, where the choroid's
    # bright stroma is averaged with its dark vessels
    wide = ndimage.gaussian_filter1d(scaled, 0.15 * columns_per_mm / fx, axis=1)
    smoothing = (max(0.5, 4 * coarse_rows_per_um), 0.05 * columns_per_mm / fx)
    half_width, gap = max(1, round(20 * coarse_rows_per_um)), max(1, round(30 * coarse_rows_per_um))
    rpe_score = _rpe_score((blocks - low) / (high - low), wide, smoothing, half_width, gap)
    below_ilm = np.arange(hc)[:, None] > ilm_coarse[None, :] + MIN_THICKNESS_UM * coarse_rows_per_um
    rpe_coarse = _minimal_path(1 - np.where(below_ilm, rpe_score, 0))

    # full resolution, in strips around the coarse paths
    sigma_y = max(0.5, 3 * rows_per_um)
    sigma_x = max(0.5, 0.03 * columns_per_mm)
    fine = (ndimage.gaussian_filter(image, (sigma_y, sigma_x)) - low) / (high - low)
    gradient = ndimage.gaussian_filter1d(fine, sigma_y, axis=0, order=1)  # > 0 dark above bright below
    columns = np.clip(np.arange(width) // fx, 0, wc - 1)
    reach = 2 * fy + max(2, round(8 * rows_per_um))
    # the ILM: the dark-to-bright edge with tissue beneath it, not the top of a membrane lying just above the retina
    # (an epiretinal membrane, an attached hyaloid) with a dark cleft beneath it
    span = max(2, round(20 * rows_per_um))
    beneath = _shift(ndimage.uniform_filter1d(fine, span, axis=0, mode="nearest"), -(span // 2 + 1))
    ilm = _refine(gradient * np.clip(beneath, 0, 1), ilm_coarse[columns] * fy + (fy - 1) / 2, reach, reach)
    # the RPE band's brightest rows, then the first bright-to-dark edge beneath them: the bottom of the band, not the
    # edges deeper in the choroid (choriocapillaris to vessel lumen)
    rpe_peak = _refine(fine, rpe_coarse[columns] * fy + (fy - 1) / 2, reach, reach)
    down = max(3, round(40 * rows_per_um))
    nearness = np.exp(-0.5 * (np.arange(-1, down + 1) / max(1.0, 12 * rows_per_um)) ** 2)
    rpe = _refine(-gradient, rpe_peak, 1, down, nearness)

    valid = _confident(fine, ilm, rpe, blank, rows_per_um)
    bruch = _lower_envelope(rpe, valid, max(1, round(BRUCH_SPAN_MM * columns_per_mm)))

    # fluid, on the coarse copy (speckle averaged), per block of columns
    def blocked(rows: np.ndarray) -> np.ndarray:  # (W,) full-resolution rows -> (wc,) coarse rows
        return (rows[: wc * fx].reshape(wc, fx).mean(axis=1) - (fy - 1) / 2) / fy

    valid_blocks = valid[: wc * fx].reshape(wc, fx).all(axis=1)
    fluid = _fluid_columns(scaled, blocked(ilm), blocked(rpe), valid_blocks, coarse_rows_per_um)[columns] & valid
    return RetinaBoundaries(ilm.astype(np.float32), rpe.astype(np.float32), valid, bruch.astype(np.float32), fluid)


def find_volume_boundaries(volume: np.ndarray) -> list[RetinaBoundaries]:
    """``find_boundaries`` of every B-scan of a volume (Z, H, W)."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"find_volume_boundaries expects a volume (Z, H, W), got shape {volume.shape}")
    # B-scan by B-scan in threads: the filters (SciPy) and the path search (scikit-image) release the GIL for most
    # of their time; 1.7x on 2 cores for a 128-B-scan cube
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(find_boundaries, volume))


def estimate_spacing(bscans: np.ndarray | Sequence[np.ndarray], width_mm: float = NOMINAL_WIDTH_MM) -> ScaleEstimate:
    """Micrometres per row and per column of B-scans (H, W), a volume (Z, H, W) or a list of B-scans of one size.

    Axial: ``HEALTHY_THICKNESS_UM`` over the ``THICKNESS_QUANTILE`` quantile of the thickness in rows (ILM to Bruch's
    membrane), pooled over the B-scans' valid columns outside the foveal pit (the columns within ``PIT_RADIUS_MM`` of
    each B-scan's thinnest point) and, where at least ``MIN_DRY_SHARE`` of a B-scan's columns are left without it,
    free of fluid. Lateral: nothing in the image gives it reliably, so the B-scan is taken to span ``width_mm``
    (the common 6 mm macular line). Raises ``ValueError`` when no B-scan shows a retina over ``MIN_VALID_SHARE`` of its
    columns."""
    if width_mm <= 0:
        raise ValueError(f"width_mm must be positive, got {width_mm}")
    if isinstance(bscans, np.ndarray) and bscans.ndim == 2:
        stack = [bscans]
    else:
        stack = [np.asarray(b) for b in bscans]
    if not stack or any(b.ndim != 2 for b in stack):
        shapes = [b.shape for b in stack] if stack else "nothing"
        raise ValueError(f"estimate_spacing expects a B-scan (H, W), a volume (Z, H, W) or B-scans, got {shapes}")
    width = stack[0].shape[1]
    if any(b.shape[1] != width for b in stack):
        raise ValueError(f"estimate_spacing expects B-scans of one width, got {sorted({b.shape[1] for b in stack})}")
    return spacing_from_boundaries([find_boundaries(bscan) for bscan in stack], width_mm, stack[0].shape)


def spacing_from_boundaries(
    boundaries: Sequence[RetinaBoundaries], width_mm: float = NOMINAL_WIDTH_MM, shape: tuple[int, ...] | None = None
) -> ScaleEstimate:
    """``estimate_spacing`` from boundaries already found (``find_boundaries`` of B-scans of one width); ``shape``, the
    B-scans' (H, W), only names them in the error raised when no retina is found."""
    if width_mm <= 0:
        raise ValueError(f"width_mm must be positive, got {width_mm}")
    widths = sorted({found.ilm.size for found in boundaries})
    if len(widths) != 1:
        raise ValueError(f"spacing_from_boundaries expects the boundaries of B-scans of one width, got {widths}")
    width = widths[0]
    pit_columns = PIT_RADIUS_MM / width_mm * width
    kept: list[np.ndarray] = []
    shares = []
    for found in boundaries:
        thickness = found.thickness_px
        valid = np.isfinite(thickness)
        shares.append(valid.mean())
        if valid.mean() >= MIN_VALID_SHARE:
            outside_pit = valid & (np.abs(np.arange(width) - _thinnest(thickness, width_mm)) > pit_columns)
            dry = outside_pit & ~found.fluid
            kept.append(thickness[dry if dry.sum() >= MIN_DRY_SHARE * width else outside_pit])
    if not kept:
        raise ValueError(
            f"no retina found: the best of {len(boundaries)} B-scan(s) of shape {shape or ('?', width)} has a retina "
            f"in {max(shares):.0%} of its columns, {MIN_VALID_SHARE:.0%} needed; is this an OCT B-scan with the inner "
            "retina at the top?"
        )
    pooled = np.concatenate(kept)
    thickness_px = float(np.quantile(pooled, THICKNESS_QUANTILE))
    return ScaleEstimate(
        axial_um=HEALTHY_THICKNESS_UM / thickness_px,
        lateral_um=width_mm * 1000 / width,
        thickness_px=thickness_px,
        columns=int(pooled.size),
        width_mm=width_mm,
    )


def _nothing_found(width: int) -> RetinaBoundaries:
    nan = np.full(width, np.nan, dtype=np.float32)
    none = np.zeros(width, dtype=bool)
    return RetinaBoundaries(nan, nan.copy(), none, nan.copy(), none.copy())


def _ilm_score(scaled: np.ndarray, gap: int, thick_sigma: float, reach: int) -> np.ndarray:
    """(H, W) in [0, 1]: a dark-to-bright edge with vitreous-dark rows just above it and thick tissue beneath it, and
    nothing anywhere above it nearly as bright as that tissue. ``thick_sigma`` (rows) dims thin lines (a detached
    hyaloid) against thick layers; ``reach`` rows beneath the edge are searched for the tissue, and ``reach // 4``
    rows above it must be dark."""
    edge = np.clip(ndimage.sobel(scaled, axis=0), 0, None)
    # just above: the mean of the rows y - gap - reach // 4 .. y - gap, dark over the ILM and over fluid, not over the
    # ONL (so the IS/OS line under a dim inner retina is not taken), and little raised by a thin hyaloid
    span = max(2, reach // 4)
    local = _shift(ndimage.uniform_filter1d(scaled, span, axis=0, mode="nearest"), gap + span // 2)
    darkness = np.clip(1 - local / VITREOUS_MAX, 0, 1) ** 2
    thick = ndimage.gaussian_filter1d(scaled, thick_sigma, axis=0)
    # the brightest thick tissue in rows y + gap .. y + gap + reach: the inner retina, or at the fovea its outer layers
    window = ndimage.maximum_filter1d(thick, reach, axis=0, mode="nearest")
    tissue = np.clip(_shift(window, -(reach // 2 + gap)), 0, None)
    above = _shift(np.maximum.accumulate(thick, axis=0), gap)  # the brightest of the rows down to y - gap
    ratio = above / np.maximum(tissue, 1e-3)
    clear = np.clip((ABOVE_ILM_RATIO[1] - ratio) / (ABOVE_ILM_RATIO[1] - ABOVE_ILM_RATIO[0]), 0, 1)
    return _unit(edge * darkness * clear * np.clip(tissue, 0, 1))


def _rpe_score(
    scaled: np.ndarray, wide: np.ndarray, smoothing: tuple[float, float], half_width: int, gap: int
) -> np.ndarray:
    """(H, W) in [0, 1]: a thin bright band (brighter than the rows ``half_width`` above and below it: not the bright
    side of an edge), weighed by its brightness, with nothing as bright below it in ``wide`` (the B-scan smoothed
    across many columns) in all the rows from ``gap`` beneath (see ``BELOW_RPE_RATIO``). ``scaled`` is smoothed by
    ``smoothing`` (rows, columns) along each of a few slopes and the best slope kept, so the steep sides of a detached
    RPE stay a band."""
    below = _shift(np.maximum.accumulate(wide[::-1], axis=0)[::-1], -gap)
    best = np.zeros_like(scaled)
    for slope in _BAND_SLOPES:
        smooth = _shear(ndimage.gaussian_filter(_shear(scaled, slope), smoothing), -slope)
        band = np.minimum(smooth - _shift(smooth, half_width), smooth - _shift(smooth, -half_width))
        # a band with as bright a structure below it is the IS/OS line or the inner retina; one with a weaker structure
        # below it may still be the RPE over a bright choroid, and is weighed by its own brightness, so a faint band
        # at the bottom of the B-scan (the choroid-sclera junction, a mirror image) does not win by having nothing below
        lower = np.clip((1 - below / np.maximum(smooth, 1e-3)) / (1 - BELOW_RPE_RATIO), 0, 1)
        best = np.maximum(best, np.clip(band, 0, None) * np.clip(smooth, 0, 1) ** 2 * lower)
    return _unit(best)


def _shear(image: np.ndarray, slope: float) -> np.ndarray:
    """``image`` (H, W) with column x moved up by ``slope * x`` rows (rounded; edge rows repeated): a line of that slope
    becomes horizontal. ``_shear(_shear(a, s), -s)`` is ``a`` away from the top and bottom rows."""
    height, width = image.shape
    offsets = np.round(slope * (np.arange(width) - width / 2)).astype(int)
    rows = np.clip(np.arange(height)[:, None] + offsets[None, :], 0, height - 1)
    return image[rows, np.arange(width)[None, :]]


def _shift(image: np.ndarray, rows: int) -> np.ndarray:
    """``image`` moved down by ``rows`` (up if negative): out[y] = in[y - rows], zeros where that is outside."""
    out = np.zeros_like(image)
    if rows >= 0:
        out[rows:] = image[: image.shape[0] - rows]
    else:
        out[:rows] = image[-rows:]
    return out


def _unit(score: np.ndarray) -> np.ndarray:
    top = np.percentile(score, 99.5)
    return np.clip(score / top, 0, 1) if top > 0 else np.zeros_like(score)


def _minimal_path(cost: np.ndarray) -> np.ndarray:
    """(W,) float row of the minimum-cost path from the first column to the last (any row in each), the mean row where
    it moves along a column."""
    height, width = cost.shape
    mcp = MCP(np.asarray(cost, dtype=np.float64) + _MIN_COST, offsets=_PATH_OFFSETS)
    starts = [(r, 0) for r in range(height)]
    ends = [(r, width - 1) for r in range(height)]
    cumulative, _ = mcp.find_costs(starts, ends, find_all_ends=False)  # Dijkstra stops at the cheapest end
    path = np.asarray(mcp.traceback((int(np.argmin(cumulative[:, -1])), width - 1)))
    counts = np.bincount(path[:, 1], minlength=width)
    return np.bincount(path[:, 1], weights=path[:, 0], minlength=width) / counts


def _refine(score: np.ndarray, guess: np.ndarray, up: int, down: int, weight: np.ndarray | None = None) -> np.ndarray:
    """(W,) rows of the best path through ``score`` (H, W) within ``guess - up .. guess + down`` rows per column: the
    strip is cut out and flattened (each column shifted to its guess), weighted by ``weight`` (up + down + 1,) per row
    of the strip, searched, and shifted back."""
    height, width = score.shape
    start = np.round(guess).astype(int) - up
    rows = np.clip(start[None, :] + np.arange(up + down + 1)[:, None], 0, height - 1)  # (strip, W)
    strip = score[rows, np.arange(width)[None, :]]
    if weight is not None:
        strip = strip * weight[:, None]
    # sub-pixel: the path's row, moved to the peak of a parabola through the score at the rows beside it
    path = np.clip(np.round(_minimal_path(1 - _unit(strip))).astype(int), 1, strip.shape[0] - 2)
    left, mid, right = (strip[path + d, np.arange(width)] for d in (-1, 0, 1))
    curvature = left - 2 * mid + right
    shift = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1), 0)
    return start + path + np.clip(shift, -0.5, 0.5)


def _confident(fine: np.ndarray, ilm: np.ndarray, rpe: np.ndarray, blank: np.ndarray, rows_per_um: float) -> np.ndarray:
    """(W,) bool: columns whose ILM and RPE both stand out: tissue brighter than the vitreous below the ILM, a bright
    band above the RPE boundary and darker choroid below it, not in a deep shadow, and a plausible thickness."""
    height, width = fine.shape
    cols = np.arange(width)
    reach = max(2, round(15 * rows_per_um))

    def rows(boundary: np.ndarray, begin: int, end: int) -> np.ndarray:  # (end - begin, W) values beside a boundary
        at = np.clip(np.round(boundary).astype(int)[None, :] + np.arange(begin, end)[:, None], 0, height - 1)
        return fine[at, cols[None, :]]

    ilm_step = rows(ilm, 1, 1 + reach).mean(axis=0) - rows(ilm, -reach, 0).mean(axis=0)
    band = rows(rpe, -reach - 1, 0).max(axis=0)  # the band's brightest row
    rpe_step = band - rows(rpe, 2, 2 + 3 * reach).mean(axis=0)  # over the choroid's stroma and vessels together
    thick = rpe - ilm > MIN_THICKNESS_UM * rows_per_um
    ok = ~blank & thick & (ilm_step > MIN_EDGE_CONTRAST) & (rpe_step > MIN_EDGE_CONTRAST)
    if ok.any():
        ok &= band > MIN_RPE_BRIGHTNESS * np.median(band[ok])
    return ok


def _fluid_columns(
    scaled: np.ndarray, ilm: np.ndarray, rpe: np.ndarray, valid: np.ndarray, rows_per_um: float
) -> np.ndarray:
    """(W,) bool: columns where the retina (``ilm`` to ``rpe``, (W,) rows of ``scaled`` (H, W)) darkens nearly to the
    vitreous level (measured over the valid columns just above the ILM): see ``FLUID_LEVEL``."""
    height, width = scaled.shape
    rows = np.arange(height)[:, None]
    margin = 20 * rows_per_um
    retina = (rows > ilm[None, :] + margin) & (rows < rpe[None, :] - margin) & valid[None, :]
    vitreous = (rows < ilm[None, :] - 30 * rows_per_um) & (rows > ilm[None, :] - 90 * rows_per_um) & valid[None, :]
    if not retina.any() or not vitreous.any():
        return np.zeros(width, dtype=bool)
    level = np.median(scaled[vitreous])
    darkest = np.where(retina, scaled, np.inf).min(axis=0)
    usual = np.percentile(darkest[valid], DRY_PERCENTILE)
    return (darkest < level + FLUID_LEVEL * (np.percentile(scaled[retina], 99) - level)) | (
        darkest < level + FLUID_RELATIVE * (usual - level)
    )


def _lower_envelope(rpe: np.ndarray, valid: np.ndarray, span: int) -> np.ndarray:
    """(W,) rows of Bruch's membrane: the RPE (W,) with every rise narrower than ``span`` columns bridged (a grey
    closing: the lowest row the RPE reaches on both sides), over the valid columns with the others interpolated. The
    RPE is first median-filtered over a tenth of the span, so the envelope does not ride on its noise."""
    if not valid.any():
        return rpe.copy()
    columns = np.arange(rpe.size)
    filled = np.interp(columns, columns[valid], rpe[valid])
    steady = ndimage.median_filter(filled, size=max(1, span // 10), mode="nearest")
    # continued past the ends along its slope (odd reflection), so a slope at an end is no valley to fill
    padded = np.pad(steady, span, mode="reflect", reflect_type="odd")
    return ndimage.grey_closing(padded, size=span)[span:-span]


def _thinnest(thickness: np.ndarray, width_mm: float) -> int:
    """Column of the thinnest retina, smoothed over about 0.5 mm so one bad column does not decide."""
    valid = np.isfinite(thickness)
    filled = np.interp(np.arange(thickness.size), np.flatnonzero(valid), thickness[valid])
    size = max(3, round(thickness.size / width_mm * 0.5))
    return int(np.argmin(ndimage.median_filter(filled, size=size, mode="nearest")))
