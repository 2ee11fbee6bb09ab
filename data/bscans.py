"""Single OCT B-scans: the form most public OCT sets take (Kermany/OCT2017, OCTDL, Duke DME, AROI, UMN publish
folders of 2-D PNG or JPEG B-scans, often resized or recompressed), and what a device exports one scan at a time.

A B-scan is predicted as a one-slice volume (its neighbours repeat it). A folder is a volume when its images are one
numbered series (``data.volumes``); otherwise, or with ``--bscans``, each image is a B-scan of its own.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.common import DatasetError, file_error, open_image
from data.photos import IMAGE_EXTS, fov_from_photo, read_array
from data.retouch import map_labels, parse_label_map
from data.volumes import GREY_RULE, ScanVolume, to_uint8_volume
from utils.io import IGNORED_FILES

log = logging.getLogger(__name__)

BSCAN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# a publisher's RGB copy of a grey B-scan differs between channels by JPEG noise only: a mean difference of a few
# grey levels; a colour picture (a fundus photo, a pseudo-colour map) differs by tens
GREY_TOLERANCE = 4.0


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in BSCAN_SUFFIXES and path.is_file()


def _as_channels_last(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (3, 4):  # a channel-first TIFF
        return np.moveaxis(a, 0, -1)
    return a


def channel_spread(a: np.ndarray) -> float:
    """Mean absolute difference between an (H, W, >=3) image's colour channels, in its own units."""
    rgb = a[..., :3].astype(np.float32)
    return float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean())


def read_bscan(path: Path) -> np.ndarray:
    """One B-scan image (PNG, JPEG, BMP, single-page TIFF; grey, RGB or 16-bit) as (H, W) uint8.

    RGB copies of grey B-scans become their channel mean; 16-bit and float images are mapped to 0..255 by the same
    percentile rule as volumes (``data.volumes``), so a B-scan and a volume of one device look alike to a model."""
    path = Path(path)
    a, grey = _picture(path)
    if a.ndim == 3 and a.shape[2] in (1, 2):  # grey (with alpha)
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        if not grey:
            log.warning(
                f"{path}: a colour image (its channels differ by more than {GREY_TOLERANCE:g} grey levels on "
                "average), read as the mean of its channels; OCT B-scans are grey: is this a B-scan?"
            )
        grey = a[..., :3].astype(np.float32).mean(axis=2)
        # 8-bit stays 8-bit (rounded): a float mean would be stretched by the percentile rule below
        a = np.round(grey).astype(np.uint8) if a.dtype == np.uint8 else grey
    if a.ndim != 2:
        raise DatasetError(
            f"{path}: an image of shape {a.shape} is not one B-scan (H x W, grey or RGB); a stack of B-scans is a "
            "volume: give it as a multi-page TIFF or a folder of numbered slices"
        )
    return to_uint8_volume(a[None], path)[0]


def is_bscan_file(path: Path) -> bool:
    """A PNG, JPEG or BMP image, or a TIFF holding one image (a multi-page TIFF is a volume)."""
    if not is_image_file(path):
        return False
    if path.suffix.lower() not in (".tif", ".tiff"):
        return True
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as e:
        raise DatasetError(f"{path}: not a readable TIFF ({e})") from e
    # (H, W) or contiguous RGB(A) (H, W, 3|4); a (3, H, W) stack is a three-slice volume, as the volume reader has it
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4))


def folder_images(folder: Path) -> list[Path]:
    """The B-scan images of a folder (natural order of their names); anything else in it is an error that names it."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise file_error(folder, e) from e
    images = []
    for p in entries:
        if p.name.startswith(".") or p.name.lower() in IGNORED_FILES:
            continue
        if not is_image_file(p):
            raise DatasetError(
                f"{p}: unexpected in a folder of B-scans, which holds {', '.join(BSCAN_SUFFIXES)} images only "
                "(remove or move it)"
            )
        images.append(p)
    if not images:
        raise DatasetError(f"{folder}: no B-scan images ({', '.join(BSCAN_SUFFIXES)}) in the folder")
    return images


def independent_bscans(folder: Path, force: bool = False) -> list[Path] | None:
    """The images of ``folder`` when each is a B-scan of its own: with ``force`` (``--bscans``), or when their names
    cannot be one numbered series of slices (the reason is logged); None when the folder is to be read as one volume
    (``data.volumes``, which refuses a gap or a stray copy in a series: a damaged volume is never read slice by
    slice without a word). An AI Challenger volume folder (``<PID>.img``) is always a volume."""
    if force:
        return folder_images(folder)
    if folder.name.lower().endswith(".img"):
        return None
    images = folder_images(folder)  # a file that is no image is an error
    why = _not_one_series(images)
    if why is None:
        return None
    log.info(f"{folder}: read as {len(images)} independent B-scans, not one volume ({why})")
    return images


def _not_one_series(files: list[Path]) -> str | None:
    """Why these names cannot be the slices of one volume, or None where they may be."""
    if len(files) < 2:
        return None
    if any(p.suffix.lower() in (".jpg", ".jpeg") for p in files):
        return "JPEG images: volumes are not stored as JPEG slices"
    if not any(ch.isdigit() for p in files for ch in p.name):
        return "their names carry no slice numbers"
    parts = [re.split(r"(\d+)", p.name.lower()) for p in files]
    if len({tuple(q[0::2]) for q in parts}) == 1:  # one naming pattern (Kermany's CNV-1016042-1.jpeg, -2, ...)
        varying = [i for i in range(1, len(parts[0]), 2) if len({int(q[i]) for q in parts}) > 1]
        if len(varying) > 1:
            return f"their names differ in {len(varying)} runs of digits ({files[0].name}, {files[-1].name})"
    sizes = {}
    for p in files:  # the slices of one volume share one size: images of several sizes are not one
        with open_image(p) as im:
            sizes.setdefault(im.size, p.name)
    if len(sizes) > 1:
        (wa, ha), (wb, hb) = list(sizes)[:2]
        a, b = sizes[wa, ha], sizes[wb, hb]
        return f"images of different sizes ({a} is {ha}x{wa}, {b} is {hb}x{wb}), which no volume's slices are"
    return None


def read_bscan_volume(path: Path):
    """A B-scan file as a one-slice ``ScanVolume`` (spacing unknown)."""
    return ScanVolume(read_bscan(path)[None], None, Path(path), "bscan")


def _picture(path: Path) -> tuple[np.ndarray, bool]:
    """An image file's pixels (channels last) and whether it is grey (channels equal up to JPEG noise)."""
    a = _as_channels_last(read_array(path))
    if a.ndim == 3 and a.shape[2] >= 3:
        top = 255.0 if a.dtype == np.uint8 else float(np.abs(a).max()) or 1.0
        return a, channel_spread(a) * 255.0 / top <= GREY_TOLERANCE
    return a, True


def looks_like_bscan(path: Path) -> bool:
    """Whether an input looks like OCT by its form: a folder, a volume file (NIfTI, DICOM, a Cirrus cube, ...), a
    multi-page TIFF, or a grey image without a fundus camera's round field of view."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix.lower() not in IMAGE_EXTS:
        return path.is_file()  # a volume file
    if not is_image_file(path):
        return False  # a photo format B-scans do not come in (GIF, PPM)
    if not is_bscan_file(path):
        return True  # a multi-page TIFF: a volume
    a, grey = _picture(path)
    return grey and not has_round_field(a)


def looks_like_fundus(path: Path) -> bool:
    """Whether an image file looks like a fundus photo: a fundus camera's round field of view, in colour or grey (as
    red-free photos are). Colour alone says nothing (pseudo-colour OCT exports, overlays), nor does a cropped field:
    such inputs are claimed by no task, and predict.py asks for --task."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTS or not path.is_file():
        return False
    if is_image_file(path) and not is_bscan_file(path):
        return False  # a multi-page TIFF
    return has_round_field(_picture(path)[0])


def has_round_field(a: np.ndarray) -> bool:
    """A fundus camera's picture: a bright disc (perhaps cut at the top and bottom) inside a dark frame. An OCT
    B-scan's tissue is a band across its whole width, never a disc."""
    grey = a.astype(np.float32) if a.ndim == 2 else a[..., :3].astype(np.float32).mean(axis=2)
    step = max(1, max(grey.shape) // 256)  # a thumbnail shows the shape
    grey = grey[::step, ::step]
    lo, hi = float(grey.min()), float(grey.max())
    if hi <= lo:
        return False
    thumb = np.round((grey - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    fov = fov_from_photo(np.repeat(thumb[..., None], 3, axis=2))
    rows, cols = np.nonzero(fov)
    if len(rows) == 0:
        return False
    top, left = int(rows.min()), int(cols.min())
    h, w = int(np.ptp(rows)) + 1, int(np.ptp(cols)) + 1
    fill = len(rows) / (h * w)  # a disc fills pi/4 of its box, more when cut at the top and bottom
    if not (0.6 < fill < 0.92 and 0.6 < h / w < 1.5):
        return False
    # the corners of a disc's box lie outside it (even cut at the top and bottom); a band of tissue across the
    # B-scan, flat, tilted or curved, fills at least two of its box's corners
    box = fov[top : top + h, left : left + w]
    ch, cw = max(1, h // 10), max(1, w // 10)
    corners = (box[:ch, :cw], box[:ch, -cw:], box[-ch:, :cw], box[-ch:, -cw:])
    # and a disc's leftmost and rightmost columns are short chords, where a band's ends are its whole thickness
    ends = max(box[:, 0].mean(), box[:, -1].mean())
    return all(c.mean() < 0.1 for c in corners) and ends < 0.35


# ---------------------------------------------------------------------------------------- training pairs
@dataclass(frozen=True)
class BScanRecord:
    """One labelled B-scan of the paired 2-D layout (``image/<stem>.png`` + ``mask/<stem>.png``) as a one-slice
    volume for ``data.cache.VolumeCache``: the mask's stored values become classes by ``label_map``."""

    pid: str
    image: Path
    mask: Path | None
    label_map: str
    num_slices: int = 1

    @property
    def name(self) -> str:
        return self.pid

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.image, *((self.mask,) if self.mask else ()))

    @property
    def image_paths(self) -> tuple[Path, ...]:
        return (self.image,)

    @property
    def label_paths(self) -> tuple[Path, ...] | None:
        return None if self.mask is None else (self.mask,)

    @property
    def image_key(self) -> str:
        return GREY_RULE  # how 16-bit B-scans become 8-bit: a new rule decodes cached ones again

    @property
    def label_key(self) -> str:
        return self.label_map

    def read_image(self) -> np.ndarray:
        return read_bscan(self.image)[None]

    def read_labels(self) -> np.ndarray:
        a = _palette_indices(self.mask)
        a = _as_channels_last(read_array(self.mask)) if a is None else a
        if a.ndim == 3 and a.shape[2] >= 3 and (a[..., :3] == a[..., :1]).all():
            a = a[..., 0]  # a grey mask saved as RGB
        if a.ndim != 2 or a.dtype.kind not in "ui":
            raise DatasetError(
                f"{self.mask}: a mask must be one channel of whole numbers (the stored label values), got "
                f"{a.dtype} of shape {a.shape}"
            )
        return map_labels(a, parse_label_map(self.label_map), self.mask)[None]


def _palette_indices(path: Path) -> np.ndarray | None:
    """A palette mask's indices (a class per index, as label tools save them), or None for other images."""
    with open_image(path) as im:
        return np.asarray(im).copy() if im.mode == "P" else None


def _by_stem(folder: Path) -> dict[str, Path]:
    """A folder's images by name without extension; two of one name (x.png and x.jpg) are an error naming them."""
    found: dict[str, Path] = {}
    for p in folder_images(folder):
        if p.stem in found:
            raise DatasetError(f"{found[p.stem]} and {p} share the name {p.stem!r}; keep one")
        found[p.stem] = p
    return found


def _pair_folder(root: Path, split: str) -> Path | None:
    for base in (root / split, root):
        if (base / "image").is_dir():
            return base
    return None


def is_bscan_pairs(root: Path) -> bool:
    """The paired 2-D layout: ``image/`` and ``mask/`` folders in the root or in its split folders."""
    return any(_pair_folder(root, s) is not None for s in ("train", "val", "test"))


def find_bscan_pairs(root: str | Path, split: str, val_count: int, label_map: str) -> list[BScanRecord]:
    """The B-scans of ``split`` in the paired layout: ``ROOT/<split>/image/`` (+ ``mask/``) where such folders
    exist; otherwise ``ROOT/image/``, whose last ``val_count`` B-scans (by name) are the validation split and the
    rest the training one (the test split needs its own folder)."""
    root = Path(root)
    parse_label_map(label_map)  # a bad map fails before anything is read
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    base = root / split if (root / split / "image").is_dir() else None
    if base is None:
        if split == "test" or not (root / "image").is_dir():
            raise DatasetError(f"{root}: no {split}/image/ folder{' nor image/' if split != 'test' else ''} of B-scans")
        base = root
    images = _by_stem(base / "image")
    masks = _by_stem(base / "mask") if (base / "mask").is_dir() else {}
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DatasetError(f"{base / 'mask'}: masks without a B-scan of the same name: {orphans[:5]}")
    unlabelled = sorted(set(images) - set(masks))
    if split != "test" and unlabelled:
        raise DatasetError(f"{base / 'image'}: no mask in {base / 'mask'} for {unlabelled[:5]}")
    records = [BScanRecord(s, images[s], masks.get(s), label_map) for s in sorted(images)]
    if base == root:
        if not 0 < val_count < len(records):
            raise DatasetError(
                f"{root}: --val-count {val_count} must hold out at least one B-scan for validation and leave training "
                f"ones (found {len(records)}); or give train/ and val/ folders"
            )
        records = records[:-val_count] if split == "train" else records[-val_count:]
    return records
