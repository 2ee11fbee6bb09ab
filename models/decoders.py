"""Decoders: plain U-Net and nested UNet++ (Zhou et al. 2018), both built from the encoder's channels."""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import UpBlock


class UNetDecoder(nn.Module):
    """x_{i,1} = Up(x_{i+1,1}, x_{i,0}) from the bottom up; one segmentation head on x_{0,1}."""

    def __init__(self, encoder_channels: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        c = encoder_channels
        self.ups = nn.ModuleList(UpBlock(c[i + 1], c[i]) for i in range(len(c) - 1))
        self.heads = nn.ModuleList([nn.Conv2d(c[0], num_classes, 1)])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = feats[-1]
        for i in reversed(range(len(self.ups))):
            x = self.ups[i](x, feats[i])
        return [self.heads[0](x)]


class NestedDecoder(nn.Module):
    """UNet++: node x_{i,j} = Up(x_{i+1,j-1}, x_{i,0}, ..., x_{i,j-1}); heads on x_{0,1} ... x_{0,D}.

    Nodes are named ``x_{i}_{j}`` as in the paper and computed column by column (j = 1 .. D).
    """

    def __init__(self, encoder_channels: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        c = encoder_channels
        self.depth = len(c) - 1
        self.nodes = nn.ModuleDict()
        for j in range(1, self.depth + 1):
            for i in range(self.depth - j + 1):
                self.nodes[f"x_{i}_{j}"] = UpBlock(c[i + 1], c[i], n_skips=j)
        self.heads = nn.ModuleList(nn.Conv2d(c[0], num_classes, 1) for _ in range(self.depth))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        grid = {f"x_{i}_0": f for i, f in enumerate(feats)}
        for j in range(1, self.depth + 1):
            for i in range(self.depth - j + 1):
                skips = [grid[f"x_{i}_{k}"] for k in range(j)]
                grid[f"x_{i}_{j}"] = self.nodes[f"x_{i}_{j}"](grid[f"x_{i + 1}_{j - 1}"], *skips)
        return [head(grid[f"x_0_{j + 1}"]) for j, head in enumerate(self.heads)]
