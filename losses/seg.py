"""Segmentation losses on logits (B, C, H, W) against class indices (B, H, W)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from losses.functional import one_hot_valid, partial_cross_entropy, soft_dice_score, soft_skeleton

DEFAULT_CLASS_WEIGHTS = (1.0, 5.0, 10.0, 20.0)


class WeightedCrossEntropyLoss(nn.Module):
    """Cross-entropy with per-class weights (default 1, 5, 10, 20 for background, REA, SRF, PED). With
    ``any_index``, a pixel so labelled is one of the lesion classes, which one unknown (``partial_cross_entropy``)."""

    target_kind = "seg"

    def __init__(
        self,
        class_weights: Sequence[float] | None = DEFAULT_CLASS_WEIGHTS,
        ignore_index: int = 255,
        any_index: int | None = None,
    ) -> None:
        super().__init__()
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=torch.float32)
            if w.ndim != 1 or (w < 0).any() or not torch.isfinite(w).all():
                raise ValueError(
                    f"class_weights must be a 1-D list of finite non-negative numbers, got {class_weights}"
                )
            self.register_buffer("class_weights", w)
        else:
            self.class_weights = None
        self.ignore_index = ignore_index
        self.any_index = any_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ValueError(f"{self.class_weights.numel()} class weights for logits with {logits.shape[1]} classes")
        if self.any_index is not None:
            return partial_cross_entropy(logits, target, self.class_weights, self.ignore_index, self.any_index)
        return F.cross_entropy(logits.float(), target.long(), weight=self.class_weights, ignore_index=self.ignore_index)


class _DiceBase(nn.Module):
    target_kind = "seg"

    def __init__(
        self, smooth: float = 0.0, ignore_index: int = 255, include_background: bool = False, any_index=None
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.any_index = any_index  # pixels of an unknown lesion class: left out of the lesion classes' Dice

    def _dice(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = logits.float().softmax(dim=1)
        onehot, mask = one_hot_valid(target, logits.shape[1], self.ignore_index, self.any_index)
        dice, present = soft_dice_score(probs, onehot, mask, self.smooth)
        if not self.include_background:
            dice, present = dice[1:], present[1:]
        if self.any_index is not None:  # and the Dice of any lesion, which a reference marking only "fluid" defines
            valid = (target != self.ignore_index).unsqueeze(1)
            lesion = (onehot[:, 1:].sum(1, keepdim=True) > 0) | (target == self.any_index).unsqueeze(1)
            d, p = soft_dice_score(probs[:, 1:].sum(1, keepdim=True), lesion.float(), valid.float(), self.smooth)
            dice, present = torch.cat([dice, d]), torch.cat([present, p])
        return dice, present


class SoftDiceLoss(_DiceBase):
    """1 - mean Dice over the lesion classes; a class absent from the batch's target counts as Dice 1, as in the
    original (its false positives are left to the cross-entropy term)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice, present = self._dice(logits, target)
        return 1 - torch.where(present, dice, torch.ones_like(dice)).mean()


class ClDiceLoss(nn.Module):
    """1 - clDice (Shit et al. 2021) of the foreground classes: the harmonic mean of the predicted skeleton's share
    inside the reference (topology precision) and the reference skeleton's share inside the prediction (topology
    sensitivity), over the batch's valid pixels; a broken thin vessel costs as much as a missed thick one's centre
    line. Meant beside a region loss (``wce+dice+0.5*cldice``), as its authors use it: a prediction of foreground
    everywhere scores 0. ``iterations`` erosions reach structures about twice as wide (DRIVE's vessels are at most
    about 10 pixels); each costs pooling passes: 0.31 s forward and backward for 16 x 2 x 128 x 128 on one core of this
    project's CPU, against 0.012 s for the soft Dice."""

    target_kind = "seg"

    def __init__(self, iterations: int = 5, smooth: float = 1.0, ignore_index: int = 255, any_index=None) -> None:
        super().__init__()
        if iterations < 1 or smooth < 0:
            raise ValueError(f"clDice needs iterations >= 1 and smooth >= 0, got {iterations}, {smooth}")
        if any_index is not None:  # a skeleton per class needs to know each pixel's class
            raise ValueError("clDice needs references that name each pixel's class, not fluid of any class")
        self.iterations, self.smooth, self.ignore_index = iterations, smooth, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=1)[:, 1:]  # (B, C-1, H, W) the foreground classes
        onehot, mask = one_hot_valid(target, logits.shape[1], self.ignore_index, None)
        truth = onehot[:, 1:] * mask
        probs = probs * mask
        pred_skel = soft_skeleton(probs, self.iterations)
        true_skel = soft_skeleton(truth, self.iterations)
        dims = (0, 2, 3)
        precision = ((pred_skel * truth).sum(dims) + self.smooth) / (pred_skel.sum(dims) + self.smooth)
        sensitivity = ((true_skel * probs).sum(dims) + self.smooth) / (true_skel.sum(dims) + self.smooth)
        return (1 - 2 * precision * sensitivity / (precision + sensitivity).clamp_min(1e-7)).mean()


class ELDiceLoss(_DiceBase):
    """Exponential-logarithmic Dice (Wong et al. 2018): mean over lesion classes of (-ln Dice) ** gamma.

    Absent classes contribute 0 (Dice 1). The safe value keeps the gradient finite where Dice is 1.
    """

    def __init__(
        self, gamma: float = 0.5, smooth: float = 0.0, ignore_index: int = 255, include_background=False, any_index=None
    ):
        super().__init__(smooth, ignore_index, include_background, any_index)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice, present = self._dice(logits, target)
        safe = torch.where(present, dice, torch.full_like(dice, 0.5)).clamp(1e-7, 1 - 1e-7)
        term = (-torch.log(safe)) ** self.gamma
        return torch.where(present, term, torch.zeros_like(term)).mean()
