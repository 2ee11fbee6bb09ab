"""Plain functions behind the loss classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot_valid(
    target: torch.Tensor, num_classes: int, ignore_index: int | None, any_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """target (B, H, W) int -> one-hot (B, C, H, W) float and a validity mask (B, 1, H, W) float, or (B, C, H, W)
    where the target holds ``any_index``.

    Pixels equal to ``ignore_index`` get an all-zero one-hot row and mask 0. Pixels equal to ``any_index`` are one of
    the classes 1..C-1, which one unknown (a reference marking only "fluid"): known not to be class 0 (one-hot 0,
    mask 1 there), unknown for the others (mask 0).
    """
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    partial = torch.zeros_like(valid) if any_index is None else target == any_index
    safe = torch.where(valid & ~partial, target, torch.zeros_like(target))
    onehot = F.one_hot(safe.long(), num_classes).permute(0, 3, 1, 2).float() * (valid & ~partial).unsqueeze(1)
    mask = valid.unsqueeze(1).float()
    if any_index is not None:  # per class: the any-lesion pixels count for the background only
        first = torch.arange(num_classes, device=target.device).view(1, -1, 1, 1) == 0
        mask = mask * (first | ~partial.unsqueeze(1)).float()
    return onehot, mask


def partial_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    any_index: int,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Weighted cross-entropy (``F.cross_entropy``'s weighted mean) where a pixel labelled ``any_index`` is one of
    classes 1..C-1: its term is -log(p_1 + ... + p_{C-1}) (the marginal likelihood of a partial label), weighted by
    the mean of those classes' weights. logits (B, C, H, W), target (B, H, W). Written out because torch's
    cross-entropy takes one class per pixel."""
    logp = logits.float().log_softmax(dim=1)
    partial = target == any_index
    known = (target != ignore_index) & ~partial
    safe = torch.where(known, target, torch.zeros_like(target)).long()
    w = torch.ones(logits.shape[1], device=logits.device) if weight is None else weight.to(logits.device)
    w_known = w[safe] * known
    w_any = w[1:].mean() * partial
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    nll_any = -torch.logsumexp(logp[:, 1:], dim=1)
    total = (nll * w_known).sum() + (nll_any * w_any).sum()
    return total / (w_known.sum() + w_any.sum()).clamp_min(eps)


def soft_dice_score(
    probs: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor, smooth: float = 0.0, eps: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class soft Dice over the whole batch.

    probs, onehot: (B, C, H, W); mask: (B, 1, H, W), or (B, C, H, W) for a mask per class. Returns (dice (C,),
    present (C,) bool), where ``present`` says the class occurs in the target. Computed for every class without a
    Python branch, so no device sync.
    """
    dims = (0, 2, 3)
    probs = probs * mask
    intersect = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * intersect + smooth) / (denom + smooth).clamp_min(eps)
    return dice, present


def soft_skeleton(x: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """The soft skeleton of soft masks (B, C, H, W) in [0, 1] (Shit et al. 2021, "clDice - a novel topology-preserving
    loss function for tubular structure segmentation", Algorithm 1): erosion by min-pooling over a cross, opening
    by max-pooling after it, and what each opening removes, accumulated over ``iterations`` erosions (enough for
    structures up to about twice as thick). Written here: no library provides it."""

    def erode(t: torch.Tensor) -> torch.Tensor:
        across = -F.max_pool2d(-t, (3, 1), stride=1, padding=(1, 0))
        along = -F.max_pool2d(-t, (1, 3), stride=1, padding=(0, 1))
        return torch.minimum(across, along)

    def opened(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(erode(t), 3, stride=1, padding=1)

    skeleton = F.relu(x - opened(x))
    for _ in range(iterations):
        x = erode(x)
        delta = F.relu(x - opened(x))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton
