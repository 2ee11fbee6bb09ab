"""Reader for the AI Challenger 2018 retinal-edema layout.

ROOT/Edema_trainingset/original_images/<PID>.img/1.bmp ... N.bmp
ROOT/Edema_trainingset/label_images/<PID>_labelMark/1.bmp ... N.bmp
ROOT/Edema_validationset/... (same), ROOT/Edema_testset/original_images/<PID>.img/ (no labels)

Label grey values 0 / 255 / 191 / 128 are background / REA / SRF / PED -> classes 0 / 1 / 2 / 3.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from data.common import DatasetError, file_error, open_image
from utils.config import DETECTION, SCALE, TaskSettings, option, scale_value
from utils.io import IGNORED_FILES

log = logging.getLogger(__name__)


@dataclass
class OctSettings(TaskSettings):
    """What the OCT task reads and others do not (``--task oct``; ``Settings``' own defaults are this task's)."""

    layout: str = option(
        "auto",
        "AI Challenger folders (Edema_*set/), RETOUCH case folders (<case>/oct.mhd, reference.mhd), single B-scans "
        "with masks ([<split>/]image/ + mask/ of matching names), or whichever the data folder holds",
        choices=("auto", "challenger", "retouch", "bscans"),
        data=True,
    )
    label_map: str = option(
        "1:1,2:2,3:3",
        "RETOUCH and B-scan layouts: stored label value -> class, VALUE:CLASS,... (RETOUCH's IRF, SRF, PED -> REA, "
        "SRF, PED slots); CLASS 'fluid': fluid of any lesion class (e.g. 255:fluid for a 0/255 fluid mask)",
        metavar="MAP",
        data=True,
    )
    val_count: int = option(
        4, "RETOUCH and B-scan layouts without a val/ folder: cases held out for validation", data=True, metavar="N"
    )
    lone_bscans: float = option(
        0.1,
        "share of training slices whose neighbours are replaced by the slice itself, as a single B-scan is predicted",
        data=True,
        metavar="P",
    )
    detection: str = DETECTION()
    scale: str | float = SCALE()

    introduced: ClassVar[dict[str, Any]] = {"lone_bscans": 0.0}

    def validate(self) -> OctSettings:
        if self.val_count < 0:
            raise ValueError(f"val_count (--val-count) must be >= 0, got {self.val_count}")
        self.scale = scale_value(self.scale)
        if not 0 <= self.lone_bscans <= 1:
            raise ValueError(f"lone_bscans (--lone-bscans) must lie in [0, 1], got {self.lone_bscans}")
        return super().validate()


SPLIT_FOLDERS = {"train": "Edema_trainingset", "val": "Edema_validationset", "test": "Edema_testset"}
IMAGE_SUFFIX, LABEL_SUFFIX = ".img", "_labelMark"
CLASS_NAMES = ("background", "REA", "SRF", "PED")
LESION_NAMES = CLASS_NAMES[1:]
LABEL_GREY_VALUES = (0, 255, 191, 128)  # index = class
# how pictures and reports draw the classes (RGB, index = class): lesions tinted over the B-scan at OVERLAY_ALPHA.
# Okabe and Ito's colour-blind-safe palette (vermillion, sky blue, yellow): told apart with any colour vision, and
# by brightness too
CLASS_COLOURS = np.array([[0, 0, 0], [213, 94, 0], [86, 180, 233], [240, 228, 66]], dtype=np.float32)
OVERLAY_ALPHA = 0.5
_SLICE_NAME = re.compile(r"^(\d+)\.bmp$", re.IGNORECASE)

_LUT = np.full(256, 255, dtype=np.uint8)  # 255 marks a grey value outside the mapping
for _cls, _grey in enumerate(LABEL_GREY_VALUES):
    _LUT[_grey] = _cls


@dataclass(frozen=True)
class VolumeRecord:
    """One patient's B-scan volume: its slice files in order, and the matching label files (or None)."""

    pid: str
    image_paths: tuple[Path, ...]
    label_paths: tuple[Path, ...] | None

    @property
    def num_slices(self) -> int:
        return len(self.image_paths)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file this record reads."""
        return (*self.image_paths, *(self.label_paths or ()))

    @property
    def name(self) -> str:
        return self.pid

    @property
    def image_key(self) -> str:
        """What besides the files decides the decoded image (nothing: 8-bit slices are kept as they are)."""
        return ""

    @property
    def label_key(self) -> str:
        """What besides the files decides the decoded labels (nothing: grey values are fixed)."""
        return ""

    def read_image(self) -> np.ndarray:
        return stack_slices(self.image_paths, read_grey)

    def read_labels(self) -> np.ndarray:
        return stack_slices(self.label_paths, lambda p: grey_to_classes(read_grey(p), p))


def stack_slices(paths: tuple[Path, ...], reader) -> np.ndarray:
    """Read every slice with ``reader`` into one (N, H, W) uint8 array; slices of another size are an error."""
    first = reader(paths[0])
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)
    out[0] = first
    for i, p in enumerate(paths[1:], start=1):
        a = reader(p)
        if a.shape != first.shape:
            raise DatasetError(
                f"{p}: slice is {a.shape[0]}x{a.shape[1]} but {paths[0].name} is {first.shape[0]}x{first.shape[1]}"
            )
        out[i] = a
    return out


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_FILES


def list_slices(folder: Path) -> tuple[Path, ...]:
    """The slice files ``1.bmp ... N.bmp`` of a folder, in numeric order (2 before 10).

    Stray files (``.DS_Store``, ``Thumbs.db``, hidden files) are ignored; any other name, a gap or a
    duplicate number is an error naming the folder.
    """
    if not folder.is_dir():
        raise DatasetError(f"{folder}: slice folder not found")
    numbered: dict[int, Path] = {}
    for p in folder.iterdir():
        if _is_ignored(p.name):
            continue
        m = _SLICE_NAME.match(p.name)
        if not m:
            raise DatasetError(
                f"{p}: unexpected file in a slice folder; slices must be named 1.bmp ... N.bmp (remove or move it)"
            )
        n = int(m.group(1))
        if n in numbered:
            raise DatasetError(f"{folder}: slice number {n} appears twice ({numbered[n].name}, {p.name})")
        numbered[n] = p
    if not numbered:
        raise DatasetError(f"{folder}: no slice files (expected 1.bmp ... N.bmp)")
    order = sorted(numbered)
    expected = list(range(1, len(order) + 1))
    if order != expected:
        missing = sorted(set(range(1, order[-1] + 1)) - set(order))[:10]
        found = f"numbered {order[0]}..{order[-1]}" if order[0] == 0 else f"missing {missing}"
        raise DatasetError(f"{folder}: slices must be numbered 1..N without gaps; {found}, found {len(order)} files")
    return tuple(numbered[n] for n in order)


def read_grey(path: Path) -> np.ndarray:
    """An 8-bit single-channel image as (H, W) uint8.

    Palette images with a grey palette and RGB images whose channels are equal are accepted; colour, 16-bit
    and unreadable files are errors that name the file.
    """
    _check_bmp_depth(path)
    with open_image(path) as im:
        mode = im.mode
        if mode == "L":
            return np.asarray(im, dtype=np.uint8).copy()
        if mode == "P":
            rgb = np.asarray(im.convert("RGB"))
        elif mode in ("RGB", "RGBA"):
            rgb = np.asarray(im)[..., :3]
        else:
            raise DatasetError(
                f"{path}: image mode {mode!r} (e.g. 16-bit or 1-bit) is not supported; convert it to 8-bit grey"
            )
    if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
        raise DatasetError(f"{path}: colour image ({mode}); B-scans and label maps must be 8-bit grey")
    return rgb[..., 0].copy()


def _check_bmp_depth(path: Path) -> None:
    """16 bits per pixel BMPs would be decoded as 5-bit colour: reject them before they pass for 8-bit grey."""
    if Path(path).suffix.lower() != ".bmp":
        return
    try:
        with open(path, "rb") as f:
            head = f.read(30)
    except OSError as e:
        raise file_error(path, e) from e
    if len(head) == 30 and head[:2] == b"BM":
        bits = int.from_bytes(head[28:30], "little")
        if bits == 16:
            raise DatasetError(f"{path}: 16 bits per pixel BMP is not supported; save the slices as 8-bit grey BMP")


def grey_to_classes(grey: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Label grey values (0/255/191/128) -> class indices (0/1/2/3); any other value is an error."""
    classes = _LUT[grey]
    if (classes == 255).any():
        bad = np.unique(grey[classes == 255])
        raise DatasetError(
            f"{path}: label values {bad[:10].tolist()} are outside the mapping "
            f"{dict(zip(LABEL_GREY_VALUES, CLASS_NAMES))}; found values {np.unique(grey).tolist()[:20]}"
        )
    return classes


def classes_to_grey(classes: np.ndarray) -> np.ndarray:
    return np.asarray(LABEL_GREY_VALUES, dtype=np.uint8)[classes]


def detection_targets(label_volume: np.ndarray, num_lesions: int = 3) -> np.ndarray:
    """(N, H, W) class indices -> (N, num_lesions) float32: slice holds lesion class k+1."""
    flat = label_volume.reshape(label_volume.shape[0], -1)
    return np.stack([(flat == k + 1).any(axis=1) for k in range(num_lesions)], axis=1).astype(np.float32)


def volume_pid(image_dir: Path) -> str:
    """``<PID>.img`` -> ``<PID>``."""
    name = image_dir.name
    return name[: -len(IMAGE_SUFFIX)] if name.lower().endswith(IMAGE_SUFFIX.lower()) else name


def _volume_record(image_dir: Path, label_dir: Path | None) -> VolumeRecord:
    pid = volume_pid(image_dir)
    images = list_slices(image_dir)
    labels = None
    if label_dir is not None:
        if not label_dir.is_dir():
            raise DatasetError(f"{label_dir}: label folder for volume {pid} not found")
        labels = list_slices(label_dir)
        if len(labels) != len(images):
            have, want = {p.name for p in labels}, {p.name for p in images}
            if len(labels) < len(images):
                odd = "missing label slices " + str([p.name for p in images if p.name not in have][:10])
            else:
                odd = "label slices without an image " + str([p.name for p in labels if p.name not in want][:10])
            raise DatasetError(
                f"{label_dir}: {len(labels)} label slices for {len(images)} image slices in {image_dir}; {odd}"
            )
    return VolumeRecord(pid, images, labels)


def _check_pid(pid: str, where: Path) -> None:
    # a patient ID becomes a file name in outputs: refuse anything that could leave the output folder
    if not pid or pid in (".", "..") or "/" in pid or "\\" in pid or "\x00" in pid:
        raise DatasetError(f"{where}: patient ID {pid!r} is not a safe file name")


def find_volumes(root: str | Path, split: str, list_dir: str | Path | None = None) -> list[VolumeRecord]:
    """All volumes of a split (``train``, ``val`` or ``test``), sorted by patient ID.

    Without ``list_dir`` the split is read from its folder. With it, ``<split>_images.txt`` (and
    ``<split>_labels.txt`` for labelled splits) list volume folders, or slice files, relative to ``root``.
    """
    root = Path(root)
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split must be one of {sorted(SPLIT_FOLDERS)}, got {split!r}")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; pass the folder that holds {SPLIT_FOLDERS[split]}/")
    labelled = split != "test"  # the test split's labels are read where they exist (label_images/<PID>_labelMark)
    if list_dir is not None:
        pairs = _pairs_from_lists(root, Path(list_dir), split, labelled)
    else:
        base = root / SPLIT_FOLDERS[split]
        img_root = base / "original_images"
        if not img_root.is_dir():
            raise DatasetError(
                f"{img_root}: folder not found; expected {root}/{SPLIT_FOLDERS[split]}/original_images/<PID>.img/"
            )
        dirs = sorted(p for p in img_root.iterdir() if p.is_dir() and not _is_ignored(p.name))
        pairs = []
        for d in dirs:
            label_dir = base / "label_images" / f"{volume_pid(d)}{LABEL_SUFFIX}"
            pairs.append((d, label_dir if labelled or label_dir.is_dir() else None))
    if not pairs:
        raise DatasetError(f"{root}: no volumes found for split {split!r}")
    records, seen, real = [], {}, {}
    for image_dir, label_dir in pairs:
        pid = volume_pid(image_dir)
        _check_pid(pid, image_dir)
        if pid in seen:  # outputs are named by patient: one would overwrite the other
            raise DatasetError(
                f"{seen[pid]} and {image_dir} are both patient {pid!r} in split {split!r}; rename or remove one"
            )
        seen[pid] = image_dir
        target = image_dir.resolve()
        if target in real:  # a link to another volume's folder: one scan counted twice
            raise DatasetError(f"{real[target]} and {image_dir} are the same folder ({target}); remove the link")
        real[target] = image_dir
        try:
            records.append(_volume_record(image_dir, label_dir))
        except DatasetError as e:
            if labelled or label_dir is None:
                raise
            # the test split's labels are optional (test.py never reads them): a damaged label folder must not stop
            # a submission; the volume is read without labels, and evaluating it says there are none
            record = _volume_record(image_dir, None)  # an error of the image folder itself stands as it is
            log.warning(f"{e}; this test volume is read without labels")
            records.append(record)
    return sorted(records, key=lambda r: r.pid)


def _read_list(path: Path, root: Path) -> list[Path]:
    if not path.is_file():
        raise DatasetError(f"{path}: list file not found")
    folders: list[Path] = []
    listed: dict[Path, set[str]] = {}  # a folder's slice files, where the list names slices
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        p = root / line
        is_slice = p.suffix.lower() in (".bmp", ".png")
        folder = p.parent if is_slice else p
        if is_slice:
            listed.setdefault(folder, set()).add(p.name)
        if folders and folder == folders[-1] and is_slice:
            continue  # the slice files of one volume, one per line
        if folder in folders:
            raise DatasetError(f"{path}: line {n}: {folder} is listed twice (a volume's slice lines must be together)")
        folders.append(folder)
    for folder, names in listed.items():  # a volume is read whole: a partial list would be scored as the whole
        present = {q.name for q in list_slices(folder)}
        if names != present:
            absent, unlisted = sorted(names - present), sorted(present - names, key=_slice_number)
            raise DatasetError(
                f"{path}: lists {len(names)} slice files of {folder}, which holds {len(present)}"
                + (f"; not in the folder: {absent[:5]}" if absent else "")
                + (f"; not listed: {unlisted[:5]}" if unlisted else "")
                + ". A volume is read whole: list all its slices, or just its folder"
            )
    return folders


def _slice_number(name: str) -> int:
    m = _SLICE_NAME.match(name)
    return int(m.group(1)) if m else -1


def _pairs_from_lists(root: Path, list_dir: Path, split: str, labelled: bool) -> list[tuple[Path, Path | None]]:
    images = _read_list(list_dir / f"{split}_images.txt", root)
    if not labelled:
        return [(d, None) for d in images]
    labels = _read_list(list_dir / f"{split}_labels.txt", root)
    if len(labels) != len(images):
        raise DatasetError(
            f"{list_dir}: {split}_images.txt names {len(images)} volumes but {split}_labels.txt names {len(labels)}"
        )
    for i, (image_dir, label_dir) in enumerate(zip(images, labels), 1):  # paired by position: the names must agree
        pid = volume_pid(image_dir)
        if label_dir.name not in (f"{pid}{LABEL_SUFFIX}", pid):
            raise DatasetError(
                f"{list_dir}: volume {i} of {split}_images.txt is {image_dir} but of {split}_labels.txt {label_dir}: "
                f"labels of patient {pid} must be named {pid}{LABEL_SUFFIX}; the two lists must be in the same order"
            )
    return list(zip(images, labels))
