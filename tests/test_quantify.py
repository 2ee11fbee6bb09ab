"""Fluid quantification (hand-computed volumes), the RETOUCH layout through the ordinary drivers, and
predict.py --report from volumes in other formats."""

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import eval as eval_script
import predict as predict_script
import train as train_script
from data.common import DatasetError
from data.retouch import find_retouch_volumes, map_labels, parse_label_map
from engine.cli import cli_main
from metrics.quantify import quantify, ranges

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--name", "unet", "--channels", "4", "8", "8", "16", "16", "--batch-size", "4", "-j", "0", "--lr", "0.002"]
FAST += ["--loss", "mix_3", "--deterministic"]
NAMES = ("REA", "SRF", "PED")


def test_fluid_volumes_affected_bscans_and_enface_maps_by_hand():
    labels = np.zeros((4, 10, 6), np.uint8)
    labels[1, 2:5, 1:4] = 1  # 3 x 3 = 9 REA voxels on slice 2
    labels[2, 2:4, 1:4] = 1  # 2 x 3 = 6 more on slice 3
    labels[3, 6:10, 5] = 3  # 4 PED voxels on slice 4, one A-scan
    spacing = (0.05, 0.002, 0.01)  # mm: a voxel of 1e-6 mm^3 = 1e-3 nL
    q = quantify(labels, spacing, NAMES)
    assert q["voxels"] == {"REA": 15, "SRF": 0, "PED": 4}
    assert q["volume_nl"]["REA"] == pytest.approx(0.015, rel=1e-12)
    assert q["volume_nl"]["SRF"] == 0 and q["volume_nl"]["PED"] == pytest.approx(0.004, rel=1e-12)
    assert q["affected_bscans"] == {"REA": [2, 3], "SRF": [], "PED": [4]}
    assert q["enface"]["REA"].shape == (4, 6) and q["enface_unit"] == "mm"
    assert q["enface"]["REA"][1, 2] == pytest.approx(3 * 0.002) and q["enface"]["REA"][2, 2] == pytest.approx(0.004)
    assert q["enface"]["PED"][3, 5] == pytest.approx(4 * 0.002) and q["enface"]["PED"].sum() == pytest.approx(0.008)
    # a real-sized case: a Cirrus 512x128 cube (6 x 6 x 2 mm, 1024 rows); 1000 voxels of SRF
    cube = np.zeros((128, 1024, 512), np.uint8)
    cube[64, 500:510, 100:200] = 2
    voxel_mm3 = (6 / 128) * (2 / 1024) * (6 / 512)
    got = quantify(cube, (6 / 128, 2 / 1024, 6 / 512), NAMES)["volume_nl"]["SRF"]
    assert got == pytest.approx(1000 * voxel_mm3 * 1000, rel=1e-12)  # 1.073 nL
    unknown = quantify(labels, None, NAMES)
    assert unknown["volume_nl"] is None and unknown["enface_unit"] == "voxels" and unknown["enface"]["REA"][1, 2] == 3
    assert ranges([3, 4, 5, 6, 7, 12]) == "3-7, 12" and ranges([]) == "" and ranges([1]) == "1"


def test_label_map_maps_retouch_values_and_names_an_unknown_one(tmp_path):
    assert parse_label_map("1:1,2:2,3:3") == {0: 0, 1: 1, 2: 2, 3: 3}
    mapping = parse_label_map("1:2, 2:1")
    assert map_labels(np.array([[0, 1, 2]]), mapping, tmp_path / "r.mhd").tolist() == [[0, 2, 1]]
    with pytest.raises(DatasetError, match=r"r\.mhd: label values \[3\] are not in --label-map"):
        map_labels(np.array([0, 3]), mapping, tmp_path / "r.mhd")
    for bad in ("1-1", "1:7", "1:1,1:2"):
        with pytest.raises(ValueError, match="--label-map"):
            parse_label_map(bad)


@pytest.fixture(scope="module")
def retouch(tmp_path_factory):
    from data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("retouch") / "RETOUCH"
    write_dataset(root, seed=5, train=4, val=2, test=2, slices=8, height=64, width=48, layout="retouch")
    return root


def test_retouch_layout_is_split_into_train_val_and_test(retouch):
    cases = sorted(p.parent.name for p in retouch.rglob("oct.mhd"))
    assert cases == ["TEST007", "TEST008", *(f"TRAIN00{i}" for i in range(1, 7))]
    train = find_retouch_volumes(retouch, "train", val_count=2)
    val = find_retouch_volumes(retouch, "val", val_count=2)
    test = find_retouch_volumes(retouch, "test", val_count=2)
    assert [r.pid for r in val] == ["TRAIN001", "TRAIN006"]  # spread over the sorted cases
    assert [r.pid for r in train] == ["TRAIN002", "TRAIN003", "TRAIN004", "TRAIN005"]
    assert [r.pid for r in test] == ["TEST007", "TEST008"] and all(r.label_file is not None for r in test)
    assert train[0].num_slices == 8 and [p.suffix for p in train[0].image_paths] == [".mhd", ".raw"]
    with pytest.raises(DatasetError, match="--val-count 6 must leave training cases"):
        find_retouch_volumes(retouch, "train", val_count=6)


def test_a_new_grey_rule_decodes_cached_volume_files_again(retouch, tmp_path, monkeypatch):
    """A cache entry holds a volume as the grey rule of its day made it 8-bit: a new rule must not reuse it."""
    import data.retouch
    from data.cache import VolumeCache

    rec = find_retouch_volumes(retouch, "train", val_count=2)[0]
    cache = VolumeCache(tmp_path / "cache")
    cache.load(rec)
    cache.load(rec)
    assert len(list((tmp_path / "cache").glob("*-image-*.npy"))) == 1  # decoded once
    monkeypatch.setattr(data.retouch, "GREY_RULE", "another rule")
    cache.load(rec)
    assert len(list((tmp_path / "cache").glob("*-image-*.npy"))) == 2


def test_a_model_trained_under_another_grey_rule_is_reported(retouch, tmp_path, caplog):
    """Checkpoints of volume-file data record how 16-bit volumes became 8-bit; another rule is warned about."""
    import logging

    from data.volumes import GREY_RULE
    from tasks import get_task
    from utils.config import Settings

    task = get_task("oct")(
        Settings(data_dir=str(retouch), task_settings={"val_count": 2}, cache_dir=str(tmp_path / "c")).validate()
    )
    stats = task.normalization(find_retouch_volumes(retouch, "train", val_count=2))
    assert stats["grey_rules"] == [GREY_RULE]
    caplog.clear()
    with caplog.at_level(logging.WARNING, "tasks.oct"):
        get_task("oct")(Settings().validate(), states=[{"normalization": stats}])
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        get_task("oct")(Settings().validate(), states=[{"normalization": {**stats, "grey_rules": ["min-max"]}}])
    found = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(found) == 1 and "mapped to 8 bits by ['min-max']" in found[0]


def test_retouch_trains_and_evaluates_through_the_drivers(retouch, tmp_path):
    run = tmp_path / "run"
    argv = [*FAST, "-d", str(retouch), "--out", str(run), "--cache-dir", str(tmp_path / "cache"), "--val-count", "2"]
    final = train_script.main([*argv, "--epochs", "2"])
    assert json.loads((run / "settings.json").read_text())["task_settings"]["layout"] == "auto"
    assert {"dice_mean", "auc_mean", "dice_REA"} <= set(final)
    ckpt = run / "checkpoint" / "model_best.pth.tar"
    for split in ("val", "test"):
        out = tmp_path / f"eval_{split}"
        eval_script.main(["--seg-path", str(ckpt), "--split", split, "--out", str(out)])
        rows = (out / "per_volume.csv").read_text().splitlines()
        assert len(rows) == 3 and rows[1].startswith(("TRAIN", "TEST"))
        assert 0 <= json.loads((out / "metrics.json").read_text())["dice_mean"] <= 1
    # the data options replace the checkpoint's settings on the inference command line: on other data; on the
    # training data another --val-count would score training cases as validation
    with pytest.raises(ValueError, match="--val-count 3, but the model was trained holding out 2 cases"):
        eval_script.main(["--seg-path", str(ckpt), "--split", "val", "--val-count", "3", "--out", str(tmp_path / "x")])
    other = tmp_path / "other"
    shutil.copytree(retouch, other)
    out = tmp_path / "eval_val3"
    argv = ["--seg-path", str(ckpt), "-d", str(other), "--split", "val", "--val-count", "3", "--out", str(out)]
    eval_script.main(argv)
    assert len((out / "per_volume.csv").read_text().splitlines()) == 4


def _cli(module, argv, monkeypatch) -> str:
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    with pytest.raises(SystemExit) as stop:
        cli_main(f"{module.__name__}.py", module.parse_args, module.main)
    return stop.value.code


def test_predict_report_quantifies_volumes_of_two_formats(retouch, tmp_path, monkeypatch):
    from data.synthetic import write_dataset

    run = tmp_path / "run"
    argv = [*FAST, "-d", str(retouch), "--out", str(run), "--cache-dir", str(tmp_path / "cache"), "--val-count", "2"]
    train_script.main([*argv, "--epochs", "1"])
    ckpt = str(run / "checkpoint" / "model_best.pth.tar")
    folders = write_dataset(tmp_path / "ac", seed=9, train=1, val=1, test=1, slices=8, height=64, width=48)
    slices = next((folders / "Edema_testset" / "original_images").iterdir())
    mhd = retouch / "RETOUCH-TestSet-Mixed" / "TEST007" / "oct.mhd"
    out = tmp_path / "pred"
    # a folder of BMP slices has no spacing of its own: one clear error, nothing written
    message = _cli(
        predict_script, [str(slices), str(mhd), "--checkpoint", ckpt, "--out", str(out), "--report"], monkeypatch
    )
    assert message.startswith(f"error: {slices}: the voxel spacing is unknown") and "--spacing" in message
    assert not out.exists()
    spacing = ["--spacing", "0.5", "0.02", "0.1"]
    predict_script.main([str(slices), "--checkpoint", ckpt, "--out", str(out), "--report", *spacing])
    out_mhd = tmp_path / "pred_mhd"  # the MetaImage's own spacing: 6 mm / 8 B-scans, 2 mm / 64 rows, 6 mm / 48
    predict_script.main([str(mhd), "--checkpoint", ckpt, "--out", str(out_mhd), "--report"])
    for folder, spacing_mm in ((out, (0.5, 0.02, 0.1)), (out_mhd, (6 / 8, 2 / 64, 6 / 48))):
        [row] = list(csv.DictReader((folder / "quantify.csv").open()))
        labels = np.load(folder / "segment" / f"{row['patient']}_labelMark_volumes.npy")
        assert [float(row[k]) for k in ("dz_mm", "dy_mm", "dx_mm")] == pytest.approx(spacing_mm, rel=1e-6)
        for k, name in enumerate(NAMES, start=1):
            voxels = int((labels == k).sum())
            assert int(row[f"{name}_voxels"]) == voxels
            assert float(row[f"{name}_nl"]) == pytest.approx(voxels * np.prod(spacing_mm) * 1000, abs=1e-4)
            bscans = np.flatnonzero((labels == k).any(axis=(1, 2))).size
            assert int(row[f"{name}_bscans"]) == bscans
    assert row["patient"] == "TEST007"
    report = out_mhd / "report"
    assert (report / "index.html").is_file() and (report / "TEST007.html").is_file()
    assert "TEST007.html" in (report / "index.html").read_text()
    # an input named like one of the output folder's own files or folders would overwrite it
    argv = [str(tmp_path / "x" / "index.nii.gz"), "--checkpoint", ckpt, "--out", str(tmp_path / "i"), "--report"]
    assert "its name 'index' is one of the output folder's own" in _cli(predict_script, argv, monkeypatch)
    # --spacing is for OCT volumes: the vessel model refuses it
    argv = [str(slices), "--task", "vessel", "--spacing", "1", "1", "1", "--out", str(tmp_path / "v")]
    message = _cli(predict_script, argv, monkeypatch)
    assert message.startswith("error: --spacing applies to OCT volumes"), message


def test_one_case_name_in_two_vendor_folders_is_refused_in_every_split(retouch, tmp_path):
    import shutil

    root = tmp_path / "two"
    for vendor in ("Cirrus", "Topcon"):
        for case in ("TRAIN001", "TRAIN002", "TRAIN003"):
            shutil.copytree(retouch / "RETOUCH-TrainingSet-Mixed" / case, root / f"RETOUCH-TrainingSet-{vendor}" / case)
    for split in ("train", "val"):
        with pytest.raises(DatasetError, match="are both case 'TRAIN001'"):
            find_retouch_volumes(root, split, val_count=1)
