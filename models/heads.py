"""Heads: per-pixel segmentation and per-slice lesion detection."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Dropout -> 1x1 conv -> global max pool: one detection logit per lesion type, (B, C, h, w) -> (B, K)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # amax over the spatial dims keeps a batch of one as (1, K), unlike .squeeze()
        return self.conv(self.dropout(x)).amax(dim=(2, 3))
