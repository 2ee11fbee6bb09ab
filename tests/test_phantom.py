"""The independent B-scan phantom (data/phantom.py) and the published-copies tool (tools/publish_copies.py)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from data.common import DatasetError
from data.phantom import DEVICES, FLUID_KINDS, KIND_WEIGHTS, main, make_bscan, resize_bscan
from tools.publish_copies import main as publish_main
from tools.publish_copies import publish_copies

ROOT = Path(__file__).resolve().parents[1]


def _scan(seed, device="optovue", kind=None):
    """The smallest device (640 x 400) keeps the tests fast."""
    return make_bscan(np.random.default_rng(seed), device, kind)


def _between(scan) -> np.ndarray:
    """(H, W) rows from the ILM to BM, both included."""
    rows = np.arange(scan.image.shape[0])[:, None]
    return (rows >= scan.ilm) & (rows <= scan.rpe)


# ------------------------------------------------------------------------------------------------ the phantom
def test_same_seed_same_bscan_other_seed_another():
    a, b, c = _scan(5), _scan(5), _scan(6)
    for field in ("image", "fluid", "ilm", "rpe"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.kind, a.device, a.axial_um, a.lateral_um) == (b.kind, b.device, b.axial_um, b.lateral_um)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.ilm, c.ilm)


def test_every_device_has_its_size_and_spacing():
    # rows, possible widths, um per row, scan width in um
    expected = {
        "spectralis": (496, {512, 768, 1024}, 3.87, 6000.0),
        "cirrus": (1024, {512, 1024}, 1.96, 6000.0),
        "topcon": (885, {512}, 2.6, 6000.0),
        "optovue": (640, {400}, 3.1, 6000.0),
        "bioptigen": (1024, {1000}, 2.0, 6600.0),
    }
    assert set(DEVICES) == set(expected)
    for i, (name, (height, widths, axial, scan_um)) in enumerate(expected.items()):
        s = make_bscan(np.random.default_rng(i), name, "healthy")
        h, w = s.image.shape
        assert (h, s.device, s.kind) == (height, name, "healthy") and w in widths
        assert s.axial_um == pytest.approx(axial) and s.lateral_um * w == pytest.approx(scan_um)
        assert s.image.dtype == np.uint8 and s.fluid.dtype == bool and s.fluid.shape == (h, w)
        assert s.ilm.shape == s.rpe.shape == (w,) and s.ilm.dtype == s.rpe.dtype == np.float32
    assert DEVICES["spectralis"].lateral_um(512) == pytest.approx(11.71875)  # 6 mm / 512
    # sizes from 496 x 512 to 1024 x 1024
    sizes = [(d.height, w) for d in DEVICES.values() for w in d.widths]
    assert min(sizes) == (496, 512) and max(sizes) == (1024, 1024)


def test_kinds_and_bad_arguments():
    assert sum(KIND_WEIGHTS.values()) == pytest.approx(1.0)
    assert (KIND_WEIGHTS["healthy"], KIND_WEIGHTS["drusen"]) == (0.30, 0.15)
    assert _scan(1, kind="fluid").kind in FLUID_KINDS
    with pytest.raises(ValueError, match="choose one of"):
        _scan(1, device="oct9000")
    with pytest.raises(ValueError, match="choose one of"):
        _scan(1, kind="glaucoma")


@pytest.mark.parametrize("kind", FLUID_KINDS)
def test_the_mask_is_the_fluid_darker_than_the_retina_around_it(kind):
    for seed, device in ((1, "optovue"), (2, "spectralis"), (3, "topcon")):
        s = _scan(seed, device, kind)
        assert s.fluid.sum() > 20, (seed, device)
        assert not (s.fluid & ~_between(s)).any()  # all fluid lies between the ILM and BM
        assert not s.fluid[:, s.image.max(axis=0) == 0].any()  # black columns: no data, no label
        # the pixels around the fluid inside the retina (4 px ring) are brighter on average
        ring = ndimage.binary_dilation(s.fluid, iterations=4) & ~s.fluid & _between(s)
        ring[:, s.image.max(axis=0) == 0] = False
        assert s.image[s.fluid].mean() < s.image[ring].mean() - 10, (seed, device)


@pytest.mark.parametrize("kind", ["healthy", "drusen"])
def test_no_fluid_no_mask(kind):
    for seed, device in ((1, "optovue"), (2, "spectralis")):
        s = _scan(seed, device, kind)
        assert s.kind == kind and not s.fluid.any()


def test_boundaries_and_healthy_thickness():
    for seed, device in enumerate(["optovue", "spectralis", "topcon", "optovue", "spectralis", "optovue"]):
        s = _scan(seed, device, "healthy")
        h = s.image.shape[0]
        assert (s.ilm < s.rpe).all() and s.ilm.min() >= 0 and s.rpe.max() <= h - 1
        thickness = s.thickness_um()  # from float32 rows: equal to 1e-3 um
        assert thickness.min() >= 200.0 - 1e-3 and thickness.max() <= 360.0, (seed, device)
        # the retina is not drawn flat: its top varies along the B-scan by more than a pixel
        assert np.ptp(s.ilm) > 1.0


def test_fluid_thickens_the_retina():
    # a healthy retina is at least 200 um thick and fluid adds to it: ILM-to-BM minus the fluid in a column is at
    # least 200 um (less one pixel per fluid pocket a column may cross, counted by pixel centres)
    for seed, kind in enumerate(FLUID_KINDS * 2):
        s = _scan(seed, "spectralis" if seed % 2 else "optovue", kind)
        fluid_um = s.fluid.sum(axis=0) * s.axial_um
        assert fluid_um.max() > 0 and (s.thickness_um() - fluid_um >= 200.0 - 6 * s.axial_um).all(), (seed, kind)


def test_resize_follows_the_spacing_and_boundaries():
    s = _scan(4, "optovue", "srf")
    r = resize_bscan(s, 320, 200)  # half of 640 x 400
    assert r.image.shape == r.fluid.shape == (320, 200)
    assert (r.axial_um, r.lateral_um) == pytest.approx((6.2, 30.0))
    # column 10 of the half-size image covers old columns 20-21; row y becomes (y + 0.5) / 2 - 0.5
    assert r.rpe[10] == pytest.approx((s.rpe[20:22].mean() + 0.5) / 2 - 0.5, abs=1e-3)
    assert r.thickness_um()[10] == pytest.approx(s.thickness_um()[20:22].mean(), rel=1e-3)
    assert r.fluid.sum() * 4 == pytest.approx(s.fluid.sum(), rel=0.15)


# ----------------------------------------------------------------------------------------------- command line
def _read_spacing(folder: Path) -> list[dict]:
    with open(folder / "spacing.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_images_masks_and_spacing(tmp_path):
    out = tmp_path / "phantom"
    main(["--out", str(out), "--count", "3", "--seed", "2", "--device", "optovue"])
    rows = _read_spacing(out)
    assert list(rows[0]) == ["stem", "device", "kind", "height", "width", "axial_um", "lateral_um"]
    assert [r["stem"] for r in rows] == ["ph_0001", "ph_0002", "ph_0003"]
    assert sorted(p.stem for p in (out / "image").iterdir()) == sorted(p.stem for p in (out / "mask").iterdir())
    for i, r in enumerate(rows, 1):
        image = np.asarray(Image.open(out / "image" / f"{r['stem']}.png"))
        mask = np.asarray(Image.open(out / "mask" / f"{r['stem']}.png"))
        assert image.shape == mask.shape == (640, 400) == (int(r["height"]), int(r["width"]))
        assert float(r["axial_um"]) == pytest.approx(3.1) and float(r["lateral_um"]) == pytest.approx(15.0)
        assert set(np.unique(mask)) <= {0, 255}
        s = make_bscan(np.random.default_rng((2, i)), "optovue")  # B-scan i depends on (seed, i) alone
        np.testing.assert_array_equal(image, s.image)
        np.testing.assert_array_equal(mask > 0, s.fluid)
        assert r["kind"] == s.kind and r["device"] == "optovue"

    # --size resamples; --force replaces the toolkit's own folder
    main(["--out", str(out), "--count", "2", "--seed", "2", "--device", "optovue", "--size", "100x80", "--force"])
    rows = _read_spacing(out)
    assert [r["stem"] for r in rows] == ["ph_0001", "ph_0002"]
    for r in rows:
        assert (int(r["height"]), int(r["width"])) == (100, 80)
        assert float(r["axial_um"]) == pytest.approx(3.1 * 640 / 100)  # 19.84 um per row
        assert float(r["lateral_um"]) == pytest.approx(15.0 * 400 / 80)  # 75 um per column
        for sub in ("image", "mask"):
            assert np.asarray(Image.open(out / sub / f"{r['stem']}.png")).shape == (100, 80)
    assert not (out / "image" / "ph_0003.png").exists()


def test_cli_refuses_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "data.phantom", "--out", str(out), "--count", "1", "--force"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not written by this toolkit" in lines[0]
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    with pytest.raises(FileExistsError, match="not empty"):
        main(["--out", str(out), "--count", "1"])
    for bad, match in ((["--count", "0"], "count"), (["--count", "1", "--size", "496by512"], "HEIGHTxWIDTH")):
        with pytest.raises(ValueError, match=match):
            main(["--out", str(tmp_path / "new"), *bad])
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------------- published copies
def _challenger_set(root: Path, pids=("P1", "P2"), slices=3, labels=True) -> Path:
    """A hand-made AI Challenger test split: 64 x 32 B-scans, label maps with one block of each class."""
    rng = np.random.default_rng(0)
    for pid in pids:
        images = root / "Edema_testset" / "original_images" / f"{pid}.img"
        marks = root / "Edema_testset" / "label_images" / f"{pid}_labelMark"
        images.mkdir(parents=True)
        for z in range(1, slices + 1):
            Image.fromarray(rng.integers(0, 256, (64, 32), dtype=np.uint8)).save(images / f"{z}.bmp")
            if labels:
                marks.mkdir(parents=True, exist_ok=True)
                grey = np.zeros((64, 32), dtype=np.uint8)
                grey[8:24, 4:20] = 255  # REA
                grey[30:40, 0:32] = 191  # SRF
                grey[44:60, 10:26] = 128  # PED
                Image.fromarray(grey).save(marks / f"{z}.bmp")
    return root


def test_publish_copies_writes_squashed_jpegs_and_grey_masks(tmp_path):
    root = _challenger_set(tmp_path / "data")
    out = tmp_path / "copies"
    assert publish_main([str(root), str(out), "--size", "48x40", "--quality", "75", "--every", "2"]) == 4
    names = ["P1_1", "P1_3", "P2_1", "P2_3"]  # every 2nd of slices 1, 2, 3
    assert sorted(p.stem for p in (out / "image").glob("*.jpg")) == names
    assert sorted(p.stem for p in (out / "mask").glob("*.png")) == names
    for name in names:
        path = out / "image" / f"{name}.jpg"
        assert path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG stream
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "L", (48, 40))  # width x height
            copy = np.asarray(im, dtype=np.float32)
        pid, z = name.split("_")
        source = Image.open(root / "Edema_testset" / "original_images" / f"{pid}.img" / f"{z}.bmp")
        expected = np.asarray(source.resize((48, 40), Image.BICUBIC), dtype=np.float32)
        assert np.abs(copy - expected).mean() < 30  # JPEG of noise at quality 75: close on average, not exact
        with Image.open(out / "mask" / f"{name}.png") as m:
            assert (m.format, m.size) == ("PNG", (48, 40))
            mask = np.asarray(m)
        assert set(np.unique(mask)) == {0, 255, 191, 128}
        # nearest neighbour: rows 30-39 of 64 (SRF) land on rows 19-24 of 40 (row y samples source (y + 0.5) * 1.6)
        assert (mask[19:25] == 191).all() and not (mask[:18] == 191).any()


def test_publish_copies_errors_name_the_folder(tmp_path):
    root = _challenger_set(tmp_path / "data")
    with pytest.raises(DatasetError, match="Edema_validationset"):
        publish_copies(root, tmp_path / "out", split="val")
    bare = _challenger_set(tmp_path / "bare", pids=("P9",), labels=False)
    with pytest.raises(DatasetError, match=r"label_images/P9_labelMark"):
        publish_copies(bare, tmp_path / "out")
    with pytest.raises(ValueError, match="--every"):
        publish_copies(root, tmp_path / "out", every=0)
    assert not (tmp_path / "out").exists()
