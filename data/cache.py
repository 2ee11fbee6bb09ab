"""Decode each volume once into uint8 ``.npy`` files that later epochs and runs memory-map."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data.common import DatasetError, file_error
from data.oct import VolumeRecord
from utils.errors import ToolkitError
from utils.io import files_fingerprint, save_npy_atomic

log = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = Path(os.environ.get("OCT_CACHE_DIR", Path.home() / ".cache" / "retina-lesion"))


def _key(paths: tuple[Path, ...], extra: str = "") -> str:
    """The slice files' identity without reading them (``utils.io.files_fingerprint``: path, size, modification
    time, inode and status-change time); a file that cannot be looked at is a ``DatasetError`` naming it."""
    return files_fingerprint(paths, extra, error=file_error)


class CacheError(ToolkitError):
    """The cache folder cannot be created or written; the message names it and what to do."""


class VolumeCache:
    """``load(record)`` -> (image (N, H, W) uint8, labels (N, H, W) uint8 class indices or None), memory-mapped.

    Entries are keyed by every slice file's path and file-system identity (``_key``), so a file changed in any way
    is decoded again; a damaged entry is decoded again too. A read-only cache (a shared or read-only mount) serves
    the entries it holds; only a missing one needs a write.
    """

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        if self.dir.is_dir():  # an existing cache may be read-only: nothing is written until an entry is missing
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._error(e) from e

    def _error(self, e: OSError, entry: Path | None = None) -> CacheError:
        what = f"cannot write the decode cache ({e.strerror or e})"
        if entry is not None:  # the entries it holds were read: this one is new (or damaged)
            what = f"cannot add {entry.name} to the decode cache ({e.strerror or e}), which serves only what it holds"
        return CacheError(
            f"{self.dir}: {what}; point --cache-dir (or $OCT_CACHE_DIR) at a writable folder with room for the "
            "decoded volumes (about 1 byte per voxel, twice with labels)"
        )

    def _entry(self, rec, kind: str, paths: tuple[Path, ...], extra: str = "") -> Path:
        return self.dir / f"{rec.pid}-{kind}-{_key(paths, extra)}.npy"

    def _get(self, rec, kind: str, paths: tuple[Path, ...], decode: Callable[[], np.ndarray], extra: str = ""):
        path = self._entry(rec, kind, paths, extra)
        if path.exists():
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:  # damaged since it was written (writes are atomic): decode again
                log.warning(f"{path}: unreadable cache entry ({e}); decoding {rec.pid} again")
        t0 = time.monotonic()
        array = decode()
        try:
            save_npy_atomic(path, array)
        except OSError as e:
            raise self._error(e, path) from e
        took = time.monotonic() - t0
        log.debug(f"decoded {rec.pid} {kind}: {len(paths)} files from {paths[0].parent} ({took:.1f}s)")
        return np.load(path, mmap_mode="r")

    def load(self, rec: VolumeRecord) -> tuple[np.ndarray, np.ndarray | None]:
        """A record of any layout (``VolumeRecord``, ``data.retouch.FileVolumeRecord``): it names its files
        (``image_paths``, ``label_paths``) and decodes them (``read_image``, ``read_labels``)."""
        image = self._get(rec, "image", rec.image_paths, rec.read_image, rec.image_key)
        if rec.label_paths is None:
            return image, None
        labels = self._get(rec, "label", rec.label_paths, rec.read_labels, rec.label_key)
        if labels.shape[0] != image.shape[0]:
            raise DatasetError(
                f"{rec.label_paths[0]}: {labels.shape[0]} label slices for {image.shape[0]} image slices in "
                f"{rec.image_paths[0]}"
            )
        if labels.shape != image.shape:
            one = len(rec.label_paths) == len(rec.image_paths) == 1  # a file each: name the files
            where = (
                (rec.label_paths[0], rec.image_paths[0])
                if one
                else (rec.label_paths[0].parent, rec.image_paths[0].parent)
            )
            raise DatasetError(
                f"{where[0]}: label slices are {labels.shape[1]}x{labels.shape[2]} but image "
                f"slices in {where[1]} are {image.shape[1]}x{image.shape[2]}"
            )
        return image, labels


def compute_normalization(
    records: list[VolumeRecord], cache: VolumeCache, on_volume: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Mean and std of the training images in [0, 1], one value per input channel (3 identical ones), and the
    training slice sizes (inference warns about B-scans of another size); ``on_volume`` is called after each volume
    (progress)."""
    total, total_sq, count = 0.0, 0.0, 0
    sizes: set[tuple[int, int]] = set()
    for rec in records:
        image, _ = cache.load(rec)
        sizes.add((int(image.shape[1]), int(image.shape[2])))
        for z in range(image.shape[0]):
            s = image[z].astype(np.float64) / 255.0
            total += s.sum()
            total_sq += np.square(s).sum()
            count += s.size
        if on_volume is not None:
            on_volume()
    mean = total / count
    std = max(np.sqrt(max(total_sq / count - mean**2, 0.0)), 1e-6)
    return {"mean": [float(mean)] * 3, "std": [float(std)] * 3, "slice_sizes": sorted([h, w] for h, w in sizes)}
