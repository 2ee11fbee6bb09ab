"""Ranking metrics of per-pixel or per-slice scores, through scikit-learn: ROC AUC, average precision, the F1-best
threshold, curves for plotting, and pixel metrics at a threshold. Undefined values (one class absent) are NaN."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _flat(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels for {scores.size} scores")
    return labels, scores


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when either class is missing."""
    labels, scores = _flat(labels, scores)
    if labels.all() or not labels.any():
        return float("nan")
    return float(skm.roc_auc_score(labels, scores))


def detection_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, K) binary labels and scores -> per-class AUC (K,)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    return np.array([roc_auc(labels[:, k], scores[:, k]) for k in range(labels.shape[1])])


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision; NaN without positives."""
    labels, scores = _flat(labels, scores)
    if not labels.any():
        return float("nan")
    return float(skm.average_precision_score(labels, scores))


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (positive where score >= t) that maximises F1 on these pixels; of equal F1s the highest
    threshold."""
    labels, scores = _flat(labels, scores)
    precision, recall, thresholds = skm.precision_recall_curve(labels, scores)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(thresholds[len(f1) - 1 - int(np.argmax(f1[::-1]))])


def curves(labels: np.ndarray, scores: np.ndarray, points: int = 500) -> dict[str, np.ndarray]:
    """ROC (fpr, tpr) and PR (recall, precision) curves, thinned to about ``points`` points each for plotting."""
    labels, scores = _flat(labels, scores)
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    precision, recall, _ = skm.precision_recall_curve(labels, scores)

    def thin(*xs):
        keep = np.unique(np.linspace(0, xs[0].size - 1, min(points, xs[0].size)).astype(int))
        return [x[keep] for x in xs]

    fpr, tpr = thin(fpr, tpr)
    recall, precision = thin(recall, precision)
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision}


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Pixel metrics of one pool of pixels: AUC-ROC, AUC-PR, and at ``threshold`` F1 (Dice), IoU, accuracy,
    sensitivity, specificity."""
    labels, scores = _flat(labels, scores)
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
