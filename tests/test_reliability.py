"""Faults: killed and interrupted runs, NaN losses, foreign checkpoints, bad input, hostile names, memory."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train as train_script
from data.cache import VolumeCache
from data.common import DatasetError
from data.dataset import SliceDataset
from data.oct import find_volumes, read_grey
from data.transforms import IGNORE_INDEX
from engine.trainer import Trainer
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.config import Settings

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--name",
    "unet",
    "--channels",
    "4",
    "8",
    "8",
    "16",
    "16",
    "--batch-size",
    "4",
    "-j",
    "0",
    "--lr",
    "0.002",
    "--loss",
    "mix_3",
    "--deterministic",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data.synthetic import write_dataset

    return write_dataset(
        tmp_path_factory.mktemp("rel") / "oct", seed=3, train=3, val=1, test=1, slices=8, height=64, width=48
    )


def _argv(data, out, *extra):
    return [*FAST, "-d", str(data), "--out", str(out), "--cache-dir", str(out.parent / "cache"), *extra]


def _weights(run):
    return load_checkpoint(run / "checkpoint" / "checkpoint_latest.pth.tar")["state_dict"]


def _same(a, b):
    return all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0) for k in a)


def _spawn(argv):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_step(run, line, proc, timeout=120):
    """Until the run's log holds ``line`` (a progress line of ``--log-every``): a point inside an epoch that does not
    depend on how fast this machine is."""
    log_file = run / "train.log"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if log_file.exists() and line in log_file.read_text():
            return
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    raise TimeoutError(f"no {line!r} in {log_file} in {timeout}s")


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    train_script.main(_argv(data, run, "--epochs", "3", "--steps-per-epoch", "150"))
    return _weights(run)


def test_sigkill_mid_epoch_then_resume_auto_ends_with_the_same_weights(data, tmp_path, uninterrupted):
    run = tmp_path / "run"
    argv = _argv(data, run, "--epochs", "3", "--steps-per-epoch", "150")
    proc = _spawn([*argv, "--log-every", "10"])
    _wait_for_step(run, "epoch 2/3 step 20/150", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(run / "checkpoint" / "checkpoint_latest.pth.tar")["epoch"] == 1  # killed inside epoch 2
    train_script.main([*argv, "--resume", "auto"])
    assert _same(_weights(run), uninterrupted)


def test_sigterm_saves_mid_epoch_and_resume_matches(data, tmp_path, uninterrupted):
    run = tmp_path / "run"
    argv = _argv(data, run, "--epochs", "3", "--steps-per-epoch", "150")
    proc = _spawn([*argv, "--log-every", "10"])
    _wait_for_step(run, "epoch 2/3 step 20/150", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    saved = load_checkpoint(run / "checkpoint" / "checkpoint_latest.pth.tar")
    assert saved["epoch"] == 1 and 0 < saved["step"] < 150  # saved in the middle of epoch 2
    assert b"saved" in proc.stderr.read()
    train_script.main([*argv, "--resume", "auto"])
    assert _same(_weights(run), uninterrupted)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    settings = Settings.from_dict(
        vars(train_script.parse_args(_argv(data, run, "--epochs", "3", "--steps-per-epoch", "4")))
    ).validate()
    trainer = Trainer(settings)
    net, real_loss = trainer.step_modules.eager
    calls = []

    def poisoned(*a, **k):
        parts = real_loss(*a, **k)
        calls.append(1)
        if len(calls) == 7:  # epoch 2, step 3
            parts["total"] = parts["total"] * float("nan")
        return parts

    trainer.step_modules.eager = (net, poisoned)
    with pytest.raises(FloatingPointError, match=r"epoch 2 step 3 .*checkpoint_latest.pth.tar.*epoch 1"):
        trainer.fit()
    assert load_checkpoint(run / "checkpoint" / "checkpoint_latest.pth.tar")["epoch"] == 1


def test_a_kill_between_the_best_and_the_latest_checkpoint_loses_no_best_model(data, tmp_path, monkeypatch):
    """model_best is written before checkpoint_latest, so no best_score lacks its weights. Resumed from a latest
    whose best_score is lower than model_best's (a kill between the two writes), model_best keeps the higher one.
    A model_best deleted by hand is reported on resume and the next epoch becomes the best. --resume auto passes
    over a shipped (optimiser-free) copy in the checkpoint folder."""
    import engine.checkpointer as trainer_mod

    run = tmp_path / "run"
    order = []
    real_save = trainer_mod.save_checkpoint
    monkeypatch.setattr(trainer_mod, "save_checkpoint", lambda p, st: order.append(Path(p).name) or real_save(p, st))
    train_script.main(_argv(data, run, "--epochs", "1", "--steps-per-epoch", "1"))
    assert order == ["model_best.pth.tar", "checkpoint_latest.pth.tar"]  # epoch 1 is the best so far
    (run / "checkpoint" / "model_best.pth.tar").unlink()
    train_script.main([*_argv(data, run, "--epochs", "2", "--steps-per-epoch", "1"), "--resume", "auto"])
    assert "model_best.pth.tar is missing (deleted?)" in (run / "train.log").read_text()
    assert load_checkpoint(run / "checkpoint" / "model_best.pth.tar")["epoch"] == 2
    from utils.checkpoint import save_checkpoint, shrink_checkpoint

    best = load_checkpoint(run / "checkpoint" / "model_best.pth.tar")
    save_checkpoint(run / "checkpoint" / "model_best.pth.tar", {**best, "best_score": 1e9})  # unbeatable
    latest = run / "checkpoint" / "checkpoint_latest.pth.tar"
    argv = [*_argv(data, run, "--epochs", "3", "--steps-per-epoch", "1"), "--resume", str(latest)]
    train_script.main(argv)
    assert load_checkpoint(run / "checkpoint" / "model_best.pth.tar")["epoch"] == 2  # epoch 3 did not beat 1e9
    shrink_checkpoint(latest, run / "checkpoint" / "shipped.pth.tar")  # epoch 3, the furthest, but no optimiser
    latest.write_bytes(latest.read_bytes()[:100])  # damaged: --resume auto must fall back to model_best
    train_script.main([*_argv(data, run, "--epochs", "4", "--steps-per-epoch", "1"), "--resume", "auto"])
    assert load_checkpoint(latest)["epoch"] == 4 and "model_best.pth.tar at epoch 3" in (run / "train.log").read_text()


def test_resume_refuses_another_model(data, tmp_path):
    run = tmp_path / "run"
    train_script.main(_argv(data, run, "--epochs", "1", "--steps-per-epoch", "1"))
    with pytest.raises(CheckpointError, match="holds a 'unet' model, not 'unet_nested'"):
        train_script.main([*_argv(data, run, "--epochs", "2"), "--name", "unet_nested", "--resume", "auto"])


def test_a_signal_during_validation_saves_the_epoch_then_exits(data, tmp_path):
    run = tmp_path / "run"
    settings = Settings.from_dict(vars(train_script.parse_args(_argv(data, run, "--epochs", "3")))).validate()

    class SignalledInValidation(Trainer):
        def validate(self):
            self.stop_signal = signal.SIGTERM  # what the handler does when SIGTERM arrives here
            return super().validate()

    with pytest.raises(SystemExit) as stop:
        SignalledInValidation(settings).fit()
    assert stop.value.code == 128 + signal.SIGTERM
    saved = load_checkpoint(run / "checkpoint" / "checkpoint_latest.pth.tar")
    assert saved["epoch"] == 1 and "step" not in saved  # the whole epoch, validated
    assert len((run / "log.csv").read_text().splitlines()) == 2


def test_resume_auto_skips_a_damaged_checkpoint_and_refuses_another_task_or_a_newer_format(data, tmp_path):
    from utils.checkpoint import FORMAT_VERSION, save_checkpoint

    run = tmp_path / "run"
    train_script.main(_argv(data, run, "--epochs", "2", "--steps-per-epoch", "1", "--save-every-checkpoint"))
    ckpts = run / "checkpoint"
    latest = ckpts / "checkpoint_latest.pth.tar"
    good = load_checkpoint(latest)
    for name in ("model_best.pth.tar", "checkpoint_002.pth.tar"):
        (ckpts / name).unlink()
    latest.write_bytes(latest.read_bytes()[:500])  # the newest, damaged after it was written
    argv = [*_argv(data, run, "--epochs", "3", "--steps-per-epoch", "1"), "--resume", "auto"]
    final = train_script.main(argv)  # resumed from checkpoint_001, the newest one that loads
    assert "dice_mean" in final and load_checkpoint(latest)["epoch"] == 3
    # log.csv is append-only: the damaged line's epoch 2 stays, the resumed line's epoch 2 and 3 follow (the last
    # row of an epoch is the run's)
    assert [r.split(",")[0] for r in (run / "log.csv").read_text().splitlines()] == ["epoch", "1", "2", "2", "3"]
    for path in ckpts.glob("*.pth.tar"):  # only the other task's checkpoint is left to resume
        path.unlink()
    other = {**good, "settings": {**good["settings"], "task": "vessel"}}
    save_checkpoint(latest, {k: v for k, v in other.items() if k != "format_version"})
    with pytest.raises(CheckpointError, match="a checkpoint of task 'vessel', not 'oct'"):
        train_script.main(argv)
    newer = {**good, "format_version": FORMAT_VERSION + 1}
    torch.save(newer, latest)
    with pytest.raises(CheckpointError, match=rf"format {FORMAT_VERSION + 1} is newer than this code's"):
        load_checkpoint(latest)


def test_resident_memory_does_not_grow_across_epochs(data, tmp_path):
    rss = []

    class Probe(Trainer):
        def validate(self):
            out = super().validate()
            with open("/proc/self/statm") as f:
                rss.append(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
            return out

    settings = Settings.from_dict(
        vars(train_script.parse_args(_argv(data, tmp_path / "run", "--epochs", "8", "--steps-per-epoch", "4")))
    ).validate()
    Probe(settings).fit()
    assert rss[-1] - rss[2] < 40, rss  # MiB; the first epochs warm up allocators and caches


# ---------------------------------------------------------------------------------------------- bad input
def _copy(data, tmp_path):
    import shutil

    shutil.copytree(data, tmp_path / "oct")
    return tmp_path / "oct"


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "Edema_trainingset" / "original_images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no volumes found for split 'train'"):
        find_volumes(tmp_path, "train")


def test_volumes_of_different_slice_counts_train_together(data, tmp_path):
    root = _copy(data, tmp_path)
    rec = find_volumes(root, "train")[0]
    for p in (*rec.image_paths[6:], *rec.label_paths[6:]):
        p.unlink()
    recs = find_volumes(root, "train")
    assert sorted(r.num_slices for r in recs) == [6, 8, 8]
    assert len(SliceDataset(recs, VolumeCache(tmp_path / "c"), None)) == 22


def test_a_slice_of_another_size_inside_a_volume_is_named(data, tmp_path):
    root = _copy(data, tmp_path)
    bad = find_volumes(root, "train")[0].image_paths[3]
    Image.open(bad).resize((40, 64)).save(bad)
    with pytest.raises(DatasetError, match=r"4\.bmp: slice is 64x40 but 1\.bmp is 64x48"):
        VolumeCache(tmp_path / "c").load(find_volumes(root, "train")[0])


def test_volumes_of_different_sizes_need_resize_or_crop(data, tmp_path):
    root = _copy(data, tmp_path)
    rec = find_volumes(root, "train")[0]
    for p in (*rec.image_paths, *rec.label_paths):
        Image.open(p).resize((40, 64), Image.NEAREST).save(p)
    with pytest.raises(DatasetError, match=r"64x40 .* 64x48.*--resize or --crop-size"):
        SliceDataset(find_volumes(root, "train"), VolumeCache(tmp_path / "c"), None)


def test_a_crop_larger_than_the_slices_is_reported_once(data, tmp_path, caplog):
    import logging

    from data.transforms import Augment

    records = find_volumes(data, "train")
    h, w = VolumeCache(tmp_path / "c").load(records[0])[0].shape[1:]
    with caplog.at_level(logging.WARNING, "data.dataset"):
        SliceDataset(records, VolumeCache(tmp_path / "c"), Augment(crop_size=min(h, w)))  # fits: no warning
        assert not caplog.records
        ds = SliceDataset(records, VolumeCache(tmp_path / "c"), Augment(crop_size=max(h, w) + 1))
        SliceDataset(records, VolumeCache(tmp_path / "c"), Augment(resize=(32, 24), crop_size=30))
    found = [r.getMessage() for r in caplog.records]
    assert len(found) == 2
    assert f"--crop-size {max(h, w) + 1} is larger than" in found[0] and f"({h}x{w})" in found[0]
    assert f"at most {min(h, w)}" in found[0]
    assert "--resize's slices (32x24)" in found[1] and "at most 24" in found[1]
    item = ds[0]  # padded, and the padding ignored
    assert item["image"].shape[1:] == (max(h, w) + 1,) * 2 and (item["label"] == IGNORE_INDEX).any()


def test_a_case_in_two_splits_is_refused(data, tmp_path):
    """A training eye copied (same patient ID) or linked (same files) into validation would choose model_best on
    seen data; the run stops before training, naming both cases."""
    import shutil

    for how in ("copy", "link"):
        root = _copy(data, tmp_path / how)
        train = find_volumes(root, "train")[0]
        dst = root / "Edema_validationset"
        if how == "copy":  # the same patient ID in both splits
            shutil.copytree(train.image_paths[0].parent, dst / "original_images" / f"{train.pid}.img")
            shutil.copytree(train.label_paths[0].parent, dst / "label_images" / train.label_paths[0].parent.name)
            match = rf"train case '{train.pid}' and val case '{train.pid}' are patient '{train.pid}'"
        else:  # another name, the same folders
            (dst / "original_images" / "LINKED.img").symlink_to(train.image_paths[0].parent)
            (dst / "label_images" / "LINKED_labelMark").symlink_to(train.label_paths[0].parent)
            match = rf"train case '{train.pid}' and val case 'LINKED' are the same files"
        run = tmp_path / how / "run"
        with pytest.raises(DatasetError, match=match):
            train_script.main(_argv(root, run, "--epochs", "1", "--steps-per-epoch", "1"))
        assert not (run / "checkpoint" / "checkpoint_latest.pth.tar").exists()
    # a copy under another patient ID: other folders, other names, the same B-scans
    root = _copy(data, tmp_path / "renamed")
    train = find_volumes(root, "train")[0]
    dst = root / "Edema_validationset"
    shutil.copytree(train.image_paths[0].parent, dst / "original_images" / "RENAMED.img")
    shutil.copytree(train.label_paths[0].parent, dst / "label_images" / "RENAMED_labelMark")
    with pytest.raises(DatasetError, match=rf"train case '{train.pid}' and val case 'RENAMED' are copies of one scan"):
        train_script.main(_argv(root, tmp_path / "renamed" / "run", "--epochs", "1", "--steps-per-epoch", "1"))
    # per-file links (cp -rs) into the test split: other folders, the same slice files
    root = _copy(data, tmp_path / "files")
    train = find_volumes(root, "train")[0]
    for part, paths in (("original_images", train.image_paths), ("label_images", train.label_paths)):
        folder = root / "Edema_testset" / part / ("LINKS.img" if part == "original_images" else "LINKS_labelMark")
        folder.mkdir()
        for p in paths:
            (folder / p.name).symlink_to(p)
    with pytest.raises(DatasetError, match=rf"train case '{train.pid}' and test case 'LINKS' are the same files"):
        train_script.main(_argv(root, tmp_path / "files" / "run", "--epochs", "1", "--steps-per-epoch", "1"))
    # the test split linked to the validation split (no test labels were released): fine, it is not trained on
    root = _copy(data, tmp_path / "valtest")
    shutil.rmtree(root / "Edema_testset")
    (root / "Edema_testset").symlink_to(root / "Edema_validationset")
    train_script.main(_argv(root, tmp_path / "valtest" / "run", "--epochs", "1", "--steps-per-epoch", "1"))


def test_two_eyes_that_share_one_blank_b_scan_are_not_called_copies(data, tmp_path):
    """Copies are told by the B-scans at a quarter, half and three quarters together: two eyes whose middle
    B-scans are the same bytes (a blank slice in an export) are different cases."""
    import shutil

    from tasks import get_task

    root = _copy(data, tmp_path)
    train, val = find_volumes(root, "train")[0], find_volumes(root, "val")[0]
    mid = len(train.image_paths) // 2
    shutil.copy(val.image_paths[mid], train.image_paths[mid])
    task = get_task("oct")(Settings(data_dir=str(root)).validate())
    task.check_disjoint(find_volumes(root, "train"), {"val": find_volumes(root, "val")})  # no error


def test_vessel_splits_may_reuse_names_and_a_flat_folder_is_its_own_test_split(tmp_path):
    """Vessel photos are numbered per split (train/image/1.png, test/image/1.png: different photos); without a
    test folder the test split is every photo, training ones included, which is not a leak to refuse."""
    from data.photos import PhotoRecord
    from tasks import get_task

    task = get_task("vessel")(Settings(task="vessel", num_classes=2, num_detect=0, class_weights=[1, 1]).validate())
    for d in ("train", "test"):
        (tmp_path / d).mkdir()
        for n in ("1", "2"):
            (tmp_path / d / f"{n}.png").write_bytes(f"photo {d} {n}".encode())
    train = [PhotoRecord(n, tmp_path / "train" / f"{n}.png", None, None) for n in ("1", "2")]
    test = [PhotoRecord(n, tmp_path / "test" / f"{n}.png", None, None) for n in ("1", "2")]
    task.check_disjoint(train, {"val": [], "test": test})  # same names, other photos
    task.check_disjoint(train[:1], {"val": train[1:], "test": train})  # flat: test = every photo
    with pytest.raises(DatasetError, match=r"train case '1' and val case '1' are the same files"):
        task.check_disjoint(train, {"val": train[:1]})
    (tmp_path / "test" / "9.png").write_bytes((tmp_path / "train" / "2.png").read_bytes())  # a copy, renamed
    with pytest.raises(DatasetError, match=r"train case '2' and test case '9' are copies of one scan"):
        task.check_disjoint(train, {"test": [*test, PhotoRecord("9", tmp_path / "test" / "9.png", None, None)]})


def test_a_run_records_absolute_data_paths_so_eval_elsewhere_reads_the_same_data(data, tmp_path, monkeypatch):
    """Trained with `-d oct` (relative) in one folder, evaluated from another folder that has its own `oct/`:
    eval.py's default data is the training folder's, not the one that happens to sit under the new cwd."""
    import json
    import shutil

    import eval as eval_script

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copytree(data, tmp_path / "a" / "oct")
    shutil.copytree(data, tmp_path / "b" / "oct")
    shutil.rmtree(tmp_path / "b" / "oct" / "Edema_validationset")  # another data set of the same name
    monkeypatch.chdir(tmp_path / "a")
    train_script.main([*FAST, "-d", "oct", "--out", "run", "--cache-dir", "cache", "--epochs", "1"])
    ckpt = tmp_path / "a" / "run" / "checkpoint" / "model_best.pth.tar"
    settings = load_checkpoint(ckpt)["settings"]
    a = tmp_path / "a"
    assert settings["data_dir"] == str(a / "oct") and settings["cache_dir"] == "cache"  # a cache anywhere will do
    assert json.loads((tmp_path / "a" / "run" / "settings.json").read_text())["data_dir"] == settings["data_dir"]
    monkeypatch.chdir(tmp_path / "b")
    result = eval_script.main(["--seg-path", str(ckpt), "--out", "ev"])
    assert result["data_dir"] == str(tmp_path / "a" / "oct") and result["volumes"] == 1


def test_palette_bmp_is_read_and_16_bit_bmp_is_rejected(tmp_path):
    grey = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(64, 48)
    Image.fromarray(grey).convert("P").save(tmp_path / "pal.bmp")
    assert (read_grey(tmp_path / "pal.bmp") == grey).all()
    # a 16 bits-per-pixel BMP written by hand: 2x2 pixels, rows padded to 4 bytes
    header = b"BM" + (54 + 8).to_bytes(4, "little") + b"\0\0\0\0" + (54).to_bytes(4, "little")
    info = (
        (40).to_bytes(4, "little") + (2).to_bytes(4, "little") + (2).to_bytes(4, "little") + (1).to_bytes(2, "little")
    )
    info += (16).to_bytes(2, "little") + b"\0" * 24
    (tmp_path / "deep.bmp").write_bytes(header + info + b"\xff\x7f" * 4)
    with pytest.raises(DatasetError, match="deep.bmp: 16 bits per pixel"):
        read_grey(tmp_path / "deep.bmp")


def test_unreadable_slice_is_a_clear_error(data, tmp_path):
    root = _copy(data, tmp_path)
    rec = find_volumes(root, "train")[0]
    rec.image_paths[2].unlink()
    rec.image_paths[2].mkdir()  # a folder where 3.bmp should be
    with pytest.raises(DatasetError, match=r"3\.bmp: cannot read the file \(Is a directory\)"):
        VolumeCache(tmp_path / "c").load(find_volumes(root, "train")[0])


def test_failed_run_keeps_the_earlier_output(data, tmp_path):
    import test as test_script

    run = tmp_path / "run"
    train_script.main(_argv(data, run, "--epochs", "1", "--steps-per-epoch", "1"))
    ckpt = str(run / "checkpoint" / "checkpoint_latest.pth.tar")
    out = tmp_path / "sub"
    test_script.main(["--seg", "--det", "--seg-path", ckpt, "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    before = sorted(p.name for p in (out / "segment").iterdir())
    root = _copy(data, tmp_path)
    slice_ = find_volumes(root, "test")[0].image_paths[4]
    slice_.write_bytes(slice_.read_bytes()[:100])
    with pytest.raises(DatasetError, match="cannot decode"):
        test_script.main(
            [
                "--seg",
                "--det",
                "--seg-path",
                ckpt,
                "--out",
                str(out),
                "--force",
                "-d",
                str(root),
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )
    assert sorted(p.name for p in (out / "segment").iterdir()) == before  # --force replaces only on success
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sub.")]  # no staging folder left behind


# ---------------------------------------------------------------------------------------------- hostile names
@pytest.mark.parametrize("line", ["Edema_testset/original_images/..", "Edema_testset/original_images/..img"])
def test_patient_ids_cannot_leave_the_output_folder(tmp_path, line):
    d = tmp_path / "Edema_testset" / "original_images" / "..img"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "1.bmp")
    # hidden folders are not volumes when the split is read from its folder ...
    with pytest.raises(DatasetError, match="no volumes found"):
        find_volumes(tmp_path, "test")
    # ... and a list file cannot smuggle in a name that climbs out of the output folder
    (tmp_path / "test_images.txt").write_text(line + "\n")
    with pytest.raises(DatasetError, match="is not a safe file name"):
        find_volumes(tmp_path, "test", list_dir=tmp_path)


def test_submission_zip_has_flat_names_only(tmp_path):
    import zipfile

    from utils.io import zip_folder

    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "P1_labelMark_volumes.npy").write_bytes(b"x")
    names = zipfile.ZipFile(zip_folder(tmp_path / "seg", tmp_path / "s.zip")).namelist()
    assert names == ["P1_labelMark_volumes.npy"]


def test_prefetched_keeps_order_loads_ahead_and_raises_at_the_bad_item():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from utils.io import prefetched

    started = []
    second_started = threading.Event()

    def load(i):
        started.append(i)
        if i == 1:
            second_started.set()
        if i == 3:
            raise ValueError("volume 3 is corrupt")
        return i * 10

    with ThreadPoolExecutor(1) as pool:
        gen = prefetched(range(5), load, pool)
        assert next(gen) == (0, 0)
        assert second_started.wait(5)  # item 1 loads while the caller still holds item 0
        assert [next(gen), next(gen)] == [(1, 10), (2, 20)]
        with pytest.raises(ValueError, match="volume 3"):
            next(gen)
    assert started[:4] == [0, 1, 2, 3]
    assert list(prefetched([], load, ThreadPoolExecutor(1))) == []
