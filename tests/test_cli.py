"""The command line: help in groups with effective defaults, parsing before the multi-GPU relaunch, progress that
reaches a log file, settings files checked against the settings' types."""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval as eval_script
import predict as predict_script
import test as test_script
import train as train_script
from engine.cli import cli_main, train_settings

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = {"train.py": train_script, "eval.py": eval_script, "test.py": test_script, "predict.py": predict_script}


def _help(module) -> str:
    return module.build_parser().format_help()


@pytest.mark.parametrize("script", sorted(DRIVERS))
def test_every_option_has_help(script):
    parser = DRIVERS[script].build_parser()
    missing = [a.option_strings or a.dest for a in parser._actions if not (a.help and a.help.strip())]
    assert not missing, f"{script}: options without help: {missing}"


def test_train_help_shows_groups_and_effective_defaults_per_task():
    text = _help(train_script)
    groups = ("task:", "model:", "data:", "augmentation:", "optimisation:", "run:", "tools:")
    # each task's own group (the vessel task's settings, --val-count and --scale, are now the OCT task's too)
    for group in (*groups, "oct task:", "settings of several tasks:"):
        assert f"\n{group}" in text, group
    flat = " ".join(text.split())
    assert "[default: unet_nested; vessel: unet]" in flat
    assert "[default: step]" in flat and "[default: 200]" in flat  # the schedule nobody could see
    assert "[default: 0; vessel: 96]" in flat and "[default: 16 32 64 128 256]" in flat
    assert "python -m data.synthetic" in flat and "python -m tools.export" in flat
    parser = train_script.build_parser()
    not_settings = ("help", "config", "resume", "finetune")
    settings_options = [a for a in parser._actions if a.option_strings and a.dest not in not_settings]
    assert len(settings_options) == 50 and all("[default:" in a.help for a in settings_options)
    assert (
        "oct: RETOUCH and B-scan layouts without a val/ folder: cases held out for validation; vessel: training" in flat
    )


def test_help_and_settings_are_declared_without_torch():
    """--help and argument errors come before torch: the tasks' settings are declared beside their readers and the
    registry names the built-in tasks (and train.py the built-in models) without importing them."""
    code = (
        "import sys, train, eval, test, predict\n"
        "for m in (train, eval, test, predict): m.build_parser().format_help()\n"
        "from tasks import task_settings, list_tasks\n"
        "assert {'OctSettings', 'VesselSettings'} <= {task_settings(t).__name__ for t in list_tasks()}\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    from models import list_models

    assert sorted(train_script.MODELS) == sorted(list_models())


def test_docs_cli_holds_the_current_help(monkeypatch):
    """docs/CLI.md is the output of ``COLUMNS=120 python <driver> --help``; regenerate it when an option changes."""
    monkeypatch.setenv("COLUMNS", "120")
    docs = (ROOT / "docs" / "CLI.md").read_text()
    for script, module in DRIVERS.items():
        assert f"```text\n{_help(module)}```" in docs, f"docs/CLI.md: the help of {script} is out of date"


@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["--nmae", "unet"], 2), (["--epochs", "x"], 2)])
def test_help_and_typos_never_start_a_process_per_gpu(monkeypatch, capsys, argv, code):
    import utils.distributed as d

    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(d.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(d.torch.cuda, "device_count", lambda: 2)  # CUDA_VISIBLE_DEVICES=0,1
    monkeypatch.setattr(d.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    with pytest.raises(SystemExit) as stop:
        cli_main("train.py", train_script.parse_args, train_script.main)
    assert stop.value.code == code and calls == []
    # a valid command line does relaunch (the mock above is what would have caught one)
    monkeypatch.setattr(sys, "argv", ["train.py", "--name", "unet"])
    with pytest.raises(SystemExit) as stop:
        cli_main("train.py", train_script.parse_args, train_script.main)
    assert stop.value.code == 0 and len(calls) == 1 and "--nproc_per_node=2" in calls[0]


def test_progress_reaches_a_log_file_and_train_log(tiny_dataset, tmp_path):
    """Output redirected to a file (as under SLURM or nohup): each epoch leaves progress lines with images/s and an
    ETA, timestamped, and <run>/train.log holds the same lines."""
    run, log = tmp_path / "run", tmp_path / "out.txt"
    argv = ["--name", "unet", "--channels", "4", "8", "8", "16", "16", "--batch-size", "4", "-j", "0"]
    argv += ["-d", str(tiny_dataset), "--out", str(run), "--cache-dir", str(tmp_path / "c"), "--epochs", "2"]
    with log.open("w") as f:
        subprocess.run(
            [sys.executable, "train.py", *argv, "--log-every", "3"], cwd=ROOT, stdout=f, stderr=f, check=True
        )
    text = log.read_text()
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    pattern = stamp + r"epoch (\d)/2 step (\d+)/(\d+) loss=[\d.]+ lr=[\d.e-]+ [\d.]+ img/s, .* ETA .*$"
    lines = [m for m in re.finditer(pattern, text, re.M)]
    assert {m.group(1) for m in lines} == {"1", "2"}, text
    assert any(m.group(2) == "3" for m in lines) and any(m.group(2) == m.group(3) for m in lines)  # every 3, last
    assert "decoding and normalisation 4/4" in text
    kept = (run / "train.log").read_text()
    assert all(m.group(0) in kept for m in lines) and "epoch 2/2 loss=" in kept
    # the run's last line: the best epoch, its score and the checkpoint (after the epochs' lines)
    best = re.search(r"best dice_mean\+auc_mean ([\d.]+) at epoch (\d): (\S+)$", kept.rstrip().splitlines()[-1])
    assert best and best.group(3) == str(run / "checkpoint" / "model_best.pth.tar"), kept[-300:]
    state = torch.load(best.group(3), weights_only=True)
    assert int(best.group(2)) == state["epoch"] and float(best.group(1)) == pytest.approx(state["best_score"], abs=1e-4)


def _resolve(**given):
    return train_settings(argparse.Namespace(**given))


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("c.json", json.dumps({"amp": "false"}), r"c.json: setting 'amp' must be true or false or null, got 'false'"),
        ("d.json", json.dumps({"deterministic": "false"}), r"d.json: setting 'deterministic' must be true or false"),
        ("e.yaml", "epochs: '2'\n", r"e.yaml: setting 'epochs' must be an integer, got '2'"),
        ("c.yaml", "channels: [8, 16.5]\n", r"c.yaml: setting 'channels' must be a list of integers"),
        ("bad.yaml", "lr: 0.1\nloss: [mix_3\n", r"bad.yaml: line \d+ not valid YAML"),
        ("bad.json", '{"lr": 0.1,\n "loss": }', r"bad.json: line 2 not valid JSON"),
    ],
)
def test_settings_files_are_checked_against_the_settings_types(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        _resolve(config=str(tmp_path / name))


def test_well_typed_settings_and_bad_values(tmp_path):
    (tmp_path / "ok.yaml").write_text("amp: false\ndeterministic: true\nlr: 1\n")
    s = _resolve(config=str(tmp_path / "ok.yaml"))
    assert s.amp is False and s.deterministic is True and s.lr == 1
    with pytest.raises(ValueError, match=r"crop_size \(--crop-size\) must be >= 0"):
        _resolve(crop_size=-5)
    with pytest.raises(ValueError, match="Unknown task 'retina'; valid tasks: oct, vessel"):
        _resolve(task="retina")


def test_drivers_end_in_one_error_line(tmp_path):
    """A bad input through the real command line: one ``error:`` line, exit status 1, no traceback."""
    proc = subprocess.run(
        [sys.executable, "eval.py", "--seg-path", str(tmp_path / "missing.pth.tar")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.pth.tar'}: checkpoint not found"]


def test_only_errors_that_explain_themselves_lose_their_traceback(monkeypatch):
    """A bad input, a checkpoint, a folder in use, a path the OS names: one `error:` line. A CUDA failure or a bug
    (a plain RuntimeError, an OSError naming nothing) keeps its traceback."""
    import errno

    from data.common import DatasetError
    from engine.cli import cli_main
    from utils.checkpoint import CheckpointError
    from utils.io import FolderInUse

    monkeypatch.setattr(sys, "argv", ["x.py"])
    explained = [
        ValueError("--lr must be finite"),
        DatasetError("a.bmp: damaged"),
        CheckpointError("c.pth.tar: truncated"),
        FolderInUse("runs/a is in use"),
        PermissionError(errno.EACCES, "Permission denied", "/data/x"),
        FileExistsError("runs/a already holds a run"),
    ]
    for e in explained:
        with pytest.raises(SystemExit) as stop:
            cli_main("x.py", lambda argv: None, lambda argv, e=e: (_ for _ in ()).throw(e), relaunch=False)
        assert stop.value.code == "error: " + str(e)
    for e in (RuntimeError("CUDA error: an illegal memory access was encountered"), OSError(errno.EIO, "I/O error")):
        with pytest.raises(type(e)):
            cli_main("x.py", lambda argv: None, lambda argv, e=e: (_ for _ in ()).throw(e), relaunch=False)


def test_task_settings_of_any_annotated_type_reach_the_command_line(monkeypatch):
    """A task's setting becomes an option of its annotated type (``X | None``, ``list[X]``, bool); one named like a
    shared option is refused when the parser is built, naming both."""
    import argparse
    from dataclasses import dataclass

    import tasks
    from engine.cli import add_task_settings
    from utils.config import TaskSettings, option

    @dataclass
    class Rich(TaskSettings):
        cut: float | None = option(None, "a threshold")
        sizes: list[int] = option([3, 5], "kernel sizes")
        smooth: bool = option(False, "smooth the output")

    class RichTask:
        name, settings_class = "rich", Rich

    monkeypatch.setitem(tasks._REGISTRY, "rich", RichTask)
    p = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    add_task_settings(p)
    args = vars(p.parse_args(["--cut", "0.5", "--sizes", "7", "9", "--smooth"]))
    assert {k: args[k] for k in ("cut", "sizes", "smooth")} == {"cut": 0.5, "sizes": [7, 9], "smooth": True}
    Rich.from_dict({k: args[k] for k in ("cut", "sizes", "smooth")})  # the types the settings check accept

    @dataclass
    class Clash(TaskSettings):
        workers: int = option(1, "clashes with -j/--workers")

    class ClashTask:
        name, settings_class = "clash", Clash

    monkeypatch.setitem(tasks._REGISTRY, "clash", ClashTask)
    with pytest.raises(ValueError, match="the clash task's setting 'workers' has the name of a shared option"):
        train_script.build_parser()


def test_a_checkpoint_outside_a_run_is_never_written_beside():
    """eval.py / test.py with the shipped weights wrote into checkpoints/eval_test/, among the weights."""
    from engine.cli import default_out

    assert default_out(["checkpoints/drive_unet.pth.tar"], "eval_test") == Path("runs/drive_unet/eval_test")
    run = Path("runs/a/checkpoint/model_best.pth.tar")
    assert default_out([str(run)], "eval_val") == run.resolve().parent.parent / "eval_val"
    assert default_out([str(run), str(run)], "test") == Path("runs/fusion/test")
