import pytest
import torch

from models import SegDetOutput, build_model, list_models

# sa_unet: the unet and a 7x7 attention conv over 2 maps (98 weights)
EXPECTED_PARAMS = {"unet": 2.47e6, "unet_nested": 2.95e6, "unet_nested_dilated": 5.32e6, "sa_unet": 2.47e6}
SMALL = (4, 8, 8, 8, 16)


def test_registry_lists_the_models():
    assert list_models() == ["sa_unet", "unet", "unet_nested", "unet_nested_dilated"]


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_parameter_counts_match_the_original_within_2_percent(name):
    n = sum(p.numel() for p in build_model(name).parameters())
    assert abs(n - EXPECTED_PARAMS[name]) / EXPECTED_PARAMS[name] < 0.02, n


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
@pytest.mark.parametrize("hw", [(37, 29), (16, 16), (61, 3)])
def test_odd_sizes_and_batch_of_one(name, hw):
    model = build_model(name, channels=SMALL).eval()
    out = model(torch.randn(1, 3, *hw))
    assert isinstance(out, SegDetOutput)
    assert out.seg_logits.shape == (1, 4, *hw)
    assert out.cls_logits.shape == (1, 3)  # a batch of one keeps its batch dimension
    assert all(h.shape == (1, 4, *hw) for h in out.deep_seg_logits)
    assert len(out.deep_seg_logits) == (1 if name in ("unet", "sa_unet") else 4)


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_every_parameter_gets_a_gradient(name):
    model = build_model(name, channels=SMALL).train()
    out = model(torch.randn(2, 3, 32, 24))
    loss = sum(h.square().mean() for h in out.deep_seg_logits) + out.cls_logits.square().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_nested_seg_logits_are_the_mean_of_the_four_heads():
    model = build_model("unet_nested", channels=SMALL).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert torch.allclose(out.seg_logits, torch.stack(out.deep_seg_logits).mean(0), atol=1e-6)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unet, unet_nested, unet_nested_dilated"):
        build_model("segnet")


def test_no_detection_head_and_other_class_counts():
    out = build_model("unet", num_classes=2, num_detect=0, channels=SMALL)(torch.randn(1, 3, 20, 20))
    assert out.cls_logits is None and out.seg_logits.shape == (1, 2, 20, 20)


def test_dilated_variant_differs_only_by_the_bottleneck():
    a = {k for k, _ in build_model("unet_nested").named_parameters()}
    b = {k for k, _ in build_model("unet_nested_dilated").named_parameters()}
    assert a < b and all(k.startswith("encoder.dilated.") for k in b - a)


def test_sa_unet_is_the_unet_with_dropblock_and_attention():
    """sa_unet's weights are the unet's plus the attention conv; DropBlock drops square blocks of about drop_prob of
    the units in training (rescaling the rest) and is the identity in eval."""
    from models.blocks import DropBlock2d

    unet = [v.shape for v in build_model("unet").parameters()]
    sa = dict(build_model("sa_unet").named_parameters())
    assert sa.pop("encoder.attention.conv.weight").shape == (1, 2, 7, 7)
    assert [v.shape for v in sa.values()] == unet  # the same layers in the same order (DropBlock has no weights)
    drop = DropBlock2d(block_size=5, drop_prob=0.2).train()
    torch.manual_seed(0)
    # about drop_prob at every feature-map size, also the bottleneck's (it had dropped 62% at 8 x 8) and in bf16
    for side, dtype in ((64, torch.float32), (16, torch.float32), (8, torch.float32), (64, torch.bfloat16)):
        small = DropBlock2d(block_size=7, drop_prob=0.1).train()(torch.ones(64, 8, side, side, dtype=dtype))
        assert 0.07 < (small == 0).float().mean().item() < 0.13, (side, dtype)
    x = torch.ones(8, 4, 64, 64)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert 0.14 < dropped < 0.26  # about drop_prob, in blocks
    assert torch.allclose(y[y > 0], torch.full_like(y[y > 0], 1 / (1 - dropped)), rtol=1e-4)  # the rest rescaled
    # blocks, not single units: a dropped unit's 4-neighbours are mostly dropped too
    zero = (y == 0)[:, :, 1:-1, 1:-1]
    assert ((y == 0)[:, :, 2:, 1:-1] & zero).sum() > 0.7 * zero.sum()
    assert torch.equal(drop.eval()(x), x)
