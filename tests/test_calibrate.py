"""Calibrated fluid (issue 23, item 5): a checkpoint's class offsets, applied alike by every driver, and
``tools.calibrate``, which sets them so the predicted fluid area matches the reference's."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from inference.predictor import Member, Predictor
from models import build_model
from models.segdet import SegDetOutput
from utils.checkpoint import CheckpointError, checked_class_bias, load_checkpoint, save_checkpoint
from utils.config import Settings

SMALL = [4, 8, 8, 16, 16]


class Constant(nn.Module):
    """Logits (0, -1, -2, -3) at every pixel: background by the argmax, by a margin of 1 over REA."""

    def forward(self, x):
        b, _, h, w = x.shape
        logits = torch.tensor([0.0, -1.0, -2.0, -3.0]).view(1, 4, 1, 1).expand(b, 4, h, w)
        return SegDetOutput(logits + 0 * x[:, :1], None, (logits,))


def labels_of(bias, tta=False):
    member = Member(Constant(), [0.0] * 3, [1.0] * 3, class_bias=bias)
    predictor = Predictor([member], "cpu", tta_flip=tta)
    x = torch.zeros(2, 3, 5, 4, dtype=torch.uint8)
    return predictor.predict(lambda a, b: x[a:b], 2).labels


@pytest.mark.parametrize("tta", [False, True])  # the argmax path and the probability (fusion) path
def test_the_class_offset_moves_the_decision_by_hand(tta):
    assert (labels_of(None, tta) == 0).all()
    assert (labels_of((-0.9, 0, 0, 0), tta) == 0).all()  # 0 - 0.9 > -1: still background
    assert (labels_of((-1.1, 0, 0, 0), tta) == 1).all()  # 0 - 1.1 < -1: REA
    assert (labels_of((-5.0, 0, 2.5, 0), tta) == 2).all()  # -1 < -2 + 2.5: SRF


def test_a_bad_class_bias_is_refused_naming_the_file():
    assert checked_class_bias([1, 0, 0, 0], 4, "m.pth") == (1.0, 0.0, 0.0, 0.0)
    assert checked_class_bias(None, 4, "m.pth") is None
    for bad in ([1, 0, 0], [float("nan"), 0, 0, 0], "1,0,0,0", [1, "a", 0, 0]):
        with pytest.raises(CheckpointError, match="m.pth: class_bias"):
            checked_class_bias(bad, 4, "m.pth")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_dataset):
    torch.manual_seed(3)
    model = build_model("unet", channels=tuple(SMALL))
    with torch.no_grad():  # an untrained model's logits, tamed so that some offset within the range fits
        model.decoder.heads[0].weight.mul_(0.05)
    path = tmp_path_factory.mktemp("ck") / "model_best.pth.tar"
    settings = Settings(name="unet", channels=SMALL, data_dir=str(tiny_dataset))
    state = {"model_name": "unet", "settings": settings.to_dict(), "epoch": 1, "state_dict": model.state_dict()}
    save_checkpoint(path, {**state, "normalization": {"mean": [0.2] * 3, "std": [0.1] * 3}})
    return path


def test_calibration_reaches_the_area_and_eval_applies_it_alike(ckpt, tiny_dataset, tmp_path):
    import eval as eval_py
    from tools import calibrate

    before_bytes = ckpt.read_bytes()
    out = tmp_path / "calibrated.pth.tar"
    report = calibrate.main(["--seg-path", str(ckpt), "-d", str(tiny_dataset), "--split", "val", "--out", str(out)])
    assert ckpt.read_bytes() == before_bytes  # the checkpoint read is never touched
    state = load_checkpoint(out)
    assert state["class_bias"][0] == pytest.approx(report["background_offset"]) and state["class_bias"][1:] == [0] * 3
    assert 0.9 <= report["after"]["fluid_area_ratio"] <= 1.1, report
    assert abs(np.log(report["before"]["fluid_area_ratio"])) > abs(np.log(report["after"]["fluid_area_ratio"]))
    # eval.py reads the offset from the checkpoint: the same area ratio as the calibration found
    metrics = eval_py.main(
        ["--seg-path", str(out), "-d", str(tiny_dataset), "--split", "val", "--out", str(tmp_path / "e")]
    )
    assert metrics["fluid_area_ratio"] == pytest.approx(report["after"]["fluid_area_ratio"])
    plain = eval_py.main(
        ["--seg-path", str(ckpt), "-d", str(tiny_dataset), "--split", "val", "--out", str(tmp_path / "p")]
    )
    assert plain["fluid_area_ratio"] == pytest.approx(report["before"]["fluid_area_ratio"])
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["fluid_area_ratio"] == metrics["fluid_area_ratio"]
    # test.py's submission and predict.py's class maps apply it too: the same labels, not the uncalibrated ones
    import predict as predict_py
    import test as test_py

    volume = sorted((tiny_dataset / "Edema_validationset" / "original_images").iterdir())[0]
    name = volume.name.removesuffix(".img")
    maps = {}
    for tag, model in (("cal", out), ("plain", ckpt)):
        sub = test_py.main(["--seg", "--seg-path", str(model), "-d", str(tiny_dataset), "--split", "val", "--out",
                            str(tmp_path / f"t_{tag}")])  # fmt: skip
        maps[f"test_{tag}"] = np.load(tmp_path / f"t_{tag}" / "segment" / f"{name}_labelMark_volumes.npy")
        predict_py.main([str(volume), "--checkpoint", str(model), "--out", str(tmp_path / f"p_{tag}")])
        maps[f"predict_{tag}"] = np.load(tmp_path / f"p_{tag}" / "segment" / f"{name}_labelMark_volumes.npy")
        assert sub.exists()
    assert np.array_equal(maps["test_cal"], maps["predict_cal"]) and np.array_equal(
        maps["test_plain"], maps["predict_plain"]
    )
    assert (maps["predict_cal"] > 0).sum() != (maps["predict_plain"] > 0).sum()
    # never written over the checkpoint it reads, nor over an existing file without --force
    with pytest.raises(FileExistsError, match="checkpoint being calibrated"):
        calibrate.main(["--seg-path", str(ckpt), "-d", str(tiny_dataset), "--out", str(ckpt), "--force"])
    with pytest.raises(FileExistsError, match="already exists"):
        calibrate.main(["--seg-path", str(ckpt), "-d", str(tiny_dataset), "--split", "val", "--out", str(out)])


def test_an_area_no_offset_reaches_is_refused_and_nothing_written(tiny_dataset, tmp_path):
    from tools import calibrate

    torch.manual_seed(3)
    model = build_model("unet", channels=tuple(SMALL))  # untrained: fluid everywhere, at any offset
    path = tmp_path / "wild.pth.tar"
    settings = Settings(name="unet", channels=SMALL, data_dir=str(tiny_dataset))
    state = {"model_name": "unet", "settings": settings.to_dict(), "epoch": 1, "state_dict": model.state_dict()}
    with torch.no_grad():
        state["state_dict"]["decoder.heads.0.bias"][1:] += 20.0  # lesions 20 logits ahead of the background
    save_checkpoint(path, {**state, "normalization": {"mean": [0.2] * 3, "std": [0.1] * 3}})
    out = tmp_path / "c.pth.tar"
    with pytest.raises(ValueError, match=r"no offset within \+-8 logits.*area ratio"):
        calibrate.main(["--seg-path", str(path), "-d", str(tiny_dataset), "--split", "val", "--out", str(out)])
    assert not out.exists()


def test_export_keeps_the_calibration_and_a_bad_offset_is_refused_at_load_naming_the_file(ckpt, tmp_path):
    import eval as eval_py
    from tools.export import export

    state = load_checkpoint(ckpt)
    calibrated, bad = tmp_path / "cal.pth.tar", tmp_path / "bad.pth.tar"
    save_checkpoint(calibrated, {**state, "class_bias": [-0.05, 0.0, 0.0, 0.0]})
    save_checkpoint(bad, {**state, "class_bias": []})
    x = torch.rand(2, 3, 32, 24)
    seg = [
        torch.jit.load(str(export(c, "torchscript", tmp_path / f"{c.stem}.pt", 32, 24)))(x)[0]
        for c in (ckpt, calibrated)
    ]
    assert torch.allclose(seg[1][:, 0], seg[0][:, 0] - 0.05, atol=1e-6) and torch.equal(seg[1][:, 1:], seg[0][:, 1:])
    with pytest.raises(CheckpointError, match="bad.pth.tar: class_bias"):
        eval_py.main(["--seg-path", str(bad), "--split", "val", "--out", str(tmp_path / "e")])


def test_a_bad_target_is_refused_before_any_prediction(ckpt, tmp_path, monkeypatch):
    from tasks.oct import OctTask
    from tools import calibrate

    def never(*a, **k):
        raise AssertionError("predicted")

    monkeypatch.setattr(OctTask, "fluid_margin", never)
    for target in ("0", "nan", "-1"):
        with pytest.raises(ValueError, match="--target must be a positive number"):
            calibrate.main(
                ["--seg-path", str(ckpt), "--split", "val", "--target", target, "--out", str(tmp_path / "c")]
            )


def test_a_checkpoint_replaced_while_it_is_calibrated_is_not_written(ckpt, tiny_dataset, tmp_path, monkeypatch):
    """A run's model_best.pth.tar replaced by a better epoch mid-way: the offset fits the weights read first."""
    import shutil

    from tools import calibrate

    src = tmp_path / "model_best.pth.tar"
    shutil.copy(ckpt, src)
    real = calibrate.margins

    def training_saves_a_better_epoch(*args):
        save_checkpoint(src, {**load_checkpoint(ckpt), "epoch": 2})
        return real(*args)

    monkeypatch.setattr(calibrate, "margins", training_saves_a_better_epoch)
    out = tmp_path / "c.pth.tar"
    with pytest.raises(ValueError, match="changed while it was being calibrated"):
        calibrate.main(["--seg-path", str(src), "-d", str(tiny_dataset), "--split", "val", "--out", str(out)])
    assert not out.exists()
