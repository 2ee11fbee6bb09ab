"""The multi-task loss: an explicit weighted sum that returns its parts by name."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from losses.det import DetectionBCELoss
from losses.seg import DEFAULT_CLASS_WEIGHTS, ClDiceLoss, ELDiceLoss, SoftDiceLoss, WeightedCrossEntropyLoss

# the original code's names for its mixes
LOSS_ALIASES = {"mix_3": "wce+dice+bce", "mix_33": "wce+eldice+bce"}
# spec name -> name of the part in the returned dict
PART_NAMES = {
    "wce": "wce",
    "ce": "wce",
    "dice": "dice",
    "eldice": "el_dice",
    "el_dice": "el_dice",
    "cldice": "cl_dice",
    "cl_dice": "cl_dice",
    "bce": "bce",
}


class DeepSupervision(nn.Module):
    """Applies a segmentation loss to every decoder head and averages (nnU-Net ``DeepSupervisionWrapper``)."""

    target_kind = "seg"

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, head_logits: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        w = self.weights or [1.0] * len(head_logits)
        if len(w) != len(head_logits):
            raise ValueError(f"{len(w)} deep-supervision weights for {len(head_logits)} heads")
        return sum(wi * self.loss(h, target) for wi, h in zip(w, head_logits)) / sum(w)


class MultiTaskLoss(nn.Module):
    """total = sum_k weight_k * part_k; ``forward`` returns ``{part: value, ..., "total": value}``.

    Segmentation parts read ``seg_logits`` (or every head under deep supervision), detection parts ``cls_logits``.
    """

    def __init__(self, parts: dict[str, tuple[nn.Module, float]], deep_supervision: bool = False) -> None:
        super().__init__()
        if not parts:
            raise ValueError("MultiTaskLoss needs at least one part")
        self.parts = nn.ModuleDict({k: v[0] for k, v in parts.items()})
        self.weights = {k: float(v[1]) for k, v in parts.items()}
        self.deep_supervision = deep_supervision

    def forward(self, output, seg_target: torch.Tensor, det_target: torch.Tensor | None = None) -> dict:
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, loss in self.parts.items():
            if loss.target_kind == "det":
                if output.cls_logits is None or det_target is None:
                    raise ValueError(f"loss part {name!r} needs a detection head and detection targets")
                value = loss(output.cls_logits, det_target)
            elif self.deep_supervision and len(output.deep_seg_logits) > 1:
                value = DeepSupervision(loss)(output.deep_seg_logits, seg_target)
            else:
                value = loss(output.seg_logits, seg_target)
            out[name] = value
            total = total + self.weights[name] * value
        out["total"] = total
        return out


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"mix_33"`` or ``"wce+0.5*eldice+bce"`` -> [(part name, weight), ...]."""
    text = LOSS_ALIASES.get(spec.strip(), spec.strip())
    terms = []
    for raw in text.split("+"):
        m = re.fullmatch(r"\s*(?:([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*\*\s*)?([a-z_]+)\s*", raw)
        if not m or m.group(2) not in PART_NAMES:
            raise ValueError(
                f"Bad loss spec {spec!r} at {raw!r}: use {', '.join(sorted(LOSS_ALIASES))} or parts "
                f"{', '.join(sorted(PART_NAMES))} joined by '+', each optionally weighted as '0.5*dice'"
            )
        terms.append((PART_NAMES[m.group(2)], float(m.group(1)) if m.group(1) else 1.0))
    names = [t[0] for t in terms]
    if len(set(names)) != len(names):
        raise ValueError(f"Loss spec {spec!r} names a part twice")
    return terms


def build_loss(
    spec: str,
    class_weights: Sequence[float] | None = DEFAULT_CLASS_WEIGHTS,
    ignore_index: int = 255,
    gamma: float = 0.5,
    deep_supervision: bool = False,
    any_index: int | None = None,
) -> MultiTaskLoss:
    """``any_index``: the label of a pixel that is one of the lesion classes, which one unknown (a reference marking
    only "fluid"); None where targets never hold one."""
    factories = {
        "wce": lambda: WeightedCrossEntropyLoss(class_weights, ignore_index, any_index),
        "dice": lambda: SoftDiceLoss(ignore_index=ignore_index, any_index=any_index),
        "el_dice": lambda: ELDiceLoss(gamma=gamma, ignore_index=ignore_index, any_index=any_index),
        "cl_dice": lambda: ClDiceLoss(ignore_index=ignore_index, any_index=any_index),
        "bce": lambda: DetectionBCELoss(),
    }
    parts = {name: (factories[name](), w) for name, w in parse_loss_spec(spec)}
    return MultiTaskLoss(parts, deep_supervision)
