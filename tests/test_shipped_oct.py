"""The shipped OCT model (issue 23, item 4; docs/OCT_MODEL_CARD.md): what it carries, and that predict.py uses it
by default and finds fluid in published-style B-scans of the independent phantom, which it never saw the like of."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.phantom import make_bscan, resize_bscan
from utils.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "oct_unet.pth.tar"
# the shipped model's pooled fluid Dice on these 12 B-scans is 0.605 (this project's 2-core CPU, 2026-12-07); the
# floor leaves 0.02 for other CPUs' and torch versions' arithmetic
FLOOR = 0.585


def test_the_shipped_checkpoint_is_small_fp16_scaled_and_calibrated():
    assert SHIPPED.stat().st_size < 8e6
    state = load_checkpoint(SHIPPED)
    assert state["settings"]["task"] == "oct" and "optimizer" not in state
    floats = [v for v in state["state_dict"].values() if v.is_floating_point()]
    assert floats and all(str(v.dtype) == "torch.float16" for v in floats)
    assert state["normalization"]["pixel_scale"]["estimated_um"]  # resampled to its training scale
    cal = state["calibration"]
    assert state["class_bias"][1:] == [0.0, 0.0, 0.0]
    assert 0.8 <= cal["after"]["fluid_area_ratio"] <= 1.25  # issue 23, item 5
    assert "phantom" in cal["data_dir"]  # calibrated on data unlike its training data


def published(seed: int, kind: str, folder: Path) -> tuple[Path, np.ndarray]:
    """A phantom B-scan as a publisher passes it on: squashed to 512 x 512, JPEG quality 75; and its fluid mask."""
    scan = resize_bscan(make_bscan(np.random.default_rng(seed), None, kind), 512, 512)
    buf = io.BytesIO()
    Image.fromarray(scan.image).save(buf, format="JPEG", quality=75)
    path = folder / f"ph{seed}_{kind}.jpeg"
    path.write_bytes(buf.getvalue())
    return path, scan.fluid


def test_predict_uses_it_for_bscans_and_finds_the_phantoms_fluid(tmp_path, monkeypatch):
    import predict

    folder = tmp_path / "in"
    folder.mkdir()
    cases = [published(seed, kind, folder) for seed in range(3) for kind in ("irf", "srf", "mixed", "drusen")]
    out = tmp_path / "out"
    predict.main([str(folder), "--out", str(out)])  # no --checkpoint, no --task: the inputs say OCT
    inter = pred_sum = true_sum = 0
    for path, fluid in cases:
        labels = np.asarray(Image.open(out / "segment" / f"{path.stem}_labels.png"))
        assert labels.shape == fluid.shape == (512, 512)
        pred = labels > 0
        inter, pred_sum, true_sum = inter + (pred & fluid).sum(), pred_sum + pred.sum(), true_sum + fluid.sum()
    dice = 2 * inter / (pred_sum + true_sum)
    assert dice >= FLOOR, f"pooled fluid Dice {dice:.3f} below the floor {FLOOR}"
    assert 0.5 <= pred_sum / true_sum <= 2.0, pred_sum / true_sum


@pytest.mark.parametrize("task", ["oct", "vessel"])
def test_each_task_names_its_shipped_model(task):
    import predict

    assert Path(predict.shipped_checkpoint(task)).is_file()
