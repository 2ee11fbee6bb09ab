"""Random training crops reach the whole slice (issue 21, item 5).

Coverage is counted where it matters to training: for every output pixel of every crop, the slice row and column its
label was read from. A label that holds each pixel's own row (or column) index, passed through ``Augment``, says so
exactly (labels are sampled nearest, and pixels from outside the slice come out as ``IGNORE_INDEX``).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from data.transforms import IGNORE_INDEX, Augment

DRAWS = 2000


def _coverage(h: int, w: int, crop: int, rotate: float, scale: float, draws: int = DRAWS):
    """(per-row counts (h,), per-column counts (w,), mean fraction of crop pixels from outside the slice)."""
    aug = Augment(flip=False, rotate=rotate, scale=scale, crop_size=crop)
    rows = torch.arange(h, dtype=torch.uint8)[:, None].expand(h, w).contiguous()
    cols = torch.arange(w, dtype=torch.uint8)[None, :].expand(h, w).contiguous()
    image = torch.zeros(1, h, w, dtype=torch.uint8)  # only the labels are read
    per_row, per_col, outside = torch.zeros(h, dtype=torch.long), torch.zeros(w, dtype=torch.long), 0
    for d in range(draws):  # the same generator seed gives the same geometry for both labels
        _, src_row = aug(image, rows, torch.Generator().manual_seed(d))
        _, src_col = aug(image, cols, torch.Generator().manual_seed(d))
        by_row = torch.bincount(src_row.reshape(-1).long(), minlength=IGNORE_INDEX + 1)
        by_col = torch.bincount(src_col.reshape(-1).long(), minlength=IGNORE_INDEX + 1)
        assert by_row[IGNORE_INDEX] == by_col[IGNORE_INDEX]
        per_row, per_col, outside = per_row + by_row[:h], per_col + by_col[:w], outside + by_row[IGNORE_INDEX].item()
    return per_row, per_col, outside / (draws * crop * crop)


@pytest.mark.parametrize(
    "h, w, crop, rotate, scale",
    [
        (128, 64, 48, 0.0, 0.0),  # rows: three crops long; columns: less than two
        (128, 64, 48, 5.0, 0.1),  # the OCT defaults' rotation and scale
        (200, 100, 100, 0.0, 0.0),  # 1024x512 slices with --crop-size 512, at a fifth of the size
        (200, 100, 100, 5.0, 0.1),
    ],
)
def test_random_crops_cover_every_row_and_column(h, w, crop, rotate, scale):
    """Over many draws every row and column is trained on, none less than half as often as the most covered one
    (the old margin-then-centre crop never reached columns 0-7 of a 128x64 slice with crop 48)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker; two threads on these small tensors are only slower
    try:
        per_row, per_col, outside = _coverage(h, w, crop, rotate, scale)
    finally:
        torch.set_num_threads(threads)
    ratios = {axis: c.min().item() / c.max().item() for axis, c in (("rows", per_row), ("columns", per_col))}
    print(
        f"\n{h}x{w} slices, crop {crop}, rotate {rotate:g}, scale {scale:g}, {DRAWS} draws: min/max coverage "
        f"rows {ratios['rows']:.3f}, columns {ratios['columns']:.3f}; {outside:.1%} of crop pixels from outside"
    )
    assert (per_row > 0).all() and (per_col > 0).all()
    assert ratios["rows"] >= 0.5 and ratios["columns"] >= 0.5, ratios


def test_crops_that_fit_need_no_padding():
    """A crop that tiles the slice exactly (here two crops per side) is never padded without rotation; rotated by up to
    5 degrees, only its corners are (at most sin 5 degrees of it: two triangles), where the old crop padded a quarter
    of every patch."""
    for rotate, scale, most in ((0.0, 0.0, 0.0), (5.0, 0.0, math.sin(math.radians(5)) + 0.005)):
        aug = Augment(flip=False, rotate=rotate, scale=scale, crop_size=48)
        label = torch.zeros(96, 96, dtype=torch.uint8)
        for d in range(200):
            _, lab = aug(torch.zeros(3, 96, 96, dtype=torch.uint8), label, torch.Generator().manual_seed(d))
            assert (lab == IGNORE_INDEX).float().mean() <= most


def test_inside_placement_keeps_the_rotated_crop_inside_the_image():
    """placement="inside" (fundus photos, whose edges are ignored anyway) never pads a crop that fits, at any angle;
    an unknown placement is refused."""
    aug = Augment(rotate=180, scale=0.25, crop_size=48, placement="inside")
    label = torch.zeros(120, 100, dtype=torch.uint8)
    for d in range(200):
        _, lab = aug(torch.zeros(3, 120, 100, dtype=torch.uint8), label, torch.Generator().manual_seed(d))
        assert not (lab == IGNORE_INDEX).any()
    with pytest.raises(ValueError, match="placement must be 'tiles' or 'inside', got 'edges'"):
        Augment(placement="edges")


@pytest.mark.parametrize("rotate, scale", [(0.0, 0.0), (5.0, 0.1), (180.0, 0.25)])
def test_image_and_label_come_from_the_same_place(rotate, scale):
    """The image is interpolated and the label sampled nearest from the same map: an image whose grey value is the
    column index agrees with a label that is the column index to within interpolation, and pixels from outside the
    slice (away from its border, where bilinear blends) are black in the image."""
    h, w = 80, 120
    cols = torch.arange(w, dtype=torch.uint8)[None, :].expand(h, w)
    image = (cols + 10).expand(3, h, w).contiguous()  # 10..129: black (0) only outside the slice
    aug = Augment(flip=False, rotate=rotate, scale=scale, crop_size=48)
    for d in range(50):
        img, lab = aug(image, cols.contiguous(), torch.Generator().manual_seed(d))
        assert img.shape == (3, 48, 48) and img.dtype == torch.uint8 and lab.shape == (48, 48)
        inside = lab != IGNORE_INDEX
        # nearest and bilinear read the same position: at most one column apart, except next to the outside, whose
        # black bilinear blends in
        grey = img[0].long() - 10
        outside = F.pad((~inside)[None].float(), (1, 1, 1, 1), value=1)  # beyond the crop may be outside too
        interior = F.max_pool2d(outside, 3, 1)[0] == 0
        assert (grey[interior] - lab[interior].long()).abs().max() <= 1
        far_outside = F.max_pool2d(inside[None].float(), 3, 1, 1)[0] == 0
        assert (img[:, far_outside] == 0).all()


def test_the_same_generator_gives_the_same_crop():
    image = torch.randint(0, 256, (3, 128, 64), dtype=torch.uint8)
    label = torch.randint(0, 4, (128, 64), dtype=torch.uint8)
    aug = Augment(rotate=5, scale=0.1, crop_size=48, brightness=0.1, noise=0.05)
    a = aug(image, label, torch.Generator().manual_seed(3))
    b = aug(image, label, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("h, w", [(64, 64), (128, 64)])
def test_a_crop_as_large_as_the_slice_trains(h, w):
    """A crop as large as the slice (the narrow side of a non-square one), with the default rotation and scale:
    mostly slice pixels, never an all-ignored label, and a training step with a finite loss and gradients."""
    from data.dataset import detection_from_label
    from losses import build_loss
    from models import build_model

    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    label = torch.zeros(h, w, dtype=torch.uint8)
    label[h // 4 : h // 2, w // 4 : w // 2] = 1
    label[h // 2 : h // 2 + 6, 4:20] = 3
    aug = Augment(rotate=5, scale=0.1, crop_size=w)
    images, labels = zip(*(aug(image, label, torch.Generator().manual_seed(d)) for d in range(8)))
    for lab in labels:
        assert lab.shape == (w, w) and (lab != IGNORE_INDEX).float().mean() > 0.6
    x = torch.stack(images).float() / 255
    y = torch.stack(labels).long()
    model = build_model("unet", num_classes=4, num_detect=3, channels=(4, 8, 16, 32, 64))
    loss = build_loss("mix_3", [1, 5, 10, 20])
    total = loss(model(x), y, detection_from_label(torch.where(y == IGNORE_INDEX, 0, y)))["total"]
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
