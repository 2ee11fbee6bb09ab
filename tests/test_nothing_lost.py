"""Nothing lost, round two (issue 21): one writer for output files, --force checked at every depth, one line of
training per run folder, normalisation tied to the files it came from, locks only in the toolkit's own folders."""

import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from test_overwrite import _cli, _one_error_line  # the drivers' command line, in this process

import eval as eval_script
import predict as predict_script
import train as train_script
from tools import export as export_tool
from utils.checkpoint import load_checkpoint
from utils.io import OUTPUT_MARKER, lock_dir

TINY = ["--name", "unet", "--channels", "4", "8", "8", "16", "16", "--batch-size", "4", "-j", "0", "--lr", "0.002"]
STEP = ["--steps-per-epoch", "1", "--lr-mode", "poly", "--loss", "mix_3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny synthetic set, a second one, a cache, and run A of 3 one-step epochs."""
    from data.synthetic import write_dataset

    tmp = tmp_path_factory.mktemp("lost")
    data = write_dataset(tmp / "oct", seed=11, train=2, val=1, test=1, slices=6, height=48, width=32)
    other = write_dataset(tmp / "other", seed=12, train=2, val=1, test=1, slices=6, height=48, width=32)
    cache = tmp / "cache"
    a = tmp / "A"
    train_script.main(_argv(data, a, cache, "--epochs", "3"))
    return {"data": data, "other": other, "cache": cache, "A": a, "tmp": tmp}


def _argv(data, out, cache, *extra):
    return [*TINY, *STEP, "-d", str(data), "--out", str(out), "--cache-dir", str(cache), *extra]


def _snapshot(folder: Path) -> dict:
    """Every file below ``folder`` with its bytes and modification time (but the run's lock, which names the last
    process that held it)."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"]
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def _export(argv) -> str | None:
    """tools.export's command line in this process: its error line, or None."""
    try:
        export_tool.main(argv)
    except (ValueError, OSError, RuntimeError) as e:
        return "error: " + " ".join(str(e).split())
    return None


# ----------------------------------------------------------------------------------------- one writer
def test_export_never_writes_over_its_checkpoint_a_runs_files_or_a_users_file(world, tmp_path):
    a = world["A"]
    latest, settings = a / "checkpoint" / "checkpoint_latest.pth.tar", a / "settings.json"
    before = _snapshot(a)
    small = ["--height", "48", "--width", "32"]
    for fmt in ("torchscript", "onnx"):
        for force in ([], ["--force"]):
            # onto the checkpoint it reads: refused even with --force
            _one_error_line(
                _export([str(latest), "--format", fmt, "--out", str(latest), *small, *force]),
                "is the checkpoint being exported",
            )
            # onto another checkpoint or the settings of a run: not outputs of the toolkit's, refused with --force too
            best = a / "checkpoint" / "model_best.pth.tar"
            for target in (best, settings):
                message = _export([str(latest), "--format", fmt, "--out", str(target), *small, *force])
                _one_error_line(message, str(target), "pass --force" if not force else "not written by this toolkit")
    assert _snapshot(a) == before
    mine = tmp_path / "model.pt"
    mine.write_text("a file of the user's")
    _one_error_line(
        _export([str(latest), "--format", "torchscript", "--out", str(mine), *small, "--force"]),
        "not written by this toolkit",
    )
    assert mine.read_text() == "a file of the user's"
    # its own earlier export: replaced with --force only
    out = tmp_path / "m.pt"
    assert _export([str(latest), "--format", "torchscript", "--out", str(out), *small]) is None
    _one_error_line(_export([str(latest), "--format", "torchscript", "--out", str(out), *small]), "pass --force")
    first = out.stat().st_mtime_ns
    assert _export([str(latest), "--format", "torchscript", "--out", str(out), *small, "--force"]) is None
    assert out.stat().st_mtime_ns >= first and out.stat().st_size > 1000
    out.write_bytes(out.read_bytes() + b"\0")  # edited since: no longer the toolkit's to replace
    _one_error_line(
        _export([str(latest), "--format", "torchscript", "--out", str(out), *small, "--force"]), "changed since"
    )


def test_export_to_onnx_without_onnxscript_is_one_error_line(world, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    latest = world["A"] / "checkpoint" / "checkpoint_latest.pth.tar"
    message = _export([str(latest), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    _one_error_line(message, "needs the onnxscript package", "pip install onnxscript")
    assert not (tmp_path / "m.onnx").exists()


def test_force_finds_a_run_saved_deep_inside_an_eval_output(world, tmp_path, monkeypatch):
    """eval --out E --vis, train --out E/vis/finetune, eval --out E --vis --force: the run is two levels down."""
    latest = world["A"] / "checkpoint" / "checkpoint_latest.pth.tar"
    e = tmp_path / "E"
    ev = ["--seg-path", str(latest), "-d", str(world["data"]), "--cache-dir", str(world["cache"]), "--out", str(e)]
    eval_script.main([*ev, "--vis"])
    nested = e / "vis" / "finetune"
    train_script.main(_argv(world["data"], nested, world["cache"], "--epochs", "1"))
    before = _snapshot(e)
    _one_error_line(_cli(eval_script, [*ev, "--vis", "--force"], monkeypatch), "vis/finetune", "move them away")
    assert _snapshot(e) == before
    shutil.move(nested, tmp_path / "finetune")
    eval_script.main([*ev, "--vis", "--force"])  # the eval's own tree again: replaced
    assert (e / "metrics.json").is_file() and not (e / "vis" / "finetune").exists()
    assert (tmp_path / "finetune" / "checkpoint" / "checkpoint_latest.pth.tar").is_file()


def test_an_earlier_versions_marker_is_replaced_only_when_nothing_is_newer_than_it(tmp_path):
    from utils.io import staged_output_dir

    out = tmp_path / "old"
    (out / "vis").mkdir(parents=True)
    (out / "vis" / "P1.gif").write_bytes(b"gif")
    (out / OUTPUT_MARKER).write_text(json.dumps({"written_by": "retina-lesion", "entries": ["vis"]}))
    t = (out / OUTPUT_MARKER).stat().st_mtime
    (out / "vis" / "finetune").mkdir()
    (out / "vis" / "finetune" / "log.csv").write_text("epoch\n")
    os.utime(out / "vis" / "finetune" / "log.csv", (t + 60, t + 60))  # added after the output was written
    os.utime(out / "vis" / "finetune", (t + 60, t + 60))
    with pytest.raises(FileExistsError, match="vis/finetune .newer than the output"), staged_output_dir(out, True):
        pass
    assert (out / "vis" / "finetune" / "log.csv").read_text() == "epoch\n"
    shutil.rmtree(out / "vis" / "finetune")
    os.utime(out / "vis", (t - 60, t - 60))
    with staged_output_dir(out, force=True) as stage:
        (stage / "metrics.json").write_text("{}")
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "metrics.json"]


# ------------------------------------------------------------------------------------ one line of training
def test_resume_from_another_run_into_a_folder_holding_a_run_is_refused(world, tmp_path, monkeypatch):
    b = tmp_path / "B"
    train_script.main(_argv(world["data"], b, world["cache"], "--epochs", "1", "--seed", "5"))
    before = _snapshot(world["A"])
    argv = _argv(world["data"], world["A"], world["cache"], "--epochs", "4")
    message = _cli(train_script, [*argv, "--resume", str(b / "checkpoint" / "checkpoint_latest.pth.tar")], monkeypatch)
    _one_error_line(message, "holds another run", "one line of training", "--finetune")
    assert _snapshot(world["A"]) == before


def test_a_resume_with_nothing_to_do_only_appends_one_line_to_train_log(world):
    a = world["A"]
    before = {p: s for p, s in _snapshot(a).items() if p.name != "train.log"}
    lines = (a / "train.log").read_text().splitlines()
    rows = list(csv.DictReader((a / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    train_script.main(_argv(world["data"], a, world["cache"], "--epochs", "3", "--resume", "auto"))
    after = (a / "train.log").read_text().splitlines()
    assert after[: len(lines)] == lines and len(after) == len(lines) + 1 and "nothing to do" in after[-1]
    assert {p: s for p, s in _snapshot(a).items() if p.name != "train.log"} == before  # log.csv, events untouched


def test_a_resume_refuses_settings_that_change_what_is_learned_and_keeps_the_runs_own(world, tmp_path, monkeypatch):
    a = tmp_path / "A2"
    shutil.copytree(world["A"], a)
    before = _snapshot(a)
    base = [*TINY, "--out", str(a), "--cache-dir", str(world["cache"]), "--resume", "auto"]
    cases = [
        (["--loss", "mix_33"], ["loss 'mix_33' (the run: 'mix_3')"]),
        (["-d", str(world["other"])], ["data_dir", str(world["other"])]),
        (["--lr", "0.01", "--crop-size", "32", "--seed", "3"], ["lr 0.01", "crop_size 32", "seed 3"]),
        (["--random-rotate", "20"], ["random_rotate 20.0"]),
    ]
    for extra, needles in cases:
        _one_error_line(_cli(train_script, [*base, *extra], monkeypatch), "--finetune", *needles)
    assert _snapshot(a) == before
    # the run's own settings continue: nothing named but the epochs, and the data given as the same folder
    train_script.main([*base, "-d", str(world["data"]) + "/", "--epochs", "4", *STEP])
    settings = json.loads((a / "settings.json").read_text())
    assert settings["loss"] == "mix_3" and settings["epochs"] == 4 and settings["lr_mode"] == "poly"
    assert load_checkpoint(a / "checkpoint" / "checkpoint_latest.pth.tar")["settings"]["loss"] == "mix_3"
    rows = list(csv.DictReader((a / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]  # appended, the earlier rows as they were
    assert (a / "log.csv").read_bytes().startswith((world["A"] / "log.csv").read_bytes())


def test_finetune_starts_a_new_run_that_records_its_origin(world, tmp_path, monkeypatch):
    from utils.io import sha256_of

    src = world["A"] / "checkpoint" / "model_best.pth.tar"
    ft = tmp_path / "ft"
    train_script.main(_argv(world["other"], ft, world["cache"], "--epochs", "1", "--finetune", str(src)))
    state = load_checkpoint(ft / "checkpoint" / "checkpoint_latest.pth.tar")
    assert state["epoch"] == 1 and state["finetuned_from"]["sha256"] == sha256_of(src)
    assert state["finetuned_from"]["checkpoint"] == str(src.resolve())
    assert state["settings"]["data_dir"] == str(world["other"].resolve())
    # into a folder that holds a run, or together with --resume: refused
    message = _cli(train_script, [*_argv(world["other"], ft, world["cache"], "--finetune", str(src))], monkeypatch)
    _one_error_line(message, "already holds a run")
    message = _cli(
        train_script,
        [*_argv(world["other"], tmp_path / "x", world["cache"], "--finetune", str(src), "--resume", "auto")],
        monkeypatch,
    )
    _one_error_line(message, "--finetune", "--resume")


def test_statistics_of_a_failed_start_are_computed_again_for_a_data_set_regenerated_in_place(tmp_path, monkeypatch):
    """A first start killed before its first checkpoint leaves normalization.json; the data set regenerated at the
    same path with the same IDs must not inherit it."""
    import engine.trainer as trainer_module
    from data.synthetic import write_dataset

    data = write_dataset(tmp_path / "oct", seed=1, train=2, val=1, test=1, slices=6, height=48, width=32)
    run, cache = tmp_path / "run", tmp_path / "cache"

    def killed(*a, **k):
        raise KeyboardInterrupt  # the start dies after the statistics, before any checkpoint

    monkeypatch.setattr(trainer_module, "build_model", killed)
    with pytest.raises(KeyboardInterrupt):
        train_script.main(_argv(data, run, cache, "--epochs", "1"))
    monkeypatch.undo()
    old = json.loads((run / "normalization.json").read_text())
    shutil.rmtree(data)  # regenerated: other pixels, the same patient IDs, at the same path
    write_dataset(tmp_path / "oct", seed=2, train=2, val=1, test=1, slices=6, height=64, width=32)
    train_script.main(_argv(data, run, cache, "--epochs", "1"))
    carried = load_checkpoint(run / "checkpoint" / "checkpoint_latest.pth.tar")["normalization"]
    assert carried["source"]["records"] == old["source"]["records"]  # same IDs ...
    assert carried["source"]["fingerprint"] != old["source"]["fingerprint"]  # ... other files
    assert carried["slice_sizes"] == [[64, 32]] and old["slice_sizes"] == [[48, 32]]
    assert carried["mean"] != old["mean"]


# ------------------------------------------------------------------------------ where outputs and locks go
def test_outputs_inside_inputs_are_refused_before_anything_is_written(world, tmp_path, monkeypatch):
    split = world["data"] / "Edema_trainingset"
    before = sorted(p.relative_to(world["data"]) for p in world["data"].rglob("*"))
    message = _cli(train_script, _argv(world["data"], split / "run", world["cache"], "--epochs", "1"), monkeypatch)
    _one_error_line(message, "lies inside the data", "choose a folder outside it")
    latest = str(world["A"] / "checkpoint" / "checkpoint_latest.pth.tar")
    scan = next((world["data"] / "Edema_testset" / "original_images").iterdir())
    message = _cli(predict_script, [str(scan), "--checkpoint", latest, "--out", str(scan / "pred")], monkeypatch)
    _one_error_line(message, "lies inside an input being read")
    ev = ["--seg-path", latest, "--cache-dir", str(world["cache"]), "--out", str(split / "ev")]
    _one_error_line(_cli(eval_script, ev, monkeypatch), "lies inside the dataset")
    assert sorted(p.relative_to(world["data"]) for p in world["data"].rglob("*")) == before


def test_no_lock_file_is_left_in_the_working_folder_the_data_or_at_the_root(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    latest = str(world["A"] / "checkpoint" / "checkpoint_latest.pth.tar")
    scan = next((world["data"] / "Edema_testset" / "original_images").iterdir())
    predict_script.main([str(scan), "--checkpoint", latest, "--out", "predictions", "--no-pictures"])
    _one_error_line(_cli(predict_script, [str(scan), "--checkpoint", latest, "--out", "/"], monkeypatch))
    _one_error_line(_cli(predict_script, [str(scan), "--checkpoint", latest, "--out", str(Path.home())], monkeypatch))
    assert sorted(os.listdir(tmp_path)) == ["predictions"]
    assert not [p for p in os.listdir("/") if p.endswith(".lock")]
    assert not list(world["data"].rglob("*.lock")) and not list(world["data"].parent.glob(".*.lock"))
    assert list(lock_dir().glob("predictions-*.lock"))  # the lock lives in the toolkit's own folder


def test_a_full_disk_during_a_checkpoint_write_names_the_file_and_keeps_the_last_one(world, tmp_path, monkeypatch):
    import shutil as shutil_module

    import utils.io

    a = tmp_path / "A3"
    shutil.copytree(world["A"], a)
    latest = a / "checkpoint" / "checkpoint_latest.pth.tar"
    kept = latest.read_bytes()

    def full_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/3")

    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(utils.io.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    monkeypatch.setattr(torch, "save", full_save)
    argv = [*TINY, "--out", str(a), "--cache-dir", str(world["cache"]), "--resume", "auto", "--epochs", "4"]
    message = _cli(train_script, argv, monkeypatch)
    _one_error_line(message, "the disk is full", "checkpoint", "nothing was replaced")
    assert "inline_container" not in message and latest.read_bytes() == kept
    assert not [p for p in latest.parent.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------- found by this issue's own red-team pass
def test_an_edit_with_its_time_put_back_or_a_file_moved_in_is_still_foreign(tmp_path):
    """`touch -r` puts the mtime back, `mv` keeps an old mtime: the ctime (which only the kernel sets) tells."""
    from utils.io import staged_output_dir

    out = tmp_path / "ev"
    with staged_output_dir(out, force=False) as stage:
        (stage / "per_volume.csv").write_text("P0003,0.5\n")
    st = (out / "per_volume.csv").stat()
    time_ns = (st.st_atime_ns, st.st_mtime_ns)
    (out / "per_volume.csv").write_text("X0003,0.5\n")  # same size
    os.utime(out / "per_volume.csv", ns=time_ns)
    with pytest.raises(FileExistsError, match="per_volume.csv .changed since"), staged_output_dir(out, True):
        pass
    assert (out / "per_volume.csv").read_text() == "X0003,0.5\n"
    # an earlier version's marker (names only): a file moved in with an old mtime is newer than the marker all the same
    old = tmp_path / "old"
    old.mkdir()
    (old / OUTPUT_MARKER).write_text(json.dumps({"written_by": "retina-lesion", "entries": ["per_volume.csv"]}))
    mine = tmp_path / "mine.csv"
    mine.write_text("mine")
    os.utime(mine, (1_000_000_000, 1_000_000_000))
    t = (old / OUTPUT_MARKER).stat().st_mtime
    os.utime(old / OUTPUT_MARKER, (t - 10, t - 10))  # the output was written a while ago; the move is now
    shutil.move(mine, old / "per_volume.csv")
    with pytest.raises(FileExistsError, match="newer than the output"), staged_output_dir(old, True):
        pass
    assert (old / "per_volume.csv").read_text() == "mine"


def test_a_finished_output_named_like_a_staging_folder_is_not_removed(tmp_path):
    from utils.io import staged_output_dir

    theirs = tmp_path / "e74.staging-server"
    with staged_output_dir(theirs, force=False) as stage:
        (stage / "metrics.json").write_text("{}")
    (theirs / "notes.txt").write_text("mine")
    with staged_output_dir(tmp_path / "e74", force=False) as stage:
        (stage / "metrics.json").write_text("{}")
    assert (theirs / "notes.txt").read_text() == "mine" and (theirs / "metrics.json").is_file()


def test_single_outputs_in_a_folder_are_never_deleted_by_that_folders_force(world, tmp_path, monkeypatch):
    latest = world["A"] / "checkpoint" / "checkpoint_latest.pth.tar"
    ev = ["--seg-path", str(latest), "--cache-dir", str(world["cache"])]
    res = tmp_path / "res"
    assert _export([str(latest), "--format", "torchscript", "--out", str(res / "model.pt"), "--height", "48"]) is None
    _one_error_line(_cli(eval_script, [*ev, "--out", str(res), "--force"], monkeypatch), "model.pt")
    e = tmp_path / "e"
    eval_script.main([*ev, "--out", str(e)])
    from utils.checkpoint import shrink_checkpoint

    shrink_checkpoint(latest, e / "deploy.pth.tar")
    _one_error_line(_cli(eval_script, [*ev, "--out", str(e), "--force"], monkeypatch), "deploy.pth.tar")
    assert (res / "model.pt").is_file() and (e / "deploy.pth.tar").is_file()


def test_a_finished_run_is_not_touched_by_a_resume_even_without_its_statistics(world, tmp_path):
    c = tmp_path / "c"
    shutil.copytree(world["A"], c)
    (c / "normalization.json").unlink()
    before = {p: s for p, s in _snapshot(c).items() if p.name != "train.log"}
    train_script.main(_argv(world["data"], c, world["cache"], "--epochs", "3", "--resume", "auto"))
    assert {p: s for p, s in _snapshot(c).items() if p.name != "train.log"} == before


def test_a_log_row_cut_short_is_not_merged_with_the_next(world, tmp_path):
    c = tmp_path / "c"
    shutil.copytree(world["A"], c)
    text = (c / "log.csv").read_bytes()
    (c / "log.csv").write_bytes(text[:-2])  # the last row's line ending lost (a crash mid-append)
    train_script.main(_argv(world["data"], c, world["cache"], "--epochs", "4", "--resume", "auto"))
    rows = list(csv.DictReader((c / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"] and all(None not in r for r in rows)


def test_run_folders_stay_out_of_the_cache_and_other_runs_and_may_hold_their_cache(world, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(world["cache"], cache)
    message = _cli(train_script, _argv(world["data"], cache / "run", cache, "--epochs", "1"), monkeypatch)
    _one_error_line(message, "lies inside the cache")
    src = str(world["A"] / "checkpoint" / "model_best.pth.tar")
    message = _cli(train_script, _argv(world["data"], world["A"] / "ft", cache, "--finetune", src), monkeypatch)
    _one_error_line(message, "lies inside the run folder")
    run = tmp_path / "run"  # its decode cache inside it: the run resumes
    train_script.main(_argv(world["data"], run, run / "cache", "--epochs", "1"))
    train_script.main(_argv(world["data"], run, run / "cache", "--epochs", "2", "--resume", "auto"))
    # the same data through a link: the same data
    (tmp_path / "link").symlink_to(world["data"])
    train_script.main(_argv(tmp_path / "link", run, run / "cache", "--epochs", "3", "--resume", "auto"))
    assert [r["epoch"] for r in csv.DictReader((run / "log.csv").open())] == ["1", "2", "3"]


def test_predictions_never_go_among_the_scans_of_a_split(world, tmp_path, monkeypatch):
    latest = str(world["A"] / "checkpoint" / "checkpoint_latest.pth.tar")
    split = world["data"] / "Edema_testset" / "original_images"
    scan = next(split.iterdir())
    message = _cli(predict_script, [str(scan), "--checkpoint", latest, "--out", str(split / "preds")], monkeypatch)
    _one_error_line(message, "lies inside the folder holding the scan folder")
    assert not (split / "preds").exists()


def test_sweep_out_inside_the_data_is_refused_before_anything_is_written(world, tmp_path, monkeypatch):
    import sweep as sweep_script

    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.001, high: 0.01, log: true}\n")
    argv = [
        "--study",
        "s",
        "--space",
        str(space),
        "--trials",
        "1",
        "--out",
        str(data / "sweep"),
        *_argv(data, "x", world["cache"])[:-4],
    ]
    argv += ["-d", str(data), "--cache-dir", str(world["cache"]), "--epochs", "1"]
    with pytest.raises((FileExistsError, SystemExit)) as refused:
        sweep_script.main(argv)
    assert "lies inside the data" in str(refused.value)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_rescale_factors_that_make_no_usable_copy_are_one_error_line(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    drive = root.parent / "shared" / "data" / "DRIVE"
    for factor, needle in (
        ("0", "finite number > 0"),
        ("nan", "finite number > 0"),
        ("inf", "finite number > 0"),
        ("1e-9", "choose a factor nearer 1"),
    ):
        out = tmp_path / f"x{factor}"
        done = subprocess.run(
            [sys.executable, "-m", "tools.rescale_photos", str(drive), str(out), "--factor", factor],
            cwd=root,
            capture_output=True,
            text=True,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and needle in lines[0] and not out.exists(), done.stderr


def test_a_full_disk_during_a_torchscript_export_is_one_error_line(world, tmp_path, monkeypatch):
    import errno

    real = Path.write_bytes

    def full(self, data):
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    latest = world["A"] / "checkpoint" / "checkpoint_latest.pth.tar"
    message = _export([str(latest), "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--height", "48"])
    _one_error_line(message, "m.pt", "the disk is full")
    assert not list(tmp_path.iterdir())


def test_writers_of_one_folder_wait_for_each_other_and_a_read_only_folder_is_not_called_full(tmp_path):
    import errno
    import threading

    from utils.io import atomic_path, output_file, output_lock

    held = output_lock(tmp_path)
    threading.Timer(0.5, held.release).start()
    with output_file(tmp_path / "a.txt") as tmp:  # waits for the other writer instead of failing
        tmp.write_text("a")
    assert (tmp_path / "a.txt").read_text() == "a"

    class ReadOnly(OSError):
        pass

    with pytest.raises(OSError) as refused, atomic_path(tmp_path / "b.txt"):
        raise ReadOnly(errno.EROFS, "Read-only file system")
    assert "disk is full" not in str(refused.value)


def test_what_appears_in_an_earlier_versions_output_while_it_is_replaced_is_kept(tmp_path):
    from utils.io import staged_output_dir

    out = tmp_path / "old"
    (out / "vis").mkdir(parents=True)
    (out / "vis" / "P1.gif").write_bytes(b"gif")
    (out / OUTPUT_MARKER).write_text(json.dumps({"written_by": "retina-lesion", "entries": ["vis"]}))
    time.sleep(2.5)  # what comes later is newer than the marker by more than file systems round times
    with staged_output_dir(out, force=True) as stage:
        (stage / "metrics.json").write_text("{}")
        (out / "vis" / "finetune").mkdir()  # a run started into the old output meanwhile
        (out / "vis" / "finetune" / "log.csv").write_text("epoch\n")
    (kept,) = [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert (kept / "vis" / "finetune" / "log.csv").read_text() == "epoch\n"  # (with the folder it is in, named)
