"""Vessel task on the real DRIVE database (../shared/data/DRIVE): readers, metrics, training, prediction."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import eval as eval_script
import predict as predict_script
import train as train_script
from data.photos import find_photos, fov_from_photo, load_photo
from metrics import average_precision, best_f1_threshold, binary_metrics, roc_auc

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "drive_unet.pth.tar"
DRIVE = Path(os.environ.get("DRIVE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "DRIVE"))
assert DRIVE.is_dir(), f"{DRIVE}: the DRIVE database (shared/data/DRIVE beside the checkout, or $DRIVE_DIR)"


def test_all_40_drive_photos_and_labels_load():
    for split, first in (("train", "21_training"), ("test", "01_test")):
        photos = [load_photo(r) for r in find_photos(DRIVE, split)]
        assert len(photos) == 20 and photos[0].name == first
        for p in photos:
            assert p.rgb.shape == (584, 565, 3) and p.label.shape == p.fov.shape == (584, 565)
            assert 0.6 < p.fov.mean() < 0.75  # the circular field of view
            assert 0.07 < p.label[p.fov].mean() < 0.2  # vessels are about an eighth of it
    # the second observer's GIFs hold 0/1, not 0/255: read as the same kind of mask
    first = [load_photo(r).label for r in find_photos(DRIVE, "test")]
    second = [load_photo(r).label for r in find_photos(DRIVE, "test", manual="2nd_manual")]
    raw = np.asarray(Image.open(DRIVE / "test" / "2nd_manual" / "01_manual2.gif"))
    assert set(np.unique(raw)) == {0, 1}
    for a, b in zip(first, second):
        assert abs(a.mean() - b.mean()) < 0.03 and (a & b).sum() / (a | b).sum() > 0.5


def test_splits_hold_out_the_last_training_photos_for_validation():
    from data.photos import split_photos

    train, val = split_photos(DRIVE, "train", 4), split_photos(DRIVE, "val", 4)
    assert [r.name for r in val] == ["37_training", "38_training", "39_training", "40_training"]
    assert len(train) == 16 and not {r.name for r in train} & {r.name for r in val}
    assert split_photos(DRIVE, "test", 4)[0].name == "01_test"
    with pytest.raises(ValueError, match="--val-count 20 must leave training photos"):
        split_photos(DRIVE, "train", 20)


def test_field_of_view_from_the_dark_border_matches_drive_masks():
    for rec in find_photos(DRIVE, "test")[:5]:
        p = load_photo(rec)
        computed = fov_from_photo(p.rgb)
        assert (computed & p.fov).sum() / (computed | p.fov).sum() > 0.95


def test_binary_metrics_agree_with_scikit_learn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.2
    s = np.round(np.clip(y * 0.3 + rng.random(5000) * 0.8, 0, 1), 2)  # ties on purpose
    m = binary_metrics(y, s, 0.5)
    pred = s >= 0.5
    assert m["auc_roc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["auc_pr"] == pytest.approx(skm.average_precision_score(y, s))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["iou"] == pytest.approx(skm.jaccard_score(y, pred))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(~y, ~pred))
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))


def test_best_threshold_maximises_f1():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.3
    s = np.round(y * 0.2 + rng.random(400), 2)
    t = best_f1_threshold(y, s)
    best = max(f1_score(y, s >= u) for u in np.unique(s))
    assert f1_score(y, s >= t) == pytest.approx(best)


@pytest.fixture(scope="module")
def low_res(tmp_path_factory):
    """6 DRIVE training photos and 2 test photos at half resolution, in the generic paired layout (image/, mask/)."""
    root = tmp_path_factory.mktemp("paired")
    for split, recs in (("train", find_photos(DRIVE, "train")[:6]), ("test", find_photos(DRIVE, "test")[:2])):
        for sub in ("image", "mask"):
            (root / split / sub).mkdir(parents=True)
        for r in recs:
            p = load_photo(r)
            size = (p.rgb.shape[1] // 2, p.rgb.shape[0] // 2)
            Image.fromarray(p.rgb).resize(size, Image.BILINEAR).save(root / split / "image" / f"{r.name}.png")
            Image.fromarray(p.label.astype(np.uint8) * 255).resize(size, Image.NEAREST).save(
                root / split / "mask" / f"{r.name}.png"
            )
    run = tmp_path_factory.mktemp("paired_run") / "run"  # a run folder never lies inside its data
    metrics = train_script.main(
        [
            "--task",
            "vessel",
            "-d",
            str(root),
            "--out",
            str(run),
            "--channels",
            "8",
            "16",
            "32",
            "64",
            "128",
            "--epochs",
            "6",
            "--steps-per-epoch",
            "15",
            "--batch-size",
            "8",
            "-s",
            "64",
            "-j",
            "0",
            "--lr",
            "0.003",
            "--val-count",
            "2",
        ]
    )
    return root, run / "checkpoint" / "model_best.pth.tar", metrics


def test_short_cpu_training_beats_all_background(low_res, tmp_path):
    root, ckpt, val = low_res
    # predicting background everywhere scores F1 0 (no true positives); the trained model must clearly beat it
    assert val["f1"] > 0.4 and val["auc_roc"] > 0.85, val
    ev = tmp_path / "ev"  # outside the data: an output never goes inside its inputs
    result = eval_script.main(["--seg-path", str(ckpt), "-d", str(root), "--out", str(ev), "--vis"])
    assert result["f1"] > 0.4 and result["photos"] == 2
    saved = json.loads((ev / "metrics.json").read_text())
    assert set(saved) >= {"auc_roc", "auc_pr", "f1", "iou", "accuracy", "sensitivity", "specificity", "threshold"}
    assert saved["scale"] == "auto"  # how the photos were brought to the training scale: part of the result
    assert all((ev / f).exists() for f in ("roc.png", "pr.png", "per_image.csv"))
    assert len(list((ev / "vis").glob("*_blend.png"))) == 2


def test_predict_writes_a_mask_and_a_blend_of_the_photo_size(low_res, tmp_path):
    from tasks.vessel import Segmenter

    root, ckpt, _ = low_res
    photo = next((root / "test" / "image").iterdir())
    written = predict_script.main([str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path)])
    assert [p.name for p in written] == [f"{photo.stem}_mask.png", f"{photo.stem}_blend.png"]
    size = Image.open(photo).size
    mask = Image.open(written[0])
    assert mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert Image.open(written[1]).size == size and Image.open(written[1]).mode == "RGB"
    only = predict_script.main([str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "m"), "--no-blend"])
    assert len(only) == 1
    prob, m = Segmenter.from_checkpoint(ckpt).predict(np.asarray(Image.open(photo).convert("RGB")))
    assert prob.shape == m.shape == (size[1], size[0]) and m.dtype == bool


def test_test_py_writes_the_masks_of_the_requested_split(low_res, tmp_path):
    import test as test_script

    root, ckpt, _ = low_res
    out = tmp_path / "v"
    test_script.main(["--seg", "--seg-path", str(ckpt), "-d", str(root), "--split", "val", "--out", str(out)])
    held_out = sorted(p.stem for p in (root / "train" / "image").iterdir())[-2:]  # --val-count 2 in training
    assert sorted(p.name for p in out.glob("*_mask.png")) == [f"{n}_mask.png" for n in held_out]


def test_shipped_model_fast_path_agrees_with_fp32():
    """The shipped DRIVE model on real test photos: bf16 autocast (the GPU default, here on the CPU) gives the same
    mask as fp32 on at least 99.9% of field-of-view pixels, and F1 moves by less than 0.002."""
    from tasks.vessel import Segmenter
    from utils.checkpoint import load_checkpoint

    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / "drive_unet.pth.tar"
    threshold = load_checkpoint(ckpt)["threshold"]
    runs = {amp: Segmenter.from_checkpoint(ckpt, device="cpu", amp=amp) for amp in (False, True)}
    masks, labels = {False: [], True: []}, []
    for rec in find_photos(DRIVE, "test")[:2]:
        p = load_photo(rec)
        labels.append(p.label[p.fov])
        for amp, predictor in runs.items():
            masks[amp].append(predictor.predict(p.rgb, p.fov)[0][p.fov] >= threshold)
    fp32, bf16, y = (np.concatenate(x) for x in (masks[False], masks[True], labels))
    f1 = {k: 2 * (m & y).sum() / (m.sum() + y.sum()) for k, m in (("fp32", fp32), ("bf16", bf16))}
    print(f"agreement {(fp32 == bf16).mean():.5f}, F1 fp32 {f1['fp32']:.4f} bf16 {f1['bf16']:.4f}")
    assert (fp32 == bf16).mean() >= 0.999 and abs(f1["fp32"] - f1["bf16"]) < 0.002
    assert f1["fp32"] > 0.8  # a trained model, so the comparison means something


def test_test_py_fuses_vessel_checkpoints_and_applies_tta(low_res, tmp_path):
    """test.py on the vessel task goes through the same predictor as OCT: a second checkpoint (--fusion), its weight
    and --tta each change the masks; weights 1 0 give exactly the first checkpoint's masks (threshold included)."""
    import test as test_script

    root, ckpt, _ = low_res
    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "drive_unet.pth.tar"
    common = ["--seg", "-d", str(root), "--device", "cpu"]

    def masks(name, *argv):
        out = test_script.main([*common, *argv, "--out", str(tmp_path / name)])
        return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*_mask.png"))])

    single = masks("single", "--seg-path", str(ckpt))
    fused = masks("fused", "--fusion", str(ckpt), str(shipped))
    weighted = masks("weighted", "--fusion", str(ckpt), str(shipped), "--fusion-weights", "1", "3")
    only_first = masks("first", "--fusion", str(ckpt), str(shipped), "--fusion-weights", "1", "0")
    tta = masks("tta", "--seg-path", str(ckpt), "--tta")
    assert single.shape[0] == 2 and set(np.unique(single)) <= {0, 255}
    changed = {k: float((v != single).mean()) for k, v in (("fused", fused), ("weighted", weighted), ("tta", tta))}
    print("share of mask pixels changed:", changed)
    assert all(c > 1e-3 for c in changed.values()) and (weighted != fused).any()
    assert np.array_equal(only_first, single)


# ----------------------------------------------------------------------------------------- any fundus camera
def _pooled_metrics(seg, photos, factor=1.0):
    """The shipped model on ``photos`` resized by ``factor`` (labels and field of view resized with them)."""
    from tools.rescale_photos import rescale

    ys, ss = [], []
    for p in photos:
        rgb, lab, fov = (p.rgb, p.label, p.fov) if factor == 1 else rescale(p.rgb, p.label, p.fov, factor)
        prob, _ = seg.predict(rgb, fov)
        ys.append(lab[fov]), ss.append(prob[fov])
    return binary_metrics(np.concatenate(ys), np.concatenate(ss), seg.threshold)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX): there bf16 is the fast path; elsewhere it is
    emulated, several times slower than fp32 (a 2-core CI machine without it took 186 s for the test below)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def test_shipped_model_holds_its_accuracy_on_photos_of_other_pixel_scales():
    """The 20 DRIVE test photos as a 999 x 960 camera (x1.77) and a smaller one (x0.6) would see them: with
    ``--scale auto`` AUC-ROC stays within 0.01 and F1 within 0.02 of native DRIVE (all three in bf16 where the CPU
    has it natively, else in fp32)."""
    from tasks.vessel import Segmenter

    seg = Segmenter.from_checkpoint(SHIPPED, amp=native_bf16())
    assert seg.task.train_diameter, "the shipped checkpoint records its training pixel scale"
    photos = [load_photo(r) for r in find_photos(DRIVE, "test")]
    native = _pooled_metrics(seg, photos)
    for factor in (1.77, 0.6):
        m = _pooled_metrics(seg, photos, factor)
        print(f"x{factor}: AUC {m['auc_roc']:.4f} F1 {m['f1']:.4f} (native {native['auc_roc']:.4f} {native['f1']:.4f})")
        assert abs(m["auc_roc"] - native["auc_roc"]) <= 0.01 and abs(m["f1"] - native["f1"]) <= 0.02


def _grey_border(p, rng):
    out = p.rgb.copy()
    out[~p.fov] = rng.integers(25, 36, ((~p.fov).sum(), 3))
    return out


def _jpeg(rgb, quality=75):
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_field_of_view_on_black_grey_and_jpeg_borders_matches_drive_masks():
    rng = np.random.default_rng(0)
    worst = {}
    for split in ("train", "test"):
        for rec in find_photos(DRIVE, split):
            p = load_photo(rec)
            for name, rgb in (("black", p.rgb), ("grey 25-35", _grey_border(p, rng)), ("jpeg q75", _jpeg(p.rgb))):
                fov = fov_from_photo(rgb)
                worst[name] = min(worst.get(name, 1.0), (fov & p.fov).sum() / (fov | p.fov).sum())
    print("lowest IoU of 40 photos:", worst)
    assert all(v >= 0.97 for v in worst.values()), worst
    # a crop inside the fundus has no border: all of it is the field of view; a circle cut by the frame is found
    p = load_photo(find_photos(DRIVE, "test")[0])
    assert fov_from_photo(p.rgb[200:400, 200:400]).all()
    cut = p.rgb[60:-60]
    iou = (fov_from_photo(cut) & p.fov[60:-60]).sum() / (fov_from_photo(cut) | p.fov[60:-60]).sum()
    assert iou >= 0.97, iou


def test_a_label_saved_as_jpeg_is_binarised_at_the_midpoint_with_one_warning(tmp_path, caplog):
    from data.photos import read_binary

    p = load_photo(find_photos(DRIVE, "test")[0])
    Image.fromarray(p.label.astype(np.uint8) * 255).save(tmp_path / "label.jpg", quality=75)
    with caplog.at_level("WARNING"):
        lab = read_binary(tmp_path / "label.jpg")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "label.jpg" in warnings[0] and "binarised at 127.5" in warnings[0], warnings
    assert (lab == p.label).mean() > 0.98 and abs(lab.mean() - p.label.mean()) < 0.01  # not "anything above 0"
    Image.fromarray(p.label.astype(np.uint8)).save(tmp_path / "zero_one.png")  # 0/1 labels stay exact, no warning
    caplog.clear()
    assert np.array_equal(read_binary(tmp_path / "zero_one.png"), p.label) and not caplog.records


def test_16_bit_grey_rgba_and_float_photos_predict_like_the_8_bit_photo(tmp_path):
    import tifffile

    from data.photos import read_rgb
    from tasks.vessel import Segmenter

    seg = Segmenter.from_checkpoint(SHIPPED, amp=native_bf16())
    p = load_photo(find_photos(DRIVE, "test")[1])
    tifffile.imwrite(tmp_path / "deep.tif", p.rgb.astype(np.uint16) * 257)  # 16-bit RGB TIFF
    assert np.array_equal(read_rgb(tmp_path / "deep.tif"), p.rgb)  # scaled by its range, not saturated
    _, reference = seg.predict(p.rgb, p.fov)
    for rgb in (read_rgb(tmp_path / "deep.tif"), p.rgb.astype(np.float32) / 255):
        _, mask = seg.predict(rgb, p.fov)
        assert (mask == reference).mean() >= 0.995
    Image.fromarray(np.dstack([p.rgb, np.full(p.rgb.shape[:2], 255, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(p.rgb[..., 1]).save(tmp_path / "grey.png")
    assert np.array_equal(read_rgb(tmp_path / "rgba.png"), p.rgb)
    assert read_rgb(tmp_path / "grey.png").shape == p.rgb.shape
    for bad in (p.rgb.astype(np.uint16), p.rgb.astype(np.float32)):  # 0..255 floats are not in [0, 1]
        with pytest.raises(ValueError, match="uint8 photo or floats in \\[0, 1\\]|must hold values in \\[0, 1\\]"):
            seg.predict(bad)


def test_preprocessing_is_green_or_clahe_and_every_use_of_the_checkpoint_applies_it(low_res, tmp_path):
    """``--preprocess``: what the network sees is the green channel (three times) or its CLAHE; the checkpoint
    records it, and a prediction with such a checkpoint is the plain model's prediction of the preprocessed photo;
    the training patches come from the preprocessed photos too."""
    from skimage.exposure import equalize_adapthist

    from data.photos import network_input
    from tasks.vessel import Segmenter, VesselTask
    from utils.checkpoint import load_checkpoint, save_checkpoint
    from utils.config import Settings

    rgb = load_photo(find_photos(DRIVE, "test")[0]).rgb
    green = network_input(rgb, "green")
    assert green.shape == rgb.shape and (green == rgb[..., 1:2]).all()
    clahe = network_input(rgb, "clahe")
    assert np.array_equal(
        clahe[..., 0], np.round(equalize_adapthist(rgb[..., 1], clip_limit=0.01) * 255).astype(np.uint8)
    )
    assert network_input(rgb, "rgb") is rgb
    with pytest.raises(ValueError, match="preprocess"):
        network_input(rgb, "hsv")

    root, ckpt, _ = low_res
    state = load_checkpoint(ckpt)
    state["settings"]["task_settings"]["preprocess"] = "clahe"
    save_checkpoint(tmp_path / "clahe.pth.tar", state)
    small = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] // 2, rgb.shape[0] // 2), Image.BILINEAR))
    prob_clahe, _ = Segmenter.from_checkpoint(str(tmp_path / "clahe.pth.tar")).predict(small)
    prob_plain, _ = Segmenter.from_checkpoint(str(ckpt)).predict(network_input(small, "clahe"))
    assert np.array_equal(prob_clahe, prob_plain)
    # a fusion of checkpoints trained on differently preprocessed photos, or another --preprocess than the
    # checkpoint's, would feed photos unlike the training ones: refused (review finding)
    with pytest.raises(ValueError, match="differently preprocessed"):
        Segmenter.from_checkpoint([str(ckpt), str(tmp_path / "clahe.pth.tar")])
    settings = Settings.from_dict(state["settings"])
    with pytest.raises(ValueError, match="--preprocess green, but the checkpoint was trained on clahe"):
        VesselTask(settings.with_task(preprocess="green"), states=[state])
    # a run folder's normalisation is of the photos as the network sees them: another --preprocess, other stats
    from engine.run_folder import data_source

    records = VesselTask(settings).records("train", data_dir=root)
    assert data_source(settings, records, VesselTask(settings)) != data_source(
        settings.with_task(preprocess="rgb"), records, VesselTask(settings)
    )
    task = VesselTask(settings)
    from engine.trainer import augment_for

    patches = task.train_dataset(task.records("train", data_dir=root), augment_for(settings))
    first = load_photo(task.records("train", data_dir=root)[0])
    assert np.array_equal(patches.photos[0].rgb, network_input(first.rgb, "clahe"))


def test_scale_brings_probabilities_back_as_log_odds():
    """Under a scale factor the photo is resized, predicted, and the map brought back with
    ``inference.predictor.resample_probabilities`` (log-odds), not by interpolating the probabilities."""
    import torch
    import torch.nn.functional as F

    from inference.predictor import resample_probabilities
    from tasks.vessel import Segmenter

    rgb = load_photo(find_photos(DRIVE, "test")[0]).rgb[200:360, 200:360].copy()  # 160 x 160, inside the FOV
    fov = np.ones(rgb.shape[:2], bool)
    scaled = Segmenter.from_checkpoint(SHIPPED, device="cpu", scale=2.0, amp=False)
    prob, _ = scaled.predict(rgb, fov)
    big = np.asarray(Image.fromarray(rgb).resize((320, 320), Image.BILINEAR))  # as VesselTask.predict resizes
    at_scale, _ = Segmenter.from_checkpoint(SHIPPED, device="cpu", scale="none", amp=False).predict(
        big, np.ones((320, 320), bool)
    )
    fine = torch.from_numpy(at_scale)[None, None]
    expected = resample_probabilities(fine, (160, 160), antialias=True)[0, 0].numpy()
    assert prob.shape == (160, 160) and np.allclose(prob, expected, atol=1e-5)
    plain = F.interpolate(fine, size=(160, 160), mode="bilinear", antialias=True)[0, 0].numpy()
    assert np.abs(prob - plain).max() > 1e-3  # the old way differs
