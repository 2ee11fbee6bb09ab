"""The ETDRS grid (metrics.etdrs): fovea, sectors, covered shares, thickness and fluid per sector on hand-made maps
with known answers, and on generated volumes against the generator's own retina; the follow-up visit generator."""

from __future__ import annotations

import numpy as np
import pytest

from data.retina import find_volume_boundaries
from data.synthetic import _patient, generate_visits, generate_volume, retina_surfaces
from metrics.etdrs import Fovea, coverage, etdrs, find_fovea, orientation, sector_index, thickness_map
from metrics.quantify import SECTORS, quantify, quantify_row

NAMES = ("REA", "SRF", "PED")


def pit_map(z: int = 81, w: int = 81, centre=(40, 40), step: float = 0.1) -> np.ndarray:
    """Thickness 250 um within 0.5 mm of ``centre`` (B-scan, A-scan), 350 um elsewhere: a 100 um deep pit."""
    zz, xx = np.mgrid[:z, :w]
    r = np.hypot((zz - centre[0]) * step, (xx - centre[1]) * step)
    return np.where(r < 0.5, 250.0, 350.0).astype(np.float32)


SPACING = (0.1, 0.002, 0.1)  # mm: 0.1 mm between B-scans and A-scans, 2 um rows; a voxel is 2e-5 mm^3 = 0.02 nL


def test_the_fovea_is_found_at_the_pit_and_the_cst_is_its_thickness():
    thickness = pit_map(centre=(38, 43))  # 0.2 mm above and 0.3 mm right of the scan's centre
    fovea = find_fovea(thickness, SPACING)
    assert fovea.found and (fovea.bscan, fovea.ascan) == (38, 43)
    labels = np.zeros((81, 8, 81), np.uint8)
    grid = etdrs(labels, thickness, SPACING, NAMES)
    assert grid["fovea"] == {"bscan": 39, "ascan": 44, "found": True, "note": fovea.note}
    assert grid["cst_um"] == 250.0  # every A-scan within 0.5 mm is 250 um
    assert [s["thickness_um"] for s in grid["sectors"][1:]] == [350.0] * 8


def test_without_a_pit_the_grid_is_centred_on_the_scan_and_says_so():
    fovea = find_fovea(np.full((81, 81), 300.0, np.float32), SPACING)
    assert not fovea.found and (fovea.bscan, fovea.ascan) == (40, 40)
    assert "no foveal pit" in fovea.note and "centred on the scan" in fovea.note
    # a shallow dip (10 um) is no pit either
    shallow = pit_map() * 0 + 300 - (pit_map() < 300) * 10
    assert not find_fovea(shallow.astype(np.float32), SPACING).found


def test_fluid_is_counted_in_the_sector_where_it_lies():
    thickness = pit_map()
    labels = np.zeros((81, 8, 81), np.uint8)
    labels[40, 0:5, 50] = 1  # REA: 1.0 mm right of the fovea -> inner ring, right; 5 voxels
    labels[20, 0:3, 40] = 2  # SRF: 2.0 mm above -> outer ring, top; 3 voxels
    labels[40, 0:7, 37] = 3  # PED: 0.3 mm left -> central; 7 voxels
    labels[40, 0:2, 30] = 3  # PED: 1.0 mm left -> inner ring, left; 2 voxels
    labels[40, 0:4, 0] = 1  # REA: 4.0 mm left -> outside the grid
    grid = etdrs(labels, thickness, SPACING, NAMES)
    voxel_nl = 0.1 * 0.002 * 0.1 * 1000
    fluid = {s["key"]: s["fluid_nl"] for s in grid["sectors"]}
    expected = {key: {n: 0.0 for n in NAMES} for key in SECTORS}
    expected["inner-right"]["REA"] = 5 * voxel_nl
    expected["outer-top"]["SRF"] = 3 * voxel_nl
    expected["central"]["PED"] = 7 * voxel_nl
    expected["inner-left"]["PED"] = 2 * voxel_nl
    for key in SECTORS:
        assert fluid[key] == pytest.approx(expected[key]), key
    assert sum(f["REA"] for f in fluid.values()) == pytest.approx(5 * voxel_nl)  # the A-scan outside is in no sector
    assert [s["covered"] for s in grid["sectors"]] == [1.0] * 9  # 8.1 x 8.1 mm around a 6 mm grid


def test_sectors_partly_outside_the_scan_report_their_covered_share():
    # the grid centred on the scan's last A-scan: its right half lies outside (bar half an A-scan's cell, 0.05 mm)
    covered = dict(zip(SECTORS, coverage((81, 41), SPACING, Fovea(40, 40, True, ""))))
    # of the central disc (radius 0.5 mm) the left half and a strip 0.05 mm wide: 0.5 + 0.05 / (pi 0.25) ~ 0.064
    assert covered["central"] == pytest.approx(0.5 + 0.064, abs=0.01)
    assert covered["inner-left"] == covered["outer-left"] == 1.0
    assert covered["inner-top"] == pytest.approx(0.53, abs=0.03)  # half, and the strip: 0.05 x 1 mm of 1.57 mm^2
    assert covered["outer-bottom"] == pytest.approx(0.51, abs=0.02)
    assert covered["inner-right"] < 0.05 and covered["outer-right"] < 0.02
    # through etdrs: a pit 0.7 mm right of a 2.3 mm wide scan's centre is found; no A-scan lies in the outer right
    thickness = pit_map(81, 23, centre=(40, 18))
    grid = etdrs(np.zeros((81, 4, 23), np.uint8), thickness, SPACING, NAMES)
    assert grid["fovea"]["found"] and abs(grid["fovea"]["ascan"] - 19) <= 1  # within an A-scan (0.1 mm)
    right = next(s for s in grid["sectors"] if s["key"] == "outer-right")
    assert right["ascans"] == 0 and right["thickness_um"] is None and right["covered"] < 0.05


def test_sector_index_follows_the_diagonals():
    index = sector_index((7, 7), (1.0, 0.002, 1.0), fovea=find_fovea(np.full((7, 7), 1.0, np.float32), (1, 1, 1)))
    # 1 mm steps from the centre (3, 3): (3, 3) central; (3, 4) inner right; (1, 3) outer top; (5, 6) r = 3.6 outside
    assert index[3, 3] == SECTORS.index("central")
    assert index[3, 4] == SECTORS.index("inner-right")
    assert index[2, 3] == SECTORS.index("inner-top")
    assert index[1, 3] == SECTORS.index("outer-top")
    assert index[3, 1] == SECTORS.index("outer-left")
    assert index[5, 4] == SECTORS.index("outer-bottom")  # 2 down, 1 right: below the diagonal
    assert index[5, 6] == -1
    assert coverage((7, 7), (1.0, 0.002, 1.0), find_fovea(np.full((7, 7), 1.0, np.float32), (1, 1, 1)))[0] == 1.0


@pytest.mark.parametrize(
    "laterality, order, expected",
    [
        ("OD", "superior-first", {"top": "superior", "right": "nasal", "bottom": "inferior", "left": "temporal"}),
        ("OS", "inferior-first", {"top": "inferior", "right": "temporal", "bottom": "superior", "left": "nasal"}),
        (None, "superior-first", {"top": "superior", "right": None, "bottom": "inferior", "left": None}),
        ("OD", None, {"top": None, "right": "nasal", "bottom": None, "left": "temporal"}),
    ],
)
def test_anatomical_names_only_from_what_the_file_says(laterality, order, expected):
    assert orientation(laterality, order) == expected
    grid = etdrs(np.zeros((81, 4, 81), np.uint8), pit_map(), SPACING, NAMES, laterality, order)
    names = {s["key"]: s["name"] for s in grid["sectors"]}
    assert names["central"] == "central"
    assert names["inner-top"] == (f"inner {expected['top']}" if expected["top"] else None)
    assert names["outer-right"] == (f"outer {expected['right']}" if expected["right"] else None)


def test_quantify_csv_row_carries_the_grid():
    labels = np.zeros((81, 8, 81), np.uint8)
    labels[40, 0:5, 50] = 1
    quant = quantify(labels, SPACING, NAMES)
    quant["etdrs"] = etdrs(labels, pit_map(), SPACING, NAMES)
    row = quantify_row("P1", quant, NAMES)
    assert row["cst_um"] == 250.0 and row["fovea_found"] is True
    assert row["REA_inner-right_nl"] == pytest.approx(0.1) and row["thickness_outer-left_um"] == 350.0
    quant["etdrs"] = None
    row = quantify_row("P1", quant, NAMES)
    assert row["cst_um"] is None and row["REA_inner-right_nl"] is None  # the same columns, empty


def test_generated_eye_thickness_and_fovea_match_the_generator():
    """A generated volume (a 6 x 6 x 2 mm cube) against the generator's own ILM and Bruch's membrane: the fovea
    within 0.25 mm of the eye's, the thickness map within 12 um (median) where no PED lifts the RPE, the CST within
    12 um of the one from the true surfaces."""
    z, h, w, seed = 24, 512, 256, 3
    spacing = (6 / z, 2 / h, 6 / w)
    eye = _patient(np.random.default_rng(seed), h, w)
    image, classes = generate_volume(np.random.default_rng(seed), z, h, w)
    found = find_volume_boundaries(image)
    measured = thickness_map(*(np.stack([getattr(b, k) for b in found]) for k in ("ilm", "bruch", "valid")), spacing[1])
    ilm, bruch = retina_surfaces(eye, z, h, w)
    truth = thickness_map(ilm, bruch, np.ones_like(ilm, bool), spacing[1])
    no_ped = ~(classes == 3).any(axis=1)
    assert np.nanmedian(np.abs(measured - truth)[no_ped]) < 12
    grid = etdrs(classes, measured, spacing, NAMES)
    fx, fz = eye["fovea"]
    assert grid["fovea"]["found"]
    assert abs((grid["fovea"]["bscan"] - 0.5) - fz * z) * spacing[0] < 0.25 + spacing[0] / 2
    assert abs((grid["fovea"]["ascan"] - 0.5) - fx * w) * spacing[2] < 0.25
    true_grid = etdrs(classes, truth, spacing, NAMES)
    assert grid["cst_um"] == pytest.approx(true_grid["cst_um"], abs=12)


def test_follow_up_visits_grow_and_shrink_by_the_given_factors():
    (im1, c1), (im2, c2), eye = generate_visits(np.random.default_rng(0), 16, 256, 128, {"REA": 1.5, "SRF": 0.0})
    count = lambda c, k: int((c == k).sum())  # noqa: E731
    assert all(eye["lesions"].values()) and min(count(c1, k) for k in (1, 2, 3)) > 0  # the eye has all three
    assert count(c2, 1) / count(c1, 1) == pytest.approx(1.5, rel=0.15)  # domes 1.5 x as high: about 1.5 x the voxels
    assert count(c2, 2) == 0  # resolved
    assert count(c2, 3) == count(c1, 3)  # PED not named: unchanged, voxel for voxel
    assert not np.array_equal(im1, im2)  # fresh speckle
    with pytest.raises(ValueError, match="growth"):
        generate_visits(np.random.default_rng(0), 2, 64, 64, {"XYZ": 2.0})
    with pytest.raises(ValueError, match="growth"):
        generate_visits(np.random.default_rng(0), 2, 64, 64, {"REA": -1.0})


def test_a_pit_beyond_the_searched_circle_is_not_taken_from_its_slope():
    """A pit 1.3 mm off the centre used to be "found" on the 1 mm circle, on its slope (review finding); one 0.8 mm
    off is found where it is."""
    far = find_fovea(pit_map(centre=(40, 53)), SPACING)
    assert not far.found and (far.bscan, far.ascan) == (40, 40) and "edge" in far.note
    near = find_fovea(pit_map(centre=(40, 48)), SPACING)
    assert near.found and (near.bscan, near.ascan) == (40, 48)


def test_a_sector_the_scan_barely_covers_gets_no_thickness():
    """7 B-scans 0.24 mm apart (1.7 mm of a 6 mm grid): the inner top sector is a third covered; its few lines are
    no sector's thickness (review finding). The central one, fully covered, keeps its figure."""
    spacing = (0.24, 0.002, 0.1)
    zz, xx = np.mgrid[:7, :81]
    thickness = np.where(np.hypot((zz - 3) * 0.24, (xx - 40) * 0.1) < 0.5, 250.0, 350.0).astype(np.float32)
    grid = etdrs(np.zeros((7, 4, 81), np.uint8), thickness, spacing, NAMES)
    top = next(s for s in grid["sectors"] if s["key"] == "inner-top")
    assert top["covered"] < 0.5 and top["thickness_measured"] == 1.0 and top["thickness_um"] is None
    assert grid["sectors"][0]["covered"] == 1.0 and grid["cst_um"] is not None


def test_a_dicom_whose_rows_run_to_the_patients_right_swaps_nasal_and_temporal():
    """Rows along -x (towards the patient's right) put A-scan 1 on the left of the eye as seen from the front: the
    right of the en-face map is then temporal in a right eye (review finding)."""
    assert orientation("OD", None, "left-first")["right"] == "temporal"
    assert orientation("OS", None, "left-first")["right"] == "nasal"
    assert orientation("OD", None, "right-first") == orientation("OD", None, None)
