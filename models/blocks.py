"""Building blocks shared by every network of the zoo."""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    """``n`` times (3x3 conv -> [BatchNorm] -> ReLU); the original ``unetConv2``."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 2, norm: bool = True) -> None:
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1))
            if norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DilatedBlock(nn.Module):
    """Cascade of dilated 3x3 convs whose outputs are summed with the input (D-LinkNet centre).

    Rates (1, 2, 4, 8) at the bottleneck of a 4-times-pooled encoder see 16 * 31 input pixels.
    """

    def __init__(self, channels: int, rates: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=r, dilation=r),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for r in rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for stage in self.stages:
            x = stage(x)
            out = out + x
        return out


class UpBlock(nn.Module):
    """Transposed-conv upsampling of a deeper node, concatenation with ``n_skips`` same-level nodes, ConvBlock.

    The decoder convs carry no BatchNorm, as in the published networks (this keeps their parameter counts).
    """

    def __init__(self, in_channels: int, out_channels: int, n_skips: int = 1, norm: bool = False) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
        self.conv = ConvBlock(out_channels * (n_skips + 1), out_channels, norm=norm)

    def forward(self, deeper: torch.Tensor, *skips: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(deeper), *skips], dim=1))
