"""Writes that never leave half a file, output folders that are never silently overwritten, read-ahead."""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, see FolderLock
    fcntl = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp / mkdtemp create 0600 / 0700 whatever the umask; the final file follows the umask like any other file,
# so a shared cache or results folder stays readable by the group
UMASK = _umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces ``path`` when the block succeeds and is removed when it fails:
    a crash or an error never leaves half a file, and readers see the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", fsync: bool = False, **open_kwargs):
    """``open(path, mode)`` through :func:`atomic_path`; ``fsync`` also forces the bytes to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


def save_image_atomic(path: str | Path, image, **save_kwargs) -> Path:
    """A PIL image (or an array PIL can take) written through :func:`atomic_write`, in the format of its suffix."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    fmt = Image.registered_extensions()[Path(path).suffix.lower()]
    with atomic_write(path) as f:
        image.save(f, format=fmt, **save_kwargs)
    return Path(path)


def _jsonable(obj):
    """NaN (a class absent from every volume) becomes null, so the file is strict JSON."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def save_json_atomic(path: str | Path, obj) -> None:
    with atomic_write(path, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, allow_nan=False)


def save_csv_atomic(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Rows as CSV with a header (``columns``, default the first row's keys)."""
    columns = columns if columns is not None else list(rows[0]) if rows else []
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip the files of ``folder`` (flat names only, so no entry can point outside the archive's root)."""
    with atomic_write(zip_path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            if p.is_file():
                zf.write(p, arcname=p.name)
    return zip_path


OUTPUT_MARKER = ".retina-lesion-output"  # in every output folder this toolkit writes: what --force may replace


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock; the message names the folder and the process."""


class NotWritable(RuntimeError):
    """A folder the run must write to cannot be written (read-only mount, permissions, disk full)."""


class FolderLock:
    """An advisory lock (``flock``) on ``lock_path``, held until ``release()`` or the end of the process. The kernel
    drops it when the process dies, however it dies, so a killed run never blocks the next one."""

    def __init__(self, lock_path: str | Path, folder: str | Path) -> None:
        self.fd: int | None = None
        if fcntl is None:
            return
        lock_path = Path(lock_path)
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        except OSError as e:
            raise NotWritable(f"{folder}: cannot write there ({e.strerror or e}); choose a writable folder") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderInUse(
                f"{folder} is in use by {holder}; wait for it to finish or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:300]
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} since {since} ({command})\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def output_lock(path: str | Path) -> FolderLock:
    """The lock of an output folder, in a file beside it (the folder itself is replaced when the run ends)."""
    path = Path(path)
    return FolderLock(path.parent / f".{path.name}.lock", path)


def _manifest(path: Path) -> list[str] | None:
    """The top-level entries the toolkit's run wrote into the output folder ``path``, from its ``OUTPUT_MARKER``;
    None for a marker without a manifest (folders written before the marker listed them)."""
    marker = path / OUTPUT_MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileExistsError(
            f"{marker}: unreadable output marker ({e}); --force cannot tell what this toolkit wrote there: move the "
            "folder away or choose another --out"
        ) from None
    entries = info.get("entries") if isinstance(info, dict) else None
    if not isinstance(entries, list):
        return None
    # plain names only: a marker edited to list "../x" or "/x" must not make --force delete outside the folder
    bad = [e for e in entries if not isinstance(e, str) or e in ("", ".", "..") or Path(e).name != e or "\\" in e]
    if bad:
        raise FileExistsError(
            f"{marker}: the output marker lists {bad[:3]}, which are not names of entries in the folder; --force "
            "cannot tell what this toolkit wrote there: move the folder away or choose another --out"
        )
    return entries


def foreign_entries(path: str | Path) -> list[str]:
    """Top-level entries of the output folder ``path`` that its run did not write (a training run saved into it, a
    user's notes): what ``--force`` must not delete. Empty when the marker has no manifest (older outputs)."""
    path = Path(path)
    listed = _manifest(path)
    if listed is None:
        return []
    return sorted(
        p.name for p in path.iterdir() if p.name != OUTPUT_MARKER and p.name not in listed and not _is_clutter(p.name)
    )


# What file browsers leave in any folder they show (Finder, Explorer): not a user's data. Readers skip these;
# --force replaces them with the output (with macOS's "._" resource files).
IGNORED_FILES = {".ds_store", "thumbs.db", "desktop.ini"}


def _is_clutter(name: str) -> bool:
    return name.lower() in IGNORED_FILES or name.startswith("._")


def _remove_replaced(old: Path, entries: list[str] | None) -> None:
    """Delete the folder an output replaced: only the entries its run wrote, and the folder if nothing else is left
    (an entry that appeared while this run worked is kept, in ``old``); all of it when its marker has no manifest."""
    if entries is None:
        shutil.rmtree(old, ignore_errors=True)
        return
    clutter = [p.name for p in old.iterdir() if _is_clutter(p.name)]
    for name in [*entries, *clutter, OUTPUT_MARKER]:
        p = old / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    try:
        old.rmdir()
    except OSError:
        left = ", ".join(sorted(p.name for p in old.iterdir())[:3])
        log.warning(f"kept {old}: it holds {left}, written there while this run worked; move it where it belongs")


def check_output_dir(path: str | Path, force: bool, protected: Sequence[tuple[str, str | Path]] = ()) -> None:
    """Refuse an output folder that would lose data: a file; a folder that is or holds a protected path (``(what,
    path)``: the dataset, a checkpoint being read, the cache); an existing non-empty folder without ``force``, or
    with it but not written by this toolkit (no ``OUTPUT_MARKER``: the dataset, a run folder, a folder inside
    either, or anything else a user made), or written by it but holding entries it did not write (see
    :func:`foreign_entries`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a folder; choose a folder for the outputs")
    out = path.resolve()
    for what, q in protected:
        q_abs = Path(q).resolve()
        if out == q_abs or q_abs.is_relative_to(out):
            raise FileExistsError(f"{path} holds {what} ({q}); choose a folder of its own for the outputs")
    if path.exists() and any(path.iterdir()):
        if not force:
            raise FileExistsError(f"{path} already exists and is not empty; pass --force to replace it")
        if not (path / OUTPUT_MARKER).is_file():
            raise FileExistsError(
                f"{path} was not written by this toolkit (it has no {OUTPUT_MARKER}); --force replaces only the "
                "toolkit's own output folders: move it away or choose another --out"
            )
        foreign = foreign_entries(path)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise FileExistsError(
                f"{path} holds {', '.join(foreign[:3])}{more}, not written by the toolkit's run there; --force "
                "replaces only what that run wrote: move them away or choose another --out"
            )


def _remove_stale_stages(path: Path) -> None:
    """Staging folders of ``path`` left by runs that were killed (SIGKILL, out of memory, power): the caller holds
    ``path``'s lock, so no live run is writing them. Only folders holding this toolkit's marker are removed."""
    for stale in path.parent.glob(glob.escape(path.name) + ".staging-*"):
        if stale.is_dir() and (stale / OUTPUT_MARKER).is_file():
            log.info(f"removing {stale}, the unfinished output of a run that was killed")
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def staged_output_dir(path: str | Path, force: bool, protected: Sequence[tuple[str, str | Path]] = ()):
    """Yield a staging folder that becomes ``path`` only when the block succeeds, holding ``path``'s lock
    throughout (a second run on the same folder stops at once).

    ``check_output_dir`` decides what may be replaced; even then the old folder is replaced only after success, so
    a failed run never loses an earlier result.
    """
    path = Path(path).resolve()  # one folder, however it is spelled (a link, ".", a relative path)
    with output_lock(path):
        check_output_dir(path, force, protected)
        _remove_stale_stages(path)
        # the entries of the folder being replaced that its run wrote: none of an empty folder, all (None) of an
        # older output without a manifest
        replaced = _manifest(path) if (path / OUTPUT_MARKER).is_file() else []
        stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name + ".staging-"))
        os.chmod(stage, 0o777 & ~UMASK)
        marker = {"written_by": "retina-lesion", "command": sys.argv}
        try:
            save_json_atomic(stage / OUTPUT_MARKER, marker)
            yield stage
            # the manifest: what a later --force may delete here, and nothing else
            entries = sorted(p.name for p in stage.iterdir() if p.name != OUTPUT_MARKER)
            save_json_atomic(stage / OUTPUT_MARKER, {**marker, "entries": entries})
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if path.exists():
            old = path.with_name(path.name + ".old-" + stage.name.rsplit("-", 1)[-1])
            path.rename(old)
            stage.rename(path)
            _remove_replaced(old, replaced)
        else:
            stage.rename(path)


def prefetched(items, load, pool):
    """Yield ``(item, load(item))`` in order, loading the next item in ``pool`` while the caller works on this one
    (decoding the next volume overlaps the GPU's work on the current one). Errors surface at their item."""
    items = list(items)
    ahead = pool.submit(load, items[0]) if items else None
    for i, item in enumerate(items):
        result = ahead.result()
        ahead = pool.submit(load, items[i + 1]) if i + 1 < len(items) else None
        yield item, result
