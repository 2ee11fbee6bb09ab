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


def fluid_counts(pred, target) -> np.ndarray:
    """Any-fluid overlap per B-scan: (N, 3) int64 [intersection, predicted, true] pixel counts of "fluid", any lesion
    class (label > 0), in each of the N slices; counted on ``pred``'s device, N x 3 numbers come back."""
    pred = _tensor(pred)
    target = _tensor(target).to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
    p, t = (pred > 0).flatten(1), (target > 0).flatten(1)
    return torch.stack([(p & t).sum(1), p.sum(1), t.sum(1)], 1).cpu().numpy().astype(np.int64)


def fluid_summary(counts: np.ndarray) -> dict[str, float]:
    """The any-fluid figures of B-scans' ``fluid_counts`` (a reference that marks only "fluid" is scored by these):

    - ``fluid_dice``: Dice of the union of the lesion classes pooled over every B-scan (NaN without fluid anywhere);
    - ``fluid_dice_bscan``: mean per-B-scan Dice over the B-scans whose reference holds fluid;
    - ``fluid_false_bscans``: the share of fluid-free B-scans in which fluid is predicted;
    - ``fluid_area_ratio``: predicted / true fluid area (1 is right; 2.1 marks twice the fluid there is).
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    inter, pred, true = counts.T
    has = true > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = 2 * inter.sum() / (pred.sum() + true.sum()) if true.sum() > 0 else np.nan
        per_bscan = float(np.mean(2 * inter[has] / (pred[has] + true[has]))) if has.any() else np.nan
        false = float(np.mean(pred[~has] > 0)) if (~has).any() else np.nan
        ratio = pred.sum() / true.sum() if true.sum() > 0 else np.nan
    return {
        "fluid_dice": float(pooled),
        "fluid_dice_bscan": float(per_bscan),
        "fluid_false_bscans": float(false),
        "fluid_area_ratio": float(ratio),
    }
