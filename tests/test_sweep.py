"""sweep.py: Optuna trials as ordinary training runs; two workers on one journal file, pruning, a killed worker,
the report and the best settings, fusion of the top trials."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import eval as eval_script
import sweep as sweep_script
import train as train_script
from engine.sweep import load_space, load_study

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--name", "unet", "--channels", "4", "8", "8", "16", "16", "--batch-size", "4", "-j", "0", "--loss", "mix_3"]
TINY += ["--deterministic", "--lr-mode", "poly"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("sw") / "oct", seed=4, train=3, val=1, test=1, slices=6, height=48,
                         width=32)  # fmt: skip


def _space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def _worker(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "sweep.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _common(data, tmp_path, study, space, trials, *extra):
    out = tmp_path / study
    return [
        *("--study", study, "--space", str(space), "--trials", str(trials), "--out", str(out)),
        *(*TINY, "-d", str(data), "--cache-dir", str(tmp_path / "cache"), *extra),
    ], out


def test_space_file_is_checked_against_the_settings(tmp_path):
    good = _space(tmp_path / "s.yaml", "lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
                  "class_weights: {type: categorical, choices: [[1, 5, 10, 20], [1, 2, 4, 8]]}\n")  # fmt: skip
    assert set(load_space(good)) == {"lr", "class_weights"}
    for text, needle in (
        ("lrr: {type: float, low: 0.1, high: 1}", "lrr: not a setting"),
        ("lr: {type: float, low: 1, high: 0.1}", "low < high"),
        ("lr: {type: float, low: 0, high: 1, log: true}", "log range needs low > 0"),
        ("amp: {type: categorical, choices: ['false', true]}", "must be"),
        ("data_dir: {type: categorical, choices: [a, b]}", "cannot change data_dir"),
        ("lr: {type: uniform, low: 0, high: 1}", "needs type"),
        ("batch_size: {type: int, low: 1.5, high: 3}", "whole numbers"),
        ("lr: {type: float, low: 0.001, high: 0.1, log: true, step: 0.01}", "cannot go with log"),
        ("batch_size: {type: categorical, choices: [0, 8]}", "batch_size .* must be >= 1"),
        ("class_weights: {type: categorical, choices: [[1, 2]]}", "2 class_weights for 4 classes"),
    ):
        with pytest.raises(ValueError, match=needle):
            load_space(_space(tmp_path / "bad.yaml", text))


def test_two_workers_share_one_study_and_run_each_trial_once(data, tmp_path):
    space = _space(tmp_path / "space.yaml", "lr: {type: float, low: 0.001, high: 0.01, log: true}\n"
                   "loss: {type: categorical, choices: [mix_3, mix_33]}\n")  # fmt: skip
    args, out = _common(data, tmp_path, "two", space, 5, "--epochs", "2", "--steps-per-epoch", "2", "--pruner", "none")
    workers = [_worker(args) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=300) == 0, w.stderr.read()
    study = load_study("two", out / "journal.log", create=False)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4] and _states(study) == ["COMPLETE"] * 5
    workers_seen = {t.user_attrs["worker_lock"] for t in trials}
    assert len(workers_seen) == 2  # both worked
    for t in trials:  # each trial trained once, in its own folder, and its value is its best validation score
        run = Path(t.user_attrs["run_dir"])
        assert run.name == f"trial_{t.number:03d}"
        assert (run / "train.log").read_text().count("training unet") == 1
        rows = list(csv.DictReader((run / "log.csv").open()))
        best = max(float(r["dice_mean"]) + float(r["auc_mean"]) for r in rows)
        assert t.value == pytest.approx(best, abs=1e-6) and len(rows) == 2


def test_pruning_stops_a_hopeless_learning_rate_early(data, tmp_path):
    # a learning rate of 1e-9 leaves the model where it started: its per-epoch score falls behind the median
    space = _space(tmp_path / "space.yaml", "lr: {type: categorical, choices: [0.01, 1.0e-9]}\n")
    args, out = _common(data, tmp_path, "prune", space, 6, "--epochs", "4", "--steps-per-epoch", "10")
    sweep_script.main([*args, "--sampler-seed", "0"])
    study = load_study("prune", out / "journal.log", create=False)
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state.name == "PRUNED"]
    assert any(t.params["lr"] == 1e-9 for t in pruned), [(t.state.name, t.params) for t in study.trials]
    assert all(max(t.intermediate_values) < 4 for t in pruned)  # stopped before the last epoch
    assert len(study.get_trials(deepcopy=False)) == 6


def test_a_killed_worker_leaves_a_consistent_study_that_a_new_worker_finishes(data, tmp_path):
    space = _space(tmp_path / "space.yaml", "lr: {type: float, low: 0.001, high: 0.01, log: true}\n")
    args, out = _common(
        data, tmp_path, "kill", space, 2, "--epochs", "3", "--steps-per-epoch", "200", "--pruner", "none"
    )
    first = _worker(args)
    latest = out / "trial_000" / "checkpoint" / "checkpoint_latest.pth.tar"
    t0 = time.time()
    while not latest.exists():  # the first epoch of trial 0 is saved: kill the worker inside the second
        assert first.poll() is None, first.stderr.read()
        assert time.time() - t0 < 180
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    study = load_study("kill", out / "journal.log", create=False)
    assert _states(study) == ["RUNNING"]  # what a dead worker leaves
    sweep_script.main(args)  # a new worker: fails the dead trial, runs it again from its checkpoint, and one more
    study = load_study("kill", out / "journal.log", create=False)
    trials = study.get_trials(deepcopy=False)
    assert _states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    retry = trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.params == trials[0].params
    assert "resumed from" in (Path(retry.user_attrs["run_dir"]) / "train.log").read_text()
    assert len(list(csv.DictReader((Path(retry.user_attrs["run_dir"]) / "log.csv").open()))) == 2  # epochs 2, 3
    assert (Path(retry.user_attrs["run_dir"]) / "checkpoint" / "model_best.pth.tar").is_file()  # even if epoch 1's


def test_report_best_settings_reproduce_the_best_trial_and_top_trials_fuse(data, tmp_path):
    space = _space(tmp_path / "space.yaml", "lr: {type: float, low: 0.002, high: 0.02, log: true}\n"
                   "class_weights: {type: categorical, choices: [[1, 5, 10, 20], [1, 2, 4, 8]]}\n")  # fmt: skip
    args, out = _common(data, tmp_path, "rep", space, 3, "--epochs", "2", "--steps-per-epoch", "3", "--pruner", "none")
    sweep_script.main([*args, "--sampler-seed", "1"])
    sweep_script.main(["--report", "--study", "rep", "--out", str(out)])
    report = out / "report"
    rows = list(csv.DictReader((report / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 and (report / "trials.md").read_text().count("\n") == 5
    assert (report / "history.png").stat().st_size > 1000 and (report / "importance.png").stat().st_size > 1000
    best = max(rows, key=lambda r: float(r["score"]))
    config = yaml.safe_load((report / "best.yaml").read_text())
    assert config["lr"] == pytest.approx(float(best["param_lr"])) and "out" not in config
    assert config["class_weights"] == json.loads(best["param_class_weights"])
    again = tmp_path / "again"
    train_script.main(["--config", str(report / "best.yaml"), "--out", str(again)])
    rows_again = list(csv.DictReader((again / "log.csv").open()))
    score = max(float(r["dice_mean"]) + float(r["auc_mean"]) for r in rows_again)
    assert score == pytest.approx(float(best["score"]), abs=1e-6)  # the same seed, deterministic on the CPU
    fused = tmp_path / "fused"
    eval_script.main(
        ["--fusion-study", "rep", "--storage", str(out / "journal.log"), "--top", "2", "--out", str(fused)]
    )
    top2 = sorted(rows, key=lambda r: -float(r["score"]))[:2]
    expected = [str(Path(r["run_dir"]) / "checkpoint" / "model_best.pth.tar") for r in top2]
    assert json.loads((fused / "metrics.json").read_text())["checkpoints"] == expected
    with pytest.raises(ValueError, match="no sweep journal there"):  # and none is created by looking
        eval_script.main(["--fusion-study", "rep", "--storage", str(tmp_path / "typo.log"), "--out", str(fused)])
    assert not (tmp_path / "typo.log").exists()
    with pytest.raises(ValueError, match="no study 'nope'"):
        eval_script.main(["--fusion-study", "nope", "--storage", str(out / "journal.log"), "--out", str(fused)])


def test_one_study_one_way_of_training_and_failing_trials_stop_the_worker(data, tmp_path):
    space = _space(tmp_path / "space.yaml", "lr: {type: float, low: 0.001, high: 0.01, log: true}\n")
    args, out = _common(data, tmp_path, "one", space, 1, "--epochs", "1", "--steps-per-epoch", "1")
    sweep_script.main(args)
    with pytest.raises(ValueError, match=r"trains with other settings \(epochs: 1 there, 2 here\)"):
        sweep_script.main([*args[: args.index("--epochs")], "--epochs", "2", "--steps-per-epoch", "1"])
    other = _space(tmp_path / "other.yaml", "lr: {type: float, low: 0.001, high: 0.1, log: true}\n")
    with pytest.raises(ValueError, match="was started with another search space"):
        sweep_script.main([*args[:2], "--space", str(other), *args[4:]])
    with pytest.raises(ValueError, match="holds the trials of study 'one'"):
        sweep_script.main(["--study", "two", *args[2:]])
    # a space whose every trial fails (a learning rate that makes the second step's loss non-finite) stops, naming
    # the error (crops larger than the slices no longer fail: they are centred and their padding ignored)
    diverging = _space(tmp_path / "diverge.yaml", "lr: {type: float, low: 1.0e+29, high: 1.0e+30, log: true}\n")
    args, out = _common(data, tmp_path, "diverge", diverging, 20, "--epochs", "1", "--steps-per-epoch", "2")
    with pytest.raises(RuntimeError, match="5 trials in a row failed"):
        sweep_script.main(args)
    sweep_script.main(["--report", "--study", "diverge", "--out", str(out)])
    rows = list(csv.DictReader((out / "report" / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["FAIL"] * 5 and all("non-finite loss" in r["error"] for r in rows)
    assert not (out / "report" / "best.yaml").exists()
    with pytest.raises(SystemExit, match="--gpus: no CUDA GPU is visible here"):  # not one CPU worker per "GPU"
        sweep_script.main([*args, "--gpus", "0,1"])
