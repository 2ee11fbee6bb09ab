"""Issue 24 item 6, the small things: where eval.py writes for a shipped checkpoint, progress lines of a short epoch,
TensorBoard as README describes it, and the Python examples run from any folder."""

import ast
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import eval as eval_script
from data.photos import find_photos, load_photo
from utils.log import Progress, RunLogger

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "drive_unet.pth.tar"
DRIVE = Path(os.environ.get("DRIVE_DIR", ROOT.parent / "shared" / "data" / "DRIVE"))


def _one_test_photo(root: Path) -> Path:
    """One DRIVE test photo at a quarter of its size, in the paired layout (test/image, test/mask)."""
    p = load_photo(find_photos(DRIVE, "test")[0])
    size = (p.rgb.shape[1] // 4, p.rgb.shape[0] // 4)
    for sub in ("image", "mask"):
        (root / "test" / sub).mkdir(parents=True)
    Image.fromarray(p.rgb).resize(size, Image.BILINEAR).save(root / "test" / "image" / "01.png")
    Image.fromarray(p.label.astype(np.uint8) * 255).resize(size, Image.NEAREST).save(root / "test" / "mask" / "01.png")
    return root


def test_eval_of_a_shipped_checkpoint_writes_in_the_current_folder_and_a_run_keeps_its_own(
    tmp_path, monkeypatch, caplog
):
    """(a) eval.py --seg-path checkpoints/drive_unet.pth.tar wrote checkpoints/eval_test/, among the shipped weights;
    it writes runs/drive_unet/eval_test/ under the current folder and says so, while a run's checkpoint keeps
    <run>/eval_test/."""
    data = _one_test_photo(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p.name for p in SHIPPED.parent.iterdir())
    caplog.set_level(logging.INFO)
    result = eval_script.main(["--seg-path", str(SHIPPED), "-d", str(data), "--scale", "none"])
    out = work / "runs" / "drive_unet" / "eval_test"
    assert result["photos"] == 1 and (out / "metrics.json").is_file() and (out / "per_image.csv").is_file()
    assert sorted(p.name for p in SHIPPED.parent.iterdir()) == before  # nothing written beside the weights
    said = caplog.text
    assert "output folder runs/drive_unet/eval_test" in said and "to runs/drive_unet/eval_test" in said, said

    run = tmp_path / "run"  # a run folder as train.py leaves it: <run>/checkpoint/model_best.pth.tar
    (run / "checkpoint").mkdir(parents=True)
    shutil.copy(SHIPPED, run / "checkpoint" / "model_best.pth.tar")
    eval_script.main(["--seg-path", str(run / "checkpoint" / "model_best.pth.tar"), "-d", str(data), "--scale", "none"])
    assert (run / "eval_test" / "metrics.json").is_file()
    given = tmp_path / "given"  # --out still chooses
    eval_script.main(["--seg-path", str(SHIPPED), "-d", str(data), "--scale", "none", "--out", str(given)])
    assert (given / "metrics.json").is_file()


def _lines(caplog) -> list[int]:
    return [int(re.search(r"step (\d+)/", r.getMessage()).group(1)) for r in caplog.records]


def test_the_first_and_last_step_of_a_loop_always_log(caplog):
    """(d) an epoch of fewer steps than --log-every logged its last step only; now its first too, also where a
    resumed epoch starts in the middle, and every ``every`` steps between."""
    logger = logging.getLogger("test_small_fixes.progress")
    caplog.set_level(logging.INFO, logger=logger.name)
    cases = [((3, 50, 0), [1, 3]), ((8, 50, 5), [6, 8]), ((7, 3, 0), [1, 3, 6, 7]), ((1, 50, 0), [1])]
    for (total, every, start), want in cases:
        caplog.clear()
        progress = Progress(total, "epoch 1/1 step", logger, every=every, seconds=3600, start=start)
        for _ in range(total - start):
            progress.update(lambda: {"loss": 0.5, "lr": 1e-3})
        progress.close()
        assert _lines(caplog) == want, (total, every, start, caplog.text)
    assert "loss=0.5 lr=0.001 " in caplog.records[0].getMessage()  # (c) the learning rate is in every step line


def _tfrecords(path: Path) -> list[bytes]:
    """The records of a TensorBoard event file (TFRecord framing: length, its CRC, data, its CRC)."""
    raw, records, i = path.read_bytes(), [], 0
    while i < len(raw):
        (n,) = struct.unpack("<Q", raw[i : i + 8])
        records.append(raw[i + 12 : i + 12 + n])
        i += 12 + n + 4
    return records


def test_tensorboard_scalars_are_where_readme_says(tmp_path):
    """(e) README says the run folder's tensorboard/ holds each epoch's figures and how to open them; the event
    file holds them (tags: the first "_" becomes "/", so train_total groups under train/)."""
    from tensorboardX.proto.event_pb2 import Event

    logger = RunLogger(tmp_path)
    logger.log(1, {"lr": 1e-3, "train_total": 0.75, "dice_mean": 0.5})
    logger.log(2, {"lr": 1e-3, "train_total": 0.5, "dice_mean": 0.625})
    logger.close()
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    scalars = {
        (e.step, v.tag): v.simple_value for e in map(Event.FromString, _tfrecords(events)) for v in e.summary.value
    }
    assert scalars == pytest.approx(  # float32 in the file
        {
            (1, "lr"): 1e-3,
            (1, "train/total"): 0.75,
            (1, "dice/mean"): 0.5,
            (2, "lr"): 1e-3,
            (2, "train/total"): 0.5,
            (2, "dice/mean"): 0.625,
        }
    )
    readme = (ROOT / "README.md").read_text()
    assert "`<run>/tensorboard/`" in readme and "tensorboard --logdir runs/" in readme


def _python_blocks(text: str, name: str) -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if name in b]
    return block


def test_readme_python_examples_run_from_another_folder(tmp_path):
    """(f) the README's Python examples ran only from the repository root: with the packages importable (what
    `pip install -e .` does; here PYTHONPATH) they run from any folder, the shipped weights found beside the
    sources."""
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e ." in readme
    vessel = _python_blocks(readme, "from tasks.vessel import")
    oct_ = _python_blocks(readme, "from tasks.oct import")
    oct_ = "\n".join(line for line in oct_.splitlines() if "predict_file" not in line)  # a file of the user's
    script = (
        "import numpy as np\n"
        + "yy, xx = np.mgrid[:256, :256]; rgb = np.zeros((256, 256, 3), np.uint8)\n"
        + "rgb[(yy - 128) ** 2 + (xx - 128) ** 2 < 120**2] = (150, 70, 30)  # a round field of view\n"
        + vessel
        + "assert prob.shape == mask.shape == (256, 256)\n"
        + "bscan = np.full((64, 96), 40, np.uint8)\n"
        + oct_
        + "assert out.labels.shape == (64, 96) and out.detection.shape == (1, 3)\n"
        + "from tasks.base import SHIPPED_DIR\n"
        + "print(SHIPPED_DIR)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(ROOT / "checkpoints")
    assert not any(tmp_path.iterdir())  # nothing written in the folder it ran from


def test_pip_install_names_every_top_level_package():
    """(f) `pip install -e .` makes importable exactly the packages of this folder (utils/ has no __init__.py, so
    a package search would miss it): every folder of Python sources but the tests and scripts."""
    text = (ROOT / "pyproject.toml").read_text()  # tomllib is Python 3.11+; the toolkit runs on 3.10
    listed = ast.literal_eval(re.search(r"^packages = (\[.*\])$", text, re.M).group(1))
    folders = {p.parent.name for p in ROOT.glob("*/*.py")} - {"tests", "scripts"}
    assert sorted(listed) == sorted(folders)
