"""Physical scale for OCT (issue 23, item 3): a checkpoint records its training pixel scale, and ``--scale auto``
brings B-scans of another scale to it (from their files' spacing where both sides know one, else from the retina's
thickness, ``data.retina``), predicting at the input's own size."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import predict as predict_script
from data.retina import estimate_spacing
from data.synthetic import generate_volume
from models import build_model
from tasks import build_task
from tasks.oct import Volume, resample, spread_bscans
from utils.checkpoint import save_checkpoint
from utils.config import Settings

SMALL = [4, 8, 8, 16, 16]


@pytest.fixture(scope="module")
def volume():
    image, _ = generate_volume(np.random.default_rng(5), 6, 256, 128, "cirrus")
    return image


def checkpoint(path, pixel_scale):
    torch.manual_seed(0)
    model = build_model("unet", channels=tuple(SMALL))
    norm = {"mean": [0.2] * 3, "std": [0.1] * 3, "slice_sizes": [[256, 128]]}
    if pixel_scale is not None:
        norm["pixel_scale"] = pixel_scale
    state = {"model_name": "unet", "settings": Settings(name="unet", channels=SMALL).to_dict(), "epoch": 1}
    save_checkpoint(path, {**state, "state_dict": model.state_dict(), "normalization": norm})
    return path


def task_for(volume, scale="auto", pixel_scale="same", known=None):
    if pixel_scale == "same":
        est = estimate_spacing(spread_bscans(volume))
        pixel_scale = {"estimated_um": [est.axial_um, est.lateral_um], "known_um": known}
    settings = Settings(name="unet", channels=SMALL).with_task(scale=scale)
    return build_task(settings, [{"normalization": {"pixel_scale": pixel_scale}}])


def test_same_scale_is_left_alone_and_other_scales_are_brought_to_the_training_one(volume):
    task = task_for(volume)
    assert task.scale_factors(Volume(volume, None)) == (1.0, 1.0)
    tall = resample(torch.from_numpy(volume), (512, 128), "bilinear").numpy()  # rows x2: a finer axial spacing
    fy, fx = task.scale_factors(Volume(tall, None, name="tall"))
    assert fy == pytest.approx(0.5, rel=0.1) and fx == 1.0
    squashed = resample(torch.from_numpy(volume), (128, 256), "bilinear").numpy()  # rows /2, columns x2
    fy, fx = task.scale_factors(Volume(squashed, None, name="squashed"))
    assert fy == pytest.approx(2.0, rel=0.1) and fx == pytest.approx(0.5, rel=1e-6)  # a 6 mm line over 256 columns


def test_known_spacing_on_both_sides_wins_over_the_estimate(volume):
    task = task_for(volume, known=[7.8125, 46.875])  # the checkpoint's training volumes had a spacing in their files
    twice = Volume(volume, None, spacing=(0.1875, 2 * 0.0078125, 0.046875))  # says 2x coarser rows than training
    assert task.scale_factors(twice) == (2.0, 1.0)
    unknown_spacing = Volume(volume, None)  # the same picture without a spacing: estimated, the same scale
    assert task.scale_factors(unknown_spacing) == (1.0, 1.0)


def test_scale_none_a_factor_and_a_checkpoint_without_a_scale(volume, caplog):
    assert task_for(volume, scale="none").scale_factors(Volume(volume[:, ::2], None)) == (1.0, 1.0)
    assert task_for(volume, scale=0.5).scale_factors(Volume(volume, None)) == (0.5, 0.5)
    old = task_for(volume, pixel_scale=None)
    with caplog.at_level(logging.WARNING):
        assert old.scale_factors(Volume(volume, None)) == (1.0, 1.0)
        old.scale_factors(Volume(volume, None))
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1  # said once
    assert "records no training pixel scale" in caplog.records[0].message


def test_no_retina_to_measure_is_said_and_predicted_at_its_own_size(volume, caplog):
    noise = np.random.default_rng(0).integers(0, 255, (2, 256, 128), dtype=np.uint8)
    with caplog.at_level(logging.WARNING):
        assert task_for(volume).scale_factors(Volume(noise, None, name="noise.png")) == (1.0, 1.0)
    assert "noise.png: no retina found" in caplog.text and "give --scale FACTOR" in caplog.text


def test_predict_resamples_a_bscan_and_writes_labels_of_its_own_size(volume, tmp_path, caplog):
    est = estimate_spacing(spread_bscans(volume))
    ckpt = checkpoint(tmp_path / "m.pth.tar", {"estimated_um": [est.axial_um, est.lateral_um], "known_um": None})
    tall = resample(torch.from_numpy(volume[2:3]), (512, 128), "bilinear").numpy()[0]
    Image.fromarray(tall).save(tmp_path / "tall.png")
    with caplog.at_level(logging.INFO):
        written = predict_script.main(
            [str(tmp_path / "tall.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
        )
    assert "resampled by 0.5" in caplog.text  # 0.50 x 1.00, give or take the estimate
    labels = next(p for p in written if p.name == "tall_labels.png")
    assert np.asarray(Image.open(labels)).shape == (512, 128)


def test_resample_keeps_dtype_and_labels_exact():
    labels = torch.tensor([[[0, 1], [2, 3]]], dtype=torch.uint8)
    up = resample(labels, (4, 4), "nearest")
    assert up.dtype == torch.uint8 and up[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert torch.equal(resample(up, (2, 2), "nearest"), labels)
