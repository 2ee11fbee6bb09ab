"""One reader for OCT volumes in the formats scanners and public data sets use.

``read_volume(path)`` -> ``ScanVolume(image (Z, H, W) uint8, spacing in mm or None, path, format)``, the format picked
by the path (suffixes in any case):

    a folder             "slices"      BMP / PNG / TIFF slices of one kind in natural order (2.png before 10.png),
                                       e.g. AI Challenger's <PID>.img/ (a folder is always a slice folder)
    .tif .tiff           "tiff"        multi-page TIFF, one page per B-scan
    .nii .nii.gz         "nifti"       NIfTI (SimpleITK)
    .mhd .mha            "metaimage"   ITK MetaImage (SimpleITK), e.g. RETOUCH's oct.mhd + oct.raw
    .img                 "cirrus-img"  raw Zeiss Cirrus cube; its size (A-scans x B-scans) from the name or ``cube=``
    .dcm, DICM preamble  "dicom"       multi-frame DICOM (pydicom), one frame per B-scan
    .e2e .fda .fds       "e2e" ...     Heidelberg / Topcon exports through oct-converter
    .vol                 "vol"         Heidelberg exports through eyepy

Axes: Z B-scans, H depth rows (the inner retina at the top), W A-scans; spacing (between B-scans, along depth, between
A-scans) in mm, in the same order. Other intensity types are scaled to uint8 by the volume's own range.
"""

from __future__ import annotations

import gzip
import importlib
import logging
import math
import re
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np
import tifffile

from data.common import DatasetError, file_error
from data.oct import read_grey, stack_slices
from utils.io import IGNORED_FILES, atomic_path, files_fingerprint

log = logging.getLogger(__name__)

Spacing = tuple[float, float, float]
PartialSpacing = tuple[float | None, float | None, float | None]

FORMATS = ("slices", "tiff", "nifti", "metaimage", "cirrus-img", "dicom", "e2e", "fda", "fds", "vol")
SUFFIX_FORMATS = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".mhd": "metaimage",
    ".mha": "metaimage",
    ".img": "cirrus-img",
    ".dcm": "dicom",
    ".e2e": "e2e",
    ".fda": "fda",
    ".fds": "fds",
    ".vol": "vol",
}
SLICE_KINDS = {".bmp": "BMP", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}
LABEL_FORMATS = ("slices", "tiff", "nifti", "metaimage")

# (A-scans, B-scans) -> (width mm, length mm, depth mm) of the Cirrus scan patterns whose size is fixed
CIRRUS_CUBES: dict[tuple[int, int], tuple[float, float, float]] = {
    (512, 128): (6.0, 6.0, 2.0),  # Macular Cube 512x128
    (200, 200): (6.0, 6.0, 2.0),  # Macular / Optic Disc Cube 200x200
}
_CUBE_SIZE = re.compile(r"(\d+)x(\d+)", re.IGNORECASE)
_GENERIC_STEMS = {"oct", "reference"}  # RETOUCH's TRAIN001/oct.mhd: the folder names the patient
_MET_BYTES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_FLOAT": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_DOUBLE": 8,
}


class VolumeFormatError(DatasetError):
    """A volume file this reader cannot use; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ScanMeta:
    """What a file says about its scan, each None where it does not say: ``laterality`` "OD" (right eye) or "OS"
    (left), ``date`` ISO 8601 (``2016-07-25`` or ``2016-07-25T12:45:50``), ``device`` (maker and model as the file
    names them), ``bscan_order`` "superior-first" or "inferior-first" (where the file's geometry says which way the
    B-scans run; else the order is as stored), ``ascan_order`` "right-first" (A-scan 1 on the patient's right, the
    A-scans running to the patient's left: a fundus photo's left to right, every vendor's display) or "left-first"
    where the file's geometry says which (else None: taken as right-first) and ``source``: which tags or name gave
    them, for the report."""

    laterality: str | None = None
    date: str | None = None
    device: str | None = None
    bscan_order: str | None = None
    source: str = ""
    ascan_order: str | None = None


@dataclass(frozen=True, eq=False)
class ScanVolume:
    """One OCT volume: image (Z, H, W) uint8, spacing in mm (between B-scans, along depth, between A-scans) or None
    when unknown, the path it was read from, its format (one of ``FORMATS``) and what the file says about the scan
    (``meta``)."""

    image: np.ndarray
    spacing: Spacing | None
    path: Path
    format: str
    meta: ScanMeta = ScanMeta()


class _Decoded(NamedTuple):
    """What a format's reader gives: the array as stored, the file's spacing (each part None where it does not say)
    and what it says about the scan."""

    array: np.ndarray
    spacing: PartialSpacing | None
    meta: ScanMeta = ScanMeta()


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie, in ITK's terms (x: A-scans, y: depth, z: B-scans): ``spacing`` and ``origin`` in
    mm, ``direction`` the 3 x 3 matrix row by row; ``source``: "file" (the input's own header), "spacing" (a known
    spacing, origin 0 and no rotation) or "unit" (nothing known: 1 mm voxels)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    source: str


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def volume_geometry(volume: ScanVolume) -> Geometry:
    """The geometry a label map of ``volume`` is written with: a NIfTI or MetaImage input's own header (spacing,
    origin, direction as ITK reads them, the array in its voxel order), or a DICOM's frame positions, orientation
    and pixel spacing (DICOM's patient coordinates are ITK's), so the map overlays it in any viewer even where
    ``--spacing`` replaced the spacing for the fluid volumes; for other inputs (slice folders, vendor files, a DICOM
    without positions) the known spacing with origin 0 and no rotation, else 1 mm voxels."""
    if volume.format in ("nifti", "metaimage"):
        reader = _itk_reader(volume.path)
        spacing = tuple(float(v) for v in reader.GetSpacing())
        origin = tuple(float(v) for v in reader.GetOrigin())
        direction = tuple(float(v) for v in reader.GetDirection())
        if all(math.isfinite(v) and v > 0 for v in spacing):
            return Geometry(spacing, origin, direction, "file")
    if volume.format == "dicom":
        own = _dicom_geometry(volume.path)
        if own is not None:
            return own
    spacing = None if volume.spacing is None else tuple(float(v) for v in reversed(volume.spacing))
    if spacing is not None:
        return Geometry(spacing, (0.0, 0.0, 0.0), IDENTITY, "spacing")
    return Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), IDENTITY, "unit")


def write_label_nifti(path: str | Path, labels: np.ndarray, geometry: Geometry) -> Path:
    """labels (Z, H, W) uint8 -> a NIfTI file (``.nii.gz``) in ``geometry``, written atomically: opens over its
    input in ITK-SNAP and 3D Slicer."""
    sitk = _require("SimpleITK", "SimpleITK", Path(path))
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=np.uint8))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return Path(path)


# ---- public interface


# read_ahead's reads in flight: (path, cube, spacing) -> (the path's stat identity when the read began, its future)
_AHEAD: dict[tuple, tuple[tuple, Future]] = {}


def _ahead_key(path: Path, cube, spacing) -> tuple:
    return str(path.resolve()), None if cube is None else tuple(cube), None if spacing is None else tuple(spacing)


def _stat_identity(path: Path) -> str:
    """What changes when ``path`` or, for a folder, any file in it is written (``files_fingerprint``: size, times,
    inode; a slice rewritten in place changes its ctime)."""
    return files_fingerprint([path, *(sorted(path.iterdir()) if path.is_dir() else [])])


def read_ahead(
    path: str | Path, cube: tuple[int, int] | None = None, spacing: tuple[float, float, float] | None = None
) -> None:
    """Start ``read_volume(path, cube, spacing)`` in a background thread; the next ``read_volume`` with the same
    arguments takes its result (or its error). predict.py reads its first volume this way while PyTorch and the model
    load (about 3 s of imports on a 2-core CPU). This module imports no PyTorch, so the read starts at once."""
    path = Path(path)
    key = _ahead_key(path, cube, spacing)
    try:
        identity = _stat_identity(path)
    except OSError:
        return  # read_volume itself will say what is wrong
    pool = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
    _AHEAD[key] = (identity, pool.submit(_read_volume, path, cube, spacing))
    pool.shutdown(wait=False)  # the thread ends with its one read


def drop_read_ahead() -> None:
    """Forget the reads ahead nobody took (a run that ended before reading its input): their volumes are freed."""
    for _, future in _AHEAD.values():
        future.cancel()
    _AHEAD.clear()


def read_volume(
    path: str | Path, cube: tuple[int, int] | None = None, spacing: tuple[float, float, float] | None = None
) -> ScanVolume:
    """The volume at ``path`` as (Z, H, W) uint8 with its spacing and what the file says about the scan (``meta``:
    eye, date, device, B-scan order; see ``ScanMeta``).

    ``cube`` (A-scans, B-scans) is the size of a raw Cirrus ``.img`` cube whose name does not give it (other formats
    ignore it). Spacing: ``spacing`` if given, else the file's (DICOM, MetaImage, NIfTI, Topcon, .vol), else the Cirrus
    cube size named in the file name (``cirrus_spacing``), else None.
    """
    path = Path(path)
    ahead = _AHEAD.pop(_ahead_key(path, cube, spacing), None)
    if ahead is not None:
        identity, future = ahead
        try:
            unchanged = _stat_identity(path) == identity
        except OSError:
            unchanged = False
        if unchanged:
            return future.result()  # its error, if any, is this read's: the file is as it was
        log.info(f"{path} changed while it was read ahead: read again")
    return _read_volume(path, cube, spacing)


def _read_volume(path: Path, cube, spacing) -> ScanVolume:
    given = None if spacing is None else check_spacing(spacing)
    fmt = _format_of(path)
    if fmt == "cirrus-img":
        ascans, bscans = _cirrus_cube(path, cube)
        decoded = _Decoded(_read_cirrus(path, ascans, bscans), None, _cirrus_meta(path))
        name = f"{ascans}x{bscans}"
    else:
        decoded, name = _READERS[fmt](path), path.name
    raw, from_file, meta = decoded
    image = to_uint8_volume(_as_volume(raw, path), path)
    try:  # with --spacing given, saying that the file's spacing is unknown (pass --spacing) would only confuse
        own = _resolve_spacing(path, from_file, name, image.shape, explain=given is None)
    except VolumeFormatError:
        if given is None:
            raise
        own = None  # the file's spacing is invalid, and --spacing replaces it
    if given is not None and own is not None and not np.allclose(given, own, rtol=0.01):
        log.warning(f"{path}: --spacing {given} mm replaces the file's own spacing {own} mm")
    final = given if given is not None else own
    if final is not None:
        check_extent(path, final, image.shape)
    return ScanVolume(image, final, path, fmt, meta)


# An OCT volume spans at most a few tens of mm (wide-field scans 12-16 mm wide, a few mm deep; the eye is 24 mm long):
# anything larger is a spacing in the wrong unit (microns read as mm), which would make every fluid volume wrong.
MAX_EXTENT_MM = 30.0


def check_extent(path: Path | str, spacing: Spacing, shape: tuple[int, int, int]) -> None:
    extent = [n * d for n, d in zip(shape, spacing)]
    if max(extent) > MAX_EXTENT_MM:
        raise VolumeFormatError(
            f"{path}: with the spacing {spacing} mm the volume would span {' x '.join(f'{e:.3g}' for e in extent)} mm "
            f"(B-scans x depth x A-scans), more than any OCT scan ({MAX_EXTENT_MM:g} mm); a spacing in microns read "
            "as mm? Pass --spacing in mm"
        )


def read_label_volume(path: str | Path) -> np.ndarray:
    """A label volume (Z, H, W) with its values exactly as stored (e.g. RETOUCH's reference.mhd: 0..3), from a
    MetaImage, NIfTI, TIFF or slice folder; values that are not whole numbers are an error."""
    path = Path(path)
    fmt = _format_of(path)
    if fmt not in LABEL_FORMATS:
        raise VolumeFormatError(
            f"{path}: label volumes are read from MetaImage, NIfTI, TIFF or a slice folder, not {fmt}"
        )
    return _whole_numbers(_as_volume(_READERS[fmt](path).array, path), path)


def volume_files(path: str | Path) -> tuple[Path, ...]:
    """Every file the volume's content lives in: a MetaImage header and its data file(s), a slice folder's slices,
    otherwise the file itself (for cache keys, and to keep outputs off the inputs)."""
    path = Path(path)
    fmt = _format_of(path)
    if fmt == "slices":
        return _slice_files(path)
    if fmt == "metaimage":
        return (path, *_meta_data_files(path, *_meta_header(path)))
    return (path,)


def volume_name(path: str | Path) -> str:
    """The patient name of a volume, safe as a file name: ``<PID>.img/`` -> ``<PID>``, ``x.nii.gz`` -> ``x``,
    ``TRAIN001/oct.mhd`` -> ``TRAIN001`` (``oct.*`` and ``reference.*`` take their folder's name)."""
    path = Path(path)
    name = path.name if path.name not in ("", ".", "..") else path.resolve().name
    if path.is_dir():
        stem = name[:-4] if name.lower().endswith(".img") else name
    else:
        suffix = _suffix(path)
        stem = name[: len(name) - len(suffix)]
        if stem.lower() in _GENERIC_STEMS:
            parent = path.parent if path.parent.name not in ("", "..") else path.resolve().parent
            stem = parent.name
    if stem in ("", ".", "..") or any(c in stem for c in "/\\\x00"):
        raise DatasetError(f"{path}: the volume name {stem!r} is not a safe file name; rename the file or folder")
    return stem


def volume_depth(path: str | Path) -> int:
    """The number of B-scans Z, from the header where the format has one (MetaImage, NIfTI, TIFF, DICOM, a raw
    Cirrus cube, a slice folder's file count); other formats are read."""
    path = Path(path)
    fmt = _format_of(path)
    if fmt == "slices":
        return len(_slice_files(path))
    if fmt == "tiff":
        with _open_tiff(path) as tif:
            shape = _tiff_series(tif, path).shape
        _check_shape(shape, path)
        return int(shape[0])
    if fmt in ("nifti", "metaimage"):
        return int(_itk_reader(path).GetSize()[2])
    if fmt == "cirrus-img":
        ascans, bscans = _cirrus_cube(path, None)
        _cirrus_depth(path, ascans, bscans)
        return bscans
    if fmt == "dicom":
        return _dicom_frames(_dicom_dataset(path, header_only=True), path)
    return read_volume(path).image.shape[0]


CIRRUS_ROWS = 1024  # samples per A-scan of both cube protocols


def cirrus_spacing(name: str, shape: tuple[int, int, int], explain: bool = True) -> tuple[float, float, float] | None:
    """Spacing (between B-scans, along depth, between A-scans) in mm of a Cirrus cube from the size in its name
    (``Macular Cube 512x128``: 512 A-scans x 128 B-scans over 6 x 6 x 2 mm) and the volume's shape (Z, H, W).

    None when the name gives no size, or (with a note in the log unless ``explain`` is off) a size that is not a
    known cube or does not match the shape.
    """
    m = _CUBE_SIZE.search(name)
    if m is None:
        return None
    ascans, bscans = int(m[1]), int(m[2])
    z, h, w = shape
    why = None
    if (ascans, bscans) not in CIRRUS_CUBES:
        known = ", ".join(f"{a}x{b}" for a, b in CIRRUS_CUBES)
        why = f"{ascans}x{bscans} is not a Cirrus cube size this reader knows ({known})"
    elif (w, z) != (ascans, bscans):
        why = f"the name says {ascans}x{bscans} (A-scans x B-scans) but the volume has {w} A-scans and {z} B-scans"
    elif h != CIRRUS_ROWS:
        why = f"a Cirrus {ascans}x{bscans} cube has {CIRRUS_ROWS} rows over 2 mm, this volume {h} (resized?)"
    if why is not None:
        if explain:
            log.info(f"{name}: {why}; the spacing is unknown (pass --spacing)")
        return None
    width, length, depth = CIRRUS_CUBES[ascans, bscans]
    return (length / bscans, depth / h, width / ascans)


# ---- format, intensities, spacing


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "slices"
    if not path.is_file():
        raise DatasetError(f"{path}: not found (neither a volume file nor a folder of slices)")
    if _has_dicom_preamble(path):  # DICOM files keep odd names: none, .IMG (Zeiss), .IMA
        return "dicom"
    fmt = SUFFIX_FORMATS.get(_suffix(path))
    if fmt is None:
        raise VolumeFormatError(
            f"{path}: not a volume format this reader knows; give a folder of BMP/PNG/TIFF slices or a file ending "
            f"in {', '.join(SUFFIX_FORMATS)} (or any DICOM file)"
        )
    return fmt


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        raise file_error(path, e) from e
    return head[128:132] == b"DICM"


def _check_shape(shape: tuple[int, ...], path: Path) -> None:
    if len(shape) == 2:
        raise VolumeFormatError(
            f"{path}: one image ({shape[0]}x{shape[1]}), not a volume; a volume is a stack of B-scans"
        )
    if len(shape) != 3:
        raise VolumeFormatError(
            f"{path}: data of shape {tuple(shape)} is not a volume of grey B-scans (Z, H, W); colour, vector or "
            "4-D data?"
        )
    if 0 in shape:
        raise VolumeFormatError(f"{path}: an empty volume (shape {tuple(shape)})")


def _as_volume(a: np.ndarray, path: Path) -> np.ndarray:
    _check_shape(a.shape, path)
    return a


# 16-bit and float volumes are mapped to 0..255 by their 0.01st..99.99th percentiles, the voxels outside clipped:
# min..max would let a few stray voxels (hot or dead pixels, a saturated marker, an export's fill value) squeeze the
# whole scan into a few greys, and a model would see a dim, flat scan and find no fluid. The same rule for every
# volume (a scanner's volumes all look alike to the model); "lower"/"higher" percentiles are voxel values, so a small
# volume keeps its min..max. A bulk of one value (a blank scan with a few marks) falls back to min..max.
TAIL = 1e-4
_QUANTILE_SAMPLE = 4_000_000
GREY_RULE = f"percentiles-{TAIL:g}-sample-{_QUANTILE_SAMPLE}"  # part of the decode cache key and of checkpoints


def _grey_range(a: np.ndarray) -> tuple[float, float]:
    """(lo, hi): the range mapped to 0..255 (``GREY_RULE``)."""
    sample = a[:: max(1, a.shape[0] // 32)].ravel()  # up to ~32 B-scans: the percentiles of the bulk, not of a copy
    sample = sample[:: max(1, sample.size // _QUANTILE_SAMPLE)]
    lo = float(np.quantile(sample, TAIL, method="lower"))
    hi = float(np.quantile(sample, 1 - TAIL, method="higher"))
    return (lo, hi) if lo < hi else (float(a.min()), float(a.max()))


def to_uint8_volume(a: np.ndarray, path: Path) -> np.ndarray:
    """uint8 as it is; other types scaled to 0..255 by ``_grey_range``, with one warning."""
    if a.dtype.kind not in "uif":
        raise VolumeFormatError(f"{path}: {a.dtype} data is not image intensities")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise VolumeFormatError(f"{path}: the volume holds NaN or infinite values; fix the export")
    if a.min() == a.max():
        raise VolumeFormatError(f"{path}: every voxel is {a.min()}: a blank volume; check the export")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    lo, hi = _grey_range(a)
    out = np.empty(a.shape, dtype=np.uint8)
    clipped = 0
    for z in range(a.shape[0]):  # one B-scan at a time: float64 without a float64 copy of the volume
        x = a[z].astype(np.float64)
        clipped += int(np.count_nonzero((x < lo) | (x > hi)))
        np.clip(x, lo, hi, out=x)
        out[z] = np.round((x - lo) * (255.0 / (hi - lo)))
    note = f"; {clipped} voxels ({100 * clipped / a.size:.2g}%) outside it clipped" if clipped else ""
    if clipped > 2 * TAIL * a.size:  # more than the percentiles' own share: outliers
        note += " (hot or dead pixels? a fill value?)"
    log.warning(
        f"{path}: {a.dtype} intensities {float(a.min()):g}..{float(a.max()):g} scaled to 0..255 by the volume's "
        f"0.01st..99.99th percentiles {lo:g}..{hi:g}{note}"
    )
    return out


def _whole_numbers(a: np.ndarray, path: Path) -> np.ndarray:
    """Integer labels as stored; whole-valued floats (labels saved as float) as the smallest type that holds them."""
    if a.dtype.kind in "ui":
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8)
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        lo, hi = float(a.min()), float(a.max())
        return a.astype(np.uint8 if lo >= 0 and hi <= 255 else np.int32)
    bad = a[~(np.isfinite(a) & (a == np.round(a)))][:5] if a.dtype.kind == "f" else a.ravel()[:5]
    raise VolumeFormatError(
        f"{path}: label values must be whole numbers; found {a.dtype} values such as {bad.tolist()}: not a label "
        "volume?"
    )


def check_spacing(spacing: Sequence[float]) -> Spacing:
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            "--spacing must be 3 positive finite numbers in mm (between B-scans, along depth, between A-scans); "
            f"got {spacing!r}"
        )
    return values[0], values[1], values[2]


def _resolve_spacing(
    path: Path, from_file: PartialSpacing | None, name: str, shape: tuple[int, int, int], explain: bool = True
) -> Spacing | None:
    """The file's spacing (checked), else the Cirrus cube size in the name, else None (saying why unless
    ``explain`` is off: --spacing was given)."""
    if from_file is not None and None not in from_file:
        if not all(math.isfinite(v) and v > 0 for v in from_file):
            raise VolumeFormatError(
                f"{path}: the file gives the spacing {from_file} mm (between B-scans, along depth, between A-scans); "
                "zero, negative and non-finite values are invalid: pass --spacing to set it"
            )
        return float(from_file[0]), float(from_file[1]), float(from_file[2])
    if from_file is not None and explain:
        log.warning(f"{path}: the file gives only part of the spacing {from_file} mm; pass --spacing to set it")
    return cirrus_spacing(name, shape, explain)


def _require(module: str, package: str, path: Path) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise VolumeFormatError(f"{path}: reading this format needs {package} (pip install {package})") from e


def _library_read(
    path: Path, library: str, read: Callable, hint: str = "the file is damaged or not what its name says"
):
    """``read()``, with a third-party reader's failure as an error naming the file, the library and the cause."""
    try:
        return read()
    except DatasetError:
        raise
    except Exception as e:
        if isinstance(e, OSError) and e.errno is not None:  # the operating system's: not found, permission
            raise file_error(path, e) from e
        raise VolumeFormatError(f"{path}: {library} cannot read this file ({type(e).__name__}: {e}); {hint}") from e


def _stack_bscans(bscans: Sequence[np.ndarray], path: Path) -> np.ndarray:
    shapes = {np.shape(b) for b in bscans}
    if len(shapes) != 1:
        raise VolumeFormatError(f"{path}: B-scans of different sizes {sorted(shapes)[:4]}; not one volume")
    return np.stack([np.asarray(b) for b in bscans])


# ---- slice folders


def _natural_key(path: Path) -> list:
    """``img_2.png`` before ``img_10.png``: digit runs compare as numbers (text and numbers alternate, so any two keys
    compare)."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", path.name.lower()))]


def _slice_files(folder: Path) -> tuple[Path, ...]:
    """The B-scan files of a slice folder in natural order; stray files (hidden, .DS_Store, Thumbs.db) ignored."""
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        raise file_error(folder, e) from e
    files, kinds = [], set()
    for p in entries:
        if p.name.startswith(".") or p.name.lower() in IGNORED_FILES:
            continue
        kind = SLICE_KINDS.get(p.suffix.lower())
        if kind is None or not p.is_file():
            raise VolumeFormatError(
                f"{p}: unexpected in a slice folder, which holds BMP, PNG or TIFF B-scans only (remove or move it)"
            )
        files.append(p)
        kinds.add(kind)
    if not files:
        raise VolumeFormatError(f"{folder}: no slice images (BMP, PNG or TIFF files) in the folder")
    if len(kinds) > 1:
        raise VolumeFormatError(
            f"{folder}: slices of mixed kinds ({', '.join(sorted(kinds))}); keep one kind per volume"
        )
    files.sort(key=_natural_key)
    for a, b in zip(files, files[1:]):
        if _natural_key(a) == _natural_key(b):
            raise VolumeFormatError(
                f"{folder}: {a.name} and {b.name} take the same place in the slice order; remove one"
            )
    _check_numbering(folder, files)
    return tuple(files)


def _check_numbering(folder: Path, files: list[Path]) -> None:
    """Numbered slices must be one series without gaps: the names share their text and differ in one run of digits
    (``1.bmp``, ``img_007.png``, ``scan_001_512x496.png``: the run that changes is the slice number), with a constant
    step (``2.png, 4.png, ...`` is every other B-scan). A stray copy (``1 (copy).bmp``), a second series
    (``OD_1``, ``OS_1``) or a missing file would shift every later B-scan by one, and fluid volumes and affected
    B-scans with them, without a word."""
    if len(files) < 2 or not all(re.search(r"\d", p.name) for p in files):
        odd = [p.name for p in files if not re.search(r"\d", p.name)]
        if odd and len(odd) < len(files):  # some numbered, some not (a one-slice folder is its own series)
            _odd_names(folder, odd, next(p for p in files if re.search(r"\d", p.name)))
        return  # no numbers to check: natural order of the names
    parts = [re.split(r"(\d+)", p.name.lower()) for p in files]  # text, digits, text, digits, ..., text
    groups: dict[tuple, list[Path]] = {}
    for p, q in zip(files, parts):
        groups.setdefault(tuple(q[0::2]), []).append(p)
    if len(groups) > 1:  # the most common naming is the series; the others are strays
        ranked = sorted(groups.values(), key=len, reverse=True)
        _odd_names(folder, [p.name for g in ranked[1:] for p in g], ranked[0][0])
    first = parts[0]
    varying = [i for i in range(1, len(first), 2) if len({int(q[i]) for q in parts}) > 1]
    if len(varying) != 1:
        raise VolumeFormatError(
            f"{folder}: the slice names ({files[0].name}, {files[1].name}, ...) differ in {len(varying)} runs of "
            "digits; name the slices with one slice number each (or, for independent B-scans, predict.py --bscans)"
        )
    numbers = [int(q[varying[0]]) for q in parts]  # files are in natural order, so these increase
    step = min(b - a for a, b in zip(numbers, numbers[1:]))  # every k-th B-scan exported: step k
    if numbers != list(range(numbers[0], numbers[0] + step * len(numbers), step)):
        missing = sorted(set(range(numbers[0], numbers[-1] + 1, step)) - set(numbers))[:10]
        raise VolumeFormatError(
            f"{folder}: slices must be numbered without gaps; missing {missing} between {files[0].name} and "
            f"{files[-1].name}"
        )


def _odd_names(folder: Path, odd: list[str], example: Path) -> None:
    raise VolumeFormatError(
        f"{folder}: {', '.join(odd[:3])} {'does' if len(odd) == 1 else 'do'} not follow the slice names of "
        f"{example.name} ... (one numbered series per folder); remove or move the odd files (or, for independent "
        "B-scans, predict.py --bscans)"
    )


def _read_slices(folder: Path) -> _Decoded:
    return _Decoded(stack_slices(_slice_files(folder), read_grey), None)


# ---- TIFF


def _open_tiff(path: Path) -> tifffile.TiffFile:
    return _library_read(path, "tifffile", lambda: tifffile.TiffFile(path))


def _tiff_series(tif: tifffile.TiffFile, path: Path):
    if not tif.series:
        raise VolumeFormatError(f"{path}: no image in the TIFF; the file is damaged or empty")
    if len(tif.series) != 1:
        raise VolumeFormatError(
            f"{path}: {len(tif.series)} image series (pages of different sizes or kinds); a volume is one stack of "
            "equal pages"
        )
    return tif.series[0]


def _read_tiff(path: Path) -> _Decoded:
    with _open_tiff(path) as tif:
        series = _tiff_series(tif, path)
        return _Decoded(_library_read(path, "tifffile", series.asarray), None)


# ---- NIfTI and MetaImage (SimpleITK)


def _meta_header(path: Path) -> tuple[dict[str, str], int]:
    """A MetaImage header's ``key = value`` fields up to ElementDataFile (the last one), and the header's length in
    bytes (where LOCAL data begin)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        raise file_error(path, e) from e
    fields, pos = {}, 0
    for line in head.split(b"\n"):
        pos += len(line) + 1
        key, eq, value = _text(line).partition("=")
        if not eq:
            break
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, pos
    raise VolumeFormatError(f"{path}: not a MetaImage header (no 'ElementDataFile = ...' line); the file is damaged?")


def _text(raw: bytes) -> str:
    """Header text: UTF-8 (what ITK writes for non-ASCII names), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _meta_data_files(path: Path, fields: dict[str, str], header_bytes: int) -> tuple[Path, ...]:
    """The data files an ElementDataFile names: one file, none (LOCAL), a LIST after the header, or a pattern
    ``name%03d.raw first last step``."""
    value, folder = fields["ElementDataFile"], path.parent
    if value.upper() == "LOCAL":
        return ()
    if value.upper().startswith("LIST"):
        with open(path, "rb") as f:
            f.seek(header_bytes)
            names = _text(f.read()).split()
        return tuple(folder / n for n in names)
    parts = value.split()
    if "%" in value and len(parts) == 4 and all(re.fullmatch(r"-?\d+", p) for p in parts[1:]):
        first, last, step = (int(p) for p in parts[1:])
        return tuple(folder / (parts[0] % i) for i in range(first, last + 1, step or 1))
    return (folder / value,)


def _check_meta_data(path: Path) -> dict[str, str]:
    """Before SimpleITK reads a MetaImage (its own messages on a missing or short data file are poor): every data file
    is there, and a single uncompressed one holds exactly the voxels the header describes."""
    fields, header_bytes = _meta_header(path)
    files = _meta_data_files(path, fields, header_bytes)
    for data in files:
        if not data.is_file():
            raise VolumeFormatError(
                f"{path}: its data file {data} (ElementDataFile) is missing; copy it next to the header"
            )
    element = _MET_BYTES.get(fields.get("ElementType", ""))
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if len(files) > 1 or element is None or compressed:
        return fields
    try:
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        header_size = int(fields.get("HeaderSize", "0"))
    except ValueError as e:
        raise VolumeFormatError(f"{path}: a MetaImage header field is not a number ({e}); the header is damaged") from e
    data = files[0] if files else path
    size = data.stat().st_size - (header_bytes if not files else max(header_size, 0))
    need = math.prod(dims) * element * channels
    if size < need or (size > need and header_size != -1):
        shown = "x".join(map(str, dims))
        what = "truncated; copy it again" if size < need else "larger: the header's DimSize or ElementType is wrong"
        raise VolumeFormatError(
            f"{path}: its data file {data} holds {size} bytes of voxels but the header ({shown} "
            f"{fields['ElementType']}) needs {need}: the data file is {what}"
        )
    return fields


def _itk_reader(path: Path):
    """A SimpleITK file reader with the header read and checked: one grey 3-D image."""
    sitk = _require("SimpleITK", "SimpleITK", path)
    if _suffix(path) in (".mhd", ".mha"):
        _check_meta_data(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _library_read(path, "SimpleITK", reader.ReadImageInformation)
    _check_shape(tuple(reversed(reader.GetSize())), path)  # SimpleITK sizes are (x, y, z)
    if reader.GetNumberOfComponents() != 1:
        raise VolumeFormatError(f"{path}: {reader.GetNumberOfComponents()} values per voxel; a volume is grey")
    return reader


def _read_itk(path: Path) -> _Decoded:
    """NIfTI / MetaImage as stored: SimpleITK's array is (z, y, x) = (Z, H, W), its spacing (x, y, z) reversed; the
    direction matrix is not applied (the array keeps the file's voxel order)."""
    sitk = _require("SimpleITK", "SimpleITK", path)
    reader = _itk_reader(path)
    _check_direction(path, reader.GetDirection())
    spacing = tuple(float(v) for v in reversed(reader.GetSpacing()))
    if _suffix(path) not in (".mhd", ".mha"):
        if reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) and _nifti_non_finite(path):
            raise VolumeFormatError(
                f"{path}: the volume holds NaN or infinite values (read as 0 by ITK); fix the export"
            )
        image = _library_read(path, "SimpleITK", reader.Execute)
    else:
        fields, _ = _meta_header(path)
        if "ElementSpacing" not in fields and "ElementSize" not in fields:
            spacing = None  # SimpleITK's 1 mm default: the file does not say
        if spacing is None or all(math.isfinite(v) and v != 0 for v in spacing):
            image = _library_read(path, "SimpleITK", reader.Execute)
        else:
            image = _read_meta_respaced(path)
    return _Decoded(sitk.GetArrayFromImage(image), spacing)


def _check_direction(path: Path, direction: Sequence[float]) -> None:
    """The array is read in the file's voxel order: B-scans along the file's third axis, depth along its second. A
    direction matrix that rotates or swaps the axes says the file is stored otherwise; that is refused rather than
    segmented across the wrong planes. Flips are reported: the B-scans are read as stored (NIfTI's usual
    radiological flips of x and y, as ITK reads them, are not reported)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.allclose(np.abs(d), np.eye(3), atol=1e-3):
        raise VolumeFormatError(
            f"{path}: its direction matrix {np.round(d, 3).tolist()} rotates or swaps the axes; this reader takes the "
            "file's voxel order (x A-scans, y depth, z B-scans): reorient the volume to that order and write it "
            "without rotation"
        )
    flipped = [axis for axis, v in zip("xyz", np.diag(d)) if v < 0]
    if flipped and _suffix(path) in (".mhd", ".mha"):
        log.warning(f"{path}: its direction matrix flips {', '.join(flipped)}; the B-scans are read as stored")


def _nifti_non_finite(path: Path) -> bool:
    """Whether a float NIfTI-1 / NIfTI-2 file holds NaN or infinite voxels. ITK 5's NIfTI reader replaces them by 0
    without a word (fixed in ITK 6: InsightSoftwareConsortium/ITK#6683), so they are looked for in the file itself."""
    try:
        with (gzip.open if _suffix(path) == ".nii.gz" else open)(path, "rb") as f:
            head = f.read(540)
            order = next((o for o in "<>" if int(np.frombuffer(head[:4], f"{o}i4")[0]) in (348, 540)), None)
            if order is None:
                return False  # not a header this check knows: SimpleITK has read it, and says what it found
            if len(head) >= 348 and int(np.frombuffer(head[:4], f"{order}i4")[0]) == 348:  # NIfTI-1
                dims = np.frombuffer(head[40:56], f"{order}i2")
                datatype, offset = (
                    np.frombuffer(head[70:72], f"{order}i2")[0],
                    np.frombuffer(head[108:112], f"{order}f4")[0],
                )
            else:  # NIfTI-2
                dims = np.frombuffer(head[16:80], f"{order}i8")
                datatype, offset = (
                    np.frombuffer(head[12:14], f"{order}i2")[0],
                    np.frombuffer(head[168:176], f"{order}i8")[0],
                )
            dtype = {16: np.dtype(f"{order}f4"), 64: np.dtype(f"{order}f8")}.get(int(datatype))
            if dtype is None or not 1 <= dims[0] <= 7:
                return False
            remaining = int(np.prod(dims[1 : dims[0] + 1]))
            f.seek(int(offset))
            while remaining > 0:  # in chunks: no second copy of a large volume
                chunk = np.frombuffer(f.read(min(remaining, 1 << 22) * dtype.itemsize), dtype)
                if chunk.size == 0 or not np.isfinite(chunk).all():
                    return chunk.size > 0
                remaining -= chunk.size
    except (OSError, EOFError) as e:
        raise VolumeFormatError(f"{path}: cannot read the NIfTI voxels ({e}); the file is damaged or truncated") from e
    return False


def _read_meta_respaced(path: Path):
    """A MetaImage whose spacing SimpleITK refuses (zero or not finite: it will not build the image), read through a
    copy of its header with unit spacing in a temporary folder, so that ``--spacing`` can stand in for it."""
    sitk = _require("SimpleITK", "SimpleITK", path)
    fields, header_bytes = _meta_header(path)
    files = _meta_data_files(path, fields, header_bytes)
    if len(files) > 1:
        raise VolumeFormatError(
            f"{path}: ElementSpacing {fields.get('ElementSpacing')} is invalid; fix it in the header"
        )
    fields = {k: v for k, v in fields.items() if k not in ("ElementSpacing", "ElementSize", "ElementDataFile")}
    if not files:  # LOCAL: the voxels follow the header in the file itself
        fields["HeaderSize"] = str(header_bytes)
    fields["ElementSpacing"] = " ".join(["1"] * int(fields.get("NDims", "3")))
    fields["ElementDataFile"] = str((files[0] if files else path).resolve())  # the last field, as MetaImage requires
    with tempfile.TemporaryDirectory() as tmp:
        header = Path(tmp) / "respaced.mhd"
        header.write_text("".join(f"{k} = {v}\n" for k, v in fields.items()))
        return _library_read(path, "SimpleITK", lambda: sitk.ReadImage(str(header)))


# ---- what the file says about the scan: eye, date, device
# A value that is there but makes no sense is left unknown, with a warning naming the file: a report that names the
# wrong eye or date is worse than one that says it does not know.

_EYES = {"R": "OD", "L": "OS", "OD": "OD", "OS": "OS"}  # DICOM's R / L, the vendors' OD / OS
# OCT came into clinics in the 1990s: an earlier date is a placeholder (an anonymiser's 19000101, a format's zero)
EARLIEST_SCAN = date(1990, 1, 1)


def _eye(values: Sequence[tuple[str, object]], path: Path) -> tuple[str | None, str | None]:
    """(eye "OD" / "OS", the field that gave it) from ``(field, value)`` pairs, empty values skipped: the fields present
    must all name the same eye; any other value, or two fields naming different eyes, leaves it unknown (warned)."""
    present = [(what, str(v).strip()) for what, v in values if v is not None and str(v).strip()]
    if not present:
        return None, None
    eyes = []
    for what, v in present:
        eye = _EYES.get(v.upper())
        if eye is None:
            log.warning(f"{path}: {what} is {v!r}, not R / L or OD / OS; the eye is left unknown")
            return None, None
        eyes.append(eye)
    if len(set(eyes)) > 1:
        said = ", ".join(f"{what} {v!r}" for what, v in present)
        log.warning(f"{path}: the file names both eyes ({said}); the eye is left unknown")
        return None, None
    return eyes[0], present[0][0]


def _checked_date(value: datetime | date, what: str, path: Path) -> datetime | date | None:
    if (value.date() if isinstance(value, datetime) else value) < EARLIEST_SCAN:
        log.warning(
            f"{path}: {what} {value.isoformat()} is before any OCT scan (a placeholder?); the date is left unknown"
        )
        return None
    return value


def _iso_date(value: object, what: str, path: Path, with_time: bool = True) -> str | None:
    """A library's date or datetime as ISO 8601 (to the second; only the date where ``with_time`` is off); None for
    no value, and with a warning for one that is not a date or is before any OCT scan."""
    if value is None or value == "":
        return None
    if not isinstance(value, (date, datetime)):
        log.warning(f"{path}: {what} is {value!r}, not a date; the date is left unknown")
        return None
    value = _checked_date(value, what, path)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds") if with_time else value.date().isoformat()
    return value.isoformat()


_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM = re.compile(r"(\d{2})(?:(\d{2})(\d{2})?)?(?:\.\d{1,6})?")  # HH, HHMM, HHMMSS, HHMMSS.FFFFFF
_DT = re.compile(r"(\d{8})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?")


def _dicom_iso(day: str, time: str | None, what: str, path: Path) -> str | None:
    """DICOM DA (``YYYYMMDD``) and TM (``HH[MM[SS[.F]]]``) as ISO 8601 (``2016-07-25T12:45:50``, to the precision the
    file gives, without fractions of a second); None with a warning for values that are not a whole date and time."""
    day, time = day.strip(), (time or "").strip().replace(":", "")  # ACR-NEMA's HH:MM:SS, still seen
    d, t = _DA.fullmatch(day), _TM.fullmatch(time) if time else None
    try:
        if d is None or (time and t is None):
            raise ValueError
        when = date(int(d[1]), int(d[2]), int(d[3]))
        parts = [int(v) for v in t.groups() if v is not None] if t else []
        datetime(when.year, when.month, when.day, *parts)  # checks the hour, minutes and seconds
    except ValueError:
        log.warning(
            f"{path}: {what} {' '.join(v for v in (day, time) if v)!r} is not a date and time; the date is left unknown"
        )
        return None
    if _checked_date(when, what, path) is None:
        return None
    return when.isoformat() + ("T" + ":".join(f"{v:02d}" for v in parts) if parts else "")


# ---- raw Zeiss Cirrus cubes


def _cirrus_cube(path: Path, cube: tuple[int, int] | None) -> tuple[int, int]:
    """(A-scans, B-scans) of a raw Cirrus cube: ``cube``, else the size in the file name."""
    if cube is not None:
        if len(cube) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in cube):
            raise ValueError(
                f"cube must be (A-scans, B-scans), two positive whole numbers such as (512, 128); got {cube!r}"
            )
        m = _CUBE_SIZE.search(path.name)
        if m is not None and (int(m[1]), int(m[2])) != tuple(cube):
            raise VolumeFormatError(
                f"{path}: the name says a {m[1]}x{m[2]} cube but --cube is {cube[0]}x{cube[1]}; rename the file or "
                "drop --cube"
            )
        return int(cube[0]), int(cube[1])
    m = _CUBE_SIZE.search(path.name)
    if m is None:
        raise VolumeFormatError(
            f"{path}: a raw Cirrus .img file whose name gives no cube size (such as 'Macular Cube 512x128'); pass the "
            "cube size (A-scans x B-scans)"
        )
    return int(m[1]), int(m[2])


# ..._Macular Cube 512x128_7-25-2016_12-45-50_OD_sn12345_cube_raw.img: month-day-year, hour-minute-second, eye
_CIRRUS_SCAN = re.compile(r"_(\d{1,2})-(\d{1,2})-(\d{4})_(\d{1,2})-(\d{1,2})-(\d{1,2})_([^_]+)(?:_|$)")
_CIRRUS_EYE = re.compile(r"(?:^|_)(OD|OS)(?:_|$)")


def _cirrus_meta(path: Path) -> ScanMeta:
    """Date and eye from a Cirrus export's name (``P1234_Macular Cube 512x128_7-25-2016_12-45-50_OD_sn12345_
    cube_raw.img``), the device from the format itself; the name does not say which way the B-scans run."""
    stem = path.name[: -len(_suffix(path))]
    m = _CIRRUS_SCAN.search(stem)
    when = eye = None
    if m is not None:
        month, day, year, hour, minute, second = (int(v) for v in m.groups()[:6])
        try:
            when = _checked_date(datetime(year, month, day, hour, minute, second), "the date in the name", path)
        except ValueError:
            log.warning(
                f"{path}: the name's date {m[1]}-{m[2]}-{m[3]} {m[4]}-{m[5]}-{m[6]} (month-day-year "
                "hour-minute-second) is not a date; the date is left unknown"
            )
        eye, _ = _eye([("the eye in the name", m[7])], path)
    else:  # a renamed export: an OD / OS of its own between underscores still says which eye
        found = _CIRRUS_EYE.search(stem)
        eye = None if found is None else _EYES[found[1]]
    named = [what for what, v in (("date", when), ("eye", eye)) if v is not None]
    source = (f"Cirrus file name ({', '.join(named)}); " if named else "") + "device: the raw Cirrus cube format"
    iso = None if when is None else when.isoformat(timespec="seconds")
    return ScanMeta(eye, iso, "Zeiss Cirrus", None, source)


def _cirrus_depth(path: Path, ascans: int, bscans: int) -> int:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise file_error(path, e) from e
    if size == 0 or size % (ascans * bscans):
        raise VolumeFormatError(
            f"{path}: truncated/not a whole cube: {size} bytes is not a multiple of {ascans}x{bscans} (A-scans x "
            "B-scans); copy the file again or give the right cube size"
        )
    return size // (ascans * bscans)


def _read_cirrus(path: Path, ascans: int, bscans: int) -> np.ndarray:
    """A Cirrus ``cube_z.img``: uint8, B-scan after B-scan, each stored as depth rows of ``ascans`` bytes, upside down
    and mirrored (rotated 180 degrees). The layout the published readers agree on: AURA's ``octCirrusReader.m``
    (``reshape(A, ascans, depth, bscans)``, then flip up-down and left-right) and others.

    Read with NumPy, not oct-converter: its ``IMG.read_oct_volume(rows=1024, cols=512)`` reshapes the bytes as
    ``(rows, cols, n)`` in Fortran order, i.e. takes each A-scan's depth samples as contiguous, and does not rotate;
    on this layout its documented arguments give a scrambled image, and the right one needs ``rows=A-scans,
    cols=depth``, a transpose and a rotation, which is this reshape with extra steps on an argument contract that is
    not its documented one. The B-scans keep the file's order (AURA also reverses it, to run inferior to superior).
    """
    depth = _cirrus_depth(path, ascans, bscans)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise file_error(path, e) from e
    if raw.size != bscans * depth * ascans:
        raise VolumeFormatError(f"{path}: the file changed size while it was read; read it again")
    return np.ascontiguousarray(raw.reshape(bscans, depth, ascans)[:, ::-1, ::-1])


# ---- DICOM


def _dicom_dataset(path: Path, header_only: bool = False):
    pydicom = _require("pydicom", "pydicom", path)
    # header_only: large values (the pixel data) are left on disk, but their presence is still known
    return _library_read(path, "pydicom", lambda: pydicom.dcmread(path, defer_size="1 KB" if header_only else None))


def _dicom_frames(ds, path: Path) -> int:
    """The number of B-scans of a DICOM holding an OCT volume; what else it holds is an error naming it."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        kind = ds.get("SOPClassUID", "unknown SOP class")
        raise VolumeFormatError(
            f"{path}: the DICOM holds no pixel data ({getattr(kind, 'name', kind)}: a report or a document?); "
            "export the OCT volume itself"
        )
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise VolumeFormatError(f"{path}: a colour DICOM image ({ds.get('PhotometricInterpretation')}); OCT is grey")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 2:
        raise VolumeFormatError(
            f"{path}: one image, not a volume: a volume is one multi-frame DICOM (a folder of single-frame files is "
            "not read)"
        )
    return frames


def _dicom_spacing(ds) -> PartialSpacing | None:
    """(between B-scans, row spacing, column spacing) from PixelSpacing and SpacingBetweenSlices / SliceThickness, in
    the shared or first per-frame functional groups' PixelMeasuresSequence (enhanced and ophthalmic tomography
    DICOM) or at the top level."""
    groups = []
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if seq in ds and len(ds[seq].value) and "PixelMeasuresSequence" in ds[seq].value[0]:
            groups.extend(ds[seq].value[0].PixelMeasuresSequence)
    groups.append(ds)

    def first(key: str):
        return next((g.get(key) for g in groups if g.get(key) not in (None, "")), None)

    pixel = first("PixelSpacing")
    between = _frame_distance(ds)  # where the frames are: the spacing itself
    if between is None:
        between = first("SpacingBetweenSlices")
    if between is None and first("SliceThickness") is not None:
        between = first("SliceThickness")
        log.warning(
            f"{getattr(ds, 'filename', 'DICOM')}: no frame positions and no SpacingBetweenSlices; the B-scan spacing "
            f"is taken from SliceThickness ({between} mm), which may differ from the distance between B-scans: check "
            "it, or pass --spacing"
        )
    if pixel is None and between is None:
        return None
    rows, cols = (float(pixel[0]), float(pixel[1])) if pixel is not None and len(pixel) == 2 else (None, None)
    return (None if between is None else float(between), rows, cols)


def frame_positions(ds) -> np.ndarray | None:
    """(frames, 3) ImagePositionPatient of every frame in mm, from the per-frame functional groups'
    PlanePositionSequence; None where there are fewer than 2 frames or any frame has no position."""
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if not frames or len(frames) < 2:
        return None
    positions = []
    for f in frames:
        plane = f.get("PlanePositionSequence")
        if not plane or plane[0].get("ImagePositionPatient") is None or len(plane[0].ImagePositionPatient) != 3:
            return None
        positions.append([float(v) for v in plane[0].ImagePositionPatient])
    return np.asarray(positions)


def orientation_cosines(ds):
    """A multi-frame DICOM's ImageOrientationPatient (6 cosines: along a row, then along a column): from the shared
    functional groups, else the first per-frame group, else the top level; None where none has it."""
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(seq)
        plane = groups[0].get("PlaneOrientationSequence") if groups else None
        if plane and plane[0].get("ImageOrientationPatient") is not None:
            return plane[0].ImageOrientationPatient
    return ds.get("ImageOrientationPatient")


def _dicom_geometry(path: Path) -> Geometry | None:
    """A multi-frame DICOM's geometry in ITK's terms: origin at the first frame's ImagePositionPatient, axes along
    a row (ImageOrientationPatient's first cosine: the A-scans), along a column (its second: depth) and from the first
    frame to the last; None where a tag is missing or the axes are not at right angles (a NIfTI cannot hold a
    sheared volume; the caller falls back to the spacing, with origin 0)."""
    ds = _dicom_dataset(path, header_only=True)
    positions = frame_positions(ds)
    cosines = orientation_cosines(ds)
    spacing = _dicom_spacing(ds)
    if positions is None or cosines is None or len(cosines) != 6 or spacing is None or None in spacing:
        return None
    along = positions[-1] - positions[0]
    if np.linalg.norm(along) == 0:
        return None
    axes = np.column_stack(
        [np.asarray(cosines[:3], float), np.asarray(cosines[3:], float), along / np.linalg.norm(along)]
    )
    if not np.allclose(axes.T @ axes, np.eye(3), atol=1e-3):
        log.warning(
            f"{path}: the frames are not stacked at right angles to their rows and columns (a sheared volume); the "
            "label map keeps the spacing but not the DICOM's position"
        )
        return None
    between, rows, cols = spacing
    return Geometry((cols, rows, between), tuple(float(v) for v in positions[0]), tuple(axes.ravel().tolist()), "file")


def _frame_distance(ds) -> float | None:
    """The median distance in mm between consecutive frames' ImagePositionPatient (per-frame functional groups)."""
    positions = frame_positions(ds)
    if positions is None:
        return None
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    return float(np.median(steps)) if steps.size and np.median(steps) > 0 else None


def _bscan_order(ds) -> str | None:
    """Which way the B-scans run, from the frames' positions: DICOM's patient +z points to the head, so z rising with
    the frame index is "inferior-first", falling "superior-first". None where the frames have no positions, are
    stacked mainly along another axis (vertical B-scans run nasal to temporal), or go back and forth."""
    positions = frame_positions(ds)
    if positions is None:
        return None
    dz = np.diff(positions[:, 2])
    travel = np.abs(positions[-1] - positions[0])
    if travel[2] <= travel[:2].max():
        return None
    return "inferior-first" if (dz > 0).all() else "superior-first" if (dz < 0).all() else None


def _dicom_datetime(value: str, what: str, path: Path) -> str | None:
    """A DICOM DT (``YYYYMMDD[HH[MM[SS[.F]]]][&ZZXX]``) as ISO 8601, the offset from UTC kept where given."""
    m = _DT.fullmatch(value.strip())
    if m is None:
        log.warning(f"{path}: {what} {value!r} is not a date and time; the date is left unknown")
        return None
    iso = _dicom_iso(m[1], m[2], what, path)
    offset = m[3] if iso is not None and m[2] else None  # an offset belongs to a time
    return iso if offset is None else f"{iso}{offset[:3]}:{offset[3:]}"


def _dicom_laterality(ds, path: Path) -> tuple[str | None, str | None]:
    """The eye from ImageLaterality, Laterality, or FrameLaterality (the shared or per-frame FrameAnatomySequence)."""
    frame = set()
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(seq) or []:
            for anatomy in group.get("FrameAnatomySequence") or []:
                if anatomy.get("FrameLaterality") not in (None, ""):
                    frame.add(str(anatomy.FrameLaterality))
    fields = [("ImageLaterality", ds.get("ImageLaterality")), ("Laterality", ds.get("Laterality"))]
    return _eye(fields + [("FrameLaterality", v) for v in sorted(frame)], path)


_DICOM_DAYS = (("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime"), ("StudyDate", "StudyTime"))


def _dicom_date(ds, path: Path) -> tuple[str | None, str | None]:
    """(ISO 8601 date, the tags that gave it) from AcquisitionDateTime, else AcquisitionDate (+ AcquisitionTime),
    ContentDate (+ ContentTime), StudyDate (+ StudyTime): the first present decides."""
    if ds.get("AcquisitionDateTime") not in (None, ""):
        iso = _dicom_datetime(str(ds.AcquisitionDateTime), "AcquisitionDateTime", path)
        return iso, "AcquisitionDateTime" if iso else None
    for day, time in _DICOM_DAYS:
        if ds.get(day) in (None, ""):
            continue
        given = str(ds.get(time) or "")
        tags = f"{day} + {time}" if given else day
        iso = _dicom_iso(str(ds.get(day)), given, tags, path)
        return iso, tags if iso else None
    return None, None


def _dicom_meta(ds, path: Path) -> ScanMeta:
    """Eye, date, device and B-scan order from a DICOM's tags; ``source`` names the tags used."""
    eye, eye_tag = _dicom_laterality(ds, path)
    when, date_tags = _dicom_date(ds, path)
    maker = {k: str(ds.get(k) or "").strip() for k in ("Manufacturer", "ManufacturerModelName")}
    maker = {k: v for k, v in maker.items() if v}
    order, across = _bscan_order(ds), _ascan_order(ds)
    used = [t for t in (eye_tag, date_tags, *maker, "ImagePositionPatient" if order else None) if t]
    used += ["ImageOrientationPatient"] if across else []
    source = f"DICOM {', '.join(used)}" if used else ""
    return ScanMeta(eye, when, " ".join(maker.values()) or None, order, source, across)


def _ascan_order(ds) -> str | None:
    """Which way the A-scans run, from the row cosine of ImageOrientationPatient: DICOM's patient +x points to the
    patient's left, so rows along +x start at the patient's right ("right-first", as a fundus photo is viewed) and
    rows along -x at the left; None where the rows do not run mainly along x."""
    cosines = orientation_cosines(ds)
    if cosines is None or len(cosines) != 6:
        return None
    row = np.abs(np.asarray(cosines[:3], float))
    if row.argmax() != 0 or row[0] < 0.7:
        return None
    return "right-first" if float(cosines[0]) > 0 else "left-first"


def _read_dicom(path: Path) -> _Decoded:
    ds = _dicom_dataset(path)
    _dicom_frames(ds, path)
    try:
        a = ds.pixel_array
    except Exception as e:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise VolumeFormatError(
            f"{path}: cannot decode the DICOM pixel data ({getattr(syntax, 'name', syntax)}: {e}); a compressed file "
            "needs a decoder (pip install pylibjpeg pylibjpeg-openjpeg), or export it uncompressed"
        ) from e
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # white is 0: turn it the usual way round
        a = a.max() - (a - a.min())
    return _Decoded(a, _dicom_spacing(ds), _dicom_meta(ds, path))


# ---- vendor exports (cannot be tested here: no vendor files)


def _read_e2e(path: Path) -> _Decoded:
    """Heidelberg ``.e2e`` through oct-converter's ``E2E(path).read_oct_volume()`` (a list of volumes; the one with
    the most B-scans is taken). Untested here: no .e2e file to test with. Its B-scans are floats in [0, 1] after
    oct-converter's display transform; only the depth spacing comes from the file (oct-converter fills the others
    with fixed defaults), so the spacing is unknown unless given."""
    readers = _require("oct_converter.readers", "oct-converter", path)
    volumes = _library_read(
        path,
        "oct-converter",
        lambda: readers.E2E(path).read_oct_volume(),
        hint="export the scan as DICOM if the file is sound",
    )
    if not volumes:
        raise VolumeFormatError(f"{path}: no OCT volume in the .e2e file (fundus images only?)")
    volume = max(volumes, key=lambda v: len(v.volume))
    if len(volumes) > 1:
        counts = [len(v.volume) for v in volumes]
        log.warning(f"{path}: {len(volumes)} OCT series of {counts} B-scans; reading the one of {len(volume.volume)}")
    depth = volume.pixel_spacing[1] if volume.pixel_spacing else None
    return _Decoded(_stack_bscans(volume.volume, path), (None, depth, None), _converter_meta(volume, path))


def _read_topcon(path: Path) -> _Decoded:
    """Topcon ``.fda`` / ``.fds`` through oct-converter's ``FDA(path).read_oct_volume()`` / ``FDS(...)``. Untested
    here: no Topcon file to test with (and oct-converter 0.7.0 calls ``np.fromstring``, which NumPy 2.3 removed, so
    it fails on newer NumPy: the error says so)."""
    readers = _require("oct_converter.readers", "oct-converter", path)
    reader = readers.FDA if _suffix(path) == ".fda" else readers.FDS
    try:
        volume = _library_read(
            path,
            "oct-converter",
            lambda: reader(path).read_oct_volume(),
            hint="export the scan as DICOM if the file is sound",
        )
    except VolumeFormatError as e:
        if "fromstring" not in str(e.__cause__):
            raise
        raise VolumeFormatError(
            f"{path}: oct-converter's Topcon reader calls np.fromstring, which NumPy {np.__version__} no longer has "
            "(removed in 2.3): read the file where NumPy < 2.3 is installed, or export the scan as DICOM"
        ) from e.__cause__
    given = volume.pixel_spacing  # [between A-scans, between B-scans, depth] mm (oct-converter's read_scan_params)
    spacing = None if not given else (given[1], given[2], given[0])
    return _Decoded(_stack_bscans(volume.volume, path), spacing, _converter_meta(volume, path))


def _read_vol(path: Path) -> _Decoded:
    """Heidelberg ``.vol`` through eyepy's ``import_heyex_vol(path)``: ``.data`` is (B-scans, depth, A-scans) uint8
    after eyepy's Heyex display transform, ``scale_z / scale_y / scale_x`` the spacing in mm. Tested only with a file
    built from eyepy's own format definition, not with a scanner's export."""
    eyepy = _require("eyepy", "eyepy", path)
    volume = _library_read(
        path, "eyepy", lambda: eyepy.import_heyex_vol(path), hint="export the scan as DICOM if the file is sound"
    )
    spacing = (volume.scale_z, volume.scale_y, volume.scale_x)
    return _Decoded(np.asarray(volume.data), spacing, _eyepy_meta(volume, path))


def _vendor_meta(path: Path, library: str, eye_field: tuple[str, object], dates, device: str) -> ScanMeta:
    """ScanMeta from what a vendor reader gives: ``eye_field`` (its name, value), ``dates`` (name, value, with time)
    in order of preference (the first with a value decides), ``device`` the maker the format itself names."""
    eye, _ = _eye([eye_field], path)
    when, date_field = None, None
    for what, value, with_time in dates:
        if value not in (None, ""):
            when, date_field = _iso_date(value, what, path, with_time), what
            break
    used = [what for what, v in ((eye_field[0], eye), (date_field, when)) if v is not None]
    source = (f"{library} {', '.join(used)}; " if used else "") + f"device: the {_suffix(path)} format"
    return ScanMeta(eye, when, device, None, source)


def _converter_meta(volume, path: Path) -> ScanMeta:
    """Eye and date from oct-converter's volume (``laterality`` "R" / "L", ``acquisition_date`` a datetime), each None
    where it is missing. Untested here: no vendor file to test with."""
    eye = ("laterality", getattr(volume, "laterality", None))
    dates = [("acquisition_date", getattr(volume, "acquisition_date", None), True)]
    device = "Heidelberg Engineering" if _suffix(path) == ".e2e" else "Topcon"
    return _vendor_meta(path, "oct-converter", eye, dates, device)


def _eyepy_meta(volume, path: Path) -> ScanMeta:
    """Eye and date from eyepy's volume meta (the .vol header's ScanPosition "OD" / "OS", ExamTime, else VisitDate),
    each None where it is missing. Untested with a scanner's file: none here."""
    meta = getattr(volume, "meta", None)
    get = meta.get if hasattr(meta, "get") else lambda key: None
    dates = [("ExamTime", get("exam_time"), True), ("VisitDate", get("visit_date"), False)]
    return _vendor_meta(path, "eyepy", ("ScanPosition", get("laterality")), dates, "Heidelberg Engineering")


_READERS: dict[str, Callable[[Path], _Decoded]] = {
    "slices": _read_slices,
    "tiff": _read_tiff,
    "nifti": _read_itk,
    "metaimage": _read_itk,
    "dicom": _read_dicom,
    "e2e": _read_e2e,
    "fda": _read_topcon,
    "fds": _read_topcon,
    "vol": _read_vol,
}
