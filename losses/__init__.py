"""Losses: weighted CE, soft Dice, exponential-logarithmic Dice, detection BCE and their named mixes."""

from losses.det import DetectionBCELoss
from losses.multitask import LOSS_ALIASES, DeepSupervision, MultiTaskLoss, build_loss, parse_loss_spec
from losses.seg import DEFAULT_CLASS_WEIGHTS, ELDiceLoss, SoftDiceLoss, WeightedCrossEntropyLoss

__all__ = [
    "DEFAULT_CLASS_WEIGHTS",
    "LOSS_ALIASES",
    "DeepSupervision",
    "DetectionBCELoss",
    "ELDiceLoss",
    "MultiTaskLoss",
    "SoftDiceLoss",
    "WeightedCrossEntropyLoss",
    "build_loss",
    "parse_loss_spec",
]
