"""Single B-scans (issue 23, item 1): predict.py on 2-D images and folders of them, which task an input is for, the
paired 2-D training layout with a fluid-only reference (a partial-label loss), and lone B-scans in training."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import predict as predict_script
import train as train_script
from data.bscans import BScanRecord, find_bscan_pairs, independent_bscans, is_bscan_file, read_bscan
from data.cache import VolumeCache
from data.common import DatasetError
from data.dataset import SliceDataset, detection_from_label
from data.retouch import parse_label_map
from data.transforms import ANY_LESION, Augment
from data.volumes import read_volume
from losses import DetectionBCELoss, WeightedCrossEntropyLoss
from losses.functional import one_hot_valid
from models import build_model
from utils.checkpoint import save_checkpoint
from utils.config import Settings

SMALL = [4, 8, 8, 16, 16]


@pytest.fixture(scope="module")
def oct_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("unet", channels=tuple(SMALL))
    path = tmp_path_factory.mktemp("ckpt") / "oct.pth.tar"
    state = {
        "model_name": "unet",
        "settings": Settings(name="unet", channels=SMALL).to_dict(),
        "epoch": 1,
        "state_dict": model.state_dict(),
        "normalization": {"mean": [0.2] * 3, "std": [0.1] * 3},
    }
    save_checkpoint(path, state)
    return path


def bscan_like(h=70, w=52, seed=0) -> np.ndarray:
    """A grey picture with a bright band across its width (a retina), dark above and below."""
    rng = np.random.default_rng(seed)
    img = rng.normal(20, 5, (h, w))
    img[h // 3 : h // 3 + h // 4] += 150
    return img.clip(0, 255).astype(np.uint8)


def fundus_like(size=96, grey=False) -> np.ndarray:
    """A bright disc (orange, or grey) on black: a fundus camera's field of view."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[disc] = (150, 150, 150) if grey else (200, 100, 40)
    return rgb


def predict(args, tmp_path, ckpt) -> dict:
    out = tmp_path / "out"
    written = predict_script.main([*map(str, args), "--checkpoint", str(ckpt), "--out", str(out)])
    return {str(p.relative_to(out)): p for p in written}


def test_png_jpeg_rgb_and_16_bit_bscans_get_label_maps_of_their_own_size(oct_ckpt, tmp_path):
    b = bscan_like()
    b[0, :2] = 0, 255  # the full 8-bit range: the 16-bit copy's percentile mapping gives it back exactly
    Image.fromarray(b).save(tmp_path / "grey.png")
    Image.fromarray(b[:, :40]).convert("RGB").save(tmp_path / "rgb.jpg", quality=75)
    Image.fromarray(b.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit
    files = predict([tmp_path / "grey.png", tmp_path / "rgb.jpg", tmp_path / "deep.png"], tmp_path, oct_ckpt)
    for name, (h, w) in (("grey", (70, 52)), ("rgb", (70, 40)), ("deep", (70, 52))):
        labels = np.asarray(Image.open(files[f"segment/{name}_labels.png"]))
        assert labels.shape == (h, w) and labels.dtype == np.uint8 and labels.max() <= 3
        assert np.load(files[f"segment/{name}_detections.npy"]).shape == (1, 3)
        assert Image.open(files[f"{name}.png"]).size == (2 * w + 4, h)  # the B-scan beside its overlay
    # the 16-bit copy is the 8-bit B-scan times 257: the same input after the grey rule, so the same labels
    same = [np.asarray(Image.open(files[f"segment/{n}_labels.png"])) for n in ("grey", "deep")]
    assert np.array_equal(*same)


def test_rgb_copy_of_a_grey_bscan_reads_as_its_grey(tmp_path):
    b = bscan_like()
    Image.fromarray(np.repeat(b[..., None], 3, 2)).save(tmp_path / "rgb.png")
    assert np.array_equal(read_bscan(tmp_path / "rgb.png"), b)


def test_one_slice_folder_is_a_one_slice_volume(oct_ckpt, tmp_path):
    folder = tmp_path / "scans" / "P1.img"  # a volume folder's parent holds its split: outputs go elsewhere
    folder.mkdir(parents=True)
    Image.fromarray(bscan_like()).save(folder / "1.bmp")
    files = predict([folder], tmp_path, oct_ckpt)
    assert np.load(files["segment/P1_labelMark_volumes.npy"]).shape == (1, 70, 52)


def test_folder_of_independent_bscans_and_the_bscans_flag(oct_ckpt, tmp_path):
    kermany = tmp_path / "kermany"
    kermany.mkdir()
    names = ("CNV-1016042-1", "CNV-1016042-2", "DME-1072015-1")  # two runs of digits: not one numbered series
    for i, n in enumerate(names):
        Image.fromarray(bscan_like(60 + 4 * i, 48)).save(kermany / f"{n}.jpeg", quality=90)
    files = predict([kermany], tmp_path / "a", oct_ckpt)
    for i, n in enumerate(names):
        assert np.asarray(Image.open(files[f"segment/{n}_labels.png"])).shape == (60 + 4 * i, 48)
    series = tmp_path / "scans" / "series"
    series.mkdir(parents=True)
    for z in (1, 2):
        Image.fromarray(bscan_like(seed=z)).save(series / f"{z}.png")
    assert "segment/series_labelMark_volumes.npy" in predict([series], tmp_path / "b", oct_ckpt)
    flagged = predict([series, "--bscans"], tmp_path / "c", oct_ckpt)
    assert {"segment/1_labels.png", "segment/2_labels.png"} <= set(flagged)


def test_report_refuses_a_single_bscan(oct_ckpt, tmp_path):
    Image.fromarray(bscan_like()).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b\.png: a single B-scan has no fluid volume"):
        predict([tmp_path / "b.png", "--report"], tmp_path, oct_ckpt)


def test_the_task_follows_from_the_inputs_or_is_asked_for(tmp_path):
    Image.fromarray(bscan_like()).save(tmp_path / "bscan.png")
    Image.fromarray(fundus_like()).save(tmp_path / "photo.png")
    Image.fromarray(fundus_like(grey=True)).save(tmp_path / "red_free.png")
    blue = np.zeros((60, 80, 3), np.uint8)
    blue[10:50] = (40, 90, 200)  # a band in pseudo-colour: neither grey nor a fundus's colours
    Image.fromarray(blue).save(tmp_path / "blue.png")
    assert predict_script.inputs_task([tmp_path / "bscan.png"]) == "oct"
    assert predict_script.inputs_task([tmp_path / "photo.png"]) == "vessel"
    assert predict_script.inputs_task([tmp_path / "red_free.png"]) == "vessel"  # grey, in a round field
    with pytest.raises(ValueError, match="different tasks"):
        predict_script.inputs_task([tmp_path / "bscan.png", tmp_path / "photo.png"])
    with pytest.raises(ValueError, match=r"cannot tell from .*blue\.png.*--task oct or --task vessel"):
        predict_script.inputs_task([tmp_path / "blue.png"])
    assert predict_script.inputs_task([tmp_path]) == "oct"  # a folder: B-scans or a volume


def test_a_checkpoint_of_another_task_than_task_is_refused(oct_ckpt, tmp_path):
    Image.fromarray(bscan_like()).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match="--task vessel, but .* is a oct model"):
        predict([tmp_path / "b.png", "--task", "vessel"], tmp_path, oct_ckpt)


# ------------------------------------------------------------------------------------------ partial labels
def test_label_map_fluid_and_its_errors():
    assert parse_label_map("255:fluid") == {0: 0, 255: ANY_LESION}
    assert parse_label_map("255:1,191:2,128:3") == {0: 0, 255: 1, 191: 2, 128: 3}
    with pytest.raises(ValueError, match="not VALUE:CLASS"):
        parse_label_map("255:water")
    with pytest.raises(ValueError, match="outside 0..3"):
        parse_label_map("255:4")


def test_partial_cross_entropy_by_hand():
    # one pixel, logits 0, ln 2, ln 3, ln 4: p = (1, 2, 3, 4) / 10; "fluid" -> -ln(p1 + p2 + p3) = -ln 0.9
    logits = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])).view(1, 4, 1, 1)
    fluid = torch.full((1, 1, 1), ANY_LESION)
    loss = WeightedCrossEntropyLoss(class_weights=None, any_index=ANY_LESION)
    assert loss(logits, fluid).item() == pytest.approx(-math.log(0.9), rel=1e-6)
    # two pixels: class 2 (weight 10) and fluid (weight mean(5, 10, 20) = 35/3): weighted mean of -ln 0.3, -ln 0.9
    both = torch.cat([logits, logits], 3)
    target = torch.tensor([[[2, ANY_LESION]]])
    weighted = WeightedCrossEntropyLoss(any_index=ANY_LESION)(both, target).item()
    expect = (10 * -math.log(0.3) + 35 / 3 * -math.log(0.9)) / (10 + 35 / 3)
    assert weighted == pytest.approx(expect, rel=1e-6)


def test_partial_cross_entropy_equals_torch_without_fluid_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0, :3] = 255  # ignored
    plain = WeightedCrossEntropyLoss()(logits, target)
    partial = WeightedCrossEntropyLoss(any_index=ANY_LESION)(logits, target)
    assert partial.item() == pytest.approx(plain.item(), rel=1e-5)
    w = torch.tensor([1.0, 5.0, 10.0, 20.0])
    assert plain.item() == pytest.approx(F.cross_entropy(logits, target, weight=w, ignore_index=255).item(), rel=1e-6)


def test_dice_leaves_fluid_pixels_out_of_the_lesion_classes():
    target = torch.tensor([[[0, 1, ANY_LESION, 255]]])
    onehot, mask = one_hot_valid(target, 4, 255, ANY_LESION)
    assert mask[0, :, 0].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert onehot[0, :, 0].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_detection_targets_of_fluid_slices_are_unknown_and_left_out():
    label = torch.zeros(3, 4, 4, dtype=torch.uint8)
    label[0, 0, 0] = 2  # SRF known
    label[1, 1, 1] = ANY_LESION  # fluid of some kind
    label[2, 0, 0], label[2, 1, 1] = 1, ANY_LESION  # REA known, more fluid of some kind
    det = detection_from_label(label)
    assert det[0].tolist() == [0, 1, 0]
    assert torch.isnan(det[1]).all()
    assert det[2, 0] == 1 and torch.isnan(det[2, 1:]).all()
    logits = torch.zeros(3, 3)  # BCE of logit 0 is ln 2 for either target: 4 known targets
    assert DetectionBCELoss()(logits, det).item() == pytest.approx(math.log(2))
    assert DetectionBCELoss()(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, float("nan")]])).item() == (
        pytest.approx((math.log1p(math.exp(-5)) + math.log(2)) / 2)
    )


# ------------------------------------------------------------------------------------------ paired 2-D layout
def write_pairs(root, split, n, seed, h=64, w=48):
    """B-scans with a dark fluid pocket inside a bright band, and 0/255 fluid masks."""
    rng = np.random.default_rng(seed)
    (root / split / "image").mkdir(parents=True)
    (root / split / "mask").mkdir(parents=True)
    for i in range(n):
        img = bscan_like(h, w, seed=seed * 100 + i)
        mask = np.zeros((h, w), np.uint8)
        if i % 4:  # one in four without fluid
            y, x = h // 3 + 3 + int(rng.integers(0, 4)), int(rng.integers(4, w - 16))
            mask[y : y + 8, x : x + 12] = 255
            img[mask > 0] = 15
        Image.fromarray(img).save(root / split / "image" / f"{split}{i:02d}.png")
        Image.fromarray(mask).save(root / split / "mask" / f"{split}{i:02d}.png")


def test_paired_layout_records_and_its_errors(tmp_path):
    write_pairs(tmp_path, "train", 4, 0)
    recs = find_bscan_pairs(tmp_path, "train", 1, "255:fluid")
    assert [r.name for r in recs] == ["train00", "train01", "train02", "train03"]  # a train/ folder: all of it
    image, labels = VolumeCache(tmp_path / "cache").load(recs[1])
    assert image.shape == labels.shape == (1, 64, 48) and set(np.unique(labels).tolist()) == {0, ANY_LESION}
    with pytest.raises(DatasetError, match=r"train01\.png: label values \[255\] are not in --label-map"):
        BScanRecord("x", recs[1].image, recs[1].mask, "1:1").read_labels()
    (tmp_path / "train" / "mask" / "train03.png").unlink()
    with pytest.raises(DatasetError, match=r"no mask in .* for \['train03'\]"):
        find_bscan_pairs(tmp_path, "train", 1, "255:fluid")


def test_fluid_only_bscans_train_and_the_fluid_dice_improves(tmp_path):
    write_pairs(tmp_path / "d", "train", 32, 1)
    write_pairs(tmp_path / "d", "val", 8, 2)
    argv = ["--name", "unet", "-d", str(tmp_path / "d"), "--channels", *map(str, SMALL), "--batch-size", "8"]
    argv += ["--label-map", "255:fluid", "--epochs", "12", "--lr", "0.01", "--loss", "mix_3", "-j", "0"]
    argv += ["--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--seed", "0"]
    argv += ["--random-rotate", "0", "--random-scale", "0"]
    train_script.main(argv)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    fluid = [float(r.split(",")[header.index("fluid_dice")]) for r in rows[1:]]
    assert math.isnan(float(rows[1].split(",")[header.index("dice_REA")]))  # no per-lesion truth
    assert min(fluid[-3:]) > fluid[0] + 0.3 and min(fluid[-3:]) > 0.6, fluid  # 0.13 -> 0.95 as written


def test_lone_bscans_repeat_the_slice_in_every_channel(tmp_path):
    write_pairs(tmp_path, "train", 2, 3)
    recs = find_bscan_pairs(tmp_path, "train", 1, "255:fluid")
    cache = VolumeCache(tmp_path / "cache")
    item = SliceDataset(recs, cache, Augment(flip=False), lone=1.0)[0]["image"]
    assert torch.equal(item[0], item[1]) and torch.equal(item[1], item[2])


# ------------------------------------------------------------------------------------------ review findings
def test_colour_without_a_round_field_is_asked_about_not_sent_to_the_vessel_model(tmp_path):
    warm = np.zeros((64, 96, 3), np.uint8)
    warm[20:44] = (230, 140, 40)  # a B-scan in a warm colour map: red above green above blue, no round field
    Image.fromarray(warm).save(tmp_path / "hot.png")
    with pytest.raises(ValueError, match=r"cannot tell from .*hot\.png"):
        predict_script.inputs_task([tmp_path / "hot.png"])


def test_an_rgb_bscan_with_jpeg_noise_between_channels_keeps_its_greys(tmp_path):
    b = bscan_like()
    rgb = np.repeat(b[..., None], 3, 2).astype(np.int16)
    rgb[..., 0] += 1  # one level of chroma noise
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(tmp_path / "rgb.png")
    assert np.abs(read_bscan(tmp_path / "rgb.png").astype(int) - b).max() <= 1  # not stretched to 0..255


def test_a_three_slice_tiff_stack_stays_a_volume(oct_ckpt, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "v.tif", np.stack([bscan_like(seed=z) for z in range(3)]), photometric="minisblack")
    assert not is_bscan_file(tmp_path / "v.tif")
    files = predict([tmp_path / "v.tif"], tmp_path, oct_ckpt)
    assert np.load(files["segment/v_labelMark_volumes.npy"]).shape == (3, 70, 52)


def test_a_bscan_whose_outputs_would_overwrite_a_volumes_is_refused(oct_ckpt, tmp_path):
    (tmp_path / "in" / "x").mkdir(parents=True)
    Image.fromarray(bscan_like()).save(tmp_path / "in" / "x" / "1.png")
    Image.fromarray(bscan_like()).save(tmp_path / "in" / "x_labelMark.png")
    with pytest.raises(ValueError, match="would both be written as 'x_labelMark'"):
        predict([tmp_path / "in" / "x", tmp_path / "in" / "x_labelMark.png"], tmp_path, oct_ckpt)


def test_a_damaged_series_stays_an_error_and_is_never_read_slice_by_slice(tmp_path):
    gap = tmp_path / "gap"
    gap.mkdir()
    for z in (1, 2, 4):
        Image.fromarray(bscan_like(seed=z)).save(gap / f"{z}.png")
    assert independent_bscans(gap) is None  # a volume: data.volumes refuses the gap
    with pytest.raises(DatasetError, match=r"missing \[3\]"):
        read_volume(gap)
    two = tmp_path / "two_runs"
    two.mkdir()
    for n in ("scan_1_1.png", "scan_1_2.png", "scan_2_1.png"):  # one pattern, two runs of digits: B-scans
        Image.fromarray(bscan_like()).save(two / n)
    assert [p.name for p in independent_bscans(two)] == ["scan_1_1.png", "scan_1_2.png", "scan_2_1.png"]
    sizes = tmp_path / "sizes"  # one numbered series, but of several sizes (a set's B-scans of several devices)
    sizes.mkdir()
    for z, h in ((1, 70), (2, 60)):
        Image.fromarray(bscan_like(h)).save(sizes / f"ph_{z:04d}.png")
    assert [p.name for p in independent_bscans(sizes)] == ["ph_0001.png", "ph_0002.png"]


def test_resampling_beyond_any_device_is_refused_naming_the_input(oct_ckpt, tmp_path):
    Image.fromarray(bscan_like()).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b\.png: resampling 70x52 B-scans by 100 x 100 .* check --spacing"):
        predict([tmp_path / "b.png", "--scale", "100"], tmp_path, oct_ckpt)


def test_a_test_split_without_masks_and_palette_masks(tmp_path):
    write_pairs(tmp_path, "train", 2, 4)
    (tmp_path / "test" / "image").mkdir(parents=True)
    Image.fromarray(bscan_like()).save(tmp_path / "test" / "image" / "t.png")
    assert [(r.name, r.mask) for r in find_bscan_pairs(tmp_path, "test", 1, "1:1")] == [("t", None)]
    palette = Image.fromarray(np.array([[0, 2], [3, 1]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(tmp_path / "m.png")
    rec = BScanRecord("m", tmp_path / "m.png", tmp_path / "m.png", "1:1,2:2,3:3")
    assert rec.read_labels()[0].tolist() == [[0, 2], [3, 1]]  # the indices, not the colours


def test_a_run_from_before_lone_bscans_resumes_without_them():
    from engine.run_folder import resumed_settings

    stored = Settings(name="unet", channels=SMALL).to_dict()
    stored["task_settings"] = {k: v for k, v in stored["task_settings"].items() if k != "lone_bscans"}
    state = {"model_name": "unet", "settings": stored}
    resumed = resumed_settings(state, Settings(name="unet", channels=SMALL), given=(), path="old.pth.tar")
    assert resumed.task_settings["lone_bscans"] == 0.0  # as that run trained, not the new default 0.1


def test_dice_on_a_fluid_only_reference_scores_the_lesion_union():
    from losses import SoftDiceLoss

    target = torch.tensor([[[0, ANY_LESION, ANY_LESION, 0]]])
    right = torch.full((1, 4, 1, 4), -9.0)
    right[0, 0, 0, [0, 3]] = 9.0
    right[0, 2, 0, 1:3] = 9.0  # fluid predicted as SRF: any lesion class is right
    wrong = right.flip(-1).roll(1, -1)
    loss = SoftDiceLoss(any_index=ANY_LESION)
    assert loss(right, target).item() == pytest.approx(0.0, abs=1e-3)
    assert loss(wrong, target).item() > 0.1


# ------------------------------------------------------------------------------------------ the Python API (OCT)
def test_fluid_segmenter_gives_predict_pys_labels_and_checks_its_input(oct_ckpt, tiny_dataset, tmp_path):
    from tasks.oct import FluidSegmenter

    folder = sorted((tiny_dataset / "Edema_testset" / "original_images").iterdir())[0]
    files = predict([folder], tmp_path, oct_ckpt)
    seg = FluidSegmenter.from_checkpoint(oct_ckpt)
    volume = read_volume(folder).image
    out = seg.predict(volume, spacing=(0.05, 0.002, 0.01))
    written = {k.split("_labelMark_")[-1]: np.load(p) for k, p in files.items() if k.endswith(".npy")}
    assert out.labels.shape == volume.shape and out.detection.shape == (volume.shape[0], 3)
    assert np.array_equal(out.labels, written["volumes.npy"]) and np.allclose(out.detection, written["detections.npy"])
    assert np.array_equal(out.labels, seg.predict_file(folder).labels)
    # one voxel is 0.05 x 0.002 x 0.01 mm = 1e-6 mm^3 = 1e-3 nL
    assert out.quantities["volume_nl"]["REA"] == pytest.approx((out.labels == 1).sum() * 1e-3)
    one = seg.predict(volume[2])  # a single B-scan: (H, W) labels, its neighbours itself
    assert one.labels.shape == volume.shape[1:] and one.detection.shape == (1, 3)
    with pytest.raises(ValueError, match="scan 7: expected .* uint8 B-scans, got float64"):
        seg.predict(volume.astype(float), name="scan 7")
    with pytest.raises(ValueError, match="more than any OCT scan"):  # microns given as mm
        seg.predict(volume, spacing=(50, 2, 10))
    with pytest.raises(ValueError, match="3 positive finite numbers"):
        seg.predict(volume, spacing=(0.05, 0.002))
    with pytest.raises(ValueError, match="a single B-scan has no fluid volume"):
        seg.predict(volume[0], spacing=(0.05, 0.002, 0.01))
    with pytest.raises(ValueError, match="not 'oct'"):
        FluidSegmenter.from_checkpoint(Path(__file__).resolve().parents[1] / "checkpoints" / "drive_unet.pth.tar")


# ------------------------------------------------------------------------ NIfTI label maps (issue 24, item 1, part)
def test_volumes_get_a_nifti_label_map_in_their_own_geometry(oct_ckpt, tmp_path, caplog):
    import logging

    import SimpleITK as sitk

    volume = np.stack([bscan_like(seed=z) for z in range(4)])
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.0117, 0.0039, 0.12))  # x A-scans, y depth, z B-scans (mm)
    image.SetOrigin((10.0, -5.0, 3.0))
    image.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))  # NIfTI's usual flips
    inputs = tmp_path / "in"
    (inputs / "P9.img").mkdir(parents=True)
    sitk.WriteImage(image, str(inputs / "eye.nii.gz"))
    folder = inputs / "P9.img"
    for z, b in enumerate(volume, start=1):
        Image.fromarray(b).save(folder / f"{z}.bmp")
    with caplog.at_level(logging.WARNING):
        files = predict([inputs / "eye.nii.gz", folder], tmp_path, oct_ckpt)
    out = sitk.ReadImage(str(files["segment/eye_labels.nii.gz"]))
    assert out.GetSpacing() == pytest.approx(image.GetSpacing()) and out.GetOrigin() == pytest.approx((10, -5, 3))
    assert out.GetDirection() == pytest.approx(image.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(out), np.load(files["segment/eye_labelMark_volumes.npy"]))
    # a slice folder without a known spacing: 1 mm voxels, and a warning naming the input and what to pass
    unit = sitk.ReadImage(str(files["segment/P9_labels.nii.gz"]))
    assert unit.GetSpacing() == (1.0, 1.0, 1.0) and "P9.img: no voxel spacing known" in caplog.text
    assert "--spacing" in caplog.text
    # with --spacing (between B-scans, depth, A-scans in mm): ITK's x, y, z order
    out_dir = tmp_path / "spaced"
    predict_script.main([str(folder), "--spacing", "0.12", "0.0039", "0.0117", "--checkpoint", str(oct_ckpt),
                         "--out", str(out_dir)])  # fmt: skip
    spaced = sitk.ReadImage(str(out_dir / "segment" / "P9_labels.nii.gz"))
    assert spaced.GetSpacing() == pytest.approx((0.0117, 0.0039, 0.12))
    # --spacing replaces a NIfTI's spacing for the fluid volumes, but the map keeps the header's: it must overlay it
    out_dir = tmp_path / "respaced"
    predict_script.main([str(inputs / "eye.nii.gz"), "--spacing", "0.2", "0.0039", "0.0117", "--checkpoint",
                         str(oct_ckpt), "--out", str(out_dir)])  # fmt: skip
    kept = sitk.ReadImage(str(out_dir / "segment" / "eye_labels.nii.gz"))
    assert kept.GetSpacing() == pytest.approx(image.GetSpacing()) and kept.GetOrigin() == pytest.approx((10, -5, 3))
