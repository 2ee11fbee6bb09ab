"""Readers for fundus photographs with vessel labels: the DRIVE layout and a generic paired layout.

DRIVE:   ROOT/training/images/21_training.tif, ROOT/training/1st_manual/21_manual1.gif (0/255),
         ROOT/training/mask/21_training_mask.gif (field of view); ROOT/test/... the same with NN_test and
         ROOT/test/2nd_manual/NN_manual2.gif (0/1: a real quirk, binarised with > 0).
Paired:  ROOT/[train|test/]image/<stem>.png|jpg|tif and ROOT/[train|test/]mask/<stem>.* with matching stems,
         optionally ROOT/.../fov/<stem>.*; without a field-of-view mask one is computed from the photo's dark border.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from data.oct import DatasetError, open_image

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm"}
DRIVE_SPLITS = {"train": "training", "test": "test"}


@dataclass(frozen=True)
class PhotoRecord:
    name: str
    image: Path
    label: Path | None
    fov: Path | None


@dataclass
class Photo:
    """One decoded photograph: rgb (H, W, 3) uint8, label (H, W) bool or None, fov (H, W) bool."""

    name: str
    rgb: np.ndarray
    label: np.ndarray | None
    fov: np.ndarray


def read_rgb(path: Path) -> np.ndarray:
    with open_image(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_binary(path: Path) -> np.ndarray:
    """A label or mask as bool: any non-zero value is foreground (DRIVE's 2nd_manual GIFs hold 0/1, others 0/255)."""
    with open_image(path) as im:
        if im.mode == "P":  # palette index 0/1 in DRIVE's 2nd_manual; the index, not the palette colour, is the label
            return np.asarray(im) > 0
        return np.asarray(im.convert("L")) > 0


def fov_from_photo(rgb: np.ndarray, threshold: int = 20) -> np.ndarray:
    """Field of view of a fundus photo: pixels brighter than its dark border, holes filled, edge eroded by 2 px."""
    bright = rgb.max(axis=2) > threshold
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.ones(rgb.shape[:2], bool)
    largest = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_erosion(ndimage.binary_fill_holes(largest), iterations=2)


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
        records = []
        for img in sorted((base / "images").glob("*.tif")):
            nn = img.stem.split("_")[0]
            label = base / manual / f"{nn}_manual{suffix}.gif"
            fov = base / "mask" / f"{img.stem}_mask.gif"
            records.append(PhotoRecord(img.stem, img, label if label.exists() else None, fov if fov.exists() else None))
        if not records:
            raise DatasetError(f"{base / 'images'}: no .tif photographs found")
        return records
    base = root / split if (root / split / "image").is_dir() else root
    if not (base / "image").is_dir():
        raise DatasetError(f"{root}: neither the DRIVE layout (training/images) nor image/ and mask/ folders")
    images = _stem_map(base / "image")
    labels = _stem_map(base / "mask") if (base / "mask").is_dir() else {}
    fovs = _stem_map(base / "fov") if (base / "fov").is_dir() else {}
    unmatched = sorted(set(labels) - set(images))
    if unmatched:
        raise DatasetError(f"{base / 'mask'}: masks without a photo of the same name: {unmatched[:5]}")
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
    return Photo(rec.name, rgb, label, fov)


class PhotoPatchDataset(torch.utils.data.Dataset):
    """Random training samples from decoded photographs: item i -> {"image": (3, h, w) uint8, "label": (h, w) uint8
    with 255 outside the field of view (ignored by the losses), "det": (0,)}.

    With ``augment.crop_size`` each item is a random patch (``samples`` of them per epoch); without it each item is a
    whole photo (resized when ``augment.resize`` is set).
    """

    def __init__(self, photos: list[Photo], augment, samples: int | None = None, seed: int = 0) -> None:
        if any(p.label is None for p in photos):
            raise DatasetError(f"{[p.name for p in photos if p.label is None][:3]}: training photos need labels")
        self.photos, self.augment, self.seed, self.epoch = photos, augment, seed, 0
        self.samples = samples or len(photos)

    def __len__(self) -> int:
        return self.samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p = self.photos[i % len(self.photos)]
        image = torch.from_numpy(np.ascontiguousarray(p.rgb.transpose(2, 0, 1)))
        label = torch.from_numpy(np.where(p.fov, p.label, 255).astype(np.uint8))
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF)
        image, label = self.augment(image, label, gen)
        return {"image": image.contiguous(), "label": label.contiguous(), "det": torch.zeros(0)}


def photo_normalization(photos: list[Photo]) -> dict[str, list[float]]:
    """Per-channel mean and std in [0, 1] over the field of view of the training photos."""
    pix = np.concatenate([p.rgb[p.fov].astype(np.float64) / 255 for p in photos])
    return {"mean": pix.mean(0).tolist(), "std": np.maximum(pix.std(0), 1e-6).tolist()}
