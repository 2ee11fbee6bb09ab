"""Losses: weighted CE, soft Dice, exponential-logarithmic Dice, clDice, detection BCE and their named mixes."""

from losses.det import DetectionBCELoss
from losses.multitask import LOSS_ALIASES, DeepSupervision, MultiTaskLoss, build_loss, parse_loss_spec
from losses.seg import DEFAULT_CLASS_WEIGHTS, ClDiceLoss, ELDiceLoss, SoftDiceLoss, WeightedCrossEntropyLoss

__all__ = [
    "DEFAULT_CLASS_WEIGHTS",
    "ClDiceLoss",
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
