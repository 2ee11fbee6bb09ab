"""What every data reader shares: the error for bad input on disk (``DatasetError``, one message naming the file and
what to do), opening an image so that its failures are such errors, and the check that no case is in two splits.

Records (``data.oct.VolumeRecord``, ``data.retouch.FileVolumeRecord``, ``data.photos.PhotoRecord``, a new task's)
have a ``name``, the ``files`` they read and the ``image_paths`` among them (a volume's B-scans, a photo).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from PIL import Image

# image files the readers take (a fundus photo, a single B-scan, a slice); anything else predict.py is given is a
# volume (data.volumes)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm"}


class DatasetError(ValueError):
    """Bad input on disk; the message names the file and what to do."""


class Record(Protocol):
    """One case of a split, as the split check sees it."""

    @property
    def name(self) -> str: ...

    @property
    def files(self) -> Sequence[Path]:
        """Every file the record reads."""

    @property
    def image_paths(self) -> Sequence[Path]:
        """The files of its image (whose bytes tell a copy), in order."""


# ------------------------------------------------------------------------------------------------- images
def file_error(path: Path, e: OSError) -> DatasetError:
    """An operating-system error on ``path`` as a message that says what happened (not found, permission, a link
    loop) instead of calling the file corrupt."""
    if isinstance(e, FileNotFoundError):
        return DatasetError(f"{path}: file not found (moved or deleted since the folder was listed?)")
    return DatasetError(f"{path}: cannot read the file ({e.strerror or e}); check it and its permissions")


# Pillow refuses images over 2 x 89 M pixels as decompression bombs (and warns above 89 M), yet a valid wide-field
# montage or a high-resolution scan can be larger (15000 x 15000: 225 M). ``open_image`` reads any image up to this
# many pixels whose decoded size fits in the memory free, and refuses larger ones as too large, not damaged.
MAX_PIXELS = 2**31
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow then warns only above this limit and refuses only above twice it


def _free_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _too_large(path: Path, size: str, why: str) -> DatasetError:
    return DatasetError(f"{path}: the image is too large to read ({size}, {why}); crop or downscale it")


@contextmanager
def open_image(path: Path):
    """``PIL.Image.open`` + ``load`` whose failures are ``DatasetError``s naming the file and the cause; an image
    larger than ``MAX_PIXELS`` or than the memory free is refused as too large before it is decoded."""
    try:
        im = Image.open(path)
    except OSError as e:
        if e.errno is not None:  # the operating system's (not found, permission, link loop), not the image's
            raise file_error(path, e) from e
        raise DatasetError(f"{path}: not a readable image ({e}); the file is corrupt or truncated, replace it") from e
    except Image.DecompressionBombError as e:  # over 2 x MAX_PIXELS (65536 x 65536): no scanner's or camera's
        raise DatasetError(f"{path}: the header claims an image too large to be real ({e}); the file is damaged") from e
    w, h = im.size
    size = f"{w} x {h} = {w * h:,} pixels"
    if w * h > MAX_PIXELS:
        im.close()
        raise _too_large(path, size, f"more than this reader's limit of {MAX_PIXELS:,}")
    # decoded bytes: 4 per band for 32-bit modes (I, F), 2 for 16-bit ones (I;16...), else 1
    depth = 4 if im.mode in ("I", "F") else 2 if im.mode.startswith("I;16") else 1
    need, free = w * h * len(im.getbands()) * depth, _free_memory()
    if free is not None and need > free:
        im.close()
        raise _too_large(path, size, f"{need:,} bytes decoded, more than the {free:,} bytes of memory free")
    try:
        with im:
            im.load()
            yield im
    except DatasetError:  # raised by the caller's own checks (an unsupported mode): not a damaged file
        raise
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise file_error(path, e) from e
        msg = f"{path}: cannot decode the image ({e}); the file is corrupt or truncated, replace it"
        raise DatasetError(msg) from e


# ------------------------------------------------------------------------------------------------ split check
HASHED = (".bmp", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".gif", ".ppm", ".pgm")


def _sampled_files(record: Record) -> list[Path]:
    """The image files whose bytes identify a case: a photo, or a volume's B-scans at a quarter, half and three
    quarters (through the macula: noise no two scans share, where an edge B-scan may be blank). Volume files,
    whose headers two cases can share and whose data is large, are not read for this."""
    slices = list(record.image_paths)
    n = len(slices)
    files = [Path(slices[i]) for i in sorted({n // 4, n // 2, (3 * n) // 4})] if slices else []
    return [f for f in files if f.suffix.lower() in HASHED and f.is_file()]


def _identity(record: Record, names_are_ids: bool) -> list[tuple]:
    """What makes two records the same case: the name (where names are IDs) and the files read, resolved (so a
    split made of links, to a folder or file by file, is caught)."""
    name = [("name", record.name)] if names_are_ids else []
    return name + [("path", Path(p).resolve()) for p in record.files]


def _content_keys(train: Sequence[Record], others: Iterable[Record]) -> dict[int, tuple]:
    """``id(record) -> ("content", hash)`` for the records whose sampled files have sizes that occur on both
    sides (only those can be copies: the rest is never read)."""
    others = list(others)
    files = {id(r): _sampled_files(r) for r in [*train, *others]}
    sizes = {k: tuple(p.stat().st_size for p in fs) for k, fs in files.items()}
    train_sizes = {sizes[id(r)] for r in train}
    shared = {sizes[id(r)] for r in others if sizes[id(r)] and sizes[id(r)] in train_sizes}
    keys = {}
    for k, fs in files.items():
        if sizes[k] in shared:
            h = hashlib.blake2b(digest_size=16)
            for p in fs:
                h.update(p.read_bytes())
            keys[k] = ("content", h.hexdigest())
    return keys


def check_disjoint(train: Sequence[Record], held_out: dict[str, Sequence[Record]], names_are_ids: bool = True) -> None:
    """Refuse a training case that is also in a held-out split (``{split: records}``), by name (where
    ``names_are_ids``: patient IDs, not per-split numbers), by the files it is read from (a link), or by their bytes
    (a copy under another name): validated on, it chooses ``model_best`` on seen data; tested on, it reports a score
    the model does not have. A held-out split that holds every training case is the data folder itself (a layout
    without a test folder) and is passed over."""
    content = _content_keys(train, (r for records in held_out.values() for r in records))

    def identity(r):
        return _identity(r, names_are_ids) + ([content[id(r)]] if id(r) in content else [])

    seen = {key: r for r in train for key in identity(r)}
    for split, records in held_out.items():
        clashes = [(r, key) for r in records for key in identity(r) if key in seen]
        if split != "val" and len({id(seen[k]) for _, k in clashes}) == len(train):
            continue  # e.g. a flat vessel folder: its "test" split is every photo
        for r, key in clashes[:1]:
            other = seen[key]
            how = {
                "name": f"patient {r.name!r}",
                "path": f"the same files ({key[1]})",
                "content": "copies of one scan (their B-scans or photos are byte for byte the same)",
            }[key[0]]
            raise DatasetError(
                f"train case {other.name!r} and {split} case {r.name!r} are {how}: a case must be in one split "
                "only; remove it from one of them"
            )
