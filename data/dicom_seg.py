"""Label maps as DICOM Segmentations over the DICOM they were predicted on, so that a PACS or a DICOM viewer (OHIF,
3D Slicer, Weasis) shows them on the scan.

``write_dicom_seg(path, labels, source, class_names, algorithm, version)`` writes one BINARY Segmentation (highdicom)
with a segment per lesion class, present or not: the SEG type every viewer reads. It has a series of its own in the
source's study, lies in the source's frame of reference, and each of its frames points to the source frame it was
predicted on. A source that lacks what a SEG needs (its frames' positions, their orientation, the pixel spacing, a
frame of reference) gives one warning and no file, never a SEG that would lie in the wrong place.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from data.common import file_error
from data.volumes import _require, frame_positions
from utils.io import atomic_path

log = logging.getLogger(__name__)

# Codes from DICOM PS3.16, by their names in pydicom's copy of it (``pydicom.sr.codedict.codes.SCT``): the category
# from CID 7150 (Segmentation Property Category), the type from CID 7194 (Morphologically Abnormal Structure types) or
# CID 7197 (Body Substance types), the anatomic region from CID 4211 (Ophthalmic OCT Anatomic Structure Imaged).
# DICOM has no codes for the OCT fluid kinds themselves, so each has the nearest general type, and its own label and
# description say which it is:
#   REA, fluid inside the retina (retinal edema): Morphologically Abnormal Structure / Edema (SCT 49755003 / 79654002)
#   SRF, fluid between the retina and the RPE: Body Substance / Body fluid (SCT 91720002 / 32457005)
#   PED, the RPE lifted off Bruch's membrane (serous or fibrovascular, not always fluid): Morphologically Abnormal
#   Structure / Lesion (SCT 49755003 / 52988006)
# all in the Retina (SCT 5665001). A class this table does not know is a Lesion, described by its name.
SEGMENT_CONCEPTS: dict[str, tuple[str, str, str]] = {  # class -> (category, type, description)
    "REA": ("MorphologicallyAbnormalStructure", "Edema", "Retinal edema area (intraretinal fluid)"),
    "SRF": ("BodySubstance", "BodyFluid", "Subretinal fluid"),
    "PED": ("MorphologicallyAbnormalStructure", "Lesion", "Pigment epithelial detachment"),
}
UNKNOWN_CONCEPT = ("MorphologicallyAbnormalStructure", "Lesion")
MANUFACTURER = "retina-lesion"  # the toolkit, as the equipment that made the SEG
SEG_SERIES_NUMBER = 9001  # far above the scanners' own series numbers, so a PACS lists the SEG after the scans
_SHARED = (("PlaneOrientationSequence", "ImageOrientationPatient"), ("PixelMeasuresSequence", "PixelSpacing"))
# the source's patient and study attributes a SEG copies; DICOM lets them be empty, highdicom needs them there
_COPIED = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


def write_dicom_seg(
    path: str | Path,
    labels: np.ndarray,
    source: Path,
    class_names: tuple[str, ...],
    algorithm: str,
    version: str,
) -> Path | None:
    """labels (Z, H, W) class indices (0 background, k the class ``class_names[k - 1]``) predicted on the multi-frame
    DICOM ``source`` -> a DICOM Segmentation at ``path`` (written atomically), or None, with one warning naming the
    file and what it lacks, where ``source`` is not a DICOM or lacks what a SEG needs. Labels whose shape is not the
    source's (frames, rows, columns), or that hold a class index past ``class_names``, are a ValueError."""
    source = Path(source)
    labels = np.asarray(labels)
    hd = _require("highdicom", "highdicom", source)  # here, not at the top: it takes a while to import
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # its step-by-step INFO lines are not the user's news
    ds = _read_header(source)
    if ds is None:
        return None
    frames = (int(ds.get("NumberOfFrames") or 1), int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
    if labels.shape != frames:
        raise ValueError(
            f"{source}: labels of shape {labels.shape} do not fit the DICOM's {frames[0]} frames of "
            f"{frames[1]} x {frames[2]} (frames, rows, columns): they were not predicted on this file"
        )
    if labels.dtype.kind not in "ui" or (labels.size and not 0 <= labels.min() <= labels.max() <= len(class_names)):
        found = np.unique(labels)[:10].tolist()
        raise ValueError(
            f"{source}: labels must be class indices 0..{len(class_names)} ({', '.join(class_names)}); found "
            f"{labels.dtype} values {found}"
        )
    missing = _missing_for_seg(ds)
    if missing:
        log.warning(
            f"{source}: no DICOM SEG written: the file lacks {', '.join(missing)}, without which a SEG cannot be "
            "placed on its frames (write the NIfTI label map instead, or export the scan as an enhanced / ophthalmic "
            "tomography DICOM that has them)"
        )
        return None
    from pydicom.sr.codedict import codes

    for key in _COPIED:  # empty where the source says nothing: DICOM allows it, highdicom needs the attribute
        if key not in ds:
            setattr(ds, key, None)
    try:
        seg = hd.seg.Segmentation(
            source_images=[ds],
            pixel_array=np.ascontiguousarray(labels, dtype=np.uint8),
            segmentation_type="BINARY",
            segment_descriptions=_segments(hd, codes, class_names, algorithm, version),
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=algorithm[:64],
            software_versions=version[:64],
            device_serial_number="none",  # software, no device: the attribute is mandatory all the same
            series_description=f"{algorithm} {version} fluid segmentation"[:64],
            content_label="FLUID",
            content_description=f"OCT fluid: {', '.join(class_names)}"[:64],
            omit_empty_frames=bool(labels.any()),  # a volume without fluid keeps its frames: a SEG needs one
        )
    except ValueError as e:  # highdicom's word on geometry it cannot use (two frames at one position, ...)
        log.warning(f"{source}: no DICOM SEG written: highdicom cannot place a SEG on this file's frames ({e})")
        return None
    with atomic_path(path, suffix=".dcm") as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(path)


def _read_header(source: Path):
    """The DICOM's header (no pixel data), or None with a warning where the file is not a DICOM."""
    pydicom = _require("pydicom", "pydicom", source)
    try:
        return pydicom.dcmread(source, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError:
        log.warning(f"{source}: no DICOM SEG written: the file is not a DICOM (a SEG can only refer to one)")
        return None
    except OSError as e:
        raise file_error(source, e) from e


def _missing_for_seg(ds) -> list[str]:
    """What ``ds`` lacks of what a SEG needs: its identifiers, a frame of reference, every frame's position, and the
    frames' orientation and pixel spacing. Orientation and spacing found per frame (all frames alike) or at the top
    level are put into the shared functional groups, where highdicom reads them."""
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not ds.get(k)]
    if not ds.get("FrameOfReferenceUID"):
        missing.append("FrameOfReferenceUID")
    positions = frame_positions(ds)
    if positions is None or len(positions) != int(ds.get("NumberOfFrames") or 1):
        missing.append("ImagePositionPatient of every frame (PerFrameFunctionalGroupsSequence > PlanePositionSequence)")
    for sequence, key in _SHARED:
        if not _share(ds, sequence, key):
            missing.append(f"{key} ({sequence}, one for all frames)")
    return missing


def _share(ds, sequence: str, key: str) -> bool:
    """Whether ``key`` (in ``sequence``) is one value for all frames: in the shared functional groups, the same in every
    per-frame group, or at the top level; found elsewhere than shared, it is put there."""
    from pydicom.dataset import Dataset

    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0] and shared[0][sequence].value and shared[0][sequence][0].get(key):
        return True
    per_frame = [g[sequence][0] for g in ds.get("PerFrameFunctionalGroupsSequence") or [] if g.get(sequence)]
    values = {tuple(np.ravel(np.asarray(item[key].value, dtype=float))) for item in per_frame if item.get(key)}
    if per_frame and len(per_frame) == len(ds.PerFrameFunctionalGroupsSequence) and len(values) == 1:
        item = per_frame[0]
    elif ds.get(key):
        item = Dataset()
        setattr(item, key, ds[key].value)
        if key == "PixelSpacing" and ds.get("SliceThickness") is not None:
            item.SliceThickness = ds.SliceThickness  # highdicom copies it with the spacing
    else:
        return False
    if not shared:
        ds.SharedFunctionalGroupsSequence = [Dataset()]
    setattr(ds.SharedFunctionalGroupsSequence[0], sequence, [item])
    return True


def _segments(hd, codes, class_names: tuple[str, ...], algorithm: str, version: str) -> list:
    """One SegmentDescription per class (segment k: labels == k), each coded by ``SEGMENT_CONCEPTS``."""
    family = codes.cid7162.ArtificialIntelligence
    identification = hd.AlgorithmIdentificationSequence(name=algorithm[:64], family=family, version=version[:64])
    segments = []
    for number, name in enumerate(class_names, start=1):
        category, kind, description = SEGMENT_CONCEPTS.get(name, (*UNKNOWN_CONCEPT, name))
        segment = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=getattr(codes.SCT, category),
            segmented_property_type=getattr(codes.SCT, kind),
            algorithm_type="AUTOMATIC",
            algorithm_identification=identification,
            anatomic_regions=[codes.SCT.Retina],
        )
        segment.SegmentDescription = description[:64]
        segments.append(segment)
    return segments
