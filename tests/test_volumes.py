"""data.volumes: one small known volume written in every format that can be written here, read back exactly, with
its spacing; the bad inputs each give one clear error naming the file. No vendor files exist here: the writers below
follow each format's published layout, and say where they come from."""

import logging
import math

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from data.common import DatasetError
from data.volumes import (
    CIRRUS_CUBES,
    ScanMeta,
    ScanVolume,
    VolumeFormatError,
    cirrus_spacing,
    read_label_volume,
    read_volume,
    volume_depth,
    volume_files,
    volume_name,
)

Z, H, W = 5, 40, 24
SPACING = (0.125, 0.00390625, 0.015625)  # mm between B-scans, along depth, between A-scans; exact in float32 (NIfTI)
CIRRUS_DEPTH = 1024  # rows of a real cube (the spacing is known only for that depth)


def known_volume(z: int = Z, h: int = H, w: int = W) -> np.ndarray:
    """image[k, y, x] = 40k + y + x // 8 (mod 240), and a bright mark (250) at rows 2..4, columns 1..k+2 of B-scan k:
    a flip of any axis or B-scans out of order changes the array."""
    k, y, x = np.arange(z)[:, None, None], np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    v = ((40 * k + y + x // 8) % 240).astype(np.uint8)  # broadcast: a real cube's size in a few hundred MB less
    for i in range(z):
        v[i, 2:5, 1 : i + 3] = 250
    return v


def warnings_from(caplog, level=logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "data.volumes" and r.levelno == level]


def notes_from(caplog) -> list[str]:
    """Log lines at INFO: an unknown spacing matters only to --report, which then fails naming it."""
    return warnings_from(caplog, logging.INFO)


# ---- writers, one per format


def write_slices(folder, vol, suffix, names=None):
    folder.mkdir()
    for name, image in zip(names or range(1, len(vol) + 1), vol):
        Image.fromarray(image).save(folder / f"{name}{suffix}")
    return folder


def write_itk(path, vol, spacing=SPACING):
    image = sitk.GetImageFromArray(vol)  # array (z, y, x) -> image (x, y, z)
    image.SetSpacing(tuple(reversed(spacing)))
    sitk.WriteImage(image, str(path))
    return path


def write_dicom(path, vol, spacing=SPACING):
    """An uncompressed multi-frame Ophthalmic Tomography DICOM, with spacing at the top level."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OPT"
    ds.NumberOfFrames, ds.Rows, ds.Columns = vol.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelSpacing = [spacing[1], spacing[2]]  # row spacing (depth), column spacing (between A-scans)
    ds.SpacingBetweenSlices = spacing[0]
    ds.PixelData = vol.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_tiff(path, vol):
    tifffile.imwrite(path, vol)  # one page per B-scan
    return path


def write_cirrus(path, vol):
    """A raw Cirrus cube as the scanner exports it (the layout of AURA's octCirrusReader.m and other published
    readers): B-scan after B-scan, each as depth rows of A-scan bytes, rotated 180 degrees (upside down, mirrored)."""
    vol[:, ::-1, ::-1].tofile(path)
    return path


NATURAL = (2, 4, 6, 8, 10)  # as text: 10, 2, 4, 6, 8 (every other B-scan exported: a constant step)
CASES = {  # name -> (write(tmp_path, vol) -> path, format, spacing read back)
    "bmp-slices": (lambda d, v: write_slices(d / "P1.img", v, ".bmp", NATURAL), "slices", None),
    "png-slices": (lambda d, v: write_slices(d / "P1", v, ".png", [f"img_{n}" for n in NATURAL]), "slices", None),
    "tiff-slices": (lambda d, v: write_slices(d / "P1", v, ".tif"), "slices", None),
    "tiff": (lambda d, v: write_tiff(d / "v.tif", v), "tiff", None),
    "nifti": (lambda d, v: write_itk(d / "v.nii.gz", v), "nifti", SPACING),
    "metaimage": (lambda d, v: write_itk(d / "v.mhd", v), "metaimage", SPACING),
    "dicom": (lambda d, v: write_dicom(d / "v.dcm", v), "dicom", SPACING),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_writable_format_reads_back_exactly(tmp_path, case):
    write, fmt, spacing = CASES[case]
    vol = known_volume()
    path = write(tmp_path, vol)
    v = read_volume(path)
    assert isinstance(v, ScanVolume) and v.format == fmt and v.path == path
    assert v.image.dtype == np.uint8 and np.array_equal(v.image, vol)
    if spacing is None:
        assert v.spacing is None
    else:
        assert np.allclose(v.spacing, spacing, rtol=0, atol=1e-9)
    assert volume_depth(path) == Z


def test_slice_folders_sort_naturally_and_skip_stray_files(tmp_path):
    vol = known_volume()
    folder = write_slices(tmp_path / "P1", vol, ".png", [f"slice_{n}" for n in NATURAL])
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "Thumbs.db").write_bytes(b"junk")
    (folder / ".hidden.png").write_bytes(b"junk")
    names = [p.name for p in volume_files(folder)]
    assert names == ["slice_2.png", "slice_4.png", "slice_6.png", "slice_8.png", "slice_10.png"]  # not 10, 2, 4 ...
    assert np.array_equal(read_volume(folder).image, vol)


def test_a_stray_copy_a_gap_or_a_second_series_in_a_slice_folder_is_refused(tmp_path):
    """Each would shift later B-scans by one (a copy sorts first, a gap closes up) and move every fluid volume and
    affected B-scan number without a word: the AI Challenger folders are read by predict.py through this path."""
    vol = known_volume()
    copy = write_slices(tmp_path / "copy.img", vol, ".bmp")
    (copy / "1 (copy).bmp").write_bytes((copy / "1.bmp").read_bytes())
    with pytest.raises(VolumeFormatError, match=r"copy\.img: 1 \(copy\)\.bmp does not follow the slice names of 1"):
        read_volume(copy)
    gap = write_slices(tmp_path / "gap.img", vol, ".bmp")
    (gap / "4.bmp").unlink()
    with pytest.raises(VolumeFormatError, match=r"gap\.img: slices must be numbered without gaps; missing \[4\]"):
        read_volume(gap)
    two = write_slices(tmp_path / "two", vol, ".png", ["OD_1", "OD_2", "OD_3", "OS_1", "OS_2"])
    with pytest.raises(VolumeFormatError, match=r"os_1\.png|OS_1\.png"):
        read_volume(two)
    start0 = write_slices(tmp_path / "zero", vol, ".png", range(len(vol)))  # 0.png ... 4.png: a series too
    assert np.array_equal(read_volume(start0).image, vol)
    # exporters put other numbers around the slice number: the run that changes is the slice number
    for i, name in enumerate(("scan_{:03d}_512x496", "bscan_{:03d}_ch1", "P1_OD_{}_20190105", "B-scan {} of 5")):
        folder = write_slices(tmp_path / f"export{i}", vol, ".png", [name.format(n) for n in range(1, len(vol) + 1)])
        assert np.array_equal(read_volume(folder).image, vol), name
    two_runs = write_slices(tmp_path / "tworuns", vol, ".png", [f"s{n}_{n * n}" for n in range(1, len(vol) + 1)])
    with pytest.raises(VolumeFormatError, match=r"differ in 2 runs of digits"):
        read_volume(two_runs)


@pytest.mark.parametrize("ascans,bscans", sorted(CIRRUS_CUBES))
def test_raw_cirrus_cube_reads_right_side_up(tmp_path, ascans, bscans):
    vol = known_volume(bscans, CIRRUS_DEPTH, ascans)
    path = write_cirrus(tmp_path / f"P0001_Macular Cube {ascans}x{bscans}_4-25-2017_9-32-13_OD_sn2218_cube_z.img", vol)
    v = read_volume(path)
    assert v.format == "cirrus-img" and v.image.shape == (bscans, CIRRUS_DEPTH, ascans)
    assert np.array_equal(v.image, vol)
    # by hand: the file's first byte is the bottom-right voxel of the first B-scan, its last the top-left of the last
    raw = np.fromfile(path, np.uint8)
    assert v.image[0, -1, -1] == raw[0] and v.image[-1, 0, 0] == raw[-1]
    assert v.image[0, 2, 1] == 250 and v.image[0, 2, 3] != 250  # the mark: near the top-left, 2 wide in B-scan 0
    assert volume_depth(path) == bscans
    width, length, depth = CIRRUS_CUBES[ascans, bscans]
    assert np.allclose(v.spacing, (length / bscans, depth / CIRRUS_DEPTH, width / ascans), rtol=0, atol=1e-12)


def test_cirrus_cube_size_from_the_argument(tmp_path):
    vol = known_volume(128, CIRRUS_DEPTH, 512)
    v = read_volume(write_cirrus(tmp_path / "renamed.img", vol), cube=(512, 128))
    assert np.array_equal(v.image, vol) and np.allclose(v.spacing, (6 / 128, 2 / 1024, 6 / 512), rtol=0, atol=1e-12)
    with pytest.raises(VolumeFormatError, match=r"renamed\.img.*no cube size"):
        read_volume(tmp_path / "renamed.img")


def test_cirrus_spacing_by_hand(caplog):
    caplog.set_level(logging.INFO, "data.volumes")
    name = "P0001_MacularCube512x128_4-25-2017_9-32-13_OD_sn2218_cube_z"  # AI Challenger: no space
    assert cirrus_spacing(name, (128, 1024, 512)) == pytest.approx((6 / 128, 2 / 1024, 6 / 512), abs=1e-12)
    disc = "P1_Optic Disc Cube 200x200_cube_z"
    assert cirrus_spacing(disc, (200, 1024, 200)) == pytest.approx((6 / 200, 2 / 1024, 6 / 200), abs=1e-12)
    assert cirrus_spacing("TRAIN001", (128, 1024, 512)) is None
    assert notes_from(caplog) == []
    assert cirrus_spacing("P0001_MacularCube128x32_synthetic", (32, 64, 128)) is None  # not a Cirrus cube
    assert cirrus_spacing("P0001_MacularCube512x128", (64, 1024, 512)) is None  # 64 B-scans, not 128
    found = notes_from(caplog)
    assert len(found) == 2 and "128x32" in found[0] and "64 B-scans" in found[1]
    assert all("--spacing" in m for m in found)


def test_unknown_cube_size_in_a_folder_name_leaves_spacing_unknown(tmp_path, caplog):
    caplog.set_level(logging.INFO, "data.volumes")
    folder = write_slices(tmp_path / "P0001_MacularCube128x32_synthetic.img", known_volume(), ".png")
    assert read_volume(folder).spacing is None
    found = notes_from(caplog)
    assert len(found) == 1 and "128x32" in found[0]


def test_uint16_volume_is_scaled_by_its_range(tmp_path, caplog):
    vol = np.full((Z, H, W), 1500, np.uint16)
    vol[0, 0, 0], vol[1, 1, 1], vol[2, 2, 2] = 1000, 3000, 2200  # min, max, and one between
    path = write_itk(tmp_path / "v16.mhd", vol)
    image = read_volume(path).image
    # (v - 1000) * 255 / 2000: 1000 -> 0, 3000 -> 255, 2200 -> 153, 1500 -> 63.75 -> 64
    assert (image[0, 0, 0], image[1, 1, 1], image[2, 2, 2], image[3, 3, 3]) == (0, 255, 153, 64)
    found = warnings_from(caplog)
    assert len(found) == 1 and "v16.mhd" in found[0] and "uint16" in found[0]


def test_hot_and_dead_pixels_do_not_squeeze_a_uint16_volume(tmp_path, caplog):
    """Three saturated voxels (65535) and two dead ones (0) in a 1000..3000 scan: min..max would map the whole scan
    to grey 0..12 (3000 * 255 / 65535 = 11.7). The 0.01st..99.99th percentiles are used (1000..3000 here: of 40,000
    sorted voxels the "lower" one at position 3.9999 -> 3 and the "higher" one at 39995.0001 -> 39996 are 1000 and
    3000), the outliers clipped, and the warning says so."""
    vol = np.full((4, 100, 100), 2000, np.uint16)
    vol[0], vol[1, :50] = 1000, 1000  # 15,000 voxels of 1000, 10,000 of 2000, 15,000 of 3000
    vol[3], vol[2, :50] = 3000, 3000
    vol[0, 0, :2] = 0
    vol[3, 99, -3:] = 65535
    image = read_volume(write_itk(tmp_path / "hot.mhd", vol)).image
    assert image[1, 0, 0] == 0 and image[2, 99, 99] == 128 and image[3, 0, 0] == 255  # 1000, 2000 (127.5), 3000
    assert image[0, 0, 0] == 0 and image[3, 99, 99] == 255  # dead and hot voxels clipped to the range's ends
    found = warnings_from(caplog)
    assert len(found) == 1 and "hot.mhd" in found[0] and "5 voxels" in found[0] and "percentiles 1000..3000" in found[0]


def test_every_16_bit_scan_follows_one_grey_rule_and_a_small_one_keeps_its_range(tmp_path):
    """One rule for every volume, whatever its size or tail (a scanner's volumes must all look alike to a model):
    the "lower" 0.01st and "higher" 99.99th percentiles, which are voxel values; with 5 x 40 x 24 voxels they are the
    minimum and the maximum, so a small scan maps exactly as min..max did."""
    rng = np.random.default_rng(0)
    speckle = (rng.gamma(2.0, 300.0, (4, 100, 100)) + 100).astype(np.float32)
    lo = float(np.quantile(speckle, 1e-4, method="lower"))
    hi = float(np.quantile(speckle, 1 - 1e-4, method="higher"))
    image = read_volume(write_itk(tmp_path / "speckle.nii.gz", speckle)).image
    expected = np.round((np.clip(speckle.astype(np.float64), lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    assert np.array_equal(image, expected) and (image == 255).sum() >= 1
    small = known_volume().astype(np.uint16) * 7 + 100
    lo, hi = float(small.min()), float(small.max())
    image = read_volume(write_itk(tmp_path / "small.mhd", small)).image
    assert np.array_equal(image, np.round((small.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8))


def test_explicit_spacing_overrides_the_file(tmp_path):
    path = write_itk(tmp_path / "v.mhd", known_volume())
    assert read_volume(path, spacing=(0.2, 0.004, 0.01)).spacing == (0.2, 0.004, 0.01)
    zero = tmp_path / "zero.mhd"
    zero.write_text(path.read_text().replace("ElementSpacing = 0.015625", "ElementSpacing = 0"))
    assert read_volume(zero, spacing=(0.2, 0.004, 0.01)).spacing == (0.2, 0.004, 0.01)  # the file's 0 is not used


def test_volume_files(tmp_path):
    mhd = write_itk(tmp_path / "oct.mhd", known_volume())
    assert volume_files(mhd) == (mhd, tmp_path / "oct.raw")
    folder = write_slices(tmp_path / "P1.img", known_volume(), ".bmp")
    assert volume_files(folder) == tuple(folder / f"{n}.bmp" for n in range(1, Z + 1))
    nii = write_itk(tmp_path / "v.nii.gz", known_volume())
    assert volume_files(nii) == (nii,)


def test_label_volume_values_are_kept(tmp_path):
    labels = (known_volume() % 4).astype(np.uint8)
    out = read_label_volume(write_itk(tmp_path / "reference.mhd", labels))
    assert out.dtype == np.uint8 and np.array_equal(out, labels)
    as_float = read_label_volume(write_itk(tmp_path / "float.nii.gz", labels.astype(np.float32)))
    assert as_float.dtype == np.uint8 and np.array_equal(as_float, labels)  # whole-valued floats: the same labels
    with pytest.raises(VolumeFormatError, match=r"half\.nii\.gz.*whole numbers"):
        read_label_volume(write_itk(tmp_path / "half.nii.gz", labels.astype(np.float32) + 0.5))
    with pytest.raises(VolumeFormatError, match=r"labels\.dcm: label volumes are read from MetaImage"):
        read_label_volume(write_dicom(tmp_path / "labels.dcm", labels))


def test_volume_names(tmp_path):
    (tmp_path / "P0001.img").mkdir()
    (tmp_path / "TRAIN001").mkdir()
    cirrus = "P1_Macular Cube 512x128_4-25-2017_9-32-13_OD_sn2218_cube_z"
    assert volume_name(tmp_path / "P0001.img") == "P0001"
    assert volume_name(tmp_path / "x.nii.gz") == "x"
    assert volume_name(tmp_path / "TRAIN001" / "oct.mhd") == "TRAIN001"
    assert volume_name(tmp_path / "TRAIN001" / "reference.mhd") == "TRAIN001"
    assert volume_name(tmp_path / f"{cirrus}.img") == cirrus


def test_dicom_found_by_its_preamble_whatever_its_name(tmp_path):
    vol = known_volume()
    for name in ("scan", "P1_Zeiss_export.IMG"):  # no suffix; Zeiss names DICOM files .IMG
        v = read_volume(write_dicom(tmp_path / name, vol))
        assert v.format == "dicom" and np.array_equal(v.image, vol)


def test_dicom_written_by_oct_converter(tmp_path, caplog):
    """oct-converter's own OCT DICOM export (what its converters write): uint16 frames normalised to 0..100, spacing in
    the shared functional groups' PixelMeasuresSequence (PixelSpacing and SliceThickness)."""
    from oct_converter.dicom.dicom import write_opt_dicom
    from oct_converter.dicom.img_meta import img_image_params, img_manu_meta, img_patient_meta, img_series_meta
    from oct_converter.dicom.metadata import DicomMetadata, ImageGeometry

    vol = np.full((Z, H, W), 20.0)
    for i in range(Z):
        vol[i, 2:5, 1 : i + 3] = 100
    vol[0, -1, -1] = 0
    geometry = ImageGeometry(pixel_spacing=[SPACING[1], SPACING[2]], slice_thickness=SPACING[0])
    geometry.image_orientation = [1, 0, 0, 0, 1, 0]
    patient, series = img_patient_meta("P1"), img_series_meta(None, "R")
    meta = DicomMetadata(patient, series, img_manu_meta(), geometry, img_image_params())
    path = write_opt_dicom(meta, list(vol), tmp_path / "oct.dcm")
    v = read_volume(path)
    assert np.array_equal(v.image, np.round(vol * 2.55).astype(np.uint8))  # 0 / 20 / 100 of 0..100 -> 0 / 51 / 255
    assert np.allclose(v.spacing, SPACING, rtol=0, atol=1e-9)
    assert len(warnings_from(caplog)) == 1  # the one scaling warning


def test_heyex_vol_through_eyepy(tmp_path, monkeypatch):
    """A .vol built from eyepy's own definition of the format (no scanner file exists here), read through eyepy: pins
    the axes, the uint8 result and which of eyepy's scales is which."""
    from eyepy.core.utils import to_vol_intensity
    from eyepy.io import utils as eyepy_utils
    from eyepy.io.he.vol_reader import vol_format

    # eyepy 0.21's exam-time encoder returns a float for an integer field: give it the integer it needs
    monkeypatch.setattr(type(eyepy_utils.IntDate), "_encode", lambda self, obj, context, path: 0)
    vol = known_volume()
    date = "2020-01-02T00:00:00"
    bscans = [
        dict(
            bscan_hdr_size=256 + 17 * 4 * W,
            start_x=0.0,
            start_y=SPACING[0] * i,
            end_x=W * SPACING[2],
            end_y=SPACING[0] * i,
            num_seg=17,
            quality=1.0,
            shift=0,
            iv_transformation=[0] * 6,
            layer_segmentations=np.zeros((17, W), np.float32),
            data=to_vol_intensity(vol[i]),
        )
        for i in range(Z)
    ]
    header = dict(size_x=W, size_y=H, n_bscans=Z, scale_x=SPACING[2], scale_y=SPACING[1], distance=SPACING[0])
    header.update(size_x_slo=16, size_y_slo=16, scale_x_slo=0.1, scale_y_slo=0.1, field_size_slo=30, scan_focus=0.0)
    header.update(scan_position="OD", exam_time=0, scan_pattern=3, id="x", reference_id="x", pid=1, patient_id="P1")
    header.update(dob=date, vid=0, visit_id="x", visit_date=date, grid_type=0, grid_offset=0, grid_type1=0)
    header.update(grid_offset1=0, prog_id="x", localizer=np.zeros((16, 16), np.uint8), bscans=bscans)
    path = tmp_path / "P1.vol"
    path.write_bytes(vol_format.build(header))
    v = read_volume(path)
    assert v.format == "vol" and np.array_equal(v.image, vol)
    assert np.allclose(v.spacing, SPACING, rtol=0, atol=1e-12)


@pytest.mark.parametrize("suffix", [".e2e", ".fda", ".fds", ".vol"])
def test_vendor_reader_failure_names_the_file(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(bytes(256))
    with pytest.raises(VolumeFormatError, match=rf"broken\{suffix}"):
        read_volume(path)


# ---- bad inputs: one clear error each, naming the file


def test_unknown_suffix(tmp_path):
    (tmp_path / "scan.xyz").write_bytes(b"data")
    with pytest.raises(VolumeFormatError, match=r"scan\.xyz: not a volume format.*\.nii\.gz.*\.mhd"):
        read_volume(tmp_path / "scan.xyz")


def test_truncated_cirrus_cube(tmp_path):
    path = tmp_path / "P1_Optic Disc Cube 200x200_cube_z.img"
    path.write_bytes(bytes(200 * 200 * 2 + 3))
    with pytest.raises(VolumeFormatError, match=r"cube_z\.img: truncated/not a whole cube: 80003 bytes .* 200x200"):
        read_volume(path)
    with pytest.raises(VolumeFormatError, match="not a whole cube"):
        volume_depth(path)


def test_metaimage_with_missing_or_truncated_data_file(tmp_path):
    path = write_itk(tmp_path / "oct.mhd", known_volume())
    raw = tmp_path / "oct.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    with pytest.raises(VolumeFormatError, match=rf"oct\.mhd: its data file {raw} holds 1000 bytes .* needs 4800"):
        read_volume(path)
    raw.unlink()
    with pytest.raises(VolumeFormatError, match=rf"oct\.mhd: its data file {raw} .* is missing"):
        read_volume(path)
    with pytest.raises(VolumeFormatError, match="is missing"):
        read_label_volume(path)


def test_dicom_without_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "report.dcm", known_volume())
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(VolumeFormatError, match=r"report\.dcm: the DICOM holds no pixel data"):
        read_volume(path)
    with pytest.raises(VolumeFormatError, match="no pixel data"):
        volume_depth(path)


def test_one_image_is_not_a_volume(tmp_path):
    write_tiff(tmp_path / "bscan.tif", known_volume()[0])
    with pytest.raises(VolumeFormatError, match=r"bscan\.tif: one image \(40x24\), not a volume"):
        read_volume(tmp_path / "bscan.tif")
    with pytest.raises(VolumeFormatError, match="one image"):
        volume_depth(tmp_path / "bscan.tif")
    write_itk(tmp_path / "bscan.nii.gz", known_volume()[0])
    with pytest.raises(VolumeFormatError, match=r"bscan\.nii\.gz: one image"):
        read_volume(tmp_path / "bscan.nii.gz")
    with pytest.raises(VolumeFormatError, match=r"one\.dcm: one image"):
        read_volume(write_dicom(tmp_path / "one.dcm", known_volume()[:1]))


def test_nan_in_a_float_volume(tmp_path):
    vol = known_volume().astype(np.float32)
    vol[2, 3, 4] = np.nan
    with pytest.raises(VolumeFormatError, match=r"nan\.nii\.gz: the volume holds NaN"):
        read_volume(write_itk(tmp_path / "nan.nii.gz", vol))


def test_zero_spacing_in_a_metaimage_header(tmp_path):
    path = write_itk(tmp_path / "v.mhd", known_volume())
    zero = tmp_path / "zero.mhd"
    zero.write_text(path.read_text().replace("ElementSpacing = 0.015625", "ElementSpacing = 0"))
    with pytest.raises(VolumeFormatError, match=r"zero\.mhd: the file gives the spacing \(0\.125, .*, 0\.0\).*--spac"):
        read_volume(zero)


@pytest.mark.parametrize("spacing", [(0.1, 0.0, 0.01), (0.1, -1, 0.01), (0.1, math.inf, 0.01), (0.1, 0.01)])
def test_explicit_spacing_must_be_three_positive_numbers(tmp_path, spacing):
    path = write_itk(tmp_path / "v.mhd", known_volume())
    with pytest.raises(ValueError, match="--spacing must be 3 positive finite numbers"):
        read_volume(path, spacing=spacing)


def test_bad_slice_folders(tmp_path):
    vol = known_volume()
    mixed = write_slices(tmp_path / "mixed", vol, ".png")
    Image.fromarray(vol[0]).save(mixed / "9.bmp")
    with pytest.raises(VolumeFormatError, match=r"mixed: slices of mixed kinds \(BMP, PNG\)"):
        read_volume(mixed)
    stray = write_slices(tmp_path / "stray", vol, ".png")
    (stray / "notes.txt").write_text("x")
    with pytest.raises(VolumeFormatError, match=r"notes\.txt: unexpected in a slice folder"):
        read_volume(stray)
    sizes = write_slices(tmp_path / "sizes", vol, ".png")
    Image.fromarray(vol[0, :30]).save(sizes / "3.png")
    with pytest.raises(DatasetError, match=r"3\.png: slice is 30x24"):
        read_volume(sizes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeFormatError, match="empty: no slice images"):
        read_volume(tmp_path / "empty")
    same = write_slices(tmp_path / "same", vol, ".png")
    Image.fromarray(vol[0]).save(same / "01.png")
    with pytest.raises(VolumeFormatError, match=r"01\.png and 1\.png take the same place"):
        read_volume(same)


def test_blank_volume(tmp_path):
    path = write_tiff(tmp_path / "blank.tif", np.full((Z, H, W), 7, np.uint8))
    with pytest.raises(VolumeFormatError, match=r"blank\.tif: every voxel is 7: a blank volume"):
        read_volume(path)


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="nothere.nii: not found"):
        read_volume(tmp_path / "nothere.nii")


# ---- what a red-team pass found: orientation, units, conflicting sources of the spacing


def test_a_rotated_or_swapped_direction_matrix_is_refused_and_a_flip_reported(tmp_path, caplog):
    vol = known_volume()
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.01, 0.002, 0.05))
    image.SetDirection((0, 0, 1, 0, 1, 0, 1, 0, 0))  # B-scans along x: the planes a model would see are wrong
    sitk.WriteImage(image, str(tmp_path / "swapped.mhd"))
    with pytest.raises(VolumeFormatError, match=r"swapped\.mhd: its direction matrix .* rotates or swaps the axes"):
        read_volume(tmp_path / "swapped.mhd")
    image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "flipped.mhd"))
    assert np.array_equal(read_volume(tmp_path / "flipped.mhd").image, vol)  # as stored, and said so
    assert any("flips y" in m for m in warnings_from(caplog))


def test_a_spacing_in_microns_is_refused_not_turned_into_huge_volumes(tmp_path):
    image = sitk.GetImageFromArray(known_volume())
    image.SetSpacing((10.0, 2.0, 50.0))  # microns, written without units: read as mm
    sitk.WriteImage(image, str(tmp_path / "um.nii.gz"))
    with pytest.raises(VolumeFormatError, match=r"um\.nii\.gz: with the spacing .* would span 250 x 80 x 240 mm"):
        read_volume(tmp_path / "um.nii.gz")
    with pytest.raises(VolumeFormatError, match="a spacing in microns read as mm"):
        read_volume(write_tiff(tmp_path / "v.tif", known_volume()), spacing=(47, 3.9, 11.7))


def test_spacing_given_over_the_files_own_is_reported(tmp_path, caplog):
    path = write_itk(tmp_path / "v.mhd", known_volume(), SPACING)
    assert read_volume(path, spacing=(0.1, 0.1, 0.1)).spacing == (0.1, 0.1, 0.1)
    assert any("replaces the file's own spacing" in m for m in warnings_from(caplog))


def test_a_cube_size_that_contradicts_the_name_is_refused(tmp_path):
    # a 200x200 cube of 1024 rows divides evenly by 512x128: read with the wrong size it would be plausible noise
    path = tmp_path / "P2_Optic Disc Cube 200x200_cube_z.img"
    path.write_bytes(bytes(200 * 200 * 1024))
    with pytest.raises(VolumeFormatError, match="the name says a 200x200 cube but --cube is 512x128"):
        read_volume(path, cube=(512, 128))


def test_a_resized_cirrus_volume_has_no_cube_spacing(caplog):
    assert cirrus_spacing("P0001_MacularCube512x128_x", (128, 512, 512)) is None  # 512 rows: resized from 1024


def test_dicom_spacing_between_bscans_from_the_frame_positions(tmp_path, caplog):
    import pydicom
    from pydicom.dataset import Dataset

    path = write_dicom(tmp_path / "v.dcm", known_volume(), spacing=SPACING)
    ds = pydicom.dcmread(path)
    del ds.SpacingBetweenSlices
    ds.SliceThickness = 0.01  # a thickness, not the distance between B-scans
    frames = []
    for k in range(Z):
        plane, group = Dataset(), Dataset()
        plane.ImagePositionPatient = [0.0, 0.0, 0.047 * k]
        group.PlanePositionSequence = [plane]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.save_as(path)
    assert read_volume(path).spacing == pytest.approx((0.047, SPACING[1], SPACING[2]))
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(path)
    assert read_volume(path).spacing == pytest.approx((0.01, SPACING[1], SPACING[2]))  # the last resort, reported
    assert any("taken from SliceThickness" in m for m in warnings_from(caplog))


def test_a_metaimage_with_a_non_ascii_name(tmp_path):
    path = write_itk(tmp_path / "scan ü.mhd", known_volume(), SPACING)
    assert np.array_equal(read_volume(path).image, known_volume())
    assert [p.name for p in volume_files(path)] == ["scan ü.mhd", "scan ü.raw"]


# ---- what the file says about the scan (ScanMeta)


def write_enhanced_dicom(path, vol, spacing=SPACING, z_step=-SPACING[0], **tags):
    """An Ophthalmic Tomography DICOM as scanners write it: a frame of reference; frame k at (0.5, 1.0, 3.0 + k *
    z_step) mm in the per-frame functional groups (DICOM's +z points to the head: a negative step runs superior to
    inferior; None: no positions); rows along +x and columns (depth) along +y, and the pixel spacing, in the shared
    ones; the scan's tags at the top level (``tags`` adds to or, set to None, removes them)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(write_dicom(path, vol, spacing))
    del ds.PixelSpacing, ds.SpacingBetweenSlices  # enhanced DICOM: in the functional groups
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = "P1", "Test^Patient", "20160725", "120000"
    own = dict(
        ImageLaterality="R",
        AcquisitionDateTime="20160725124550",
        Manufacturer="Carl Zeiss Meditec",
        ManufacturerModelName="CIRRUS HD-OCT 5000",
    )
    for key, value in {**own, **tags}.items():
        if value is None:
            ds.pop(key, None)
        else:
            setattr(ds, key, value)
    orientation, measures, shared = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [spacing[1], spacing[2]], spacing[0]
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    if z_step is not None:
        frames = []
        for k in range(len(vol)):
            plane, group = Dataset(), Dataset()
            plane.ImagePositionPatient = [0.5, 1.0, 3.0 + k * z_step]
            group.PlanePositionSequence = [plane]
            frames.append(group)
        ds.PerFrameFunctionalGroupsSequence = frames
    ds.save_as(path)
    return path


def test_dicom_scan_meta(tmp_path, caplog):
    v = read_volume(write_enhanced_dicom(tmp_path / "v.dcm", known_volume()))
    assert np.array_equal(v.image, known_volume()) and v.spacing == pytest.approx(SPACING)
    assert v.meta == ScanMeta(
        laterality="OD",
        date="2016-07-25T12:45:50",
        device="Carl Zeiss Meditec CIRRUS HD-OCT 5000",
        bscan_order="superior-first",  # z falls from frame to frame: the first B-scan is the highest
        source="DICOM ImageLaterality, AcquisitionDateTime, Manufacturer, ManufacturerModelName, ImagePositionPatient, "
        "ImageOrientationPatient",
        ascan_order="right-first",  # rows along +x: from the patient's right to the left, as a fundus photo is seen
    )
    assert warnings_from(caplog) == []


def test_dicom_bscan_order_from_the_frame_positions(tmp_path):
    def order(name, **kw):
        return read_volume(write_enhanced_dicom(tmp_path / name, known_volume(), **kw), spacing=SPACING).meta

    assert order("down.dcm", z_step=-0.125).bscan_order == "superior-first"
    assert order("up.dcm", z_step=0.125).bscan_order == "inferior-first"
    none = order("none.dcm", z_step=None)
    assert none.bscan_order is None and "ImagePositionPatient" not in none.source
    assert order("flat.dcm", z_step=0.0).bscan_order is None  # every frame at one height


def test_dicom_bscan_order_of_vertical_bscans_is_unknown(tmp_path):
    import pydicom

    path = write_enhanced_dicom(tmp_path / "v.dcm", known_volume(), z_step=0.001)
    ds = pydicom.dcmread(path)
    for k, group in enumerate(ds.PerFrameFunctionalGroupsSequence):  # 0.125 mm to the left, a little up, each
        group.PlanePositionSequence[0].ImagePositionPatient = [0.5 + 0.125 * k, 1.0, 3.0 + 0.001 * k]
    ds.save_as(path)
    assert read_volume(path).meta.bscan_order is None


def test_dicom_laterality_and_date_fallbacks(tmp_path, caplog):
    from pydicom.dataset import Dataset

    def meta(name, **tags):
        return read_volume(write_enhanced_dicom(tmp_path / name, known_volume(), **tags)).meta

    series_level = dict(ImageLaterality=None, Laterality="L")
    m = meta("a.dcm", **series_level, AcquisitionDateTime=None, AcquisitionDate="20160725", AcquisitionTime="1245")
    assert (m.laterality, m.date) == ("OS", "2016-07-25T12:45")
    assert m.source.startswith("DICOM Laterality, AcquisitionDate + AcquisitionTime, ")
    m = meta("b.dcm", ImageLaterality=None, AcquisitionDateTime=None, StudyTime=None)
    assert (m.laterality, m.date) == (None, "2016-07-25") and m.source.startswith("DICOM StudyDate, Manufacturer")
    m = meta("c.dcm", AcquisitionDateTime="20160725124550.123456+0100")
    assert m.date == "2016-07-25T12:45:50+01:00"
    m = meta("d.dcm", AcquisitionDateTime=None, ContentDate="20170102", ContentTime="080910")
    assert m.date == "2017-01-02T08:09:10"
    anatomy = Dataset()
    anatomy.FrameLaterality = "L"
    m = meta("e.dcm", ImageLaterality=None)
    assert m.laterality is None
    import pydicom

    ds = pydicom.dcmread(tmp_path / "e.dcm")
    ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    ds.save_as(tmp_path / "e.dcm")
    assert read_volume(tmp_path / "e.dcm").meta.laterality == "OS"
    assert warnings_from(caplog) == []


@pytest.mark.parametrize(
    "tags,said",
    [
        ({"ImageLaterality": "X"}, "ImageLaterality is 'X'"),
        ({"ImageLaterality": "R", "Laterality": "L"}, "names both eyes"),
        ({"AcquisitionDateTime": "20161345"}, "AcquisitionDateTime '20161345' is not a date"),
        ({"AcquisitionDateTime": "20160725256161"}, "is not a date"),
        ({"AcquisitionDateTime": None, "StudyDate": "19000101"}, "StudyDate + StudyTime 1900-01-01 is before any OCT"),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DT")  # pydicom's, as the test writes the bad value
def test_nonsense_in_the_dicom_is_left_unknown_and_warned(tmp_path, caplog, tags, said):
    meta = read_volume(write_enhanced_dicom(tmp_path / "odd.dcm", known_volume(), **tags)).meta
    found = warnings_from(caplog)
    assert len(found) == 1 and "odd.dcm" in found[0] and said in found[0], found
    if "ImageLaterality" in tags:
        assert meta.laterality is None and meta.date == "2016-07-25T12:45:50"
    else:
        assert meta.date is None and meta.laterality == "OD"


def test_cirrus_name_meta(tmp_path, caplog):
    vol = known_volume(6, 16, 32)  # a small cube named as the scanner names its exports: no spacing, but the meta
    name = "P1234_Macular Cube 32x6_7-25-2016_12-45-50_OD_sn12345_cube_raw.img"
    v = read_volume(write_cirrus(tmp_path / name, vol))
    assert np.array_equal(v.image, vol) and v.spacing is None
    assert v.meta == ScanMeta(
        "OD",
        "2016-07-25T12:45:50",
        "Zeiss Cirrus",
        None,
        "Cirrus file name (date, eye); device: the raw Cirrus cube format",
    )
    other = read_volume(write_cirrus(tmp_path / "P1_Macular Cube 32x6_2-3-2019_8-5-0_OS_sn1_cube_z.img", vol)).meta
    assert (other.laterality, other.date) == ("OS", "2019-02-03T08:05:00")
    renamed = read_volume(write_cirrus(tmp_path / "P1_OS_32x6.img", vol)).meta
    assert (renamed.laterality, renamed.date, renamed.source) == (
        "OS",
        None,
        "Cirrus file name (eye); device: the raw Cirrus cube format",
    )
    assert read_volume(write_cirrus(tmp_path / "ODD_32x6.img", vol)).meta.laterality is None  # no eye of its own
    assert warnings_from(caplog) == []


def test_nonsense_in_a_cirrus_name_is_left_unknown_and_warned(tmp_path, caplog):
    vol = known_volume(6, 16, 32)
    bad_eye = read_volume(write_cirrus(tmp_path / "P1_Macular Cube 32x6_7-25-2016_12-45-50_XX_sn1_cube_z.img", vol))
    assert (bad_eye.meta.laterality, bad_eye.meta.date) == (None, "2016-07-25T12:45:50")
    bad_date = read_volume(write_cirrus(tmp_path / "P1_Macular Cube 32x6_13-25-2016_12-45-50_OD_sn1_cube_z.img", vol))
    assert (bad_date.meta.laterality, bad_date.meta.date) == ("OD", None)
    found = warnings_from(caplog)
    assert len(found) == 2
    assert "XX_sn1" in found[0] and "'XX', not R / L or OD / OS" in found[0]
    assert "13-25-2016" in found[1] and "is not a date" in found[1]


def test_vendor_meta_is_read_where_the_reader_gives_it_and_never_fails(tmp_path, caplog):
    """The vendor readers' meta (no vendor files here: the objects oct-converter and eyepy return, as they document
    them), each missing value None, never an error."""
    from datetime import datetime
    from types import SimpleNamespace

    from data.volumes import _converter_meta, _eyepy_meta

    volume = SimpleNamespace(laterality="L", acquisition_date=datetime(2018, 3, 4, 5, 6, 7))
    e2e = _converter_meta(volume, tmp_path / "a.e2e")
    assert (e2e.laterality, e2e.date, e2e.device) == ("OS", "2018-03-04T05:06:07", "Heidelberg Engineering")
    assert (
        e2e.bscan_order is None and e2e.source == "oct-converter laterality, acquisition_date; device: the .e2e format"
    )
    assert _converter_meta(SimpleNamespace(), tmp_path / "a.fda") == ScanMeta(
        None, None, "Topcon", None, "device: the .fda format"
    )
    vol = SimpleNamespace(meta={"laterality": "OD", "exam_time": datetime(2020, 1, 2, 3, 4, 5), "visit_date": None})
    assert _eyepy_meta(vol, tmp_path / "a.vol").date == "2020-01-02T03:04:05"
    visit = _eyepy_meta(SimpleNamespace(meta={"visit_date": datetime(2020, 1, 2)}), tmp_path / "a.vol")
    assert (visit.laterality, visit.date, visit.source) == (
        None,
        "2020-01-02",
        "eyepy VisitDate; device: the .vol format",
    )
    assert _eyepy_meta(object(), tmp_path / "a.vol").date is None  # no meta at all
    assert warnings_from(caplog) == []
    odd = _converter_meta(SimpleNamespace(laterality="B", acquisition_date="yesterday"), tmp_path / "odd.e2e")
    assert (odd.laterality, odd.date) == (None, None) and len(warnings_from(caplog)) == 2


def test_formats_that_say_nothing_have_empty_meta(tmp_path):
    assert read_volume(write_itk(tmp_path / "v.nii.gz", known_volume())).meta == ScanMeta()
    assert read_volume(write_dicom(tmp_path / "v.dcm", known_volume())).meta == ScanMeta()
