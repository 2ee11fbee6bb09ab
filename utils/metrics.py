"""Challenge metrics: per-volume Dice per lesion class, and per-class detection AUC over all slices."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


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
    """Dice of each lesion class (classes 1..C-1) over all slices of one volume; NaN where absent in truth."""
    pred, target = _tensor(pred), _tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
    return dice_from_confusion(confusion_counts(pred, target, num_classes))[1:]


def summarize_dice(per_volume: np.ndarray) -> tuple[np.ndarray, float]:
    """(V, K) per-volume Dice -> per-class mean over volumes ignoring NaN (K,), and their mean (NaN-free classes)."""
    per_volume = np.atleast_2d(np.asarray(per_volume, dtype=np.float64))
    per_class = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in per_volume.T], dtype=np.float64)
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return per_class, mean


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN when a class is missing."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels for {scores.size} scores")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, K) binary labels and scores -> per-class AUC (K,)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    return np.array([roc_auc(labels[:, k], scores[:, k]) for k in range(labels.shape[1])])


class ChallengeMetrics:
    """Accumulates volumes one at a time; ``compute()`` returns the challenge's figures as a dict.

    ``volumes`` holds (pid, dice (3,), detection labels (N, 3) or None, detection scores (N, 3) or None) per volume;
    ``merge`` joins the lists that several processes filled (each volume once) into the single-process result.
    """

    def __init__(self, class_names: tuple[str, ...] = ("REA", "SRF", "PED")) -> None:
        self.class_names = class_names
        self.volumes: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]] = []

    def update(
        self, pid: str, pred, target, det_scores: np.ndarray | None, det_labels: np.ndarray | None
    ) -> np.ndarray:
        d = volume_dice(pred, target, len(self.class_names) + 1)
        labels = None if det_labels is None else np.asarray(det_labels)
        scores = None if det_scores is None else np.asarray(det_scores)
        self.volumes.append((pid, d, labels, scores))
        return d

    @classmethod
    def merge(cls, parts: list[list], class_names: tuple[str, ...] = ("REA", "SRF", "PED")) -> ChallengeMetrics:
        out = cls(class_names)
        out.volumes = sorted((v for part in parts for v in part), key=lambda v: v[0])
        return out

    def compute(self) -> dict:
        if not self.volumes:
            raise ValueError("no volumes were evaluated")
        per_class, mean = summarize_dice(np.stack([v[1] for v in self.volumes]))
        out = {"dice_mean": mean}
        out.update({f"dice_{n}": float(v) for n, v in zip(self.class_names, per_class)})
        with_det = [v for v in self.volumes if v[2] is not None and v[3] is not None]
        if with_det:
            auc = detection_auc(np.concatenate([v[2] for v in with_det]), np.concatenate([v[3] for v in with_det]))
            out["auc_mean"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
            out.update({f"auc_{n}": float(v) for n, v in zip(self.class_names, auc)})
        return out

    def per_volume_rows(self) -> list[dict]:
        return [
            {"pid": pid, **{f"dice_{n}": float(v) for n, v in zip(self.class_names, d)}}
            for pid, d, _, _ in self.volumes
        ]
