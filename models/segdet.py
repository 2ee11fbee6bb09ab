"""Encoder + decoder + heads, returning logits in one typed output."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.encoder import Encoder
from models.heads import ClassificationHead


class SegDetOutput(NamedTuple):
    """Logits only; losses and inference own softmax / sigmoid.

    seg_logits: (B, num_classes, H, W), the mean of the decoder heads (a single head for ``unet``).
    cls_logits: (B, num_detect) per-slice detection logits, or ``None`` when the model has no detection head.
    deep_seg_logits: every head's (B, num_classes, H, W) logits, for deep supervision (one entry for ``unet``).
    """

    seg_logits: torch.Tensor
    cls_logits: torch.Tensor | None
    deep_seg_logits: tuple[torch.Tensor, ...]


def _init_weights(m: nn.Module) -> None:
    # He initialisation as in the published networks: their decoder has no BatchNorm, and PyTorch's default
    # (kaiming_uniform with a=sqrt(5)) shrinks the signal through it, which slows the start of training
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class SegDetModel(nn.Module):
    """Any input size: the input is padded to a multiple of the encoder's reduction and the logits cropped back."""

    def __init__(self, encoder: Encoder, decoder: nn.Module, cls_head: ClassificationHead | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.cls_head = cls_head
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> SegDetOutput:
        """x: (B, C_in, H, W) normalised float."""
        h, w = x.shape[-2:]
        r = self.encoder.reduction
        pad_h, pad_w = (-h) % r, (-w) % r
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        seg, cls, heads = self.unpadded(x)
        if pad_h or pad_w:
            heads = tuple(y[..., :h, :w] for y in heads)
            seg = seg[..., :h, :w]
        return SegDetOutput(seg, cls, heads)

    def unpadded(self, x: torch.Tensor) -> SegDetOutput:
        """``forward`` of an input whose H and W are multiples of ``encoder.reduction``, without the size test: the
        graph that exporters trace holds no branch on the input's size, so it is right at every size
        (``inference.backends`` pads outside it)."""
        feats = self.encoder(x)
        heads = tuple(self.decoder(feats))
        seg = heads[0] if len(heads) == 1 else torch.stack(heads).mean(0)
        cls = self.cls_head(feats[-1]) if self.cls_head is not None else None
        return SegDetOutput(seg, cls, heads)
