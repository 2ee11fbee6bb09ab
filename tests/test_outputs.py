"""What predict.py writes for viewers, PACS and clinics (issue 24): the JSON summary per input, the DICOM SEG of a
DICOM input read back with highdicom, the NIfTI map in the DICOM's spacing, the scan's metadata, and
``--compare`` of two visits of one eye, whose figures must be the difference of the two summaries."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest

import predict as predict_script
from data.synthetic import generate_volume, write_follow_up
from tasks.oct import OctTask
from tests.test_volumes import write_enhanced_dicom

NAMES = ("REA", "SRF", "PED")
SHIPPED = str(OctTask.shipped_checkpoint)
Z, H, W = 12, 256, 128
SPACING = (0.5, 2 / H, 6 / W)  # mm: 12 B-scans over 6 mm, 2 mm deep, 6 mm wide


@pytest.fixture(scope="module")
def visits(tmp_path_factory):
    """Two visits of one eye (all three lesions; SRF halved, REA grown by half), predicted with --compare."""
    folder = tmp_path_factory.mktemp("visits")
    data = write_follow_up(folder / "eye", seed=0, growth={"REA": 1.5, "SRF": 0.5}, slices=Z, height=H, width=W)
    out = folder / "pred"
    argv = [str(data / "P0001_V1.img"), str(data / "P0001_V2.img"), "--compare", "--spacing", *map(str, SPACING)]
    written = predict_script.main([*argv, "--checkpoint", SHIPPED, "--out", str(out), "--no-pictures"])
    return {"data": data, "out": out, "written": written}


def test_summary_holds_what_the_other_outputs_hold(visits):
    out = visits["out"]
    for visit in ("P0001_V1", "P0001_V2"):
        info = json.loads((out / "segment" / f"{visit}_summary.json").read_text())
        labels = np.load(out / "segment" / f"{visit}_labelMark_volumes.npy")
        voxel_nl = float(np.prod(SPACING)) * 1000
        counts = {n: int((labels == k).sum()) for k, n in enumerate(NAMES, start=1)}
        assert info["voxels"] == counts
        assert info["volume_nl"] == pytest.approx({n: c * voxel_nl for n, c in counts.items()})
        assert info["input"]["spacing_mm"] == pytest.approx(SPACING) and info["input"]["shape"] == [Z, H, W]
        assert info["model"]["checkpoints"][0]["file"] == "oct_unet.pth.tar"
        grid = info["etdrs"]
        assert len(grid["sectors"]) == 9 and grid["cst_um"] == info["thickness"]["cst_um"]
        # every lesion voxel inside the 6 mm grid is in exactly one sector; the rest lie outside it
        for n in NAMES:
            assert sum(s["fluid_nl"][n] for s in grid["sectors"]) <= info["volume_nl"][n] + 1e-9
        assert 150 < grid["cst_um"] < 600  # a retina, in um
        assert info["input"]["scan"]["laterality"] is None and info["detection"]["mode"] == "combined"
        assert np.allclose(
            info["detection"]["per_bscan"], np.load(out / "segment" / f"{visit}_labelMark_detections.npy"), atol=1e-4
        )


def test_compare_page_is_the_difference_of_the_two_summaries(visits):
    out = visits["out"]
    page = out / "report" / "P0001_V1_vs_P0001_V2.html"
    assert page in visits["written"] and page.is_file()
    first, second = (json.loads((out / "segment" / f"P0001_{v}_summary.json").read_text()) for v in ("V1", "V2"))
    text = page.read_text()
    from reports.html import _sig

    for n in NAMES:
        a, b = first["volume_nl"][n], second["volume_nl"][n]
        change = ("+" if b > a else "") + _sig(b - a)
        assert f'<td class="num">{_sig(a)}</td><td class="num">{_sig(b)}</td><td class="num">{change}</td>' in text
    rows = list(csv.DictReader((out / "quantify.csv").open()))
    assert [r["patient"] for r in rows] == ["P0001_V1", "P0001_V2"]
    assert float(rows[0]["cst_um"]) == pytest.approx(first["etdrs"]["cst_um"], abs=0.05)
    assert float(rows[1]["SRF_central_nl"]) == pytest.approx(second["etdrs"]["sectors"][0]["fluid_nl"]["SRF"], abs=1e-4)
    # the truth moved as asked: SRF halved, REA grown (the generator's own counts)
    truth = json.loads((visits["data"] / "follow_up.json").read_text())["voxels"]
    assert truth["V2"]["SRF"] < 0.6 * truth["V1"]["SRF"] and truth["V2"]["REA"] > 1.3 * truth["V1"]["REA"]


def test_compare_needs_exactly_two_visits(visits, tmp_path):
    one = str(visits["data"] / "P0001_V1.img")
    with pytest.raises(ValueError, match="two visits"):
        predict_script.main([one, "--compare", "--checkpoint", SHIPPED, "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def dicom_prediction(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom")
    image, _ = generate_volume(np.random.default_rng(6), Z, H, W)
    dcm = write_enhanced_dicom(folder / "scan.dcm", image, spacing=SPACING, z_step=SPACING[0])
    written = predict_script.main([str(dcm), "--checkpoint", SHIPPED, "--out", str(folder / "pred"), "--no-pictures"])
    return {"dcm": dcm, "written": written, "out": folder / "pred"}


def test_a_dicom_input_gets_a_seg_that_references_it_and_holds_the_labels(dicom_prediction):
    import highdicom as hd
    import pydicom

    out, dcm = dicom_prediction["out"], dicom_prediction["dcm"]
    seg_file = out / "segment" / "scan_seg.dcm"
    assert seg_file in dicom_prediction["written"]
    labels = np.load(out / "segment" / "scan_labelMark_volumes.npy")
    source = pydicom.dcmread(dcm)
    seg = hd.seg.segread(seg_file)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(NAMES)
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    # each frame of the SEG: the segment's mask on the source frame it references
    masks = np.zeros((len(NAMES), *labels.shape), bool)
    for frame, group in zip(
        seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None], seg.PerFrameFunctionalGroupsSequence
    ):
        k = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = int(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        masks[k - 1, src - 1] = frame.astype(bool)
    for k in range(1, len(NAMES) + 1):
        assert np.array_equal(masks[k - 1], labels == k), NAMES[k - 1]


def test_a_dicom_inputs_scan_details_reach_the_summary_and_its_nifti_its_spacing(dicom_prediction):
    import SimpleITK as sitk

    out = dicom_prediction["out"]
    info = json.loads((out / "segment" / "scan_summary.json").read_text())
    scan = info["input"]["scan"]
    assert scan["laterality"] == "OD" and scan["date"].startswith("2016-07-25T12:45:50")
    assert scan["device"] == "Carl Zeiss Meditec CIRRUS HD-OCT 5000"
    assert scan["bscan_order"] == "inferior-first"  # frame positions rise along +z (superior) with the frame index
    nifti = sitk.ReadImage(str(out / "segment" / "scan_labels.nii.gz"))
    assert nifti.GetSpacing() == pytest.approx((SPACING[2], SPACING[1], SPACING[0]))
    # where the DICOM puts its frames: frame k at (0.5, 1.0, 3.0 + k * dz), rows along +x, depth along +y
    assert nifti.GetOrigin() == pytest.approx((0.5, 1.0, 3.0))
    assert nifti.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    last = nifti.TransformIndexToPhysicalPoint((0, 0, Z - 1))
    assert last == pytest.approx((0.5, 1.0, 3.0 + (Z - 1) * SPACING[0]))
    labels = np.load(out / "segment" / "scan_labelMark_volumes.npy")
    assert np.array_equal(sitk.GetArrayFromImage(nifti), labels)
    # the grid knows the eye and the order: anatomical sector names
    names = [s["name"] for s in info["etdrs"]["sectors"]]
    assert names[:5] == ["central", "inner inferior", "inner nasal", "inner superior", "inner temporal"]


def test_a_dicom_without_plane_positions_gets_no_seg_and_one_warning(tmp_path, caplog):
    image, _ = generate_volume(np.random.default_rng(7), 4, 64, 32)
    dcm = write_enhanced_dicom(tmp_path / "flat.dcm", image, spacing=(1.5, 2 / 64, 6 / 32), z_step=None)
    with caplog.at_level(logging.WARNING):
        written = predict_script.main(
            [str(dcm), "--checkpoint", SHIPPED, "--out", str(tmp_path / "p"), "--no-pictures"]
        )
    assert not any(p.name.endswith("_seg.dcm") for p in written)
    warnings = [r.getMessage() for r in caplog.records if "SEG" in r.getMessage() or "Segmentation" in r.getMessage()]
    assert len(warnings) == 1 and "flat.dcm" in warnings[0] and "ImagePositionPatient" in warnings[0]


@pytest.mark.parametrize(
    ("second_tags", "said"),
    [
        ({"ImageLaterality": "L"}, "is a OD scan and"),
        ({"AcquisitionDateTime": "20150101090000"}, "give the earlier visit first"),
    ],
)
def test_compare_refuses_two_eyes_or_visits_in_the_wrong_order_before_predicting(
    tmp_path, monkeypatch, second_tags, said
):
    image, _ = generate_volume(np.random.default_rng(8), 4, 64, 32)
    spacing = (1.5, 2 / 64, 6 / 32)
    one = write_enhanced_dicom(tmp_path / "one.dcm", image, spacing=spacing, z_step=spacing[0])
    two = write_enhanced_dicom(tmp_path / "two.dcm", image, spacing=spacing, z_step=spacing[0], **second_tags)

    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted before the visits were checked")

    monkeypatch.setattr(OctTask, "predict", no_prediction)
    with pytest.raises(ValueError, match=said):
        predict_script.main([str(one), str(two), "--compare", "--checkpoint", SHIPPED, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_a_dicom_whose_rows_run_to_the_patients_right_is_read_as_left_first(tmp_path):
    import pydicom

    from data.volumes import read_volume

    image, _ = generate_volume(np.random.default_rng(9), 3, 32, 16)
    path = write_enhanced_dicom(tmp_path / "flip.dcm", image, spacing=(1.0, 2 / 32, 6 / 16), z_step=1.0)
    ds = pydicom.dcmread(path)
    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
    ds.save_as(path)
    assert read_volume(path).meta.ascan_order == "left-first"
    assert (
        read_volume(write_enhanced_dicom(tmp_path / "std.dcm", image, spacing=(1.0, 2 / 32, 6 / 16))).meta.ascan_order
        == "right-first"
    )


def test_a_run_reports_its_times_and_threads_are_set_once(tmp_path, caplog):
    """predict.py ends with one line of where its time went (issue 27: start-up, read, predict, write), and
    --threads sets the CPU threads of every kernel it runs (here 1); 0 is refused."""
    import re

    import torch
    from PIL import Image

    image, _ = generate_volume(np.random.default_rng(10), 1, 128, 64)
    Image.fromarray(image[0]).save(tmp_path / "b.png")
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO):
            predict_script.main(
                [str(tmp_path / "b.png"), "--checkpoint", SHIPPED, "--out", str(tmp_path / "p"), "--threads", "1"]
            )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("times: "))
    parts = dict(re.findall(r"([a-z-]+(?: \([a-z, ]+\))?) (\d+\.\d) s", line))
    assert set(parts) == {"start-up (imports, model)", "read", "predict", "write"}, line
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        predict_script.main(
            [str(tmp_path / "b.png"), "--checkpoint", SHIPPED, "--out", str(tmp_path / "q"), "--threads", "0"]
        )
    assert not (tmp_path / "q").exists()  # refused before any output
