"""Readers for fundus photographs with vessel labels: the DRIVE layout and a generic paired layout.

DRIVE:   ROOT/training/images/21_training.tif, ROOT/training/1st_manual/21_manual1.gif (0/255),
         ROOT/training/mask/21_training_mask.gif (field of view); ROOT/test/... the same with NN_test and
         ROOT/test/2nd_manual/NN_manual2.gif (0/1: a real quirk, binarised with > 0).
Paired:  ROOT/[train|test/]image/<stem>.png|jpg|tif and ROOT/[train|test/]mask/<stem>.* with matching stems,
         optionally ROOT/.../fov/<stem>.*; without a field-of-view mask one is computed from the photo's dark border.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps
from scipy import ndimage
from skimage import measure

from data.common import IMAGE_EXTS, DatasetError, file_error, open_image
from utils.config import SCALE, TaskSettings, option, scale_value

log = logging.getLogger(__name__)

DRIVE_SPLITS = {"train": "training", "test": "test"}
PREPROCESSING = ("rgb", "green", "clahe")
CLAHE_CLIP = 0.01  # skimage's default clip limit; tiles of 1/8 of the photo (its default kernel size)


@dataclass
class VesselSettings(TaskSettings):
    """What the vessel task reads and others do not (``--task vessel``), and its changes to the shared defaults."""

    defaults = {
        "name": "unet",
        "num_classes": 2,
        "num_detect": 0,
        "class_weights": [1.0, 1.0],
        "loss": "wce+dice",
        "data_dir": "../shared/data/DRIVE",
        "crop_size": 96,
        "steps_per_epoch": 100,
        "vflip": True,
        "random_rotate": 180.0,
        "random_scale": 0.25,
        "random_brightness": 0.1,
        "random_contrast": 0.2,
        "random_gamma": 0.2,
        "random_noise": 0.0,
        "random_blur": 0.0,
    }
    val_count: int = option(4, "training photos held out for validation and the threshold", data=True, metavar="N")
    scale: str | float = SCALE()
    preprocess: str = option(
        "rgb",
        "what the network sees of a photo: rgb (the photo), green (its green channel, where vessels stand out most, "
        "as three channels) or clahe (the green channel after contrast-limited adaptive histogram equalisation, as "
        "retina-unet does); a checkpoint records it and every prediction applies it",
        choices=PREPROCESSING,
    )

    def validate(self) -> VesselSettings:
        if self.val_count < 1:
            raise ValueError(f"val_count (--val-count) must be >= 1, got {self.val_count}")
        self.scale = scale_value(self.scale)
        return super().validate()


@dataclass(frozen=True)
class PhotoRecord:
    name: str
    image: Path
    label: Path | None
    fov: Path | None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file this record reads."""
        return tuple(p for p in (self.image, self.label, self.fov) if p is not None)

    @property
    def image_paths(self) -> tuple[Path, ...]:
        """The photo's file (what the split check compares the bytes of)."""
        return (self.image,)


def network_input(rgb: np.ndarray, mode: str) -> np.ndarray:
    """(H, W, 3) uint8 photo -> what the network sees, (H, W, 3) uint8: the photo itself (``rgb``), its green channel
    three times (``green``), or that channel after CLAHE (``clahe``, scikit-image's ``equalize_adapthist``)."""
    if mode == "rgb":
        return rgb
    if mode not in PREPROCESSING:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, got {mode!r}")
    green = rgb[..., 1]
    if mode == "clahe":
        from skimage.exposure import equalize_adapthist

        green = np.round(equalize_adapthist(green, clip_limit=CLAHE_CLIP) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(green[..., None], 3, axis=2))


@dataclass
class Photo:
    """One decoded photograph: rgb (H, W, 3) uint8, label (H, W) bool or None, fov (H, W) bool; ``path``: the file
    it was read from (what messages about it name), None for an array handed over in Python."""

    name: str
    rgb: np.ndarray
    label: np.ndarray | None
    fov: np.ndarray
    path: Path | None = None


# TIFF orientation tag -> the array as viewers show it (the same as Pillow's ``ImageOps.exif_transpose``)
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _plain_tiff(path: Path) -> np.ndarray | None:
    """A TIFF's pixels through tifffile when they are grey or RGB values (white-is-zero grey, as ImageJ saves masks,
    turned back into black-is-zero), upright as viewers show them (its orientation tag applied); None for other
    TIFFs (a palette, CMYK, YCbCr), which PIL decodes into colours, or names what it cannot. Raw values of those
    would have been wrong without an error."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            photometric = int(page.photometric) if page.photometric is not None else 1
            if photometric not in (0, 1, 2):  # MINISWHITE, MINISBLACK, RGB
                if page.dtype is not None and page.dtype.itemsize > 1:
                    raise DatasetError(
                        f"{path}: a {page.dtype} TIFF with photometric {photometric}: save it as grey or RGB"
                    )
                return None
            if len(tif.pages) > 1 and tif.pages[1].shape == page.shape:  # not a thumbnail: a stack of images
                raise DatasetError(f"{path}: a stack of {len(tif.pages)} images; a photo or a mask is one image")
            a = np.asarray(tif.asarray(key=0))
            orientation = page.tags.get("Orientation")
    except FileNotFoundError as e:
        raise file_error(path, e) from e
    except DatasetError:
        raise
    except Exception:  # not a TIFF tifffile reads (e.g. a JPEG named .tif): PIL names the problem
        return None
    if photometric == 0:  # white is zero
        if a.dtype == bool:
            a = ~a
        elif a.dtype.kind in "ui":
            a = np.iinfo(a.dtype).max - a
        else:
            a = float(a.max()) - a
    turn = _ORIENT.get(int(orientation.value) if orientation is not None else 1)
    if turn is not None:
        log.info(f"{path}: orientation tag {orientation.value} applied (read as displayed)")
        a = np.ascontiguousarray(turn(a))
    return a


def _upright(im: Image.Image) -> Image.Image:
    """The image as viewers show it: an orientation tag (phones, some cameras) applied, with one info line."""
    orientation = im.getexif().get(0x0112, 1)
    if orientation in (None, 1):
        return im
    log.info(f"{im.filename or 'image'}: orientation tag {orientation} applied (read as displayed)")
    return ImageOps.exif_transpose(im)


def read_array(path: Path) -> np.ndarray:
    """An image file as an array of its own type (uint8, uint16, float), upright as viewers show it: plain TIFFs
    through tifffile (16-bit and multi-channel TIFFs that PIL cannot hold), everything else through PIL."""
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        a = _plain_tiff(path)
        if a is not None:
            return a
    with open_image(path) as raw:
        im = _upright(raw)
        if im.mode == "P":  # a palette: its colours (DRIVE's 2nd_manual labels use the index; see read_binary)
            return np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
        if im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            return np.asarray(im.convert("RGB"))
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im).astype(np.uint16)
        return np.asarray(im)


def to_uint8(a: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Any image array -> uint8: 8-bit as it is; floats in [0, 1] times 255; other types scaled by their range
    (from 0, or from the minimum when negative) up to their maximum, never saturated; but when the brightest
    0.01% of the values more than double that range (one hot pixel in 12-bit data saved as 16-bit would squeeze
    the photo into a few greys), up to the 99.99th percentile, the outliers clipped with a warning."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    x = a.astype(np.float64)
    if not np.isfinite(x).all():
        raise DatasetError(f"{path}: the image holds NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if a.dtype.kind == "f" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    else:
        lo = min(lo, 0.0)
        # the "higher" 99.99th percentile, by a partial sort of the stored integers (np.quantile sorts a float copy)
        flat = a.reshape(-1)
        k = min(flat.size - 1, int(np.ceil((1 - 1e-4) * (flat.size - 1))))
        top = float(np.partition(flat, k)[k])
        if hi - lo > 2 * (top - lo) > 0:
            clipped = int(np.count_nonzero(x > top))
            log.warning(
                f"{path}: {a.dtype} values up to {hi:g}, but 99.99% lie at or below {top:g}: scaled by {lo:g}..{top:g}"
                f" and {clipped} brighter pixels clipped (hot pixels?)"
            )
            hi = top
            x = np.minimum(x, top)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.round((x - lo) * scale).astype(np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    """A photograph as (H, W, 3) uint8, whatever it was stored as: grey (repeated), RGBA (alpha dropped),
    channel-first TIFF, 16-bit or float (scaled by its range, see ``to_uint8``)."""
    a = read_array(path)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (3, 4):  # channel-first TIFF
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[2] in (1, 2):  # grey (with alpha)
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DatasetError(f"{path}: an image of shape {a.shape} is not a photograph (H x W x 3)")
    return np.ascontiguousarray(to_uint8(a[..., :3], path))


def read_binary(path: Path) -> np.ndarray:
    """A label or mask as bool. 0/1 (DRIVE's 2nd_manual GIFs: palette indices 0/1) and 0/M (0/255) are exact; any
    other values (a label saved with lossy compression) are binarised at the midpoint of the type's range, with one
    warning naming the file and the share of pixels that were neither 0 nor the maximum."""
    with open_image(path) as raw:
        im = _upright(raw)
        if im.mode == "P":  # palette indices 0/1 in DRIVE's 2nd_manual: the index, not the colour, is the label
            idx = np.asarray(im)
            palette = im.getpalette() or [0, 0, 0, 255, 255, 255]
            dark_first = sum(palette[0:3]) <= sum(palette[3:6])  # index 0 white: the colours, not the indices
            if set(np.unique(idx).tolist()) <= {0, 1} and dark_first:
                return idx > 0
    a = read_array(path)
    if a.ndim == 3:
        a = a[..., :3].max(axis=2) if a.shape[2] >= 3 else a[..., 0]
    values = np.unique(a)
    if len(values) == 1 or (len(values) == 2 and values[0] == 0):  # 0/1, 0/255, 0/65535, or one value
        return a > 0
    top = 1.0 if a.dtype.kind == "f" else float(np.iinfo(a.dtype).max) if a.dtype.kind in "ui" else 1.0
    if 0 < float(a.max()) <= top / 8:  # a 0/1 label saved lossily (values 0..2): the type's midpoint would empty it
        counts = np.bincount(a.ravel().astype(np.int64)) if a.dtype.kind in "ui" and a.min() >= 0 else None
        common = np.sort(np.argsort(counts)[-2:]) if counts is not None else np.array([0.0, float(a.max())])
        cut = float(common.mean())  # between the two most frequent values: background and vessel
        log.warning(
            f"{path}: the label holds {len(values)} values, all at or below {float(a.max()):g} (a 0/1 label saved "
            f"with lossy compression?); binarised at {cut:g}"
        )
        return a > cut
    off = float(np.mean((a != 0) & (a != top)))
    middle = float(np.mean((a > 0.25 * top) & (a < 0.75 * top)))
    log.warning(
        f"{path}: the label holds {len(values)} values, not 2 ({off:.1%} of its pixels are neither 0 nor "
        f"{top:g}, {middle:.1%} lie in the middle half: lossy compression?); binarised at {top / 2:g}"
    )
    return a > top / 2


def fov_from_photo(rgb: np.ndarray) -> np.ndarray:
    """Field of view of a fundus photo (H, W) bool: the largest region brighter than the photo's border, holes filled.

    The border level is the median of the frame's four corners (black, grey, or noisy after JPEG), the fundus level
    the median of the central quarter; the threshold lies 15% of the way up (at least 6 grey levels above the
    border). Otsu's threshold, tried first, put the cut inside the dark rim of the fundus when the border is grey
    (IoU 0.895 against DRIVE's masks); this reaches IoU >= 0.988 on all 40 DRIVE photos with black, grey (25-35) and
    JPEG-compressed borders (``tests/test_vessel.py``). When the corners are about as bright as the centre there is
    no border (a crop inside the fundus): the whole frame is the field of view. A circle cut by the frame's edges is
    found the same way.
    """
    lum = ndimage.median_filter(rgb.max(axis=2), size=5).astype(np.float32)
    h, w = lum.shape
    k = max(2, min(h, w) // 20)
    corners = np.concatenate([lum[:k, :k].ravel(), lum[:k, -k:].ravel(), lum[-k:, :k].ravel(), lum[-k:, -k:].ravel()])
    border, inside = float(np.median(corners)), float(np.median(lum[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]))
    if inside - border < max(12.0, 0.25 * inside):  # no dark border to separate from
        return np.ones((h, w), bool)
    regions = measure.label(lum > border + max(6.0, 0.15 * (inside - border)))
    largest = regions == np.argmax(np.bincount(regions.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(largest)


def fov_diameter(fov: np.ndarray) -> float:
    """The field of view's diameter in pixels: its larger extent (a circle cut by the frame keeps the other one)."""
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))
    if rows.size == 0:
        return float(max(fov.shape))
    return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def _stem_map(folder: Path) -> dict[str, Path]:
    """Photos of a folder by name without extension; two files of one name (x.png, x.tif) are an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            if p.stem in found:
                raise DatasetError(f"{found[p.stem]} and {p} have the same name; their outputs would collide")
            found[p.stem] = p
    return found


def find_photos(root: str | Path, split: str, manual: str = "1st_manual") -> list[PhotoRecord]:
    """Photos of a split (``train`` or ``test``) from the DRIVE layout or the paired layout, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if (root / "training" / "images").is_dir():
        if split not in DRIVE_SPLITS:
            raise ValueError(f"DRIVE has splits {sorted(DRIVE_SPLITS)}, got {split!r}")
        base = root / DRIVE_SPLITS[split]
        suffix = "1" if manual == "1st_manual" else "2"
        records, owner = [], {}
        for img in _stem_map(base / "images").values():  # any image type: a photo is never skipped silently
            nn = img.stem.split("_")[0]
            label = base / manual / f"{nn}_manual{suffix}.gif"
            fov = base / "mask" / f"{img.stem}_mask.gif"
            if label.exists() and label in owner:  # "01_test (2).tif", "01_left" / "01_right": one label for two
                raise DatasetError(
                    f"{owner[label]} and {img} would both be scored against {label} (DRIVE names labels by the "
                    "number before the first '_'); remove the copy or rename the photos NN_<split>"
                )
            owner[label] = img
            records.append(PhotoRecord(img.stem, img, label if label.exists() else None, fov if fov.exists() else None))
        if not records:
            raise DatasetError(f"{base / 'images'}: no photographs found")
        unlabelled = [r.name for r in records if r.label is None]
        if unlabelled and len(unlabelled) < len(records):  # the split is labelled, but these photos are not
            expect = f"{base / manual}/<NN>_manual{suffix}.gif"
            log.warning(f"{base / 'images'}: no label for {', '.join(unlabelled[:5])} (expected at {expect})")
        return sorted(records, key=lambda r: r.name)
    base = root / split if (root / split / "image").is_dir() else root
    if not (base / "image").is_dir():
        raise DatasetError(f"{root}: neither the DRIVE layout (training/images) nor image/ and mask/ folders")
    images = _stem_map(base / "image")
    labels = _stem_map(base / "mask") if (base / "mask").is_dir() else {}
    fovs = _stem_map(base / "fov") if (base / "fov").is_dir() else {}
    # HRF and DRIVE name field-of-view masks <stem>_mask
    fovs = {s.removesuffix("_mask") if s.removesuffix("_mask") in images else s: p for s, p in fovs.items()}
    for folder, found in (("mask", labels), ("fov", fovs)):  # a field-of-view mask not used would go unnoticed
        unmatched = sorted(set(found) - set(images))
        if unmatched:
            raise DatasetError(f"{base / folder}: masks without a photo of the same name: {unmatched[:5]}")
    records = [PhotoRecord(s, p, labels.get(s), fovs.get(s)) for s, p in images.items()]
    if not records:
        raise DatasetError(f"{base / 'image'}: no photographs found")
    return records


def split_photos(root: str | Path, split: str, val_count: int) -> list[PhotoRecord]:
    """``train``: the training photos but the last ``val_count``; ``val``: those last ``val_count`` (early stopping and
    the threshold, as in training); ``test``: the test photos."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if split == "test":
        return find_photos(root, "test")
    photos = find_photos(root, "train")
    if not 0 < val_count < len(photos):
        raise ValueError(f"--val-count {val_count} must leave training photos (found {len(photos)} in {root})")
    return photos[:-val_count] if split == "train" else photos[-val_count:]


def load_photo(rec: PhotoRecord) -> Photo:
    rgb = read_rgb(rec.image)
    label = read_binary(rec.label) if rec.label is not None else None
    fov = read_binary(rec.fov) if rec.fov is not None else fov_from_photo(rgb)
    for what, a in (("label", label), ("field-of-view mask", fov)):
        if a is not None and a.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{rec.image}: {what} is {a.shape[0]}x{a.shape[1]}, photo is {rgb.shape[0]}x{rgb.shape[1]}"
            )
    return Photo(rec.name, rgb, label, fov, rec.image)


def photo_normalization(photos: list[Photo]) -> dict:
    """Per-channel mean and std in [0, 1] over the field of view of the training photos, and their pixel scale: the
    median field-of-view diameter in pixels (inference rescales other cameras' photos to it)."""
    pix = np.concatenate([p.rgb[p.fov].astype(np.float64) / 255 for p in photos])
    # crops without a border say nothing of the pixel scale: without any photo that has one, none is recorded and
    # --scale auto leaves photos as they are
    sizes = [fov_diameter(p.fov) for p in photos if not p.fov.all()]
    return {
        "mean": pix.mean(0).tolist(),
        "std": np.maximum(pix.std(0), 1e-6).tolist(),
        "fov_diameter": float(np.median(sizes)) if sizes else None,
    }
