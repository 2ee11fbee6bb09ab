"""data.dicom_seg: a label map written as a DICOM Segmentation over a small ophthalmic tomography DICOM, read back with
pydicom (by hand, frame by frame) and highdicom: one segment per class, the source referenced, its geometry kept, each
segment's mask the labels of its class. A source a SEG cannot be placed on gives one warning and no file."""

import logging
import sys

import numpy as np
import pydicom
import pytest
from test_volumes import known_volume, write_dicom, write_enhanced_dicom, write_itk

from data.dicom_seg import write_dicom_seg
from data.volumes import VolumeFormatError

Z, H, W = 6, 64, 48
SPACING = (0.047, 0.0039, 0.0117)  # mm between B-scans, along depth, between A-scans
CLASSES = ("REA", "SRF", "PED")
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage


def known_labels() -> np.ndarray:
    """REA: rows 10..19 x columns 5..14 of B-scans 1 and 2 (200 voxels); SRF: rows 30..39 x columns 20..29 of B-scan 2
    and rows 50..51 x columns 40..42 of B-scan 4 (100 + 6 voxels); no PED anywhere; B-scans 0, 3 and 5 empty."""
    labels = np.zeros((Z, H, W), np.uint8)
    labels[1:3, 10:20, 5:15] = 1
    labels[2, 30:40, 20:30] = 2
    labels[4, 50:52, 40:43] = 2
    return labels


def seg_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "data.dicom_seg" and r.levelno == logging.WARNING]


def source_dicom(tmp_path, z_step=-SPACING[0], **tags):
    return write_enhanced_dicom(tmp_path / "scan.dcm", known_volume(Z, H, W), SPACING, z_step, **tags)


def write(tmp_path, source, labels=None):
    labels = known_labels() if labels is None else labels
    return write_dicom_seg(tmp_path / "seg.dcm", labels, source, CLASSES, "unet_nested", "1.2.0")


@pytest.mark.parametrize("z_step", [-SPACING[0], SPACING[0]])  # superior-first, inferior-first
def test_seg_holds_every_class_on_the_source_frames(tmp_path, caplog, z_step):
    source = source_dicom(tmp_path, z_step)
    labels = known_labels()
    assert [int((labels == k).sum()) for k in (1, 2, 3)] == [200, 106, 0]
    out = write(tmp_path, source)
    assert out == tmp_path / "seg.dcm" and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.dcm", "seg.dcm"]  # no temporary file left
    assert seg_warnings(caplog) == []
    src, seg = pydicom.dcmread(source), pydicom.dcmread(out)

    assert (seg.SOPClassUID, seg.Modality, seg.SegmentationType) == (SEG_STORAGE, "SEG", "BINARY")
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.SeriesInstanceUID not in (src.SeriesInstanceUID, "") and seg.PatientID == "P1"
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == src.SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence] == [src.SOPInstanceUID]

    segments = seg.SegmentSequence
    assert [s.SegmentLabel for s in segments] == list(CLASSES) and [s.SegmentNumber for s in segments] == [1, 2, 3]
    categories = [s.SegmentedPropertyCategoryCodeSequence[0].CodeValue for s in segments]
    types = [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in segments]
    assert categories == ["49755003", "91720002", "49755003"]  # Morphologically Abnormal Structure, Body Substance
    assert types == ["79654002", "32457005", "52988006"]  # Edema, Body fluid, Lesion
    assert all(s.AnatomicRegionSequence[0].CodeValue == "5665001" for s in segments)  # the retina
    assert segments[1].SegmentDescription == "Subretinal fluid"
    algorithm = segments[0].SegmentationAlgorithmIdentificationSequence[0]
    assert segments[0].SegmentAlgorithmType == "AUTOMATIC"
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("unet_nested", "1.2.0")
    assert (seg.ManufacturerModelName, seg.SoftwareVersions) == ("unet_nested", "1.2.0")

    # geometry: the source's spacing and orientation, and each SEG frame at the position of the source frame it names
    shared, src_shared = seg.SharedFunctionalGroupsSequence[0], src.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [SPACING[1], SPACING[2]]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    src_orientation = src_shared.PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [float(v) for v in src_orientation] == [1, 0, 0, 0, 1, 0]
    src_planes = [g.PlanePositionSequence[0] for g in src.PerFrameFunctionalGroupsSequence]
    src_positions = [[float(v) for v in plane.ImagePositionPatient] for plane in src_planes]
    assert src_positions[1] == [0.5, 1.0, 3.0 + z_step]  # as written
    # by hand: every SEG frame's segment, source frame and pixels
    masks = np.zeros((3, Z, H, W), bool)
    for frame, group in zip(seg.pixel_array.reshape(-1, H, W), seg.PerFrameFunctionalGroupsSequence):
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        image = group.DerivationImageSequence[0].SourceImageSequence[0]
        assert image.ReferencedSOPInstanceUID == src.SOPInstanceUID
        k = int(image.ReferencedFrameNumber) - 1
        assert [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient] == src_positions[k]
        masks[number - 1, k] = frame.astype(bool)
    for number in (1, 2, 3):
        for k in range(Z):
            assert np.array_equal(masks[number - 1, k], labels[k] == number), (number, k)
    # highdicom's own reading agrees, frame by frame (empty frames are left out of the file: they read as empty)
    import highdicom as hd

    back = hd.seg.segread(out)
    assert back.get_segment_numbers() == [1, 2, 3]
    pixels = back.get_pixels_by_source_frame(
        src.SOPInstanceUID, source_frame_numbers=range(1, Z + 1), assert_missing_frames_are_empty=True
    )
    assert pixels.shape == (Z, H, W, 3)
    for number in (1, 2, 3):
        assert np.array_equal(pixels[..., number - 1], labels == number)
    assert [int(pixels[..., n].sum()) for n in range(3)] == [200, 106, 0]


def test_a_volume_without_fluid_is_a_seg_of_empty_segments(tmp_path, caplog):
    source = source_dicom(tmp_path)
    seg = pydicom.dcmread(write(tmp_path, source, np.zeros((Z, H, W), np.uint8)))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(CLASSES)
    assert seg.NumberOfFrames == 3 * Z and not seg.pixel_array.any()  # every frame kept: a SEG needs one
    assert seg_warnings(caplog) == []


def test_orientation_per_frame_and_spacing_at_the_top_level_are_used(tmp_path, caplog):
    from pydicom.dataset import Dataset

    source = source_dicom(tmp_path)
    ds = pydicom.dcmread(source)
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence
    del shared.PlaneOrientationSequence, shared.PixelMeasuresSequence
    for group in ds.PerFrameFunctionalGroupsSequence:
        group.PlaneOrientationSequence = [Dataset(orientation[0])]
    ds.PixelSpacing = [SPACING[1], SPACING[2]]  # as some converters write it
    ds.save_as(source)
    seg = pydicom.dcmread(write(tmp_path, source))
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [SPACING[1], SPACING[2]]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert seg_warnings(caplog) == []


def test_a_source_without_frame_of_reference_or_positions_gives_one_warning_and_no_file(tmp_path, caplog):
    source = source_dicom(tmp_path, z_step=None, FrameOfReferenceUID=None)
    assert write(tmp_path, source) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.dcm"]
    found = seg_warnings(caplog)
    assert len(found) == 1 and "scan.dcm: no DICOM SEG written" in found[0]
    assert "FrameOfReferenceUID" in found[0] and "ImagePositionPatient of every frame" in found[0]
    assert "PixelSpacing" not in found[0]  # what it has is not named


def test_the_plain_dicom_export_lacks_all_of_a_seg_s_geometry(tmp_path, caplog):
    source = write_dicom(tmp_path / "plain.dcm", known_volume(Z, H, W))  # no frame of reference, positions, orientation
    assert write(tmp_path, source) is None
    (found,) = seg_warnings(caplog)
    for tag in ("SeriesInstanceUID", "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient"):
        assert tag in found, tag


def test_a_source_that_is_not_a_dicom_gives_one_warning_and_no_file(tmp_path, caplog):
    source = write_itk(tmp_path / "scan.nii.gz", known_volume(Z, H, W))
    assert write(tmp_path, source) is None
    assert not (tmp_path / "seg.dcm").exists()
    (found,) = seg_warnings(caplog)
    assert "scan.nii.gz: no DICOM SEG written: the file is not a DICOM" in found


def test_labels_of_another_shape_or_past_the_classes_are_refused(tmp_path):
    source = source_dicom(tmp_path)
    with pytest.raises(ValueError, match=r"scan\.dcm: labels of shape \(5, 64, 48\) do not fit .* 6 frames of 64 x 48"):
        write(tmp_path, source, known_labels()[:5])
    bad = known_labels()
    bad[0, 0, 0] = 4
    with pytest.raises(ValueError, match=r"class indices 0\.\.3 \(REA, SRF, PED\); found uint8 values \[0, 1, 2, 4\]"):
        write(tmp_path, source, bad)
    assert not (tmp_path / "seg.dcm").exists()


def test_without_highdicom_the_error_says_what_to_install(tmp_path, monkeypatch):
    source = source_dicom(tmp_path)
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom now raises ImportError
    with pytest.raises(VolumeFormatError, match=r"scan\.dcm: reading this format needs highdicom"):
        write(tmp_path, source)
