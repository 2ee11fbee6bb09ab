"""Metrics: overlap of class maps (Dice from a confusion matrix) and ranking metrics of scores (ROC, PR, F1)."""

from metrics.overlap import (
    confusion_counts,
    dice_from_confusion,
    fluid_counts,
    fluid_summary,
    summarize_dice,
    volume_dice,
)
from metrics.ranking import average_precision, best_f1_threshold, binary_metrics, curves, detection_auc, roc_auc

__all__ = [
    "average_precision",
    "best_f1_threshold",
    "binary_metrics",
    "confusion_counts",
    "curves",
    "detection_auc",
    "dice_from_confusion",
    "fluid_counts",
    "fluid_summary",
    "roc_auc",
    "summarize_dice",
    "volume_dice",
]
