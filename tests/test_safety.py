"""Nothing lost, ever: --force that cannot delete inputs, one process per folder, a cache that cannot go stale,
duplicate patients refused, and every bad input ending in one ``error:`` line (no traceback, nothing half-written)."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_script
import predict as predict_script
import test as test_script
import train as train_script
from data.cache import VolumeCache
from data.common import DatasetError
from data.oct import find_volumes, read_grey
from engine.cli import cli_main
from utils.io import OUTPUT_MARKER, FolderInUse, FolderLock, output_lock_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--name", "unet", "--channels", "4", "8", "8", "16", "16", "--batch-size", "4", "-j", "0", "--lr", "0.002"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny synthetic set, its cache and a 1-epoch checkpoint."""
    from data.synthetic import write_dataset

    tmp = tmp_path_factory.mktemp("safety")
    data = write_dataset(tmp / "oct", seed=5, train=3, val=2, test=2, slices=6, height=48, width=32, test_labels=False)
    run, cache = tmp / "run", tmp / "c"
    train_script.main([*TINY, "-d", str(data), "--out", str(run), "--cache-dir", str(cache), "--epochs", "1"])
    return {"data": data, "cache": cache, "run": run, "ckpt": run / "checkpoint" / "model_best.pth.tar"}


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / "data"
    shutil.copytree(src, dst)
    return dst


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(module, argv, monkeypatch) -> str:
    """The driver's command line, in this process: returns what it printed as its error (SystemExit's message)."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    with pytest.raises(SystemExit) as stop:
        cli_main(f"{module.__name__}.py", module.parse_args, module.main)
    return stop.value.code


def _one_error_line(message, *needles):
    print(message)
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in message and all(n in message for n in needles), message


# --------------------------------------------------------------------------------------------------- --force
def test_force_never_replaces_the_dataset_the_run_folder_or_the_cache(run, tmp_path, monkeypatch):
    data = _copy(run["data"], tmp_path)
    before = _tree(data)
    common = ["--seg-path", str(run["ckpt"]), "-d", str(data), "--cache-dir", str(run["cache"]), "--force"]
    cases = [
        (test_script, ["--seg", "--det", *common, "--out", str(data)], "is the dataset"),
        (eval_script, [*common, "--out", str(run["run"])], "holds a checkpoint being read"),
        (eval_script, [*common, "--out", str(run["cache"])], "is the decode cache"),
    ]
    run_before, cache_before = _tree(run["run"]), _tree(run["cache"])
    for module, argv, needle in cases:
        _one_error_line(_cli(module, argv, monkeypatch), needle)
    assert _tree(data) == before and _tree(run["run"]) == run_before and _tree(run["cache"]) == cache_before
    # a folder the toolkit did not write (here a copy of the dataset's test split) is refused too
    mine = tmp_path / "mine"
    shutil.copytree(data / "Edema_testset", mine)
    argv = ["--seg", "--seg-path", str(run["ckpt"]), "-d", str(data), "--out", str(mine), "--force"]
    _one_error_line(_cli(test_script, argv, monkeypatch), "not written by this toolkit", OUTPUT_MARKER)
    assert (mine / "original_images").is_dir()
    # while its own output folder is replaced
    out = tmp_path / "sub"
    test_script.main(argv[:-3] + ["--out", str(out)])
    assert (out / OUTPUT_MARKER).is_file()
    (out / "segment" / "stale.npy").write_bytes(b"")  # a file it did not write, at any depth: refused
    _one_error_line(_cli(test_script, [*argv[:-3], "--out", str(out), "--force"], monkeypatch), "segment/stale.npy")
    (out / "segment" / "stale.npy").unlink()
    test_script.main(argv[:-3] + ["--out", str(out), "--force"])
    assert len(list((out / "segment").iterdir())) == 2 and (out / OUTPUT_MARKER).is_file()  # replaced whole


# ----------------------------------------------------------------------------------------------------- locks
def _spawn(script, argv):
    return subprocess.Popen(
        [sys.executable, script, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_lock(lock: Path, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if lock.exists() and f"process {proc.pid} " in lock.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise TimeoutError(f"{lock} never named process {proc.pid}")


def test_a_second_eval_on_the_same_folder_stops_at_once_and_the_first_completes(run, tmp_path):
    out = tmp_path / "ev"
    argv = ["--seg-path", str(run["ckpt"]), "-d", str(run["data"]), "--cache-dir", str(run["cache"]), "--out", str(out)]
    first = _spawn("eval.py", argv)
    _wait_for_lock(output_lock_path(out), first)
    first.send_signal(signal.SIGSTOP)  # the first run holds the folder, frozen mid-way
    try:
        t0 = time.time()
        second = subprocess.run([sys.executable, "eval.py", *argv], cwd=ROOT, capture_output=True, text=True)
        took = time.time() - t0
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith(f"error: {out} is in use by process {first.pid} ")
    assert took < 30  # it stopped at its start (the interpreter's start-up is most of this)
    assert first.wait(timeout=120) == 0, first.communicate()
    assert (out / "metrics.json").exists() and (out / "per_volume.csv").read_text().count("\n") == 3


def test_a_second_training_in_the_same_run_folder_stops_and_a_killed_run_does_not_block(run, tmp_path):
    out = tmp_path / "run"
    argv = [*TINY, "-d", str(run["data"]), "--cache-dir", str(run["cache"]), "--out", str(out)]
    argv += ["--epochs", "2", "--steps-per-epoch", "200"]
    first = _spawn("train.py", argv)
    _wait_for_lock(out / ".lock", first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run([sys.executable, "train.py", *argv, "--resume", "auto"], cwd=ROOT, capture_output=True)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1 and b"Traceback" not in second.stderr
    assert f"error: {out} is in use by process {first.pid} ".encode() in second.stderr
    first.send_signal(signal.SIGKILL)  # killed while it holds the folder: the kernel drops the lock
    first.wait()
    with FolderLock(out / ".lock", out):  # free at once
        pass
    final = train_script.main([*argv, "--steps-per-epoch", "2", "--resume", "auto"])
    assert "dice_mean" in final and (out / "log.csv").read_text().count("\n") == 3


def test_a_lock_names_its_holder_and_is_released(tmp_path):
    holder = rf"x is in use by process {os.getpid()} on .* since .*"
    with FolderLock(tmp_path / ".x.lock", tmp_path / "x"), pytest.raises(FolderInUse, match=holder):
        FolderLock(tmp_path / ".x.lock", tmp_path / "x")
    FolderLock(tmp_path / ".x.lock", tmp_path / "x").release()


# ----------------------------------------------------------------------------------------------------- cache
def test_labels_rewritten_in_place_with_their_times_restored_are_decoded_again(run, tmp_path):
    data = _copy(run["data"], tmp_path)
    cache = tmp_path / "cache"
    argv = ["--seg-path", str(run["ckpt"]), "-d", str(data), "--cache-dir", str(cache)]
    before = eval_script.main([*argv, "--out", str(tmp_path / "e1")])
    rec = find_volumes(data, "val")[0]
    for p in rec.label_paths:  # every label of one volume becomes background; size, atime and mtime kept
        st = p.stat()
        Image.fromarray(np.zeros_like(read_grey(p))).save(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    after = eval_script.main([*argv, "--out", str(tmp_path / "e2")])
    assert VolumeCache(cache).load(rec)[1].max() == 0  # the cache serves the new labels
    assert before["dice_mean"] != after["dice_mean"]
    rows = (tmp_path / "e2" / "per_volume.csv").read_text().splitlines()
    # no lesion left: the three Dice figures and the fluid ones are undefined
    assert next(r for r in rows if r.startswith(rec.pid)).split(",")[1:] == ["nan"] * 5


# ------------------------------------------------------------------------------------------ patient identity
def test_two_folders_of_one_patient_are_refused(run, tmp_path):
    data = _copy(run["data"], tmp_path)
    images = data / "Edema_testset" / "original_images"
    first = sorted(images.iterdir())[0]
    twin = images / first.name[: -len(".img")]  # "P.img" and "P"
    shutil.copytree(first, twin)
    with pytest.raises(DatasetError, match=rf"{twin} and {first} are both patient '{twin.name}'"):
        find_volumes(data, "test")
    lists = tmp_path / "lists"
    lists.mkdir()
    a, b = (str(r.image_paths[0].parent.relative_to(run["data"])) for r in find_volumes(run["data"], "val"))
    (lists / "val_images.txt").write_text(f"{a}\n{b}\n{a}\n")
    (lists / "val_labels.txt").write_text("x\n")
    with pytest.raises(DatasetError, match="is listed twice"):
        find_volumes(data, "val", lists)


# -------------------------------------------------------------------------------- one error line, no traceback
def _bomb(path: Path) -> None:
    """A valid BMP whose header claims 100000 x 100000 pixels."""
    raw = bytearray(path.read_bytes())
    raw[18:22] = (100000).to_bytes(4, "little")
    raw[22:26] = (100000).to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def _loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)  # a link to itself


@pytest.mark.parametrize("damage, needle", [(_bomb, "too large to be real"), (_loop, "Too many levels of symbolic")])
def test_damaged_slices_end_in_one_error_line(run, tmp_path, monkeypatch, damage, needle):
    data = _copy(run["data"], tmp_path)
    bad = find_volumes(data, "val")[1].image_paths[2]
    damage(bad)
    argv = ["--seg-path", str(run["ckpt"]), "-d", str(data), "--cache-dir", str(tmp_path / "c")]
    argv += ["--out", str(tmp_path / "e")]
    _one_error_line(_cli(eval_script, argv, monkeypatch), str(bad), needle)
    assert not (tmp_path / "e").exists()  # nothing written half


def test_bad_command_lines_end_in_one_error_line(run, tmp_path, monkeypatch):
    ckpt, data, cache = str(run["ckpt"]), str(run["data"]), str(run["cache"])
    ev = ["--seg-path", ckpt, "-d", data, "--cache-dir", cache]
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "bad.yaml").write_text("epochs: 2\nloss: [mix_3\n")
    vessel = ROOT / "checkpoints" / "drive_unet.pth.tar"
    truncated = tmp_path / "trunc" / "checkpoint"
    truncated.mkdir(parents=True)
    (truncated / "checkpoint_latest.pth.tar").write_bytes(run["ckpt"].read_bytes()[:1000])
    train = [*TINY, "-d", data, "--cache-dir", cache, "--epochs", "1"]
    for folder, name in (("a", "x.png"), ("b", "x.tif")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"")
    state = torch.load(run["ckpt"], weights_only=True)
    state.pop("normalization")
    torch.save(state, tmp_path / "no_norm.pth.tar")
    cases = [
        (eval_script, [*ev, "--out", "/sys/retina-lesion-test/out"], "/sys/retina-lesion-test/out"),
        (eval_script, [*ev[:-1], str(tmp_path / "a_file"), "--out", str(tmp_path / "e")], "a_file: cannot write the"),
        (eval_script, ["--seg-path", str(tmp_path / "a_file"), "--out", str(tmp_path / "e")], "not a loadable"),
        (eval_script, [*ev, "--out", str(tmp_path / "a_file")], "a_file is a file, not a folder"),
        (eval_script, [*ev, "--split", "test", "--out", str(tmp_path / "t")], "no labels to evaluate against"),
        (eval_script, [*ev, "--batch-size", "0", "--out", str(tmp_path / "b")], "--batch-size must be >= 1"),
        (eval_script, ["--fusion", ckpt, ckpt, "--fusion-weights", "2", "-1", "-d", data], "must be >= 0"),
        (eval_script, ["--fusion", ckpt, str(vessel), "-d", data, "--out", str(tmp_path / "f")], "cannot fuse"),
        (train_script, [*train, "--out", str(tmp_path / "r1"), "--crop-size", "-5"], "(--crop-size) must be >= 0"),
        (train_script, [*train, "--out", str(tmp_path / "r2"), "--steps-per-epoch", "-3"], "(--steps-per-epoch) must"),
        (train_script, [*train, "--out", str(tmp_path / "r3"), "--config", str(tmp_path / "bad.yaml")], "line 3"),
        (train_script, [*train, "--out", str(tmp_path / "trunc"), "--resume", "auto"], "no checkpoint in"),
        (eval_script, [*ev[:1], str(tmp_path / "no_norm.pth.tar"), *ev[2:]], "holds no input normalisation"),
        (
            predict_script,
            [
                str(tmp_path / "a" / "x.png"),
                str(tmp_path / "b" / "x.tif"),
                "--task",
                "vessel",
                "--out",
                str(tmp_path / "p"),
            ],
            "would both be",
        ),
    ]
    for module, argv, needle in cases:
        _one_error_line(_cli(module, argv, monkeypatch), needle)
    assert not (tmp_path / "e").exists() and not (tmp_path / "t").exists() and not (tmp_path / "r1").exists()
    assert (truncated / "checkpoint_latest.pth.tar").stat().st_size == 1000  # the damaged checkpoint is kept


def test_an_unwritable_cache_is_one_error_line(run, tmp_path, monkeypatch):
    (tmp_path / "not_a_folder").write_text("x")
    for cache in (tmp_path / "not_a_folder" / "c", Path("/sys/retina-lesion-test/cache")):
        argv = ["--seg-path", str(run["ckpt"]), "-d", str(run["data"]), "--cache-dir", str(cache)]
        _one_error_line(_cli(eval_script, [*argv, "--out", str(tmp_path / "e")], monkeypatch), "--cache-dir")


def test_a_missing_slice_is_called_missing_not_corrupt(tmp_path):
    with pytest.raises(DatasetError, match=r"7\.bmp: file not found"):
        read_grey(tmp_path / "7.bmp")


def test_outputs_follow_the_umask(run, tmp_path):
    """Shared caches and results folders: files are 0644 and folders 0755 under umask 022 (not 0600 / 0700)."""
    old = os.umask(0o022)
    try:
        proc = subprocess.run(
            [sys.executable, "test.py", "--seg", "--det", "--seg-path", str(run["ckpt"]), "-d", str(run["data"])]
            + ["--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "sub")],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    paths = [tmp_path / "sub", *(tmp_path / "sub").rglob("*"), *(tmp_path / "c").iterdir()]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert all(m == (0o755 if p.is_dir() else 0o644) for p, m in zip(paths, modes.values())), modes
    assert torch.load(run["ckpt"], weights_only=True)["format_version"] == 3


# ------------------------------------------------------------------------------ found by a red-team pass
def test_force_never_replaces_folders_that_list_files_point_into(run, tmp_path, monkeypatch):
    """The dataset protected is what is read, not only -d: list files may point anywhere, even into a marked
    output folder; the list files themselves are protected too."""
    out = tmp_path / "out"
    argv = ["--seg", "--seg-path", str(run["ckpt"]), "-d", str(run["data"]), "--cache-dir", str(run["cache"])]
    test_script.main([*argv, "--out", str(out)])  # a marked output folder
    shutil.copytree(run["data"] / "Edema_testset", out / "data")  # data put there later
    lists = out / "lists"
    lists.mkdir()
    folders = sorted((out / "data" / "original_images").iterdir())
    (lists / "test_images.txt").write_text("".join(f"{f.relative_to(tmp_path)}\n" for f in folders))
    before = _tree(out)
    argv = ["--seg", "--seg-path", str(run["ckpt"]), "-d", str(tmp_path), "-l", str(lists), "--out", str(out)]
    _one_error_line(_cli(test_script, [*argv, "--force"], monkeypatch), "holds an input being read")
    assert _tree(out) == before


def test_list_files_pair_images_and_labels_by_name_and_links_are_not_second_patients(run, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    recs = find_volumes(run["data"], "val")
    images = [str(r.image_paths[0].parent.relative_to(run["data"])) for r in recs]
    labels = [str(r.label_paths[0].parent.relative_to(run["data"])) for r in recs]
    (lists / "val_images.txt").write_text("\n".join(images))
    (lists / "val_labels.txt").write_text("\n".join(labels[::-1]))  # another order
    with pytest.raises(DatasetError, match="the two lists must be in the same order"):
        find_volumes(run["data"], "val", lists)
    (lists / "val_images.txt").write_text("\n".join([images[0], images[0], images[1]]))  # a folder line twice
    with pytest.raises(DatasetError, match="line 2: .* is listed twice"):
        find_volumes(run["data"], "val", lists)
    data = _copy(run["data"], tmp_path)
    first = sorted((data / "Edema_testset" / "original_images").iterdir())[0]
    (first.parent / "P9.img").symlink_to(first.name)
    with pytest.raises(DatasetError, match="are the same folder"):
        find_volumes(data, "test")


def test_a_run_folder_without_its_latest_checkpoint_is_still_a_run_and_resume_takes_the_furthest(run, tmp_path):
    out = tmp_path / "run"
    argv = [*TINY, "-d", str(run["data"]), "--cache-dir", str(run["cache"]), "--out", str(out)]
    train_script.main([*argv, "--epochs", "2", "--steps-per-epoch", "1", "--save-every-checkpoint"])
    (out / "checkpoint" / "checkpoint_latest.pth.tar").unlink()  # e.g. deleted to save space
    best = (out / "checkpoint" / "model_best.pth.tar").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        train_script.main([*argv, "--epochs", "2", "--steps-per-epoch", "1"])
    assert (out / "checkpoint" / "model_best.pth.tar").read_bytes() == best
    os.utime(out / "checkpoint" / "checkpoint_001.pth.tar")  # the newest file, but not the furthest epoch
    train_script.main([*argv, "--epochs", "3", "--steps-per-epoch", "1", "--resume", "auto"])
    assert [r.split(",")[0] for r in (out / "log.csv").read_text().splitlines()] == ["epoch", "1", "2", "3"]


def test_a_failed_start_leaves_no_statistics_that_a_later_run_on_other_data_would_use(run, tmp_path):
    out = tmp_path / "run"
    argv = [*TINY, "--cache-dir", str(run["cache"]), "--out", str(out), "--epochs", "1"]
    with pytest.raises(ValueError, match="Bad loss spec"):  # fails after the statistics were computed
        train_script.main([*argv, "-d", str(run["data"]), "--loss", "nope"])
    dark = _copy(run["data"], tmp_path)
    for p in dark.rglob("original_images/*/*.bmp"):
        Image.fromarray(read_grey(p) // 4).save(p)
    train_script.main([*argv, "-d", str(dark)])
    stats = __import__("json").loads((out / "normalization.json").read_text())
    assert stats["source"]["data_dir"] == str(dark.resolve()) and stats["mean"][0] < 0.1


def test_one_output_folder_has_one_lock_however_it_is_spelled(tmp_path):
    from utils.io import output_lock, staged_output_dir

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    held = output_lock((tmp_path / "real").resolve())
    with pytest.raises(FolderInUse), staged_output_dir(tmp_path / "link", force=True):
        pass
    held.release()


def test_predict_never_writes_into_its_inputs_or_over_earlier_predictions(run, tmp_path, monkeypatch):
    folder = next((run["data"] / "Edema_testset" / "original_images").iterdir())
    copy = tmp_path / "scans" / folder.name
    shutil.copytree(folder, copy)
    argv = [str(copy), "--checkpoint", str(run["ckpt"])]
    _one_error_line(_cli(predict_script, [*argv, "--out", str(tmp_path / "scans")], monkeypatch), "holds an input")
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in folder.iterdir())
    predict_script.main([*argv, "--out", str(tmp_path / "pred")])
    _one_error_line(_cli(predict_script, [*argv, "--out", str(tmp_path / "pred")], monkeypatch), "--force")
    assert (
        len(predict_script.main([*argv, "--out", str(tmp_path / "pred"), "--force"])) == 5
    )  # class map, detections, NIfTI map, GIF, summary


def test_non_finite_settings_and_empty_checkpoints_are_clear_errors(run, tmp_path):
    import argparse

    from engine.cli import train_settings
    from utils.checkpoint import CheckpointError, load_checkpoint

    for given in ({"lr": float("nan")}, {"random_rotate": float("inf")}, {"channels": [0, 8, 8, 16, 16]}):
        with pytest.raises(ValueError, match="finite number|positive widths"):
            train_settings(argparse.Namespace(**given))
    (tmp_path / "empty.pth.tar").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth.tar: not a loadable checkpoint"):
        load_checkpoint(tmp_path / "empty.pth.tar")
    (tmp_path / "c.yaml").write_text("lr: 1e-3\n")  # YAML 1.1 would read a string
    assert train_settings(argparse.Namespace(config=str(tmp_path / "c.yaml"))).lr == 0.001


def test_the_oct_task_refuses_class_and_detection_counts_it_cannot_score():
    """5 classes would score and write a class no label holds; 3 would train without PED and score it 0; a model
    without a detection head asked for --detection head gave the segmentation's scores under the head's name."""
    from tasks import get_task
    from utils.config import Settings

    task = get_task("oct")
    for bad, match in (
        ({"num_classes": 5, "class_weights": [1, 5, 10, 20, 1]}, "segments 4 classes .* not num_classes 5"),
        ({"num_classes": 3, "class_weights": [1, 5, 10]}, "not num_classes 3"),
        ({"num_detect": 2}, "detects 3 lesions .* not num_detect 2"),
        ({"num_detect": 0, "task_settings": {"detection": "head"}}, "no detection head .* use --detection seg"),
    ):
        with pytest.raises(ValueError, match=match):
            task(Settings(**bad).validate())
    assert (
        task(Settings(num_detect=0, task_settings={"detection": "seg"}).validate()).settings.num_detect == 0
    )  # seg-only models


def test_bscans_of_another_size_than_the_training_slices_are_reported_once_per_size(caplog):
    """Without --resize B-scans are predicted at their own size: a model trained on 1024-row scans run on 496-row
    ones sees everything at twice the scale. Within 10% of a training size (a few rows cropped) is quiet."""
    import logging

    from tasks import get_task
    from utils.config import Settings

    state = {"normalization": {"mean": [0.2] * 3, "std": [0.2] * 3, "slice_sizes": [[1024, 512]]}}
    task = get_task("oct")(Settings().validate(), states=[state])
    with caplog.at_level(logging.WARNING, "tasks.oct"):
        for hw in ((1024, 512), (1000, 512), (496, 512), (496, 512), (1024, 1024)):
            task._check_size(hw)
    found = [r.getMessage() for r in caplog.records]
    assert len(found) == 2 and found[0].startswith("B-scans of 496x512 pixels, but the model was trained on 1024x512")
    assert found[1].startswith("B-scans of 1024x1024")
    resized = get_task("oct")(Settings(resize=[1024, 512]).validate(), states=[state])
    caplog.clear()
    resized._check_size((496, 512))  # brought to the training size by --resize: nothing to say
    old = get_task("oct")(Settings().validate(), states=[{"normalization": {"mean": [0.2] * 3, "std": [0.2] * 3}}])
    old._check_size((496, 512))  # a checkpoint from before slice sizes were recorded: nothing to compare with
    assert not caplog.records
