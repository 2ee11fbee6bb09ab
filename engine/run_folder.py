"""A run folder holds one line of training: where it may be, which checkpoint a run continues, with which settings,
the best score so far, and the training data's normalisation with the fingerprint of the files it came from."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Collection
from pathlib import Path

from data.cache import DEFAULT_CACHE_DIR
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.config import Settings
from utils.distributed import DistInfo, broadcast_object
from utils.io import (
    OUTPUT_MARKER,
    FolderInUse,
    FolderLock,
    NotWritable,
    files_fingerprint,
    is_clutter,
    save_json_atomic,
)

log = logging.getLogger(__name__)
LATEST, BEST = "checkpoint_latest.pth.tar", "model_best.pth.tar"

# what a run writes into its folder (and the default folders of eval.py / test.py, which carry OUTPUT_MARKER)
RUN_ENTRIES = {"checkpoint", "log.csv", "settings.json", "normalization.json", "train.log", "tensorboard", ".lock"}

# What a resumed run may change: where and how fast it runs, how long and how it reports, never what it learns.
RESUMABLE = (
    *("epochs", "patience", "workers", "log_every", "amp", "compile", "deterministic", "sync_bn"),
    *("val_batch_size", "save_every_checkpoint", "out", "cache_dir"),
)
_PATHS = ("data_dir", "list_dir")  # compared as absolute paths (a run stores them absolute)


def check_outside_inputs(folder: Path, settings: Settings) -> Path:
    """A run or sweep folder never lies inside the data, the list files or the decode cache (it would be read as a
    case, or hold its locks and checkpoints among the inputs); returns the cache folder."""
    out = folder.resolve()
    cache = Path(settings.cache_dir).resolve() if settings.cache_dir else DEFAULT_CACHE_DIR.resolve()
    for what, value in (("the data", settings.data_dir), ("the list files", settings.list_dir), ("the cache", cache)):
        if value and (out == Path(value).resolve() or out.is_relative_to(Path(value).resolve())):
            raise FileExistsError(
                f"--out {folder} lies inside {what} ({value}); a run folder never goes inside its inputs: choose a "
                "folder outside it"
            )
    return cache


def check_location(run_dir: Path, settings: Settings) -> None:
    """Before anything is created: a run folder never lies inside its data (a reader would take it for a case, and
    the data folder would hold the run's lock and checkpoints), and an existing folder must be empty, a run folder,
    or hold only the toolkit's outputs (``--out $HOME`` would scatter a run among the user's files)."""
    out = run_dir.resolve()
    cache = check_outside_inputs(run_dir, settings)
    for parent in out.parents:  # another run's folder would hold two lines of training (and refuse its own resume)
        if (parent / "settings.json").is_file() and any((parent / "checkpoint").glob("*.pth.tar")):
            raise FileExistsError(f"--out {run_dir} lies inside the run folder {parent}; choose a folder outside it")
    if not run_dir.is_dir():
        if run_dir.exists():
            raise FileExistsError(f"--out {run_dir} is a file; choose a folder for the run")
        return
    if holds_run(run_dir):  # a run's own folder, whatever its user keeps beside the run (notes, plots)
        return
    own = {*RUN_ENTRIES, *([cache.relative_to(out).parts[0]] if cache.is_relative_to(out) else [])}  # --cache-dir RUN/c
    other = sorted(
        p.name
        for p in run_dir.iterdir()
        if p.name not in own and not is_clutter(p.name) and not (p / OUTPUT_MARKER).is_file()
    )
    if other:
        more = f" and {len(other) - 3} more" if len(other) > 3 else ""
        raise FileExistsError(
            f"--out {run_dir} holds {', '.join(other[:3])}{more}, which are not part of a training run; a run folder "
            "is new, empty or a run's own: choose another --out"
        )


def lock(run_dir: Path, dist: DistInfo) -> FolderLock | None:
    """One process (one torchrun job) per run folder: a second run, e.g. a resubmitted job while the first still
    runs, stops at once naming the process that holds the folder. The main process holds the lock (None elsewhere);
    taken before anything in the folder is read or written."""
    held, error = None, None
    if dist.is_main:
        try:
            held = FolderLock(run_dir / ".lock", run_dir)
        except (FolderInUse, NotWritable) as e:
            error = str(e)
    error = broadcast_object(error, dist)
    if error:
        raise FolderInUse(error)
    return held


def holds_run(run_dir: Path) -> bool:
    return any((run_dir / "checkpoint").glob("*.pth.tar")) or (run_dir / "log.csv").exists()


def run_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (``<run>/checkpoint/x.pth.tar``)."""
    checkpoint = checkpoint.resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoint" else checkpoint.parent


def choose_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint a run continues: ``--resume PATH``, or for ``auto`` the furthest one (epoch, then step) of
    the run folder that loads; None to start anew. A run folder holds one line of training: starting anew in a
    folder that holds a run, or continuing another run's checkpoint there, is refused."""
    ckpt_dir = run_dir / "checkpoint"
    path = _auto_resume(ckpt_dir) if resume == "auto" else Path(resume) if resume else None
    if path is None and holds_run(run_dir):
        raise FileExistsError(f"{run_dir} already holds a run; continue it with --resume auto, or choose another --out")
    if path is not None and resume != "auto" and holds_run(run_dir) and run_of(path) != run_dir.resolve():
        raise FileExistsError(
            f"--resume {path}: {run_dir} holds another run, and a run folder holds one line of training; continue "
            f"that checkpoint in its own folder (--out {run_of(path)}) or a new one, or fine-tune from it with "
            "--finetune into a new --out"
        )
    return path


def _auto_resume(ckpt_dir: Path) -> Path | None:
    # the furthest checkpoint that loads; writes are atomic, but a file may have been damaged since; file times say
    # nothing (a copy or a restore changes them)
    candidates = sorted(ckpt_dir.glob("*.pth.tar"))
    progress, shipped = {}, []
    for path in candidates:
        try:
            state = load_checkpoint(path, mmap=True)
            if "optimizer" not in state:  # a shipped copy (python -m utils.checkpoint): not resumable
                shipped.append(path)
                continue
            progress[path] = (int(state["epoch"]), int(state.get("step", 0)), path.name == LATEST)
        except CheckpointError as e:
            log.warning(f"--resume auto: skipping {e}")
    if progress:
        return max(progress, key=progress.get)
    if shipped:  # only copies without optimiser state: say so (the trainer's message), not "damaged"
        return max(shipped, key=lambda p: p.name == LATEST)
    if candidates:  # starting anew would overwrite them, and refusing to start would be a dead end
        raise CheckpointError(
            f"--resume auto: no checkpoint in {ckpt_dir} loads ({', '.join(p.name for p in candidates)} are damaged); "
            "resume one explicitly with --resume PATH, or move them away to start anew"
        )
    log.info(f"--resume auto: no checkpoint in {ckpt_dir}, starting a new run")
    return None


def _same(key: str, a, b) -> bool:
    if key in _PATHS and a and b:  # one folder, however it is spelled (a link, a trailing slash)
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def resumed_settings(state: dict, current: Settings, given: Collection[str] | None, path: Path) -> Settings:
    """The settings a resumed run continues with: the checkpoint's, with only the ``RESUMABLE`` ones taken from
    ``current``. ``given``: the settings named on the command line or in ``--config`` (None: every one, as from
    Python); a given one that changes what is learned is refused, naming each."""
    if state["model_name"] != current.name and (given is None or "name" in given):
        raise CheckpointError(f"{path}: holds a {state['model_name']!r} model, not {current.name!r}")
    stored = dict(state["settings"])
    if stored.get("task", Settings.task) != current.task:  # the task decides how --data-dir is read: always named
        raise CheckpointError(f"{path}: a checkpoint of task {stored.get('task')!r}, not {current.task!r}")
    from tasks import task_settings

    old = Settings.from_dict(stored, source=str(path))
    legacy = {k: v for k, v in task_settings(old.task).introduced.items() if k not in old.task_settings}
    old, current = complete(old.with_task(**legacy)), complete(current)
    asked = [f.name for f in dataclasses.fields(Settings)] if given is None else list(given)
    changed = [k for k in asked if k not in RESUMABLE and not _same(k, current.value(k), old.value(k))]
    if changed:
        shown = "; ".join(f"{k} {current.value(k)!r} (the run: {old.value(k)!r})" for k in changed)
        raise ValueError(
            f"--resume {path}: a resumed run continues its own settings, and these would change what it learns: "
            f"{shown}. Drop them, or start a new run from these weights with --finetune {path} --out NEW_FOLDER"
        )
    keep = {k: getattr(current, k) for k in RESUMABLE if given is None or k in given or k == "out"}
    return dataclasses.replace(old, **keep)


def complete(settings: Settings) -> Settings:
    """``settings`` with every one of its task's own settings (the defaults of those an older file lacks; those of
    the format before tasks declared theirs that this task does not take dropped)."""
    from tasks import task_settings

    own = task_settings(settings.task).from_dict(settings.task_settings, source=f"{settings.task} task settings")
    return dataclasses.replace(settings, task_settings=own.to_dict())


def best_score_on_resume(ckpt_dir: Path, resumed: float) -> float:
    """The score model_best.pth.tar holds: the resumed checkpoint's own best score may be lower (a run killed
    between writing model_best and checkpoint_latest, then resumed from checkpoint_latest), and a later, worse epoch
    must not replace model_best. A missing model_best (deleted) is reported, and the next epoch's checkpoint becomes
    the best."""
    best, path = resumed, ckpt_dir / BEST
    if path.is_file():
        try:
            best = max(best, float(load_checkpoint(path, mmap=True).get("best_score", -math.inf)))
        except CheckpointError as e:
            log.warning(f"{e}; the next better epoch replaces it")
    elif math.isfinite(best):
        log.warning(
            f"{path} is missing (deleted?): the best score so far ({best:.4f}) has no weights, so the next epoch's "
            "checkpoint becomes model_best"
        )
        best = -math.inf
    return best


def data_source(settings: Settings, records: list, task) -> dict:
    """What the normalisation was computed from: the data folder, the training records and the fingerprint of
    every file they read (size, times, inode: a data set regenerated at the same path with the same IDs differs);
    a record that does not list its files (``files``) counts by the paths the task reads it from."""
    files = [f for r in records for f in (r.files if hasattr(r, "files") else task.input_paths([r]))]
    return {
        "data_dir": str(Path(settings.data_dir).resolve()),
        "records": [r.name for r in records],
        "fingerprint": files_fingerprint(files),
        # what the task makes of the files (a vessel run's --preprocess): statistics of other inputs are not these
        "task_settings": dict(sorted(settings.task_settings.items())),
    }


def normalization(run_dir: Path, source: dict, compute, under_way: bool) -> dict:
    """``normalization.json``: the training data's statistics, computed once per run; computed again when the file
    holds statistics of other data or of files changed since (e.g. a start that failed before its first checkpoint,
    then the data set regenerated). A run under way keeps its own (its checkpoints carry them)."""
    path = run_dir / "normalization.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("source") == source or under_way:
            return old
        log.info(f"{path}: computed for other training data or files changed since; computing it again")
    run_dir.mkdir(parents=True, exist_ok=True)
    stats = {**compute(), "source": source}
    save_json_atomic(path, stats)
    return stats


def check_fingerprint(path: Path, carried: dict, source: dict) -> None:
    """A resumed run whose training files changed since it started: said, since the run continues with the
    statistics of the files as they were."""
    old = (carried or {}).get("source") or {}
    if old.get("fingerprint") and old.get("fingerprint") != source["fingerprint"]:
        log.warning(
            f"{path}: the training files changed since this run computed its normalisation (size, time or inode of "
            "a file differ); it continues with the statistics it has. If the data set was regenerated, start a new "
            "run or --finetune from this checkpoint"
        )
