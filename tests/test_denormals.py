"""Denormal floats are flushed on the CPU in every thread PyTorch computes in. A trained fp32 network's activations
and gradients hold denormals, which x86 cores compute on in microcode (resumed DRIVE training 4.7x slower, its
inference 1.9x: docs/BENCHMARKS.md). The flag is per thread and OpenMP's threads take it from the thread that starts
them, so each check runs in a fresh process with 2 threads, after the toolkit's own set-up path."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# each product is 1e-41, a denormal; their sums stay denormal: read by the bits, since a flushing thread reads
# 1e-39 as 0 in any comparison
COUNT = """
x = torch.full((1, 16, 192, 192), 1e-20)
y = torch.nn.functional.conv2d(x, torch.full((16, 16, 3, 3), 1e-21), padding=1)
print("unflushed", int((y.view(torch.int32) != 0).sum()), y.numel())
"""


def unflushed_after(setup: str, tmp_path: Path) -> tuple[int, int]:
    """(outputs computed with denormals kept, outputs) of a convolution run after ``setup`` in a fresh process."""
    code = "import torch\ntorch.set_num_threads(2)\n" + setup + COUNT
    env = {**os.environ, "OCT_CACHE_DIR": str(tmp_path / "cache")}  # an empty graph cache: the export path runs
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("unflushed "))
    unflushed, total = map(int, line.split()[1:])
    return unflushed, total


def test_the_count_sees_a_thread_that_keeps_denormals(tmp_path):
    """The check can fail: with nothing set every output keeps its denormal; flushing only after the threads
    started leaves the other thread's share kept."""
    none, total = unflushed_after("", tmp_path)
    assert none == total
    late, _ = unflushed_after(
        "torch.nn.functional.conv2d(torch.ones(1, 16, 192, 192), torch.ones(16, 16, 3, 3), padding=1)\n"
        "torch.set_flush_denormal(True)\n",
        tmp_path,
    )
    assert 0 < late < total


@pytest.mark.parametrize(
    "setup",
    [
        # the Python API: Segmenter / FluidSegmenter / tools load models this way
        "from tasks import load_predictor\nload_predictor(['checkpoints/drive_unet.pth.tar'], device='cpu')\n",
        # eval.py / test.py / predict.py
        "import eval\nfrom engine.cli import build_predictor\n"
        "a = eval.parse_args(['--seg-path', 'checkpoints/drive_unet.pth.tar', '--device', 'cpu', '--backend',\n"
        "                     'torch'])\n"
        "build_predictor(a, ['checkpoints/drive_unet.pth.tar'])\n",
        # ONNX Runtime on an empty cache: the export's check made a session that turned the flag off again
        "from tasks import load_predictor\n"
        "load_predictor(['checkpoints/drive_unet.pth.tar'], device='cpu', backend='onnxruntime')\n",
    ],
    ids=["load_predictor", "build_predictor", "onnxruntime_export"],
)
def test_inference_paths_flush_every_thread(setup, tmp_path):
    unflushed, total = unflushed_after(setup, tmp_path)
    assert unflushed == 0, f"{unflushed} of {total} outputs computed with denormals kept"


def test_training_flushes_every_thread(tmp_path):
    from data.synthetic import write_dataset

    data = tmp_path / "oct"
    write_dataset(data, seed=1, train=2, val=1, test=0, slices=4, height=64, width=32)
    argv = ["--channels", "4", "8", "8", "8", "8", "-j", "0", "--epochs", "1", "-d", str(data)]
    argv += ["--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "decoded")]
    setup = (
        "import train\nfrom engine.trainer import Trainer\nfrom utils.config import Settings\n"
        f"Trainer(Settings.from_dict(vars(train.parse_args({argv!r}))).validate()).close()\n"
    )
    unflushed, total = unflushed_after(setup, tmp_path)
    assert unflushed == 0, f"{unflushed} of {total} outputs computed with denormals kept"
