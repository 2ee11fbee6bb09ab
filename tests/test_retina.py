"""data.retina: boundaries and spacing on B-scans drawn here, with the ILM and RPE rows and the micrometres per row
known. The drawing is this file's own (layers of a healthy macula at their usual reflectivity, speckle, a textured
choroid, the foveal pit, fluid, drusen, shadows, blank columns, and the artefacts of real scans: a mirror image, a
detached hyaloid, a bright band over the vitreous, a dim inner retina, a bright choroid), not the project's generators,
so the estimator is not tuned to them. The last tests check the estimate on the independent phantom ``data.phantom``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from data.phantom import DEVICES as PHANTOM_DEVICES
from data.phantom import make_bscan, resize_bscan
from data.retina import (
    HEALTHY_THICKNESS_UM,
    RetinaBoundaries,
    ScaleEstimate,
    estimate_spacing,
    find_boundaries,
    find_volume_boundaries,
    spacing_from_boundaries,
)

VITREOUS, FLUID = 0.03, 0.06
# the outer retina from Bruch's membrane up, um and reflectivity: RPE, outer segments, IS/OS (ellipsoid) line, inner
# segments, external limiting membrane, then the outer nuclear layer up to the inner retina
OUTER = ((18, 1.0), (27, 0.35), (8, 0.82), (22, 0.3), (3, 0.5), (75, 0.17))
# the inner retina from the OPL up to the ILM: share of its thickness and reflectivity (OPL, INL, IPL, GCL, RNFL)
INNER = ((0.12, 0.5), (0.2, 0.24), (0.25, 0.55), (0.18, 0.4), (0.25, 0.85))
OUTER_UM = sum(t for t, _ in OUTER)
RPE_UM = OUTER[0][0]


@dataclass
class Fluid:
    """A dark lens ``width_mm`` wide centred at ``at`` (share of the scan's width), ``height_um`` high at its centre;
    ``flatness`` 2 is a parabola, higher values keep it near full height over more of its width."""

    at: float
    width_mm: float
    height_um: float
    flatness: float = 2.0

    def profile(self, x_mm: np.ndarray, width_mm: float) -> np.ndarray:
        r = np.abs(x_mm - self.at * width_mm) / (self.width_mm / 2)
        return self.height_um * np.clip(1 - r**self.flatness, 0, None)


@dataclass
class Drawn:
    image: np.ndarray  # (H, W) uint8
    ilm: np.ndarray  # (W,) true rows
    rpe: np.ndarray
    um_per_row: float
    present: np.ndarray  # (W,) bool: columns with a retina drawn (not blank)
    bruch: np.ndarray  # (W,) true rows of Bruch's membrane (the RPE's where nothing lifts it)


def draw_bscan(
    height: int = 496,
    width: int = 512,
    um_per_row: float = 3.87,
    *,
    thickness_um: float = 300.0,
    seed: int = 0,
    pit_at: float | None = 0.5,
    tilt: float = 0.0,
    curve: float = 0.0,
    cyst: Fluid | None = None,
    srf: Fluid | None = None,
    ped: Fluid | None = None,
    drusen: tuple[Fluid, ...] = (),
    shadows: tuple[float, ...] = (),
    shadow_depth: float = 0.4,
    blank: tuple[int, int] = (0, 0),
    speckle: float = 3.0,
    choroid: float = 0.58,
    background: float = 0.0,
    noise: float = 6.0,
    width_mm: float = 6.0,
    inner_gain: float = 1.0,
    sclera_line: float = 0.0,
    mirror: float = 0.0,
    hyaloid_um: float | None = None,
    vitreous_band: float = 0.0,
) -> Drawn:
    """A macular B-scan: tilt in rows per column, curve in rows the edges rise over the centre, fluid lenses that
    thicken the retina (cyst in the inner retina, subretinal fluid above the RPE) or lift the RPE (PED), drusen (domes
    of pale deposit that lift the RPE off Bruch's membrane and thin the photoreceptors over them by half their
    height), vessel shadows at shares of the width, black columns (left, right), speckle shape (low: heavy), the
    choroid's stroma reflectivity, background grey level.

    Artefacts: ``inner_gain`` scales the inner retina's reflectivity (a dim RNFL against a bright RPE),
    ``sclera_line`` draws a bright line of that reflectivity at the choroid-sclera junction, ``mirror`` adds a
    flipped copy of the B-scan at that share of its reflectivity above the retina (the complex-conjugate image of a
    retina near the zero delay), ``hyaloid_um`` draws a thin detached posterior hyaloid that far above the ILM on
    average, ``vitreous_band`` a textured band of that reflectivity over the top fifth of the rows."""
    rng = np.random.default_rng(seed)
    y = np.arange(height, dtype=np.float64)[:, None]
    x = np.arange(width, dtype=np.float64)
    x_mm = (x + 0.5) / width * width_mm
    centre = width / 2
    bruch = 0.58 * height - tilt * (x - centre) - curve * ((x - centre) / centre) ** 2  # rows of Bruch's membrane
    healthy = thickness_um * (1 + 0.03 * np.sin(2 * np.pi * x_mm / width_mm * 0.8 + rng.uniform(0, 6)))
    if pit_at is not None:
        r = np.abs(x_mm - pit_at * width_mm)
        healthy = healthy + 0.12 * thickness_um * np.exp(-0.5 * ((r - 1.0) / 0.45) ** 2)  # parafoveal rim
        healthy = healthy - 0.38 * thickness_um * np.exp(-0.5 * (r / 0.4) ** 2)  # pit
    deposit = sum((d.profile(x_mm, width_mm) for d in drusen), np.zeros(width))
    healthy = healthy - deposit / 2
    # fluid and deposits as insertions (height above Bruch's membrane in tissue coordinates, heights, reflectivity),
    # lowest first
    insertions = []
    if drusen:
        insertions.append((0.0, deposit, 0.3))
    if ped is not None:
        insertions.append((0.0, ped.profile(x_mm, width_mm), FLUID))
    if srf is not None:
        insertions.append((RPE_UM, srf.profile(x_mm, width_mm), FLUID))
    if cyst is not None:
        insertions.append((OUTER_UM + 0.1 * (healthy - OUTER_UM), cyst.profile(x_mm, width_mm), FLUID))
    d = (bruch[None, :] - y) * um_per_row  # (H, W) um above Bruch's membrane
    u = d.copy()  # tissue coordinate: um above Bruch's membrane once the fluid below is taken out
    inserted = np.full(d.shape, np.nan)  # the reflectivity of what was inserted, NaN elsewhere
    lifted = np.zeros(width)
    for base, h, value in insertions:
        start = base + lifted
        inserted = np.where((d >= start) & (d < start + h), value, inserted)
        u = np.where(d >= start + h, u - h, u)
        lifted = lifted + h
    total = healthy + lifted
    ilm = bruch - total / um_per_row
    rpe = bruch - (deposit + (ped.profile(x_mm, width_mm) if ped is not None else 0)) / um_per_row

    refl = np.full(d.shape, VITREOUS)
    top = 0.0
    for t, value in OUTER:
        refl = np.where((u >= top) & (u < top + t), value, refl)
        top += t
    inner = healthy - OUTER_UM
    frac = (u - OUTER_UM) / inner[None, :]
    top = 0.0
    for share, value in INNER:
        refl = np.where((u >= OUTER_UM) & (frac >= top) & (frac < top + share), value * inner_gain, refl)
        top += share
    refl = np.where(np.isnan(inserted), refl, inserted)
    if ped is not None:
        refl = np.where((d < 0) & (d >= -6) & (ped.profile(x_mm, width_mm) > 0), 0.5, refl)  # Bruch's membrane
    # choroid: stroma with dark vessel lumens, choriocapillaris under Bruch's membrane, then the darker sclera
    field_ = ndimage.gaussian_filter(rng.standard_normal(d.shape), (30 / um_per_row, 4))
    field_ /= field_.std()
    stroma = np.where(field_ > 0.5, 0.2, choroid)
    stroma = np.where(d >= -12, choroid + 0.04, stroma)
    into_sclera = 1 / (1 + np.exp((d + 260) / 25))  # 0 in the choroid, 1 in the sclera
    refl = np.where(d < 0, stroma * (1 - into_sclera) + 0.25 * into_sclera, refl)
    refl = np.where(np.abs(d + 260) < 8, np.maximum(refl, sclera_line), refl)
    if ped is not None:
        refl = np.where((d < 0) & (d >= -6) & (ped.profile(x_mm, width_mm) > 0), 0.5, refl)
    for at in shadows:  # a vessel in the RNFL and its shadow below it
        cols = np.abs(x - at * width) < max(2, 0.08 / width_mm * width)
        under = (d < total[None, :] - 25) & cols[None, :]
        refl = np.where(under, refl * shadow_depth, refl)
        refl = np.where((d >= total[None, :] - 25) & (d < total[None, :] - 5) & cols[None, :], 0.9, refl)
    if hyaloid_um is not None:  # a thin membrane, 12 um, wandering between 0.4 and 1.6 times its mean height
        height_um = hyaloid_um * (1 + 0.6 * np.sin(2 * np.pi * x_mm / width_mm * 1.3 + rng.uniform(0, 6)))
        refl = np.where(np.abs(d - total[None, :] - height_um[None, :]) < 6, 0.45, refl)
    # the mirror image: the B-scan flipped about a row above the retina's highest point, the RNFL nearest the retina
    if mirror:
        fold = int(np.floor(ilm.min() - 40 / um_per_row))
        source = np.clip(2 * fold - np.arange(height), 0, height - 1)
        refl = np.where(y < fold, np.maximum(refl, mirror * refl[source]), refl)
    if vitreous_band:  # textured: blobs of +-30%
        texture = ndimage.gaussian_filter(rng.standard_normal(d.shape), (8, 4))
        band = vitreous_band * (1 + 0.3 * texture / texture.std())
        refl = np.where(y < 0.2 * height, np.maximum(refl, band), refl)

    grain = ndimage.gaussian_filter(rng.gamma(speckle, 1 / speckle, d.shape), (0.8, 1.0))
    grain /= grain.mean()
    shown = background + (255 - background) * 0.9 * (refl * grain) ** 0.8 + rng.normal(0, noise, d.shape)
    image = np.clip(shown, 0, 255).astype(np.uint8)
    present = np.ones(width, bool)
    left, right = blank
    image[:, :left] = 0
    present[:left] = False
    if right:
        image[:, width - right :] = 0
        present[width - right :] = False
    return Drawn(image, ilm, rpe, um_per_row, present, bruch)


F = Fluid
BOUNDARY_CASES = {
    "healthy": {},
    "pit off centre, tilted": dict(pit_at=0.35, tilt=0.15),
    "curved, Cirrus-like": dict(height=1024, um_per_row=1.96, curve=120, speckle=2.0, background=30),
    "Topcon-like, no pit": dict(height=885, um_per_row=2.6, pit_at=None, speckle=5.0, background=10),
    "shadows, blank sides": dict(shadows=(0.2, 0.7), shadow_depth=0.3, blank=(30, 20)),
    "big intraretinal cyst": dict(cyst=F(0.5, 3.0, 400)),
    "big cyst, 1024 rows": dict(height=1024, um_per_row=1.96, cyst=F(0.45, 2.5, 400, flatness=4)),
    "subretinal fluid": dict(srf=F(0.5, 2.5, 300)),
    "cyst over subretinal fluid": dict(cyst=F(0.55, 2.0, 250), srf=F(0.45, 2.5, 150), pit_at=0.45),
    "PED": dict(ped=F(0.4, 1.5, 200)),
    # artefacts of real scans: what lies above the retina is weaker than it or thin, what lies below the RPE is dimmer
    "mirror image above the retina": dict(mirror=0.5, curve=60),
    "mirror image, Cirrus-like": dict(height=1024, um_per_row=1.96, mirror=0.5, curve=100, speckle=2.0, background=30),
    "detached hyaloid": dict(hyaloid_um=150),
    "detached hyaloid close, tilted": dict(hyaloid_um=80, tilt=0.1),
    "bright band over the vitreous": dict(vitreous_band=0.35),
    "dim inner retina": dict(inner_gain=0.45),
    "bright choroid over a bright sclera line": dict(choroid=0.65, sclera_line=0.8),
    "bright choroid, Topcon-like": dict(
        height=885, um_per_row=2.6, choroid=0.65, sclera_line=0.8, speckle=5.0, background=10
    ),
}


def boundary_errors(drawn: Drawn, found: RetinaBoundaries, columns: np.ndarray) -> tuple[float, float]:
    """Mean absolute ILM and RPE errors in rows over ``columns`` (bool (W,)) that were also found valid."""
    ok = columns & found.valid
    return float(np.abs(found.ilm - drawn.ilm)[ok].mean()), float(np.abs(found.rpe - drawn.rpe)[ok].mean())


@pytest.mark.parametrize("case", BOUNDARY_CASES)
def test_boundaries_follow_the_drawn_ilm_and_rpe(case):
    drawn = draw_bscan(**BOUNDARY_CASES[case])
    found = find_boundaries(drawn.image)
    assert found.ilm.dtype == found.rpe.dtype == np.float32 and found.valid.dtype == bool
    assert found.ilm.shape == found.rpe.shape == found.valid.shape == (drawn.image.shape[1],)
    assert found.valid[drawn.present].mean() > 0.9, "a retina drawn in every column is found in nearly all"
    assert not found.valid[~drawn.present].any(), "black columns are never valid"
    ilm_error, rpe_error = boundary_errors(drawn, found, drawn.present)
    assert ilm_error < 1.5 and rpe_error < 1.5, f"{case}: mean abs error ILM {ilm_error:.2f}, RPE {rpe_error:.2f} rows"


@pytest.mark.parametrize("case", ["big intraretinal cyst", "big cyst, 1024 rows", "subretinal fluid", "PED"])
def test_fluid_is_taken_neither_for_vitreous_nor_for_choroid(case):
    """Over the fluid itself (where it is at least half its height) the ILM stays on top of the thickened retina and
    the RPE under the subretinal fluid, or on the lifted RPE over a PED."""
    settings = BOUNDARY_CASES[case]
    drawn = draw_bscan(**settings)
    found = find_boundaries(drawn.image)
    fluid = next(settings[k] for k in ("cyst", "srf", "ped") if k in settings)
    width = drawn.image.shape[1]
    x_mm = (np.arange(width) + 0.5) / width * 6.0
    over_fluid = fluid.profile(x_mm, 6.0) > fluid.height_um / 2
    assert found.valid[over_fluid].mean() > 0.9
    ilm_error, rpe_error = boundary_errors(drawn, found, over_fluid)
    assert ilm_error < 2 and rpe_error < 2, f"{case}: over the fluid ILM {ilm_error:.2f}, RPE {rpe_error:.2f} rows"


def test_deep_shadows_are_not_valid():
    drawn = draw_bscan(shadows=(0.2, 0.7), shadow_depth=0.08)
    found = find_boundaries(drawn.image)
    x = np.arange(drawn.image.shape[1])
    shadow = np.zeros(x.size, bool)
    for at in (0.2, 0.7):
        shadow |= np.abs(x - at * x.size) < 4  # the middle of each shadow (about 14 columns wide)
    assert not found.valid[shadow].any()
    assert found.valid[~shadow].mean() > 0.9
    thickness = found.thickness_px
    assert np.isnan(thickness[~found.valid]).all()
    np.testing.assert_allclose(thickness[found.valid], (found.bruch - found.ilm)[found.valid])


SPACING_CASES = {
    "healthy": {},
    "no pit": dict(pit_at=None),
    "cyst at the fovea": dict(cyst=F(0.5, 3.0, 400, flatness=6)),  # +400 um over nearly half of the columns
    "fluid beside the fovea": dict(srf=F(0.72, 3.0, 400, flatness=6), pit_at=0.3),
    "cyst and subretinal fluid": dict(cyst=F(0.5, 3.0, 250), srf=F(0.45, 2.5, 150)),
    "cyst over three quarters": dict(cyst=F(0.5, 4.5, 250, flatness=8)),  # the fluid columns are left out
}
DEVICES = {  # rows, um per row, look
    "Spectralis 496": (496, 3.87, dict(speckle=3.0)),
    "Cirrus 1024": (1024, 1.96, dict(speckle=2.0, background=30)),
    "Topcon 885": (885, 2.6, dict(speckle=5.0, background=10, choroid=0.45)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", SPACING_CASES)
def test_spacing_within_15_percent(device, case):
    height, um_per_row, look = DEVICES[device]
    drawn = draw_bscan(height, 512, um_per_row, seed=3, **look, **SPACING_CASES[case])
    estimate = estimate_spacing(drawn.image)
    assert isinstance(estimate, ScaleEstimate)
    error = estimate.axial_um / um_per_row - 1
    assert abs(error) < 0.15, f"{device}, {case}: {estimate.axial_um:.3f} um/row, truly {um_per_row} ({error:+.1%})"
    assert estimate.lateral_um == pytest.approx(6000 / 512)
    assert estimate.thickness_px == pytest.approx(HEALTHY_THICKNESS_UM / estimate.axial_um)
    fluid = any(k in SPACING_CASES[case] for k in ("cyst", "srf", "ped"))
    assert estimate.columns > (60 if fluid else 200), "the columns holding fluid are left out, the others kept"


def test_fluid_columns_are_flagged():
    """Columns whose retina holds a pocket as dark as the vitreous are flagged (and left out of the scale); the
    healthy columns and the foveal pit are not."""
    cyst = F(0.6, 2.4, 250, flatness=8)
    drawn = draw_bscan(cyst=cyst, pit_at=0.3)
    found = find_boundaries(drawn.image)
    x_mm = (np.arange(drawn.image.shape[1]) + 0.5) / drawn.image.shape[1] * 6.0
    inside = cyst.profile(x_mm, 6.0) > 100
    assert found.fluid[inside].mean() > 0.9
    assert found.fluid[cyst.profile(x_mm, 6.0) == 0].mean() < 0.05
    assert not found.fluid[~found.valid].any()
    assert not find_boundaries(draw_bscan().image).fluid.any()


@pytest.mark.parametrize("device", ["Spectralis 496", "Cirrus 1024"])
def test_drusen_are_measured_to_bruchs_membrane(device):
    """Drusen lift the RPE, and the photoreceptors over them are thinned: the RPE follows the lifted band, Bruch's
    membrane runs beneath the drusen, and the thickness to it gives the spacing of the same retina without drusen."""
    height, um_per_row, look = DEVICES[device]
    drusen = tuple(F(at, 0.45, 100) for at in (0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9))
    drawn = draw_bscan(height, 512, um_per_row, drusen=drusen, **look)
    found = find_boundaries(drawn.image)
    x_mm = (np.arange(512) + 0.5) / 512 * 6.0
    over = sum(d.profile(x_mm, 6.0) for d in drusen) > 50
    assert found.valid[over].mean() > 0.9
    ok = found.valid & over
    assert np.abs(found.rpe - drawn.rpe)[ok].mean() < 2.5, "the RPE is the lifted band"
    assert np.abs(found.bruch - drawn.bruch)[found.valid].mean() < 2.5, "Bruch's membrane runs under the drusen"
    np.testing.assert_allclose(found.thickness_px[found.valid], (found.bruch - found.ilm)[found.valid])
    with_drusen = estimate_spacing(drawn.image).axial_um
    without = estimate_spacing(draw_bscan(height, 512, um_per_row, **look).image).axial_um
    assert with_drusen / without == pytest.approx(1, abs=0.05)


def test_a_thinner_retina_reads_as_a_coarser_spacing():
    """A retina drawn 15% thinner at the same spacing reads as a 15% coarser spacing: the estimate measures the
    retina in rows, whatever the B-scan's height."""
    normal = estimate_spacing(draw_bscan(thickness_um=300).image).axial_um
    thin = estimate_spacing(draw_bscan(thickness_um=255).image).axial_um
    assert thin / normal == pytest.approx(300 / 255, rel=0.03)


def _resize_pil(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))


def _resize_skimage(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    return resize(image, shape, preserve_range=True, anti_aliasing=shape[0] < image.shape[0]).astype(np.uint8)


@pytest.mark.parametrize(
    "height, um_per_row, rows, columns, resize",
    [
        (1024, 1.96, 0.5, 1.0, _resize_pil),  # Cirrus squashed to 512 x 512
        (1024, 1.96, 0.75, 1.0, _resize_skimage),
        (496, 3.87, 1.5, 1.0, _resize_pil),
        (496, 3.87, 0.75, 1.0, _resize_pil),
        (885, 2.6, 0.5, 0.5, _resize_skimage),  # both axes halved
    ],
)
def test_resizing_scales_the_estimate(height, um_per_row, rows, columns, resize):
    drawn = draw_bscan(height, 512, um_per_row, seed=4, cyst=F(0.6, 1.5, 150))
    before = estimate_spacing(drawn.image)
    shape = (round(height * rows), round(512 * columns))
    after = estimate_spacing(resize(drawn.image, shape))
    assert after.axial_um / before.axial_um == pytest.approx(1 / rows, rel=0.1)
    assert after.lateral_um / before.lateral_um == pytest.approx(1 / columns)


GARBAGE = {
    "black": lambda rng: np.zeros((496, 512), np.uint8),
    "flat grey": lambda rng: np.full((496, 512), 128, np.uint8),
    "uniform noise": lambda rng: rng.integers(0, 256, (496, 512)).astype(np.uint8),
    "uniform noise 1024": lambda rng: rng.integers(0, 256, (1024, 512)).astype(np.uint8),
    "float noise": lambda rng: rng.random((256, 256)),
    "speckle alone": lambda rng: np.clip(rng.exponential(60, (885, 512)), 0, 255).astype(np.uint8),
    "a ramp": lambda rng: np.repeat(np.linspace(0, 255, 496)[:, None], 512, axis=1).astype(np.uint8),
}


@pytest.mark.parametrize("kind", GARBAGE)
def test_no_retina_raises(kind):
    image = GARBAGE[kind](np.random.default_rng(0))
    assert not find_boundaries(image).valid.any()
    with pytest.raises(ValueError, match="no retina found"):
        estimate_spacing(image)


def test_too_few_valid_columns_raise():
    drawn = draw_bscan(blank=(160, 170))  # a retina in 35% of the columns
    assert find_boundaries(drawn.image).valid.mean() < 0.4
    with pytest.raises(ValueError, match="has a retina in 3.% of its columns, 40% needed"):
        estimate_spacing(drawn.image)


def test_volume_pools_its_bscans():
    """A volume, a list of B-scans and the B-scans one by one agree; a blank B-scan in the volume is skipped."""
    bscans = [draw_bscan(seed=s, pit_at=p).image for s, p in ((1, 0.5), (2, None))]
    volume = np.stack([*bscans, np.zeros_like(bscans[0])])
    found = find_volume_boundaries(volume)
    assert len(found) == 3 and not found[2].valid.any()
    for one, bscan in zip(found, bscans):
        np.testing.assert_array_equal(one.ilm, find_boundaries(bscan).ilm)
    from_volume, from_list = estimate_spacing(volume), estimate_spacing(bscans)
    assert from_volume == from_list == spacing_from_boundaries(found)
    assert from_volume.axial_um == pytest.approx(3.87, rel=0.15)
    assert from_volume.columns > estimate_spacing(bscans[0]).columns
    assert "um/row" in from_volume.explain() and "\n" not in from_volume.explain()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="one B-scan"):
        find_boundaries(np.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match="a volume"):
        find_volume_boundaries(np.zeros((64, 64)))
    with pytest.raises(ValueError, match="width_mm"):
        estimate_spacing(np.zeros((64, 64)), width_mm=0)
    with pytest.raises(ValueError, match="one width"):
        estimate_spacing([np.zeros((64, 64)), np.zeros((64, 80))])
    with pytest.raises(ValueError, match="one width"):
        spacing_from_boundaries([find_boundaries(np.zeros((64, 64))), find_boundaries(np.zeros((64, 80)))])
    with pytest.raises(ValueError, match="one width"):
        spacing_from_boundaries([])


def test_width_sets_the_lateral_spacing():
    image = draw_bscan().image
    assert estimate_spacing(image, width_mm=3.0).lateral_um == pytest.approx(3000 / 512)


def test_a_1024_by_512_bscan_takes_well_under_half_a_second():
    image = draw_bscan(1024, 512, 1.96, cyst=F(0.5, 2.0, 300)).image
    find_boundaries(image)  # warm up
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        find_boundaries(image)
        seconds.append(time.perf_counter() - start)
    assert min(seconds) < 2.0, f"{min(seconds):.2f} s (the aim is under 0.5 s; 2 s allows a busy machine)"


# The independent phantom (data.phantom): five devices' looks and sizes, mirror images, detached hyaloids, bright
# choroids, fluid of every kind. Its retinas vary in thickness as real eyes do (healthy ones from about 235 to 330 um
# away from the pit), so a spacing read from the thickness is within 15% only for a retina near the norm.
PHANTOM_KINDS = ("healthy", "irf", "srf", "ped", "mixed")
PHANTOM_SEEDS = (0, 1)


@dataclass
class PhantomResult:
    scan: object  # data.phantom.PhantomBScan
    error: float | None  # estimated over true axial spacing, minus 1; None where refused (ValueError)
    found: RetinaBoundaries


@pytest.fixture(scope="module")
def phantom_results() -> dict[tuple[str, str, int], PhantomResult]:
    results = {}
    for d, device in enumerate(PHANTOM_DEVICES):
        for k, kind in enumerate(PHANTOM_KINDS):
            for seed in PHANTOM_SEEDS:
                scan = make_bscan(np.random.default_rng((d, k, seed)), device=device, kind=kind)
                found = find_boundaries(scan.image)
                try:
                    error = spacing_from_boundaries([found]).axial_um / scan.axial_um - 1
                except ValueError:
                    error = None
                results[device, kind, seed] = PhantomResult(scan, error, found)
    return results


def test_phantom_boundaries_are_on_the_retina(phantom_results):
    """On every phantom B-scan the ILM is the top of the retina (not a mirror image, a hyaloid or a band above it)
    and Bruch's membrane is under it (not the bottom of a bright choroid): median errors under 1% of the depth."""
    for key, result in phantom_results.items():
        scan, found = result.scan, result.found
        assert found.valid.mean() > 0.6, f"{key}: a retina in {found.valid.mean():.0%} of the columns"
        ilm = np.median(np.abs(found.ilm - scan.ilm)[found.valid])
        bruch = np.median(np.abs(found.bruch - scan.rpe)[found.valid])
        limit = 0.01 * scan.image.shape[0]
        assert ilm < limit and bruch < limit, f"{key}: median error ILM {ilm:.1f}, Bruch {bruch:.1f} rows"


def test_phantom_spacing_within_15_percent(phantom_results):
    """The estimate on B-scans of known spacing, thick (fluid) retinas included: at least 90% measured (the rest
    refused, never an exception other than ValueError), at least 75% within 15% and the median error under 10%; and
    within 15% on every B-scan whose retina is near the norm (its fluid-free columns within 10% of
    ``HEALTHY_THICKNESS_UM``) with fluid in under half its columns."""
    errors = {key: result.error for key, result in phantom_results.items()}
    measured = [e for e in errors.values() if e is not None]
    assert len(measured) >= 0.9 * len(errors), f"refused: {[k for k, e in errors.items() if e is None]}"
    within = np.mean([abs(e) < 0.15 for e in measured])
    assert within >= 0.75 and np.median(np.abs(measured)) < 0.1, {k: e for k, e in errors.items() if e is not None}
    for key, result in phantom_results.items():
        scan = result.scan
        wet = scan.fluid.any(axis=0)
        thickness_um = (scan.rpe - scan.ilm)[~wet] * scan.axial_um
        if wet.mean() < 0.5 and abs(np.median(thickness_um) / HEALTHY_THICKNESS_UM - 1) < 0.1:
            assert result.error is not None and abs(result.error) < 0.15, f"{key}: {result.error}"


@pytest.mark.parametrize(
    "device, kind",
    [("spectralis", "mixed"), ("cirrus", "healthy"), ("topcon", "srf"), ("optovue", "ped"), ("bioptigen", "irf")],
)
def test_phantom_resizing_scales_the_estimate(phantom_results, device, kind):
    """Phantom B-scans resized along their rows by known factors (x0.5, x0.75, x1.5; 1024 x 512 squashed to
    512 x 512): the estimate follows the true spacing within 10%."""
    scan = phantom_results[device, kind, 0].scan
    height, width = scan.image.shape
    pairs = [(scan, resize_bscan(scan, round(height * f), width)) for f in (0.5, 0.75, 1.5)]
    if height == 1024:
        narrow = resize_bscan(scan, 1024, 512)
        pairs.append((narrow, resize_bscan(narrow, 512, 512)))
    for before, after in pairs:
        ratio = estimate_spacing(after.image).axial_um / estimate_spacing(before.image).axial_um
        truth = after.axial_um / before.axial_um
        assert ratio == pytest.approx(truth, rel=0.1), f"{device} {kind} {after.image.shape}: {ratio:.3f} / {truth:.3f}"
