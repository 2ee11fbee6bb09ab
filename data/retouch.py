"""Reader for the RETOUCH layout (the public retinal-fluid benchmark: Cirrus, Spectralis and Topcon OCT volumes
with IRF / SRF / PED reference labels, the same three fluids as the AI Challenger task):

ROOT/RETOUCH-TrainingSet-Cirrus/TRAIN001/oct.mhd (+ oct.raw) and reference.mhd (+ reference.raw)
ROOT/RETOUCH-TestSet-Cirrus/TEST001/oct.mhd      (reference.mhd where the labels exist)

Any folder depth works: a case is a folder holding ``oct.mhd``; cases named ``TEST...`` form the test split, the
others are split into training and validation (``--val-count`` cases, spread evenly over the sorted cases so that
every vendor's set is represented), or ``-l LIST_DIR`` names the cases of each split (``<split>_images.txt``, one case
folder per line, relative to ROOT). Reference values are mapped to the model's classes by ``--label-map``
(``1:1,2:2,3:3``: IRF, SRF, PED to the first, second and third lesion class).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from data.common import DatasetError
from data.transforms import ANY_LESION
from data.volumes import GREY_RULE, read_label_volume, read_volume, volume_depth, volume_files

IMAGE_FILE, LABEL_FILE = "oct.mhd", "reference.mhd"
DEFAULT_LABEL_MAP = "1:1,2:2,3:3"  # RETOUCH 1 IRF, 2 SRF, 3 PED -> classes 1, 2, 3 (shown as REA, SRF, PED)


def parse_label_map(text: str, num_classes: int = 4) -> dict[int, int]:
    """``"1:1,2:2,3:3"`` -> {0: 0, 1: 1, 2: 2, 3: 3}: stored label value -> model class (0 stays background).
    ``"255:fluid"``: the value marks fluid of any lesion class (``ANY_LESION``), as public 2-D sets label it."""
    mapping = {0: 0}
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value_text, cls_text = part.split(":")
            value = int(value_text)
            cls = ANY_LESION if cls_text.strip().lower() == "fluid" else int(cls_text)
        except ValueError:
            raise ValueError(f"--label-map: {part!r} is not VALUE:CLASS (e.g. 1:1,2:2,3:3, or 255:fluid)") from None
        if value < 0 or (cls != ANY_LESION and not 0 <= cls < num_classes):
            raise ValueError(f"--label-map: {part!r} maps to class {cls}, outside 0..{num_classes - 1}")
        if value in mapping and mapping[value] != cls:
            raise ValueError(f"--label-map: value {value} is mapped twice")
        mapping[value] = cls
    return mapping


def map_labels(values: np.ndarray, mapping: dict[int, int], path: Path) -> np.ndarray:
    """Stored label values -> uint8 classes; a value the map does not name is an error naming the file."""
    present = np.unique(values)
    unknown = [int(v) for v in present if int(v) not in mapping]
    if unknown:
        raise DatasetError(
            f"{path}: label values {unknown[:10]} are not in --label-map {mapping}; map them (VALUE:CLASS) or fix the "
            "file"
        )
    lut = np.zeros(int(present.max()) + 1, dtype=np.uint8)
    for v, c in mapping.items():
        if v < lut.size:
            lut[v] = c
    return lut[values]


@dataclass(frozen=True)
class FileVolumeRecord:
    """One case stored as a volume file (MetaImage, NIfTI, ...), and its label volume (or None)."""

    pid: str
    image_file: Path
    label_file: Path | None
    num_slices: int
    label_map: str = DEFAULT_LABEL_MAP

    @property
    def name(self) -> str:
        return self.pid

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file this record reads (a MetaImage header and its data file)."""
        return (*self.image_paths, *(self.label_paths or ()))

    @cached_property
    def image_paths(self) -> tuple[Path, ...]:
        return volume_files(self.image_file)

    @cached_property
    def label_paths(self) -> tuple[Path, ...] | None:
        return None if self.label_file is None else volume_files(self.label_file)

    @property
    def image_key(self) -> str:
        return GREY_RULE  # how 16-bit / float volumes become 8-bit: a new rule decodes cached volumes again

    @property
    def label_key(self) -> str:
        return self.label_map

    def read_image(self) -> np.ndarray:
        return read_volume(self.image_file).image

    def read_labels(self) -> np.ndarray:
        return map_labels(read_label_volume(self.label_file), parse_label_map(self.label_map), self.label_file)


def is_retouch(root: Path) -> bool:
    """A RETOUCH-style tree: case folders holding ``oct.mhd`` (and no AI Challenger split folders)."""
    return next(root.rglob(IMAGE_FILE), None) is not None


def _record(case: Path, labelled: bool, label_map: str) -> FileVolumeRecord:
    label = case / LABEL_FILE
    if labelled and not label.is_file():
        raise DatasetError(f"{label}: not found; a training or validation case needs its reference labels")
    return FileVolumeRecord(
        case.name, case / IMAGE_FILE, label if label.is_file() else None, volume_depth(case / IMAGE_FILE), label_map
    )


def find_retouch_volumes(
    root: str | Path, split: str, val_count: int, label_map: str = DEFAULT_LABEL_MAP, list_dir: str | Path | None = None
) -> list[FileVolumeRecord]:
    """The cases of ``split`` (``train``, ``val``, ``test``), sorted by name."""
    root = Path(root)
    parse_label_map(label_map)  # a bad map fails before anything is read
    if list_dir is not None:
        listed = Path(list_dir) / f"{split}_images.txt"
        if not listed.is_file():
            raise DatasetError(f"{listed}: list file not found (one case folder per line, relative to {root})")
        lines = [s.strip() for s in listed.read_text().splitlines() if s.strip() and not s.startswith("#")]
        cases = [root / s for s in lines]
        for case in cases:
            if not (case / IMAGE_FILE).is_file():
                raise DatasetError(f"{listed}: {case} holds no {IMAGE_FILE}")
    else:
        every = sorted({p.parent for p in root.rglob(IMAGE_FILE)}, key=lambda c: (c.name, str(c)))
        names: dict[str, Path] = {}
        for case in every:  # outputs and cache entries are named by case, whatever the split
            if case.name in names:
                raise DatasetError(
                    f"{names[case.name]} and {case} are both case {case.name!r}; keep one of them, or list each "
                    "split's cases with -l LIST_DIR"
                )
            names[case.name] = case
        test = [c for c in every if c.name.upper().startswith("TEST")]
        rest = [c for c in every if c not in test]
        if split == "test":
            cases = test
        else:
            if not 0 < val_count < len(rest):
                raise DatasetError(
                    f"{root}: --val-count {val_count} must leave training cases (found {len(rest)} non-TEST cases)"
                )
            val_idx = set(np.round(np.linspace(0, len(rest) - 1, val_count)).astype(int).tolist())
            cases = [c for i, c in enumerate(rest) if (i in val_idx) == (split == "val")]
    if not cases:
        raise DatasetError(f"{root}: no cases for split {split!r} (folders holding {IMAGE_FILE})")
    records, seen = [], {}
    for case in cases:
        if case.name in seen:  # outputs are named by case
            raise DatasetError(f"{seen[case.name]} and {case} are both case {case.name!r}; rename one")
        seen[case.name] = case
        records.append(_record(case, split != "test", label_map))
    return sorted(records, key=lambda r: r.pid)
