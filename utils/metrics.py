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


# ------------------------------------------------------------------------------------------ binary (vessel) metrics
def _sorted_counts(labels: np.ndarray, scores: np.ndarray):
    """Cumulative true / false positives at each distinct score, thresholds descending."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    return tp.astype(np.float64), fp.astype(np.float64), s[distinct]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (sum of precision x recall steps)."""
    labels = np.asarray(labels).astype(bool).ravel()
    tp, fp, _ = _sorted_counts(labels, np.asarray(scores, dtype=np.float64).ravel())
    if tp[-1] == 0:
        return float("nan")
    precision, recall = tp / (tp + fp), tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (predict vessel where score >= t) that maximises F1 on these pixels."""
    labels = np.asarray(labels).astype(bool).ravel()
    tp, fp, thr = _sorted_counts(labels, np.asarray(scores, dtype=np.float64).ravel())
    f1 = 2 * tp / (tp + fp + tp[-1])
    return float(thr[int(np.argmax(f1))])


def curves(labels: np.ndarray, scores: np.ndarray, points: int = 500) -> dict[str, np.ndarray]:
    """ROC (fpr, tpr) and PR (recall, precision) curves, thinned to about ``points`` points for plotting."""
    labels = np.asarray(labels).astype(bool).ravel()
    tp, fp, _ = _sorted_counts(labels, np.asarray(scores, dtype=np.float64).ravel())
    keep = np.unique(np.linspace(0, tp.size - 1, min(points, tp.size)).astype(int))
    tp, fp = tp[keep], fp[keep]
    return {
        "fpr": np.r_[0.0, fp / max(fp[-1], 1)],
        "tpr": np.r_[0.0, tp / max(tp[-1], 1)],
        "recall": tp / max(tp[-1], 1),
        "precision": tp / np.maximum(tp + fp, 1),
    }


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Pixel metrics of one pool of pixels: AUC-ROC, AUC-PR, and at ``threshold`` F1 (Dice), IoU, accuracy,
    sensitivity, specificity."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pred = scores >= threshold
    tp = float(np.sum(pred & labels))
    fp = float(np.sum(pred & ~labels))
    fn = float(np.sum(~pred & labels))
    tn = float(np.sum(~pred & ~labels))

    def ratio(a, b):
        return a / b if b else float("nan")

    return {
        "auc_roc": roc_auc(labels, scores),
        "auc_pr": average_precision(labels, scores),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "threshold": float(threshold),
    }
