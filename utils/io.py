"""Writes that never leave half a file, output folders that are never silently overwritten, read-ahead."""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from utils.errors import ToolkitError

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
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces ``path`` when the block succeeds and is removed when it fails:
    a crash or an error never leaves half a file, and readers see the old file or the new one. ``suffix``: what the
    temporary name ends in besides ``.tmp`` (``.nii.gz`` for writers that choose the format by it, as ITK's do)."""
    path = Path(path)
    try:
        suffix = ".tmp" + suffix
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
    except OSError as e:
        full = _disk_full(path, e)
        if full is not None:
            raise full from e
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        full = _disk_full(path, e)  # measured before the partial file is removed (it holds the space)
        Path(tmp).unlink(missing_ok=True)
        if full is not None:
            raise full from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# under this much free space a failed write is taken for a full disk: torch.save reports ENOSPC as
# "[enforce fail at inline_container.cc:...] ... file write failed", without the errno
DISK_FULL_BYTES = 64 * 2**20


def _disk_full(path: Path, e: BaseException) -> DiskFull | None:
    """A write error that is a full disk (ENOSPC, or any write error with almost no space left), as one message
    naming the file; None for any other error."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    code = getattr(e, "errno", None)  # torch's writer says nothing of the cause: judged by the space left
    if code in (errno.ENOSPC, errno.EDQUOT) or (code is None and free is not None and free < DISK_FULL_BYTES):
        left = f"{free / 2**20:.0f} MiB free" if free is not None else "no space left"
        return DiskFull(
            f"{path}: cannot be written, the disk is full ({left} on {path.parent}); nothing was replaced: free some "
            "space or write elsewhere, then run again"
        )
    return None


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


class FolderInUse(ToolkitError):
    """Another process holds the folder's lock; the message names the folder and the process."""


class NotWritable(ToolkitError):
    """A folder the run must write to cannot be written (read-only mount, permissions, disk full)."""


class DiskFull(NotWritable, OSError):
    """A write failed on a full disk; an ``OSError`` too, so the callers' handlers of write errors still see it."""


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


def lock_dir() -> Path:
    """Where the locks of output folders and files live: the toolkit's own folder (``$RETINA_LESION_LOCKS``, else
    ``~/.cache/retina-lesion/locks``; a private temporary folder where that cannot be written). The one rule: a
    lock is only ever in a run folder (``<run>/.lock``), a sweep folder, or here; never beside an output in the
    working folder, inside a data folder or at ``/``."""
    given = os.environ.get("RETINA_LESION_LOCKS")
    for folder in [Path(given)] if given else [Path.home() / ".cache" / "retina-lesion" / "locks"]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            pass
    folder = Path(tempfile.gettempdir()) / f"retina-lesion-locks-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def output_lock_path(path: str | Path) -> Path:
    """The lock file of an output folder or file: one per resolved path, in :func:`lock_dir`."""
    path = Path(path).resolve()
    key = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name)[:40] or "root"
    return lock_dir() / f"{safe}-{key}.lock"


def output_lock(path: str | Path) -> FolderLock:
    """The lock of an output folder or file: the folder itself is replaced when the run ends, and a lock file
    beside it would be left in the user's folder."""
    return FolderLock(output_lock_path(path), Path(path).resolve())


# What file browsers leave in any folder they show (Finder, Explorer): not a user's data. Readers skip these;
# --force replaces them with the output (with macOS's "._" resource files).
IGNORED_FILES = {".ds_store", "thumbs.db", "desktop.ini"}


def is_clutter(name: str) -> bool:
    return name.lower() in IGNORED_FILES or name.startswith("._")


# ------------------------------------------------------------------------------- what the toolkit wrote, where
# Every output folder the toolkit writes holds OUTPUT_MARKER: {"written_by", "command", "files": {relative path:
# identity}, "dirs": [relative path]}, the identity being [size, mtime_ns, ctime_ns, inode] (an edit whose time was
# put back with `touch -r` still changes the ctime, which only the kernel sets). --force replaces a folder only when
# its whole tree is what the marker lists: a file added at any depth, or changed since, is a user's. Single output
# files written into any folder (exports, shrunk checkpoints, reports) are listed under "outputs" instead: never the
# folder run's, so a folder's --force never deletes them. Markers of earlier versions list top-level "entries" only
# (or nothing): see _foreign_paths.
Identity = tuple[int, int, int, int]


def _identity(st: os.stat_result) -> Identity:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _tree(folder: Path) -> dict[str, Identity | None]:
    """Every entry below ``folder`` (links not followed): relative POSIX path -> identity, None for a folder; the
    marker and file-browser clutter left out."""
    tree: dict[str, Identity | None] = {}
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for name in list(dirs):
            if (Path(root) / name).is_symlink():  # a link to a folder is an entry, not a folder to walk
                dirs.remove(name)
                files.append(name)
            elif not is_clutter(name):
                tree[(rel / name).as_posix()] = None
        for name in files:
            if is_clutter(name) or (rel == Path(".") and name == OUTPUT_MARKER):
                continue
            tree[(rel / name).as_posix()] = _identity(os.lstat(Path(root) / name))
    return tree


def _read_marker(folder: Path) -> dict:
    marker = folder / OUTPUT_MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileExistsError(
            f"{marker}: unreadable output marker ({e}); --force cannot tell what this toolkit wrote there: move the "
            "folder away or choose another --out"
        ) from None
    if not isinstance(info, dict):
        raise FileExistsError(
            f"{marker}: not an output marker of this toolkit; move the folder away or choose another --out"
        )
    return info


def _identities(info: dict, key: str, marker: Path) -> dict[str, Identity]:
    """The marker's ``key`` ("files" or "outputs"): relative path -> identity."""
    listed = info.get(key, {})
    ok = isinstance(listed, dict) and all(
        isinstance(v, list) and len(v) == 4 and all(isinstance(x, int) for x in v) for v in listed.values()
    )
    if not ok:
        raise FileExistsError(
            f"{marker}: damaged output marker; --force cannot tell what this toolkit wrote there: move the folder "
            "away or choose another --out"
        )
    return {k: tuple(v) for k, v in listed.items()}


def _listed_files(info: dict, marker: Path) -> tuple[dict[str, Identity], set[str]] | None:
    """The files and folders of the output folder's own run; None for a marker of an earlier version (no "files")."""
    if "files" not in info:
        return None
    dirs = info.get("dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise FileExistsError(
            f"{marker}: damaged output marker; --force cannot tell what this toolkit wrote there: move the folder "
            "away or choose another --out"
        )
    return _identities(info, "files", marker), set(dirs)


def _old_entries(info: dict, marker: Path) -> list[str] | None:
    """The top-level names a marker of an earlier version lists (None: it lists none)."""
    entries = info.get("entries")
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


def _foreign_paths(folder: Path, tree: dict | None = None) -> list[str]:
    """What in ``folder`` its toolkit run did not write, at any depth, or changed since (a training run saved into
    it, a user's notes, an edited result): what ``--force`` must not delete. A marker of an earlier version, which
    lists top-level names only, vouches for nothing written after it: an entry it does not name, or any file or
    folder newer than the marker, is foreign."""
    marker = folder / OUTPUT_MARKER
    info = _read_marker(folder)
    tree = _tree(folder) if tree is None else tree
    foreign: list[str] = []
    listed = _listed_files(info, marker)
    if listed is None and "outputs" in info:  # a folder holding single outputs, not one run's output folder
        return sorted(rel for rel in tree if "/" not in rel)
    if listed is not None:
        files, dirs = listed
        for rel, st in tree.items():
            if any(rel.startswith(f + "/") for f in foreign):
                continue  # inside a foreign folder: that folder is named
            if st is None and rel not in dirs or st is not None and rel not in files:
                foreign.append(rel)
            elif st is not None and files[rel] != st:
                foreign.append(f"{rel} (changed since it was written)")
        return sorted(foreign)
    entries = _old_entries(info, marker)
    written = marker.stat().st_mtime_ns + 2 * 10**9  # the marker was written last; file systems round times
    for rel, st in tree.items():
        if any(rel.startswith(f + "/") for f in foreign):
            continue
        st = st or _identity((folder / rel).lstat())
        mtime = max(st[1], st[2])  # a file moved in keeps its mtime, but its ctime is the move's
        if entries is not None and rel.split("/")[0] not in entries:
            foreign.append(rel)
        elif mtime > written:
            foreign.append(f"{rel} (newer than the output)")
    return sorted(foreign)


def _marker_for(folder: Path) -> dict:
    tree = _tree(folder)
    return {
        "written_by": "retina-lesion",
        "command": sys.argv,
        "identity": "size, mtime_ns, ctime_ns, inode",
        "entries": sorted({rel.split("/")[0] for rel in tree}),  # read by earlier versions
        "files": {rel: list(st) for rel, st in sorted(tree.items()) if st is not None},
        "dirs": sorted(rel for rel, st in tree.items() if st is None),
    }


def _remove_replaced(old: Path) -> None:
    """Delete the folder an output replaced: the files its marker lists unchanged, then the folders left empty
    (anything else, e.g. written there while this run worked, is kept in ``old`` and named)."""
    marker = old / OUTPUT_MARKER
    info = _read_marker(old)
    listed = _listed_files(info, marker)
    tree = _tree(old)
    if listed is None:  # an earlier version's marker: what appeared since the check (newer than it) stays
        foreign = {f.split(" (")[0] for f in _foreign_paths(old, tree)}

        def theirs(rel: str) -> bool:
            return not any(rel == f or rel.startswith(f + "/") for f in foreign)

        files = {rel: st for rel, st in tree.items() if st is not None and theirs(rel)}
        dirs = {rel for rel, st in tree.items() if st is None and theirs(rel)}
    else:
        files, dirs = listed
    for rel, st in tree.items():
        if st is not None and files.get(rel) == st:
            (old / rel).unlink(missing_ok=True)
    for rel in [*sorted((r for r in dirs if tree.get(r, 0) is None), key=len, reverse=True), "."]:
        for clutter in [p for p in (old / rel).iterdir() if is_clutter(p.name)]:
            if clutter.is_dir():
                shutil.rmtree(clutter, ignore_errors=True)
            else:
                clutter.unlink(missing_ok=True)
        if rel != ".":
            with contextlib.suppress(OSError):  # it holds something the run did not write
                (old / rel).rmdir()
    marker.unlink(missing_ok=True)
    try:
        old.rmdir()
    except OSError:
        left = ", ".join(sorted(_tree(old))[:3])
        log.warning(f"kept {old}: it holds {left}, written there while this run worked; move it where it belongs")


def _check_protected(path: Path, protected: Sequence[tuple[str, str | Path]]) -> None:
    """An output (folder or file) is never an input, never holds one and never lies inside one."""
    out = path.resolve()
    for what, q in protected:
        q_abs = Path(q).resolve()
        if out == q_abs or (path.exists() and Path(q).exists() and path.samefile(q)):
            raise FileExistsError(f"{path} is {what} ({q}); outputs never replace inputs: choose another output")
        if q_abs.is_relative_to(out):
            raise FileExistsError(f"{path} holds {what} ({q}); choose a folder of its own for the outputs")
    for what, q in protected:
        q_abs = Path(q).resolve()
        if out.is_relative_to(q_abs) and q_abs.is_dir():
            raise FileExistsError(
                f"{path} lies inside {what} ({q}); outputs never go inside inputs: choose a folder outside it"
            )


def check_output_dir(path: str | Path, force: bool, protected: Sequence[tuple[str, str | Path]] = ()) -> None:
    """Refuse an output folder that would lose data: a file; a folder that is, holds or lies inside a protected path
    (``(what, path)``: the dataset, an input, a checkpoint being read, the cache); an existing non-empty folder
    without ``force``, or with it but not written by this toolkit (no ``OUTPUT_MARKER``: the dataset, a run folder,
    anything else a user made), or written by it but holding anything, at any depth, that its run did not write or
    that changed since (see :func:`_foreign_paths`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a folder; choose a folder for the outputs")
    _check_protected(path, protected)
    if path.exists() and any(path.iterdir()):
        if not force:
            raise FileExistsError(f"{path} already exists and is not empty; pass --force to replace it")
        if not (path / OUTPUT_MARKER).is_file():
            raise FileExistsError(
                f"{path} was not written by this toolkit (it has no {OUTPUT_MARKER}); --force replaces only the "
                "toolkit's own output folders: move it away or choose another --out"
            )
        foreign = _foreign_paths(path)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise FileExistsError(
                f"{path} holds {', '.join(foreign[:3])}{more}, not written by the toolkit's run there; --force "
                "replaces only what that run wrote: move them away or choose another --out"
            )


_STAGE_SUFFIX = re.compile(r"\.staging-[a-z0-9_]{8}")  # tempfile.mkdtemp's


def _remove_stale_stages(path: Path) -> None:
    """Staging folders of ``path`` left by runs that were killed (SIGKILL, out of memory, power): the caller holds
    ``path``'s lock, so no live run is writing them. Only folders named as ``staged_output_dir`` names them whose
    marker is still a staging marker are removed (a finished output that a user named ``x.staging-server`` is not)."""
    for stale in path.parent.glob(glob.escape(path.name) + ".staging-*"):
        if not (stale.is_dir() and _STAGE_SUFFIX.fullmatch(stale.name[len(path.name) :])):
            continue
        try:
            info = _read_marker(stale)
        except FileExistsError:
            continue
        # this version's staging marker, or an earlier version's (which named nothing until the run ended)
        staging = info.get("staging") is True or not ({"files", "entries", "outputs"} & set(info))
        staging = staging and "files" not in info
        if staging:
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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_stages(path)
            stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name + ".staging-"))
        except OSError as e:
            raise NotWritable(f"{path}: cannot write there ({e.strerror or e}); choose a writable folder") from e
        os.chmod(stage, 0o777 & ~UMASK)
        try:
            save_json_atomic(
                stage / OUTPUT_MARKER, {"written_by": "retina-lesion", "command": sys.argv, "staging": True}
            )
            yield stage
            # the manifest: what a later --force may delete here, and nothing else
            save_json_atomic(stage / OUTPUT_MARKER, _marker_for(stage))
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if path.exists():
            old = path.with_name(path.name + ".old-" + stage.name.rsplit("-", 1)[-1])
            path.rename(old)
            stage.rename(path)
            if (old / OUTPUT_MARKER).is_file():
                _remove_replaced(old)
            else:
                old.rmdir()  # it was empty
        else:
            stage.rename(path)


# ------------------------------------------------------------------------------------ single output files
def check_output_file(
    path: str | Path, force: bool, protected: Sequence[tuple[str, str | Path]] = (), advice: str = "name another file"
) -> None:
    """Refuse an output file that would lose data: an input or the checkpoint being read (``protected``), even with
    ``force``; an existing file without ``force``; with it, a file this toolkit did not write as a single output
    (listed, unchanged, under "outputs" in its folder's ``OUTPUT_MARKER``): a run's checkpoints and settings, a file
    of an eval / test / predict output folder, a user's file. ``advice``: what to do instead."""
    path = Path(path)
    if path.is_dir():
        raise FileExistsError(f"{path} is a folder; name the file to write inside it")
    _check_protected(path, protected)
    if not (path.exists() or path.is_symlink()):
        return
    if not force:
        raise FileExistsError(f"{path} already exists; pass --force to replace it, or {advice}")
    marker = path.parent / OUTPUT_MARKER
    listed = _identities(_read_marker(path.parent), "outputs", marker) if marker.is_file() else {}
    if listed.get(path.name) != _identity(path.lstat()):
        raise FileExistsError(
            f"{path} was not written by this toolkit as a single output file, or changed since (a run's checkpoint "
            f"or settings, a file of an output folder, or a file of yours); --force replaces only those: {advice}"
        )


def _wait_for_lock(path: Path, seconds: float = 60.0) -> FolderLock:
    """The output lock of ``path``, waiting up to ``seconds`` for another writer of the same folder to finish."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return output_lock(path)
        except FolderInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def output_file(
    path: str | Path,
    force: bool = False,
    protected: Sequence[tuple[str, str | Path]] = (),
    advice: str = "name another file",
):
    """The one way a single output file is written (exports, shrunk checkpoints, sweep reports): checked by
    :func:`check_output_file` under the folder's lock, written to the yielded temporary path and renamed into place
    when the block succeeds, then listed under "outputs" in its folder's ``OUTPUT_MARKER`` (so a later ``--force``
    may replace it, and a folder's ``--force`` never deletes it). Output folders are written whole by
    :func:`staged_output_dir`; a run folder's files by its trainer."""
    path = Path(path)
    with _wait_for_lock(path.parent):  # the marker is shared by every output of the folder
        check_output_file(path, force, protected, advice)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NotWritable(f"{path}: cannot write there ({e.strerror or e}); choose a writable folder") from e
        with atomic_path(path) as tmp:
            yield tmp
        marker = path.parent / OUTPUT_MARKER
        info = _read_marker(path.parent) if marker.is_file() else {"written_by": "retina-lesion", "command": sys.argv}
        outputs = {**_identities(info, "outputs", marker), path.name: _identity(path.lstat())}
        save_json_atomic(marker, {**info, "outputs": {k: list(v) for k, v in sorted(outputs.items())}})


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_fingerprint(paths, extra: str = "", error=None) -> str:
    """What identifies files' contents without reading them: path, size, modification time, and the inode and
    status-change time. A rewrite changes the ctime even when the mtime is put back (``cp -p`` onto the file,
    ``touch -r``, ``tar x``, which also makes a new inode), and nothing but the kernel can set the ctime. The decode
    cache's key, and the training data's fingerprint in ``normalization.json``. ``error(path, OSError)``: the
    exception to raise for a file that cannot be looked at (default: ``FileNotFoundError`` naming it)."""
    h = hashlib.sha1(extra.encode())
    for p in paths:
        p = Path(p)
        try:
            st = p.stat()
            where = p.resolve()
        except OSError as e:
            raise (error(p, e) if error else FileNotFoundError(f"{p}: cannot read it ({e.strerror or e})")) from e
        h.update(f"{where}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}\n".encode())
    return h.hexdigest()[:16]


def prefetched(items, load, pool, ahead: int = 1):
    """Yield ``(item, load(item))`` in order, loading up to ``ahead`` next items in ``pool`` while the caller works on
    this one (decoding the next volumes overlaps the model's work on the current one). Errors surface at their
    item."""
    items = list(items)
    ahead = max(1, ahead)
    pending = deque(pool.submit(load, item) for item in items[:ahead])
    for i, item in enumerate(items):
        result = pending.popleft().result()
        if i + ahead < len(items):
            pending.append(pool.submit(load, items[i + ahead]))
        yield item, result


def jpeg_copy(array: np.ndarray, quality: int) -> tuple[np.ndarray, bytes]:
    """A uint8 (H, W) grey or (H, W, 3) RGB image as a publisher's JPEG of ``quality``: (the decoded copy, its bytes),
    Pillow's libjpeg with 4:2:0 chroma as cameras and publishers write it. The one encoder of the training
    augmentation (``--random-jpeg``), ``tools.rescale_photos --jpeg`` and the synthetic generator's published copies."""
    import io  # the standard library's (this module is utils.io)

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    data = buffer.getvalue()
    return np.asarray(Image.open(io.BytesIO(data))), data
