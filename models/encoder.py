"""The one encoder every model of the zoo uses."""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import ConvBlock, DilatedBlock, SpatialAttention

DEFAULT_CHANNELS = (16, 32, 64, 128, 256)


class Encoder(nn.Module):
    """Five ConvBlocks separated by 2x2 max pooling.

    ``out_channels`` and ``reduction`` are read by decoders and heads, so no channel count is typed twice.
    ``dilation_rates`` adds a dilated cascade after the deepest block (``unet_nested_dilated``); ``drop_block``
    (block size, drop probability) a DropBlock after every conv and ``attention`` a spatial attention after the
    deepest block (``sa_unet``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: tuple[int, ...] = DEFAULT_CHANNELS,
        dilation_rates: tuple[int, ...] | None = None,
        drop_block: tuple[int, float] | None = None,
        attention: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"Encoder needs at least 2 stages, got channels={channels}")
        self.out_channels = tuple(channels)
        self.reduction = 2 ** (len(channels) - 1)
        self.stages = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else channels[i - 1], c, drop_block=drop_block)
            for i, c in enumerate(channels)
        )
        self.pool = nn.MaxPool2d(2)
        self.dilated = DilatedBlock(channels[-1], dilation_rates) if dilation_rates else nn.Identity()
        self.attention = SpatialAttention() if attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C_in, H, W) -> features [x_0_0 (B, c0, H, W), ..., x_4_0 (B, c4, H/16, W/16)]."""
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x))
            feats.append(x)
        feats[-1] = self.attention(self.dilated(feats[-1]))
        return feats
