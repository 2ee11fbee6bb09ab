"""Plain functions behind the loss classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot_valid(
    target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """target (B, H, W) int -> one-hot (B, C, H, W) float and a validity mask (B, 1, H, W) float.

    Pixels equal to ``ignore_index`` get an all-zero one-hot row and mask 0.
    """
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(safe.long(), num_classes).permute(0, 3, 1, 2).float()
    mask = valid.unsqueeze(1).float()
    return onehot * mask, mask


def soft_dice_score(
    probs: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor, smooth: float = 0.0, eps: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class soft Dice over the whole batch.

    probs, onehot: (B, C, H, W); mask: (B, 1, H, W). Returns (dice (C,), present (C,) bool), where ``present``
    says the class occurs in the target. Computed for every class without a Python branch, so no device sync.
    """
    dims = (0, 2, 3)
    probs = probs * mask
    intersect = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * intersect + smooth) / (denom + smooth).clamp_min(eps)
    return dice, present
