"""The one inference object: a volume of B-scans -> class labels and detection scores, batched over slices.

Used by validation during training, eval.py, test.py and fusion alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.dataset import stack_neighbours


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_for(device: torch.device, amp: bool | None):
    """bf16 autocast on a GPU by default; on the CPU only when asked."""
    use = (device.type == "cuda") if amp is None else amp
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


def normalize(x_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, C, H, W) uint8 on the device -> float, (x / 255 - mean) / std per channel."""
    m = torch.as_tensor(mean, device=x_u8.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x_u8.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x_u8.float() / 255.0 - m) / s


@dataclass
class Member:
    """One model of an ensemble with the input handling it was trained with."""

    model: nn.Module
    mean: Sequence[float]
    std: Sequence[float]
    resize: tuple[int, int] | None = None
    weight: float = 1.0


@dataclass
class VolumePrediction:
    labels: torch.Tensor  # (N, H, W) uint8 class indices, on the CPU
    det_scores: np.ndarray | None  # (N, K) float32 probabilities, or None without detection heads


class Predictor:
    """Predicts whole volumes slice-batch by slice-batch; several members are fused by weighted probabilities."""

    def __init__(
        self,
        members: Sequence[Member],
        device: torch.device | str | None = None,
        batch_size: int = 16,
        amp: bool | None = None,
        tta_flip: bool = False,
    ) -> None:
        if not members:
            raise ValueError("Predictor needs at least one model")
        self.members = list(members)
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_size = batch_size
        self.amp = amp
        self.tta_flip = tta_flip
        total = sum(m.weight for m in self.members)
        if total <= 0:
            raise ValueError(f"fusion weights must sum to > 0, got {[m.weight for m in self.members]}")
        self._weights = [m.weight / total for m in self.members]

    @classmethod
    def from_checkpoints(
        cls, paths: Sequence[str | Path], weights: Sequence[float] | None = None, device=None, **kwargs
    ) -> Predictor:
        from utils.checkpoint import model_from_checkpoint

        if weights is not None and len(weights) != len(paths):
            raise ValueError(f"{len(weights)} fusion weights for {len(paths)} checkpoints")
        device = torch.device(device) if device is not None else default_device()
        members = []
        for i, p in enumerate(paths):
            model, settings, state = model_from_checkpoint(p)
            norm = state.get("normalization") or {"mean": [0.5] * 3, "std": [0.25] * 3}
            model = model.to(device)
            if device.type == "cuda":
                model = model.to(memory_format=torch.channels_last)
            members.append(
                Member(model, norm["mean"], norm["std"], settings.resize_hw, 1.0 if weights is None else weights[i])
            )
        return cls(members, device, **kwargs)

    def _forward(self, member: Member, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, 3, H, W) normalised -> (probabilities (B, C, H, W) float32, detection probs (B, K) or None)."""
        h, w = x.shape[-2:]
        if member.resize and member.resize != (h, w):
            x = F.interpolate(x, size=member.resize, mode="bilinear", align_corners=False)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(self.device, self.amp):
            out = member.model(x)
        probs = out.seg_logits.float().softmax(1)
        if probs.shape[-2:] != (h, w):
            probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
        det = out.cls_logits.float().sigmoid() if out.cls_logits is not None else None
        return probs, det

    @torch.inference_mode()
    def predict_volume(self, volume: np.ndarray) -> VolumePrediction:
        """volume (N, H, W) uint8 -> labels (N, H, W) uint8 and detection scores (N, K)."""
        if volume.ndim != 3 or volume.dtype != np.uint8:
            raise ValueError(f"expected an (N, H, W) uint8 volume, got {volume.shape} {volume.dtype}")
        for m in self.members:
            m.model.eval()
        n = volume.shape[0]
        labels = torch.empty(volume.shape, dtype=torch.uint8, device=self.device)
        det_parts: list[torch.Tensor] = []
        for start in range(0, n, self.batch_size):
            z = np.arange(start, min(start + self.batch_size, n))
            x_u8 = torch.from_numpy(np.ascontiguousarray(stack_neighbours(volume, z)))
            if self.device.type == "cuda":
                x_u8 = x_u8.pin_memory()
            x_u8 = x_u8.to(self.device, non_blocking=True)
            probs_sum, det_sum = None, None
            for member, w in zip(self.members, self._weights):
                x = normalize(x_u8, member.mean, member.std)
                probs, det = self._forward(member, x)
                if self.tta_flip:
                    p_f, d_f = self._forward(member, x.flip(-1))
                    probs = (probs + p_f.flip(-1)) / 2
                    det = None if det is None else (det + d_f) / 2
                probs_sum = w * probs if probs_sum is None else probs_sum + w * probs
                if det is not None:
                    det_sum = w * det if det_sum is None else det_sum + w * det
            labels[start : start + len(z)] = probs_sum.argmax(1).to(torch.uint8)
            if det_sum is not None:
                det_parts.append(det_sum)
        det_scores = torch.cat(det_parts).cpu().numpy().astype(np.float32) if det_parts else None
        return VolumePrediction(labels.cpu(), det_scores)
