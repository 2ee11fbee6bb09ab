"""Output folders that are never silently overwritten, and atomic file writes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def staged_output_dir(path: str | Path, force: bool):
    """Yield a staging folder that becomes ``path`` only when the block succeeds.

    An existing non-empty ``path`` is an error unless ``force``; even then it is replaced only after success, so a
    failed run never loses an earlier result.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not force:
        raise FileExistsError(f"{path} already exists and is not empty; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name + ".staging-"))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if path.exists():
        old = path.with_name(path.name + ".old-" + stage.name.rsplit("-", 1)[-1])
        path.rename(old)
        stage.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(path)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, allow_nan=False)
    os.replace(tmp, path)


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip the files of ``folder`` (flat names only, so no entry can point outside the archive's root)."""
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            if f.is_file():
                zf.write(f, arcname=f.name)
    os.replace(tmp, zip_path)
    return zip_path


def prefetched(items, load, pool):
    """Yield ``(item, load(item))`` in order, loading the next item in ``pool`` while the caller works on this one
    (decoding the next volume overlaps the GPU's work on the current one). Errors surface at their item."""
    items = list(items)
    ahead = pool.submit(load, items[0]) if items else None
    for i, item in enumerate(items):
        result = ahead.result()
        ahead = pool.submit(load, items[i + 1]) if i + 1 < len(items) else None
        yield item, result
