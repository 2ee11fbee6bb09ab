"""Vessel photos the shipped model cannot predict right say so: a thumbnail or a photo scaled below the training
patch is refused, a small field of view and a BGR array are warned, naming the file (or Segmenter's photo N), and
--scale must be a finite factor > 0. They used to give an empty or degraded mask with exit 0 and no word."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import predict as predict_script
from data.photos import read_binary, read_rgb
from engine.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "drive_unet.pth.tar"
DRIVE = Path(os.environ.get("DRIVE_DIR", ROOT.parent / "shared" / "data" / "DRIVE"))
PHOTO = DRIVE / "test" / "images" / "01_test.tif"
needs_drive = pytest.mark.skipif(not DRIVE.is_dir(), reason="needs the DRIVE data set beside the checkout")


def _resized(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.BILINEAR))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@needs_drive
def test_a_thumbnail_is_refused_in_one_error_line(tmp_path):
    """A 64x64 thumbnail of a DRIVE photo: --scale auto blew it up 8.4 times and wrote an empty mask (F1 0.000) with
    exit 0. It is smaller than the model's 128-pixel training patch: refused, naming the file, nothing written."""
    thumb = tmp_path / "thumb.png"
    Image.fromarray(_resized(read_rgb(PHOTO), 64 / 584)).save(thumb)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "predict.py", str(thumb), "--out", str(out), "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    lines = proc.stderr.strip().splitlines()
    print(lines)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {thumb}: a 64x62 photo, smaller than the 128x128 patches"), lines
    assert "predict the full-size photo" in lines[0] and not out.exists()


@needs_drive
@pytest.mark.parametrize(
    "scale, match",
    [
        ("1e-9", r"01_test.tif: 584x565 pixels, 1x1 after --scale 1e-09: smaller than the 128x128 patches .* larger "),
        ("0.2", r"01_test.tif: 584x565 pixels, 117x113 after --scale 0.2: smaller than the 128x128 patches"),
        ("1e6", r"01_test.tif: 584x565 pixels, 5.84e\+08 x 5.65e\+08 after --scale 1e\+06: more than \d+ pixels"),
        ("1e307", r"01_test.tif: 584x565 pixels, inf x inf after --scale 1e\+307: more than \d+ pixels"),
    ],
)
def test_a_scale_that_leaves_the_photo_smaller_than_the_patch_or_too_large_is_refused(tmp_path, scale, match):
    """--scale 1e-9 resized the photo to one pixel and wrote an empty mask; --scale 1e6 ran out of memory with a
    traceback (a MemoryError is none of the errors the drivers turn into one line)."""
    with pytest.raises(ValueError, match=match):
        predict_script.main([str(PHOTO), "--scale", scale, "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scale", ["inf", "nan", "0", "-1"])
def test_scale_must_be_a_finite_positive_factor(monkeypatch, capsys, scale):
    """`--scale inf` passed the check (inf > 0) and ended in an OverflowError traceback; nan, 0 and negatives are
    refused the same way: argparse's one `error:` line, before any checkpoint is read. So is Segmenter's scale."""
    from tasks.vessel import Segmenter

    monkeypatch.setattr(sys, "argv", ["predict.py", "photo.png", f"--scale={scale}"])
    with pytest.raises(SystemExit) as stop:
        cli_main("predict.py", predict_script.parse_args, predict_script.main, relaunch=False)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert stop.value.code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert errors[0] == f"predict.py: error: argument --scale: a scale factor must be a finite number > 0, got {scale}"
    with pytest.raises(ValueError, match="a scale factor must be a finite number > 0"):
        Segmenter.from_checkpoint(Path("no such checkpoint"), scale=float(scale))  # refused before it is read
    with pytest.raises(ValueError, match="scale must be auto, none or a number > 0, got 'big'"):
        Segmenter.from_checkpoint(SHIPPED, scale="big")


@needs_drive
def test_a_small_field_of_view_is_warned_naming_the_file(tmp_path, caplog):
    """A DRIVE photo at 0.4 times its size with --scale none: a field of view of 216 pixels where the model learned
    540, and no word about it. --scale auto brings it to the training size: nothing to say."""
    small = tmp_path / "small.png"
    Image.fromarray(_resized(read_rgb(PHOTO), 0.4)).save(small)
    with caplog.at_level(logging.WARNING, "tasks.vessel"):
        predict_script.main([str(small), "--scale", "none", "--out", str(tmp_path / "a"), "--device", "cpu"])
    found = _warnings(caplog)
    print(found)
    assert len(found) == 1 and found[0].startswith(f"{small}: its field of view is 21"), found
    assert "pixels across after --scale none (x1), under half the training photos' 540" in found[0]
    assert "give --scale auto (here 2.5" in found[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, "tasks.vessel"):
        predict_script.main([str(small), "--out", str(tmp_path / "b"), "--device", "cpu"])
    assert not _warnings(caplog)


def _f1(mask: np.ndarray, label: np.ndarray, fov: np.ndarray) -> float:
    m, y = mask[fov], label[fov]
    return 2 * (m & y).sum() / (m.sum() + y.sum())


@needs_drive
def test_a_bgr_photo_is_warned_through_predict_py(tmp_path, caplog):
    """A DRIVE photo with red and blue swapped (what cv2.imread gives) lost 0.12 F1 without a word; its mean blue
    exceeds its mean red inside the field of view, which no fundus photo's does: warned, naming the file. The
    photo itself, predicted in the same run, gets no warning."""
    rgb = read_rgb(PHOTO)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.ascontiguousarray(rgb[..., ::-1])).save(tmp_path / "bgr.png")
    with caplog.at_level(logging.WARNING, "tasks.vessel"):
        written = predict_script.main(
            [str(tmp_path / "rgb.png"), str(tmp_path / "bgr.png"), "--out", str(tmp_path / "out"), "--device", "cpu"]
        )
    found = _warnings(caplog)
    print(found)
    assert len(found) == 1 and found[0].startswith(f"{tmp_path / 'bgr.png'}: mean blue "), found
    assert re.search(r"mean blue 1[67]\d exceeds mean red 5\d inside the field of view", found[0])  # 56, 168 swapped
    assert "red and blue swapped (a BGR array from OpenCV's imread?)" in found[0]
    label = read_binary(DRIVE / "test" / "1st_manual" / "01_manual1.gif")
    fov = read_binary(DRIVE / "test" / "mask" / "01_test_mask.gif")
    f1 = {p.stem: _f1(np.asarray(Image.open(p)) > 0, label, fov) for p in written if p.stem.endswith("_mask")}
    print(f1)
    assert f1["rgb_mask"] - f1["bgr_mask"] > 0.05  # what the warning is about


@needs_drive
def test_segmenter_names_each_array_it_warns_about(caplog):
    """Segmenter named every array "photo", so only the first photo of a kind was ever warned about (the others
    were taken for repeats). The Nth array is "photo N": a BGR photo given twice is warned twice, the RGB one never;
    a thumbnail is refused naming its number, or the name the caller gives."""
    from tasks.vessel import Segmenter

    seg = Segmenter.from_checkpoint(SHIPPED, device="cpu")
    rgb = read_rgb(PHOTO)
    fov = read_binary(DRIVE / "test" / "mask" / "01_test_mask.gif")
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    with caplog.at_level(logging.WARNING, "tasks.vessel"):
        for photo in (rgb, bgr, bgr):
            seg.predict(photo, fov)
    found = _warnings(caplog)
    assert [m.split(":")[0] for m in found] == ["photo 2", "photo 3"], found
    assert all("red and blue swapped" in m for m in found)
    with pytest.raises(ValueError, match=r"^photo 4: a 64x62 photo, smaller than the 128x128 patches"):
        seg.predict(_resized(rgb, 64 / 584))
    with pytest.raises(ValueError, match=r"^eye\.jpg: a 64x62 photo"):
        seg.predict(_resized(rgb, 64 / 584), name="eye.jpg")
