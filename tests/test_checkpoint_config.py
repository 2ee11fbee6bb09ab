import argparse
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from engine.cli import train_settings
from models import build_model, model_from_checkpoint
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.config import Settings

SMALL = [4, 8, 8, 8, 8]


def _state(name="unet", **settings):
    s = Settings(name=name, channels=SMALL, **settings)
    model = build_model(name, num_classes=s.num_classes, channels=tuple(SMALL))
    return {"model_name": name, "settings": s.to_dict(), "epoch": 3, "state_dict": model.state_dict()}, model


def test_round_trip_rebuilds_the_model(tmp_path):
    state, model = _state("unet_nested")
    save_checkpoint(tmp_path / "c.pth.tar", state)
    loaded, settings, ckpt = model_from_checkpoint(tmp_path / "c.pth.tar")
    assert settings.name == "unet_nested" and ckpt["format_version"] == 3 and ckpt["epoch"] == 3
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(loaded(x).seg_logits, model.eval()(x).seg_logits)
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed away


def test_truncated_checkpoint_is_refused(tmp_path):
    state, _ = _state()
    save_checkpoint(tmp_path / "c.pth.tar", state)
    data = (tmp_path / "c.pth.tar").read_bytes()
    (tmp_path / "c.pth.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.pth.tar: not a loadable checkpoint"):
        load_checkpoint(tmp_path / "c.pth.tar")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model_name": "unet", "payload": _RunsCode()}, tmp_path / "evil.pth.tar", pickle_module=pickle)
    with pytest.raises(CheckpointError, match="evil.pth.tar"):
        load_checkpoint(tmp_path / "evil.pth.tar")
    assert not (tmp_path / "PWNED").exists()


def test_foreign_checkpoints_are_clear_errors(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a checkpoint of this toolkit"):
        load_checkpoint(tmp_path / "other.pth")
    state, _ = _state("unet")
    state["settings"]["num_classes"] = 2  # weights of a 4-class model claimed as a 2-class one
    save_checkpoint(tmp_path / "mismatch.pth.tar", state)
    with pytest.raises(CheckpointError, match="do not fit this model"):
        model_from_checkpoint(tmp_path / "mismatch.pth.tar")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth.tar")


def _ns(**kw):
    return argparse.Namespace(**kw)


def test_config_file_then_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.05\nbatch_size: 2\nloss: mix_3\n")
    s = train_settings(_ns(config=str(tmp_path / "c.yaml"), lr=0.1))
    assert (s.lr, s.batch_size, s.loss, s.epochs) == (0.1, 2, "mix_3", 100)
    (tmp_path / "c.json").write_text(json.dumps({"lr-mode": "poly"}))
    assert train_settings(_ns(config=str(tmp_path / "c.json"))).lr_mode == "poly"


def test_unknown_and_bad_settings_are_errors(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"learning_rate": 0.1}))
    with pytest.raises(ValueError, match=r"c.json: learning_rate: not a setting of the oct task"):
        train_settings(_ns(config=str(tmp_path / "c.json")))
    with pytest.raises(ValueError, match="valid names"):
        train_settings(_ns(name="resnet"))
    with pytest.raises(ValueError, match="Bad loss spec"):
        train_settings(_ns(loss="focal"))
    with pytest.raises(ValueError, match="lr_mode"):
        train_settings(_ns(lr_mode="cosine"))


def test_shrunk_bf16_checkpoint_loads_and_predicts_alike(tmp_path):
    from utils.checkpoint import shrink_checkpoint

    state, model = _state("unet")
    state["optimizer"] = {"state": {}, "param_groups": []}
    save_checkpoint(tmp_path / "full.pth.tar", state)
    small = shrink_checkpoint(tmp_path / "full.pth.tar", tmp_path / "small.pth.tar")
    raw = load_checkpoint(small)
    assert "optimizer" not in raw and raw["state_dict"]["encoder.stages.0.0.weight"].dtype == torch.bfloat16
    loaded, _, _ = model_from_checkpoint(small)
    x = torch.randn(1, 3, 16, 16)
    ref = model.eval()(x).seg_logits
    assert (loaded(x).seg_logits - ref).abs().max() < 0.05 * ref.abs().max()


def test_a_format_1_checkpoint_is_migrated_on_load(tmp_path):
    """Format 1 stored the best score as ``best_dice``: loading gives ``best_score``, the file is left as it was."""
    import torch

    from utils.checkpoint import load_checkpoint

    path = tmp_path / "old.pth.tar"
    old = {"format_version": 1, "model_name": "unet", "settings": {}, "state_dict": {}, "epoch": 3, "best_dice": 0.7}
    torch.save(old, path)
    before = path.read_bytes()
    state = load_checkpoint(path)
    assert state["best_score"] == 0.7 and "best_dice" not in state and path.read_bytes() == before


def test_format_2_checkpoints_and_settings_files_still_load(tmp_path):
    """Before each task declared its settings, every checkpoint and settings.json carried detection, val_count,
    layout and label_map at the top level: they load with those moved into task_settings, each task keeping its own
    (the shipped DRIVE model and configs/ included); a resume compares them like any other setting."""
    from engine import run_folder
    from engine.sweep import load_space
    from tasks import build_task

    ROOT = Path(__file__).resolve().parents[1]
    shipped = load_checkpoint(ROOT / "checkpoints" / "drive_unet.pth.tar")
    assert torch.load(ROOT / "checkpoints" / "drive_unet.pth.tar", weights_only=True)["format_version"] == 2
    vessel = build_task(Settings.from_dict(shipped["settings"]), [shipped])
    assert (vessel.own.val_count, vessel.own.scale) == (4, "auto")

    flat = {"task": "oct", "detection": "seg", "layout": "challenger", "label_map": "1:1,2:3,3:2", "val_count": 2}
    old = {"format_version": 2, "model_name": "unet", "settings": flat, "state_dict": {}, "epoch": 3}
    torch.save(old, tmp_path / "oct.pth.tar")
    state = load_checkpoint(tmp_path / "oct.pth.tar")
    assert state["settings"] == {"task": "oct", "task_settings": {k: v for k, v in flat.items() if k != "task"}}
    oct_task = build_task(Settings.from_dict(state["settings"]), [state])
    assert (oct_task.own.detection, oct_task.own.layout, oct_task.own.val_count) == ("seg", "challenger", 2)
    # a vessel settings.json of format 2 carried the OCT keys too: the vessel task drops them
    as_vessel = Settings.from_dict({**flat, "task": "vessel"}, source="settings.json")
    assert build_task(as_vessel).own.to_dict() == {"val_count": 2, "scale": "auto", "preprocess": "rgb"}

    current = train_settings(_ns(layout="retouch", epochs=5))
    with pytest.raises(ValueError, match=r"layout 'retouch' \(the run: 'challenger'\)"):
        run_folder.resumed_settings(state, current, {"layout", "epochs"}, tmp_path / "oct.pth.tar")
    same = train_settings(_ns(layout="challenger", epochs=5))
    resumed = run_folder.resumed_settings(state, same, {"layout", "epochs"}, tmp_path / "oct.pth.tar")
    assert resumed.epochs == 5 and resumed.task_settings["label_map"] == "1:1,2:3,3:2"
    assert set(load_space(ROOT / "configs" / "sweep_demo.yaml")) == {"lr", "loss", "name", "class_weights"}


def test_a_runs_settings_file_and_an_older_ones_work_as_config_files(tmp_path):
    """settings.json (and a sweep's best.yaml) hold the task's own settings in a task_settings block: fed back with
    --config they are kept, not reset to the defaults; a format-2 vessel settings.json, which carried the OCT keys
    too, is read without them; nonsense in the block is an error naming the file."""
    from engine.cli import given_settings

    run = train_settings(_ns(layout="retouch", val_count=2, detection="seg"))
    (tmp_path / "settings.json").write_text(json.dumps(run.to_dict()))
    again = train_settings(_ns(config=str(tmp_path / "settings.json")))
    expect = {"layout": "retouch", "label_map": "1:1,2:2,3:3", "val_count": 2, "lone_bscans": 0.1, "detection": "seg"}
    expect["scale"] = "auto"
    assert again.task_settings == expect
    assert {"layout", "val_count", "lr"} <= given_settings(_ns(config=str(tmp_path / "settings.json")))

    old_vessel = {"task": "vessel", "val_count": 3, "detection": "combined", "layout": "auto", "label_map": "1:1"}
    (tmp_path / "old.json").write_text(json.dumps(old_vessel))
    assert train_settings(_ns(config=str(tmp_path / "old.json"))).task_settings == {
        "val_count": 3,
        "scale": "auto",
        "preprocess": "rgb",
    }
    assert "layout" not in given_settings(_ns(config=str(tmp_path / "old.json")))

    (tmp_path / "bad.yaml").write_text("task_settings: {bogus: 1}\n")
    with pytest.raises(ValueError, match="bad.yaml: bogus: not a setting of the oct task"):
        train_settings(_ns(config=str(tmp_path / "bad.yaml")))
    (tmp_path / "twice.yaml").write_text("val_count: 2\ntask_settings: {val_count: 3}\n")
    with pytest.raises(ValueError, match="val_count both at the top level and in task_settings"):
        train_settings(_ns(config=str(tmp_path / "twice.yaml")))


def test_segmenter_takes_the_checkpoints_scale_unless_given(tmp_path):
    from tasks.vessel import Segmenter

    ROOT = Path(__file__).resolve().parents[1]
    state = load_checkpoint(ROOT / "checkpoints" / "drive_unet.pth.tar")
    state["settings"]["task_settings"]["scale"] = 0.5
    save_checkpoint(tmp_path / "half.pth.tar", state)
    assert Segmenter.from_checkpoint(tmp_path / "half.pth.tar").task.scale == 0.5  # as predict.py would
    assert Segmenter.from_checkpoint(tmp_path / "half.pth.tar", scale="auto").task.scale == "auto"
    assert Segmenter.from_checkpoint(ROOT / "checkpoints" / "drive_unet.pth.tar").task.scale == "auto"


def test_a_sweep_space_may_hold_the_tasks_own_settings(tmp_path):
    from engine.sweep import load_space

    space = "val_count: {type: int, low: 2, high: 6}\nlr: {type: float, low: 0.001, high: 0.01}\n"
    (tmp_path / "s.yaml").write_text(space)
    assert set(load_space(tmp_path / "s.yaml", "vessel")) == {"val_count", "lr"}
    (tmp_path / "o.yaml").write_text("lone_bscans: {type: float, low: 0.0, high: 0.3}\n")  # an OCT setting
    with pytest.raises(ValueError, match="o.yaml: lone_bscans: not a setting"):
        load_space(tmp_path / "o.yaml", "vessel")
    (tmp_path / "t.yaml").write_text("task_settings: {type: categorical, choices: [{}]}\n")
    with pytest.raises(ValueError, match="t.yaml: task_settings: not a setting"):
        load_space(tmp_path / "t.yaml", "oct")
    (tmp_path / "d.yaml").write_text("detection: {type: categorical, choices: [head, sideways]}\n")
    with pytest.raises(ValueError, match="sideways"):
        load_space(tmp_path / "d.yaml", "oct")
