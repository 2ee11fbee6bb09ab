"""Checkpoints: written atomically, versioned, loaded with ``weights_only=True`` and checked before use."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from utils.config import nest_task_settings
from utils.errors import ToolkitError
from utils.io import atomic_write, check_output_file, output_file

# 2: settings gained log_every, best_dice became best_score; 3: each task's own settings in settings["task_settings"]
# (1 and 2 still load)
FORMAT_VERSION = 3
REQUIRED_KEYS = ("format_version", "model_name", "settings", "state_dict", "epoch")


class CheckpointError(ToolkitError):
    """A checkpoint that is missing, truncated, foreign or unsafe; the message names the file."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` via a temporary file and an atomic rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, fsync=True) as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint without running any code from it, and check its format (``mmap``: tensors are read only
    when used, for a look at the epoch)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated zip, empty file, foreign pickle, code-running pickle: all refused here
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({type(e).__name__}{': ' + first if first else ''}). "
            "It may be truncated, or hold objects other than tensors and plain values; it was not executed."
        ) from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"{path}: not a checkpoint of this toolkit (missing {missing})")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} is newer than this code's {FORMAT_VERSION}; update"
        )
    return migrate(state)


def migrate(state: dict) -> dict:
    """A checkpoint of an earlier format as the current code reads it (the file itself is never rewritten).
    1 -> 2: ``best_dice`` became ``best_score``; settings gained ``log_every`` (its default fills it).
    2 -> 3: the task-only settings (``detection``, ``val_count``, ``layout``, ``label_map``, which every task's
    checkpoint carried at the top level) move into ``settings["task_settings"]``, where the task keeps those it
    takes (``Settings.from_dict`` reads settings.json files of format 2 the same way)."""
    if state["format_version"] < 2 and "best_dice" in state:
        state["best_score"] = state.pop("best_dice")
    if state["format_version"] < 3 and isinstance(state.get("settings"), dict):
        state["settings"] = nest_task_settings(state["settings"])
    return state


def checked_class_bias(bias, num_classes: int, path) -> tuple[float, ...] | None:
    """A checkpoint's ``class_bias`` (``tools.calibrate``: one logit offset per class), checked; None without one."""
    if bias is None:
        return None
    values = list(bias) if isinstance(bias, (list, tuple)) else None
    ok = values is not None and len(values) == num_classes
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not ok:
        raise CheckpointError(
            f"{path}: class_bias {bias!r} is not {num_classes} finite numbers (one logit offset per class)"
        )
    return tuple(float(v) for v in values)


def load_model_weights(model: torch.nn.Module, state_dict: dict, path: str | Path) -> None:
    """Strict load that names the file and the first mismatches instead of half-loading a model."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path}: weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatches {shapes[:3]}); is it another model, task or class count?"
        )
    model.load_state_dict(state_dict)


def shrink_checkpoint(
    src: str | Path, dst: str | Path, dtype: torch.dtype = torch.bfloat16, force: bool = False
) -> Path:
    """A deployable copy: floating-point weights in ``dtype``, no optimiser state (loads like any checkpoint, but
    cannot be resumed). Never written over ``src``; over an existing ``dst`` only with ``force`` and only when this
    toolkit wrote it as an output (``utils.io.output_file``); atomically."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and dst.samefile(src)):
        raise FileExistsError(
            f"{dst} is the checkpoint being shrunk; writing over it would lose its optimiser state and "
            "full-precision weights: name another file"
        )
    if dst.is_dir():
        raise FileExistsError(f"{dst} is a folder; name the file to write, e.g. {dst / src.name}")
    protected = [("the checkpoint being shrunk", src)]
    check_output_file(dst, force, protected)  # before the (slow) load
    state = load_checkpoint(src)
    state["state_dict"] = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    drop = ("format_version", "optimizer", "rng_states", "train_sums", "step")
    with output_file(dst, force, protected) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **{k: v for k, v in state.items() if k not in drop}}, tmp)
    return dst


if __name__ == "__main__":
    import argparse
    import sys

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    ap = argparse.ArgumentParser(description="Write an optimiser-free copy of a checkpoint for shipping")
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--dtype", choices=sorted(dtypes), default="bf16", help="weight precision (default bf16)")
    ap.add_argument("--force", action="store_true", help="replace DST if it exists (never SRC itself)")
    a = ap.parse_args()
    try:
        print(f"wrote {shrink_checkpoint(a.src, a.dst, dtypes[a.dtype], a.force)}")
    except (CheckpointError, OSError, RuntimeError, ValueError) as e:  # FileExistsError, FolderInUse, DiskFull
        sys.exit("error: " + " ".join(str(e).split()))
