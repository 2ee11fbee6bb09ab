"""End to end on the CPU: generate, train, validate, resume, evaluate, write a submission."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import eval as eval_script
import test as test_script
import train as train_script
from engine.trainer import Trainer
from utils.checkpoint import load_checkpoint
from utils.config import Settings

# narrow channels and small slices keep this under half a minute on 2 cores
SMALL = [
    "--name",
    "unet",
    "--channels",
    "8",
    "16",
    "32",
    "64",
    "128",
    "--batch-size",
    "8",
    "-j",
    "0",
    "--lr",
    "0.002",
    "--loss",
    "mix_3",
    "--steps-per-epoch",
    "10",
]


@pytest.fixture(scope="module")
def e2e_data(tmp_path_factory):
    from data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("e2e") / "oct"
    write_dataset(root, seed=1, train=10, val=3, test=1, slices=12, height=128, width=64)
    return root


def _args(data, out, cache, *extra):
    return [*SMALL, "-d", str(data), "--out", str(out), "--cache-dir", str(cache), *extra]


@pytest.fixture(scope="module")
def trained(e2e_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    out, cache = tmp / "run", tmp / "cache"
    argv = _args(e2e_data, out, cache, "--epochs", "20", "--steps-per-epoch", "12", "--lr", "0.003")
    argv += ["--lr-mode", "poly"]
    settings = Settings.from_dict(vars(train_script.parse_args(argv))).validate()
    untrained = Trainer(settings).validate()["dice_mean"]
    final = train_script.main(argv)
    return {"out": out, "cache": cache, "untrained": untrained, "final": final, "data": e2e_data}


def test_training_improves_validation_dice(trained):
    final = trained["final"]["dice_mean"]
    print(f"untrained {trained['untrained']:.3f} -> trained {final:.3f}")
    assert math.isfinite(final)
    assert final > trained["untrained"] + 0.2 and final > 0.3
    log = (trained["out"] / "log.csv").read_text().splitlines()
    assert len(log) == 21 and log[0].startswith("epoch,lr,train_wce,train_dice,train_bce,train_total,dice_mean")


def test_checkpoint_carries_settings_and_normalization(trained):
    ckpt = load_checkpoint(trained["out"] / "checkpoint" / "model_best.pth.tar")
    assert ckpt["model_name"] == "unet" and ckpt["settings"]["loss"] == "mix_3"
    assert 0 < ckpt["normalization"]["mean"][0] < 1
    assert ckpt["normalization"]["slice_sizes"] == [[128, 64]]  # what inference compares B-scans with
    assert json.loads((trained["out"] / "settings.json").read_text())["batch_size"] == 8


def test_existing_run_is_not_overwritten(trained):
    with pytest.raises(FileExistsError, match="--resume auto"):
        train_script.main(_args(trained["data"], trained["out"], trained["cache"], "--epochs", "16"))


def test_eval_writes_metrics_and_pictures(trained, tmp_path):
    ckpt = str(trained["out"] / "checkpoint" / "model_best.pth.tar")
    result = eval_script.main(
        ["--seg-path", ckpt, "--out", str(tmp_path / "ev"), "--vis", "--cache-dir", str(trained["cache"])]
    )
    best = load_checkpoint(ckpt)
    assert best["score_key"] == "dice_mean+auc_mean"  # the OCT default: both tasks, as the challenge ranked them
    # eval reproduces validation exactly
    assert result["dice_mean"] + result["auc_mean"] == pytest.approx(best["best_score"], abs=1e-9)
    assert (tmp_path / "ev" / "metrics.json").exists() and (tmp_path / "ev" / "per_volume.csv").exists()
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["detection"] == "combined"  # how AUC was got
    assert saved["scale"] == "auto"  # B-scans brought to the training pixel scale: the same data, so left as they are
    gifs = sorted((tmp_path / "ev" / "vis").glob("*.gif"))
    assert len(gifs) == 3 and len(list((tmp_path / "ev" / "vis" / gifs[0].stem).glob("*.png"))) == 12
    fused = eval_script.main(
        [
            "--fusion",
            ckpt,
            ckpt,
            "--fusion-weights",
            "1",
            "3",
            "--out",
            str(tmp_path / "fu"),
            "--cache-dir",
            str(trained["cache"]),
        ]
    )
    assert fused["dice_mean"] == pytest.approx(result["dice_mean"], abs=1e-9)  # a model fused with itself


def test_test_writes_a_submission(trained, tmp_path):
    import zipfile

    ckpt = str(trained["out"] / "checkpoint" / "model_best.pth.tar")
    out = tmp_path / "sub"
    test_script.main(["--seg", "--det", "--seg-path", ckpt, "--out", str(out), "--cache-dir", str(trained["cache"])])
    vols = sorted((out / "segment").glob("*_labelMark_volumes.npy"))
    dets = sorted((out / "segment").glob("*_labelMark_detections.npy"))
    assert len(vols) == 1 and len(dets) == 1
    v, d = np.load(vols[0]), np.load(dets[0])
    assert v.dtype == np.uint8 and v.shape == (12, 128, 64) and v.max() <= 3
    assert d.dtype == np.float32 and d.shape == (12, 3) and ((d >= 0) & (d <= 1)).all()
    names = zipfile.ZipFile(out / "submission.zip").namelist()
    assert sorted(names) == sorted(p.name for p in vols + dets)
    with pytest.raises(FileExistsError, match="--force"):
        test_script.main(["--seg", "--seg-path", ckpt, "--out", str(out)])
    # predict.py on the volume's folder, outside the dataset layout, writes the same files, and a GIF
    import predict as predict_script

    folder = next((trained["data"] / "Edema_testset" / "original_images").iterdir())
    written = predict_script.main([str(folder), "--checkpoint", ckpt, "--out", str(tmp_path / "pred")])
    nifti = f"{folder.name[:-4]}_labels.nii.gz"  # the class map in the input's geometry
    summary = f"{folder.name[:-4]}_summary.json"
    assert [p.name for p in written] == [vols[0].name, dets[0].name, nifti, f"{folder.name[:-4]}.gif", summary]
    assert np.array_equal(np.load(written[0]), v) and np.allclose(np.load(written[1]), d, atol=1e-6)
    import json

    import SimpleITK as sitk

    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written[2]))), v)
    # the summary: the same labels counted, the same detection scores, the model named, no grid without a spacing
    info = json.loads(written[4].read_text())
    assert info["voxels"] == {n: int((v == k).sum()) for k, n in enumerate(("REA", "SRF", "PED"), start=1)}
    assert np.allclose(info["detection"]["per_bscan"], d, atol=1e-4)
    assert (
        info["model"]["checkpoints"][0]["file"] == "model_best.pth.tar"
        and len(info["model"]["checkpoints"][0]["sha256"]) == 64
    )
    assert info["input"]["shape"] == [12, 128, 64] and info["volume_nl"] is None and info["etdrs"] is None
    assert "spacing is unknown" in info["etdrs_note"]


def test_resume_continues_exactly(e2e_data, tmp_path):
    cache = tmp_path / "cache"
    train_script.main(_args(e2e_data, tmp_path / "a", cache, "--epochs", "2", "--steps-per-epoch", "3"))
    train_script.main(_args(e2e_data, tmp_path / "b", cache, "--epochs", "1", "--steps-per-epoch", "3"))
    ckpt_b1 = load_checkpoint(tmp_path / "b" / "checkpoint" / "checkpoint_latest.pth.tar")
    assert ckpt_b1["epoch"] == 1
    argv = _args(e2e_data, tmp_path / "b", cache, "--epochs", "2", "--steps-per-epoch", "3")
    trainer = Trainer(Settings.from_dict(vars(train_script.parse_args(argv))).validate(), resume="auto")
    assert trainer.start_epoch == 1
    assert trainer.stale == ckpt_b1["stale_epochs"]  # early stopping's count goes on, not from 0
    opt_state = trainer.optimizer.state_dict()["state"]
    for k, v in ckpt_b1["optimizer"]["state"].items():
        assert torch.equal(opt_state[k]["exp_avg"], v["exp_avg"]) and opt_state[k]["step"] == v["step"]
    trainer.fit()
    a = load_checkpoint(tmp_path / "a" / "checkpoint" / "checkpoint_latest.pth.tar")
    b = load_checkpoint(tmp_path / "b" / "checkpoint" / "checkpoint_latest.pth.tar")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["state_dict"]:
        assert torch.allclose(a["state_dict"][k].float(), b["state_dict"][k].float(), atol=1e-6, rtol=0), k
    assert len((tmp_path / "b" / "log.csv").read_text().splitlines()) == 3


def test_fast_path_agrees_with_fp32(trained):
    """bf16 autocast (the GPU default; here on the CPU) against fp32 on every labelled volume (10 train, 3 val) of a
    trained model: at least 99.9% of pixels get the same class and mean Dice moves by less than 0.002, or 1% of the
    model's own Dice where that is more (this small model's lesions are a few pixels each: 0.015% of pixels flipping
    moved its Dice of 0.27 by 0.0022)."""
    import bench

    ckpt = trained["out"] / "checkpoint" / "model_best.pth.tar"
    r = bench.check_agreement(ckpt, None, torch.device("cpu"), ("train", "val"), amp=True, cache_dir=trained["cache"])
    print(
        f"fast path: {r['pixel_agreement']:.5f} of pixels agree, mean Dice fp32 {r['dice_fp32']:.4f} "
        f"bf16 {r['dice_fast']:.4f}"
    )
    assert r["volumes"] == 13
    assert r["pixel_agreement"] >= 0.999 and r["dice_difference"] < max(0.002, 0.01 * r["dice_fp32"])


def test_compiled_loss_matches_eager():
    """The training loss compiles (traced by dynamo and AOTAutograd; ``aot_eager`` needs no C compiler) and gives
    the eager values and gradients: mix_33 over UNet++'s four deep-supervision heads, with ignored pixels."""
    from losses import build_loss
    from models.segdet import SegDetOutput

    torch.manual_seed(0)
    heads = [torch.randn(2, 4, 24, 16, requires_grad=True) for _ in range(4)]
    cls = torch.randn(2, 3, requires_grad=True)
    seg = torch.randint(0, 4, (2, 24, 16))
    seg[0, :3] = 255
    det = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    loss = build_loss("mix_33", deep_supervision=True)
    compiled = torch.compile(loss, backend="aot_eager")

    def run(fn):
        out = SegDetOutput(torch.stack(heads).mean(0), cls, heads)
        parts = fn(out, seg, det)
        grads = torch.autograd.grad(parts["total"], [*heads, cls])
        return {k: v.detach() for k, v in parts.items()}, grads

    (pe, ge), (pc, gc) = run(loss), run(compiled)
    assert pe.keys() == pc.keys() == {"wce", "el_dice", "bce", "total"}
    for k in pe:
        assert torch.allclose(pe[k], pc[k], atol=1e-6), k
    for a, b in zip(ge, gc):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_compiled_step_failing_in_backward_is_redone_eagerly(e2e_data, tmp_path):
    """A toolchain failure may surface only in the (lazily compiled) backward: the step is redone eagerly, with
    one warning, and its result is the eager step's."""
    argv = _args(e2e_data, tmp_path / "run", tmp_path / "cache", "--epochs", "1", "--deterministic")
    settings = Settings.from_dict(vars(train_script.parse_args(argv))).validate()
    eager = Trainer(settings)
    failing = Trainer(dataclasses.replace(settings, out=str(tmp_path / "run2")))  # one run per folder
    failing.model.load_state_dict(eager.model.state_dict())
    for t in (eager, failing):  # no dropout draws: the failed attempt would otherwise shift the retry's masks
        t.model.eval()

    class BrokenBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("inductor: backward kernel failed to build")

    net, loss = failing.step_modules.eager  # the "compiled" network's backward fails
    failing.step_modules.compiled = (lambda x: net(BrokenBackward.apply(x.requires_grad_())), loss)
    batch = next(iter(eager.loader(0)))
    expected = eager.train_step(batch)
    with pytest.warns(UserWarning, match="backward kernel failed"):
        got = failing.train_step(batch)
    assert failing.step_modules.compiled is None  # eager from then on
    assert torch.allclose(got["total"], expected["total"])
    for (k, a), b in zip(eager.model.state_dict().items(), failing.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_oct_trained_on_crops_validates_whole_slices(e2e_data, tmp_path):
    """--crop-size crops training slices only: validation predicts whole slices, as eval.py does, so it is the
    same prediction as eval's and the detection head is scored (a sliding window has no detection output)."""
    argv = _args(e2e_data, tmp_path / "run", tmp_path / "cache", "--epochs", "1", "--crop-size", "48")
    trainer = Trainer(Settings.from_dict(vars(train_script.parse_args(argv))).validate())
    assert trainer.predictor.window is None
    batch = next(iter(trainer.loader(0)))
    assert batch["image"].shape[-2:] == (48, 48)
    metrics = trainer.validate()
    scored = [c for c in ("REA", "SRF", "PED") if math.isfinite(metrics[f"auc_{c}"])]
    assert math.isfinite(metrics["auc_mean"]) and len(scored) >= 2, metrics
