"""Dice of class maps through a confusion matrix counted on the tensors' device (no host sync until read)."""

from __future__ import annotations

import numpy as np
import torch


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """(C, C) int64 counts [target, pred] over all voxels, on the tensors' device (no host sync)."""
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def dice_from_confusion(conf: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-class Dice (C,) = 2 TP / (2 TP + FP + FN); NaN where the class is absent from the ground truth."""
    conf = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    tp = np.diag(conf)
    gt = conf.sum(1)
    pred = conf.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * tp / (gt + pred)
    return np.where(gt > 0, dice, np.nan)


def _tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    x = np.asarray(x)
    return torch.from_numpy(x if x.flags.writeable else np.array(x))  # memory-mapped volumes are read-only


def volume_dice(pred, target, num_classes: int = 4) -> np.ndarray:
    """Dice of each lesion class (classes 1..C-1) over all slices of one volume; NaN where absent in truth.

    ``target`` is moved to ``pred``'s device, so a prediction left on the GPU is scored there."""
    pred = _tensor(pred)
    target = _tensor(target).to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
    return dice_from_confusion(confusion_counts(pred, target, num_classes))[1:]


def summarize_dice(per_volume: np.ndarray) -> tuple[np.ndarray, float]:
    """(V, K) per-volume Dice -> per-class mean over volumes ignoring NaN (K,), and their mean (NaN-free classes)."""
    per_volume = np.atleast_2d(np.asarray(per_volume, dtype=np.float64))
    per_class = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in per_volume.T], dtype=np.float64)
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return per_class, mean
