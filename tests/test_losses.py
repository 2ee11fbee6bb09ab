import math

import pytest
import torch

from losses import (
    DetectionBCELoss,
    ELDiceLoss,
    SoftDiceLoss,
    WeightedCrossEntropyLoss,
    build_loss,
    parse_loss_spec,
)
from models import SegDetOutput

# two pixels, two classes: softmax gives p(class 1) = 0.75 and 0.5; targets 1 and 0
LOGITS = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]]).view(1, 2, 1, 2)
TARGET = torch.tensor([[[1, 0]]])


def test_wce_by_hand():
    # weighted mean of -ln 0.75 (weight 2) and -ln 0.5 (weight 1)
    expected = (2 * -math.log(0.75) + 1 * -math.log(0.5)) / 3
    got = WeightedCrossEntropyLoss(class_weights=[1.0, 2.0])(LOGITS, TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.422837, abs=1e-6)


def test_wce_ignores_255():
    target = torch.tensor([[[1, 255]]])
    got = WeightedCrossEntropyLoss(class_weights=[1.0, 2.0])(LOGITS, target)
    assert got.item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_soft_dice_and_el_dice_by_hand():
    # class 1: intersection 0.75, sum of probabilities 1.25, target sum 1 -> Dice 1.5 / 2.25 = 2/3
    assert SoftDiceLoss()(LOGITS, TARGET).item() == pytest.approx(1 / 3, rel=1e-5)
    assert ELDiceLoss(gamma=0.5)(LOGITS, TARGET).item() == pytest.approx(math.sqrt(math.log(1.5)), rel=1e-5)
    assert ELDiceLoss(gamma=1.0)(LOGITS, TARGET).item() == pytest.approx(math.log(1.5), rel=1e-5)


def test_empty_class_counts_as_perfect_and_keeps_gradients_finite():
    # three classes, class 2 absent from the target
    logits = torch.zeros(1, 3, 1, 2, requires_grad=True)  # uniform: p = 1/3 everywhere
    target = torch.tensor([[[1, 0]]])
    d1 = 2 * (1 / 3) / (2 / 3 + 1)  # = 0.4
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(1 - (d1 + 1) / 2, rel=1e-5)
    el = ELDiceLoss()(logits, target)
    assert el.item() == pytest.approx(math.sqrt(-math.log(d1)) / 2, rel=1e-5)
    el.backward()
    assert torch.isfinite(logits.grad).all()
    # every class absent: zero loss, finite gradient
    logits.grad = None
    ELDiceLoss()(logits, torch.zeros(1, 1, 2, dtype=torch.long)).backward()
    assert torch.isfinite(logits.grad).all()


def test_perfect_prediction_has_zero_dice_loss():
    target = torch.tensor([[[0, 1, 2, 1]]])
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(0, abs=1e-6)
    assert ELDiceLoss()(logits, target).item() == pytest.approx(0, abs=2e-3)


def test_bce_by_hand():
    logits = torch.tensor([[0.0, math.log(3)]])
    target = torch.tensor([[1.0, 0.0]])
    expected = (-math.log(0.5) - math.log(0.25)) / 2
    assert DetectionBCELoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: WeightedCrossEntropyLoss(class_weights=[1, -1]),
        lambda: WeightedCrossEntropyLoss(class_weights=[[1, 2]]),
        lambda: SoftDiceLoss(smooth=-1),
        lambda: ELDiceLoss(gamma=0),
        lambda: DetectionBCELoss(pos_weight=0),
    ],
)
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


def test_wrong_number_of_class_weights_raises():
    with pytest.raises(ValueError, match="class weights"):
        WeightedCrossEntropyLoss()(LOGITS, TARGET)


def test_loss_specs():
    assert parse_loss_spec("mix_3") == [("wce", 1.0), ("dice", 1.0), ("bce", 1.0)]
    assert parse_loss_spec("mix_33") == [("wce", 1.0), ("el_dice", 1.0), ("bce", 1.0)]
    assert parse_loss_spec("wce+0.5*eldice + 2*bce") == [("wce", 1.0), ("el_dice", 0.5), ("bce", 2.0)]
    for bad in ["", "wce+", "focal", "wce+wce", "x*dice"]:
        with pytest.raises(ValueError):
            parse_loss_spec(bad)


def test_multitask_returns_named_parts_and_weighted_total():
    torch.manual_seed(0)
    seg = torch.randn(2, 4, 8, 8)
    out = SegDetOutput(seg, torch.randn(2, 3), (seg,))
    target = torch.randint(0, 4, (2, 8, 8))
    det = torch.randint(0, 2, (2, 3)).float()
    parts = build_loss("wce+0.5*eldice+2*bce")(out, target, det)
    assert set(parts) == {"wce", "el_dice", "bce", "total"}
    expected = parts["wce"] + 0.5 * parts["el_dice"] + 2 * parts["bce"]
    assert parts["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_deep_supervision_averages_the_heads():
    torch.manual_seed(0)
    heads = tuple(torch.randn(1, 4, 8, 8) for _ in range(4))
    out = SegDetOutput(torch.stack(heads).mean(0), None, heads)
    target = torch.randint(0, 4, (1, 8, 8))
    ds = build_loss("wce", deep_supervision=True)(out, target)["wce"]
    single = WeightedCrossEntropyLoss()
    assert ds.item() == pytest.approx(sum(single(h, target).item() for h in heads) / 4, rel=1e-5)
    plain = build_loss("wce", deep_supervision=False)(out, target)["wce"]
    assert plain.item() == pytest.approx(single(out.seg_logits, target).item(), rel=1e-6)


def test_detection_part_without_head_is_a_clear_error():
    seg = torch.randn(1, 4, 4, 4)
    with pytest.raises(ValueError, match="detection head"):
        build_loss("mix_3")(SegDetOutput(seg, None, (seg,)), torch.zeros(1, 4, 4, dtype=torch.long), None)


def _logits(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) 0/1 -> (1, 2, H, W) logits whose softmax is the mask to within 1e-9."""
    return torch.stack([(1 - mask) * 20.0 - 10, mask * 20.0 - 10])[None].float()


def test_cldice_by_hand_on_a_broken_and_a_thickened_vessel():
    """A 1-pixel vessel 20 long is its own skeleton. Predicted with a 4-pixel gap: the prediction's skeleton lies
    inside the reference (precision 1), and covers 16 of its 20 skeleton pixels (sensitivity 0.8): clDice =
    2 x 0.8 / 1.8, loss 1 - 0.8889 = 0.1111 (smooth 0). Predicted 3 pixels thick: its skeleton is the centre line,
    inside the reference, and it covers the whole reference: loss 0."""
    from losses import ClDiceLoss
    from losses.functional import soft_skeleton

    target = torch.zeros(16, 32, dtype=torch.long)
    target[8, 6:26] = 1
    assert torch.allclose(soft_skeleton(target[None, None].float()), target[None, None].float())
    broken = target.clone()
    broken[8, 14:18] = 0
    thick = torch.zeros_like(target)
    thick[7:10, 6:26] = 1
    loss = ClDiceLoss(smooth=0.0)
    assert loss(_logits(broken), target[None]).item() == pytest.approx(1 - 1.6 / 1.8, abs=1e-4)
    assert loss(_logits(thick), target[None]).item() == pytest.approx(0.0, abs=1e-4)
    assert loss(_logits(target), target[None]).item() == pytest.approx(0.0, abs=1e-4)
    logits = torch.randn(1, 2, 16, 32, requires_grad=True)
    loss(logits, target[None]).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # ignored pixels are left out: the gap marked 255 costs nothing
    ignored = target.clone()
    ignored[8, 14:18] = 255
    assert loss(_logits(broken), ignored[None]).item() == pytest.approx(0.0, abs=1e-4)


def test_cldice_in_a_loss_spec_and_its_bad_arguments():
    from losses import ClDiceLoss, build_loss

    parts = build_loss("wce+dice+0.5*cldice", class_weights=[1.0, 1.0]).parts
    assert list(parts) == ["wce", "dice", "cl_dice"] and isinstance(parts["cl_dice"], ClDiceLoss)
    with pytest.raises(ValueError, match="iterations"):
        ClDiceLoss(iterations=0)
    with pytest.raises(ValueError, match="fluid of any class"):
        build_loss("wce+cldice", any_index=254)
