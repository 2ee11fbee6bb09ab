"""Training samples: a slice stacked with its two neighbours, built on the fly from the volume cache."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from data.cache import VolumeCache
from data.common import DatasetError
from data.oct import VolumeRecord
from data.photos import Photo
from data.transforms import ANY_LESION, IGNORE_INDEX, Augment

log = logging.getLogger(__name__)


def neighbour_indices(z: np.ndarray | int, n: int) -> np.ndarray:
    """Slice indices (..., 3): z-1, z, z+1, where an edge slice repeats itself."""
    z = np.asarray(z)
    return np.stack([np.clip(z - 1, 0, n - 1), z, np.clip(z + 1, 0, n - 1)], axis=-1)


def stack_neighbours(volume: np.ndarray, z: np.ndarray | int) -> np.ndarray:
    """volume (N, H, W), z (B,) -> (B, 3, H, W) (or (3, H, W) for a scalar z), same dtype."""
    return volume[neighbour_indices(z, volume.shape[0])]


def detection_from_label(label: torch.Tensor, num_lesions: int = 3) -> torch.Tensor:
    """label (..., H, W) class indices -> (..., num_lesions) float: lesion class k+1 present (1) or not (0); NaN
    (unknown) where the label holds ``ANY_LESION`` pixels and not class k+1: that fluid may be of class k+1."""
    classes = torch.arange(1, num_lesions + 1, device=label.device).view(-1, 1, 1)
    present = (label.unsqueeze(-3) == classes).flatten(-2).any(-1).float()
    unknown = (label == ANY_LESION).flatten(-2).any(-1, keepdim=True)
    return torch.where(unknown & (present == 0), torch.full_like(present, float("nan")), present)


class SliceDataset(Dataset):
    """Item i -> {"image": (3, H, W) uint8, "label": (H, W) uint8, "det": (3,) float32}.

    Normalisation happens on the device (uint8 crosses the bus, a quarter of float32's bytes).
    """

    def __init__(
        self, records: list[VolumeRecord], cache: VolumeCache, augment: Augment | None, seed: int = 0, lone: float = 0
    ):
        """``lone``: the share of training items whose neighbours are the slice itself, as a single B-scan is
        predicted (so one is not unlike anything the model saw)."""
        self.records = records
        self.lone = lone
        self.cache = cache
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.index = [(v, z) for v, rec in enumerate(records) for z in range(rec.num_slices)]
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        resized = augment is not None and (augment.resize or augment.crop_size)
        if not resized:  # batches stack slices, so without resize or crop every volume needs one size
            shapes = {rec.pid: tuple(self._volume(v)[0].shape[1:]) for v, rec in enumerate(records)}
            if len(set(shapes.values())) > 1:
                (pa, sa), (pb, sb) = sorted(shapes.items(), key=lambda kv: kv[1])[:: len(shapes) - 1]
                raise DatasetError(
                    f"volumes differ in slice size: {pa} is {sa[0]}x{sa[1]} but {pb} is {sb[0]}x{sb[1]}; "
                    "pass --resize or --crop-size to train on them together"
                )
            self._open.clear()  # worker processes open their own memory maps
        elif augment.crop_size and records:
            self._warn_if_crop_exceeds_slices(augment)

    def _warn_if_crop_exceeds_slices(self, augment: Augment) -> None:
        """A crop larger than the slices is padded (the padding ignored by the losses): it trains, but on patches
        that are mostly padding, which no inference input looks like. Say so once, naming the smallest volume."""
        if augment.resize:
            sizes = {"--resize": tuple(augment.resize)}
        else:
            sizes = {rec.pid: tuple(self._volume(v)[0].shape[1:]) for v, rec in enumerate(self.records)}
            self._open.clear()
        pid, (h, w) = min(sizes.items(), key=lambda kv: min(kv[1]))
        if augment.crop_size > min(h, w):
            log.warning(
                f"--crop-size {augment.crop_size} is larger than {pid}'s slices ({h}x{w}): patches are padded and "
                f"the padding is ignored by the losses; a crop of at most {min(h, w)} (or --crop-size 0) trains on "
                "image content only"
            )

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _volume(self, v: int) -> tuple[np.ndarray, np.ndarray]:
        if v not in self._open:  # memmaps open lazily, once per worker process
            self._open[v] = self.cache.load(self.records[v])
        return self._open[v]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v, z = self.index[i]
        volume, labels = self._volume(v)
        image = torch.from_numpy(stack_neighbours(volume, z))  # fancy indexing copies
        label = torch.from_numpy(np.array(labels[z]))  # a writable copy of the memory-mapped slice
        if self.augment is not None:
            # a generator per (seed, epoch, item) makes augmentation independent of worker count and order
            gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF)
            if self.lone and float(torch.rand((), generator=gen)) < self.lone:
                image = image[1:2].repeat(3, 1, 1)
            image, label = self.augment(image, label, gen)
        det = detection_from_label(torch.where(label == IGNORE_INDEX, 0, label))
        return {"image": image.contiguous(), "label": label.contiguous(), "det": det}


class PhotoPatchDataset(Dataset):
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
