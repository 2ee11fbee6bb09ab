"""Detection loss on per-slice logits (B, K) against binary targets (B, K)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DetectionBCELoss(nn.Module):
    """Binary cross-entropy with logits, averaged over slices and lesion types whose target is known: a NaN target
    (a slice whose reference marks only "fluid": which lesion it holds is unknown) is left out."""

    target_kind = "det"

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        if pos_weight is not None and pos_weight <= 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"detection logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ")
        pw = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        target = target.float()
        known = ~torch.isnan(target)
        safe = torch.where(known, target, torch.zeros_like(target))
        each = F.binary_cross_entropy_with_logits(logits.float(), safe, pos_weight=pw, reduction="none")
        return (each * known).sum() / known.sum().clamp_min(1)
