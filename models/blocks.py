"""Building blocks shared by every network of the zoo."""

from __future__ import annotations

import torch
from torch import nn


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al. 2018, "DropBlock: A regularization method for convolutional networks"): in training,
    drops square blocks of ``block_size`` (clipped to the feature map) so that about ``drop_prob`` of the units are
    dropped, and rescales the rest; the identity in eval. Written here (a few lines) rather than taken from
    torchvision.ops, which the toolkit does not otherwise need."""

    def __init__(self, block_size: int = 7, drop_prob: float = 0.1) -> None:
        super().__init__()
        if block_size < 1 or not 0 <= drop_prob < 1:
            raise ValueError(f"DropBlock needs block_size >= 1 and 0 <= drop_prob < 1, got {block_size}, {drop_prob}")
        self.block_size, self.drop_prob = block_size, drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0:
            return x
        b, c, h, w = x.shape
        size = min(self.block_size, h, w)
        size -= 1 - size % 2  # odd, so the pooled mask keeps the feature map's size
        # seeds only where a whole block fits (as the paper and torchvision do), drawn in fp32 (bf16 is too coarse
        # for small probabilities), so that about drop_prob of the units is dropped at every feature-map size
        gamma = self.drop_prob * (h * w) / (size**2 * (h - size + 1) * (w - size + 1))
        seeds = (torch.rand(b, c, h - size + 1, w - size + 1, device=x.device) < gamma).float()
        seeds = nn.functional.pad(seeds, [size // 2] * 4)
        keep = 1 - nn.functional.max_pool2d(seeds, size, stride=1, padding=size // 2)
        return x * (keep * (keep.numel() / keep.sum().clamp_min(1.0))).to(x.dtype)


class SpatialAttention(nn.Module):
    """Spatial attention (CBAM, Woo et al. 2018; SA-UNet's bottleneck): a 7x7 conv over the channel mean and max,
    a sigmoid, and the features weighed by it."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return x * torch.sigmoid(self.conv(pooled))


class ConvBlock(nn.Sequential):
    """``n`` times (3x3 conv -> [DropBlock] -> [BatchNorm] -> ReLU); the original ``unetConv2`` (SA-UNet's block
    with ``drop_block`` = (block size, drop probability))."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 2, norm: bool = True, drop_block=None) -> None:
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1))
            if drop_block is not None:
                layers.append(DropBlock2d(*drop_block))
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
