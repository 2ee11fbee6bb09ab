"""torch.distributed on the CPU (gloo, 2 processes): DDP steps, sharded eval and test, DDP training and resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import eval as eval_script
import test as test_script
import train as train_script
from engine.trainer import epoch_indices
from losses import build_loss
from models import build_model
from utils.checkpoint import load_checkpoint
from utils.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]
SMALL = (4, 8, 8, 16, 16)
TRAIN = ["--name", "unet", "--channels", "4", "8", "8", "16", "16", "--batch-size", "4", "-j", "0", "--loss", "mix_3"]


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 24, generator=g), torch.randint(0, 4, (4, 32, 24), generator=g)


def _step(model, x, y, ddp=None):
    # BatchNorm in eval mode and no dropout: every sample's gradient is independent of the others in its batch
    model.eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = (ddp or model)(x)
    det = torch.stack([(y == k).flatten(1).any(1) for k in (1, 2, 3)], 1).float()
    build_loss("wce+bce", class_weights=None)(out, y, det)["total"].backward()
    opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ddp_worker(rank, world, store, result):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model("unet_nested", channels=SMALL)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    x, y = _batch()
    half = slice(rank * 2, rank * 2 + 2)
    params = _step(model, x[half], y[half], ddp)
    if rank == 0:
        torch.save(params, result)
    dist.destroy_process_group()


def test_one_ddp_step_equals_one_step_on_the_concatenated_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "p.pt")), nprocs=2)
    torch.manual_seed(0)
    model = build_model("unet_nested", channels=SMALL)
    single = _step(model, *_batch())
    ddp = torch.load(tmp_path / "p.pt", weights_only=True)
    for k in single:
        assert torch.allclose(single[k].float(), ddp[k].float(), atol=1e-6, rtol=0), k


@pytest.mark.parametrize("n, steps", [(32, 3), (10, 7)])  # within one pass, and several passes
def test_process_batches_concatenate_to_the_single_process_batch(n, steps):
    for epoch in (0, 1):
        whole = epoch_indices(n, steps, 4, 5, epoch, DistInfo())
        shards = [epoch_indices(n, steps, 4, 5, epoch, DistInfo(rank=r, world_size=2)) for r in range(2)]
        assert len(whole) == 4 * steps and all(len(s) == 2 * steps for s in shards)
        for step in range(steps):
            assert (
                shards[0][2 * step : 2 * step + 2] + shards[1][2 * step : 2 * step + 2]
                == whole[4 * step : 4 * step + 4]
            )
        # resuming mid-epoch skips exactly the steps already taken
        assert epoch_indices(n, steps, 4, 5, epoch, DistInfo(rank=1, world_size=2), skip_steps=2) == shards[1][4:]
    assert epoch_indices(32, 3, 4, 5, 0, DistInfo()) != epoch_indices(32, 3, 4, 5, 1, DistInfo())


def _torchrun(script, *argv):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *argv]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """3 validation volumes for 2 processes, a checkpoint trained for 1 epoch."""
    from data.synthetic import write_dataset

    tmp = tmp_path_factory.mktemp("ddp")
    data = write_dataset(tmp / "oct", seed=9, train=2, val=3, test=3, slices=6, height=48, width=32)
    train_script.main(
        [
            *TRAIN,
            "-d",
            str(data),
            "--out",
            str(tmp / "run"),
            "--cache-dir",
            str(tmp / "c"),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
        ]
    )
    return data, tmp, str(tmp / "run" / "checkpoint" / "model_best.pth.tar")


def test_sharded_eval_equals_single_process(uneven):
    data, tmp, ckpt = uneven
    common = ["--seg-path", ckpt, "-d", str(data), "--cache-dir", str(tmp / "c"), "--vis"]
    eval_script.main([*common, "--out", str(tmp / "e1")])
    _torchrun("eval.py", *common, "--out", str(tmp / "e2"))
    m1, m2 = (json.loads((tmp / e / "metrics.json").read_text()) for e in ("e1", "e2"))
    m1.pop("seconds"), m2.pop("seconds")
    assert m1 == m2 and m1["volumes"] == 3
    assert (tmp / "e1" / "per_volume.csv").read_text() == (tmp / "e2" / "per_volume.csv").read_text()
    assert sorted(p.name for p in (tmp / "e2" / "vis").glob("*.gif")) == sorted(
        p.name for p in (tmp / "e1" / "vis").glob("*.gif")
    )


def test_sharded_test_writes_the_same_submission(uneven):
    data, tmp, ckpt = uneven
    common = ["--seg", "--det", "--seg-path", ckpt, "-d", str(data), "--cache-dir", str(tmp / "c")]
    test_script.main([*common, "--out", str(tmp / "t1")])
    _torchrun("test.py", *common, "--out", str(tmp / "t2"))
    files = sorted(p.name for p in (tmp / "t1" / "segment").iterdir())
    assert len(files) == 6 and files == sorted(p.name for p in (tmp / "t2" / "segment").iterdir())
    for f in files:
        a, b = np.load(tmp / "t1" / "segment" / f), np.load(tmp / "t2" / "segment" / f)
        assert a.dtype == b.dtype and a.shape == b.shape
        # class maps are identical; probabilities may differ in the last bit, as torchrun runs each worker with
        # one math thread and this process with two (another summation order), not because of the sharding
        assert np.array_equal(a, b) if a.dtype == np.uint8 else np.allclose(a, b, atol=1e-6, rtol=0)
    assert (tmp / "t2" / "submission.zip").exists()


def test_two_process_training_then_single_process_resume(uneven):
    data, tmp, _ = uneven
    argv = [
        *TRAIN,
        "-d",
        str(data),
        "--out",
        str(tmp / "ddp_run"),
        "--cache-dir",
        str(tmp / "c"),
        "--steps-per-epoch",
        "3",
    ]
    out = _torchrun("train.py", *argv, "--epochs", "2")
    assert "in 2 processes" in out.stdout and out.stdout.count("epoch 2/2 loss=") == 1  # only rank 0 logs
    assert load_checkpoint(tmp / "ddp_run" / "checkpoint" / "checkpoint_latest.pth.tar")["epoch"] == 2
    train_script.main([*argv, "--epochs", "3", "--resume", "auto"])
    assert load_checkpoint(tmp / "ddp_run" / "checkpoint" / "checkpoint_latest.pth.tar")["epoch"] == 3
    assert len((tmp / "ddp_run" / "log.csv").read_text().splitlines()) == 4


def test_several_visible_gpus_relaunch_through_torchrun(monkeypatch):
    import utils.distributed as d

    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(d.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(d.torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(d.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert d.relaunch_on_all_gpus("train.py", ["--name", "unet"]) == 0
    assert calls[0][1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "train.py",
        "--name",
        "unet",
    ]
    monkeypatch.setenv("WORLD_SIZE", "4")  # already a torchrun worker: run here
    assert d.relaunch_on_all_gpus("train.py", []) is None
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(d.torch.cuda, "device_count", lambda: 1)  # one GPU: a single process
    assert d.relaunch_on_all_gpus("train.py", []) is None
