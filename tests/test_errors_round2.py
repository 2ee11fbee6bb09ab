"""Faults that ended in a traceback or a misleading message and now end in one ``error:`` line naming the file or
setting (or a correct warning): the generator and the rescaling tool on a folder they must not replace, --spacing
with a volume of no Cirrus size, inputs whose outputs would collide, a large valid image, a read-only cache and an
unknown --select."""

import errno
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import predict as predict_script
from engine.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, env=env)


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def _cli(module, argv, monkeypatch) -> str:
    """The driver's command line, in this process: what it printed as its error (SystemExit's message)."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    with pytest.raises(SystemExit) as stop:
        cli_main(f"{module.__name__}.py", module.parse_args, module.main, relaunch=False)
    message = stop.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------- 1: data.synthetic
def test_synthetic_refuses_an_out_it_must_not_replace_in_one_error_line(tmp_path):
    """`python -m data.synthetic --out X` onto a user's folder, a file, or a data set holding a user's folder ended
    in a FileExistsError traceback."""
    from data.synthetic import write_dataset

    small = ["--train", "1", "--val", "0", "--test", "0", "--slices", "2", "--height", "16", "--width", "16"]
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    data = write_dataset(tmp_path / "ds", train=1, val=0, test=0, slices=2, height=16, width=16)
    (data / "user").mkdir()
    (data / "user" / "x.txt").write_text("keep")
    before = {p: _tree(p) for p in (user, data)}
    cases = [
        ([str(user)], "already exists and is not empty"),
        ([str(user), "--force"], "was not written by this toolkit"),
        ([str(a_file)], "is a file, not a folder"),
        ([str(data), "--force"], "holds user"),
    ]
    for out, needle in cases:
        _one_error_line(_run("-m", "data.synthetic", "--out", *out, *small), out[0], needle)
    assert {p: _tree(p) for p in (user, data)} == before and a_file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "ds", "mine"]  # no staging folder left


# ---------------------------------------------------------------------------------------- 2: tools.rescale_photos
def test_rescale_photos_onto_its_source_is_one_error_line(tmp_path):
    """`python -m tools.rescale_photos SRC SRC` ended in a traceback (and SRC/<new split> must not write into SRC)."""
    src = tmp_path / "DRIVE"
    base = src / "test"
    for d in ("images", "1st_manual", "mask"):
        (base / d).mkdir(parents=True)
    (src / "training" / "images").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(
        base / "images" / "01_test.tif"
    )
    label = np.zeros((20, 16), np.uint8)
    label[5:9] = 255
    Image.fromarray(label).save(base / "1st_manual" / "01_manual1.gif")
    before = _tree(tmp_path)
    for out in (src, src / "val"):  # the source, or a new split inside it
        _one_error_line(_run("-m", "tools.rescale_photos", str(src), str(out), "--factor", "2"), f"({src})")
    assert _tree(tmp_path) == before


# --------------------------------------------------------------------------------------------- 3: --spacing
def test_no_spacing_advice_when_spacing_is_given(tiny_dataset, caplog):
    """A volume named MacularCube48x8 (not a Cirrus cube size) read with --spacing still logged "... is not a
    Cirrus cube size ...; the spacing is unknown (pass --spacing)"."""
    from data.volumes import read_volume

    folder = next((tiny_dataset / "Edema_testset" / "original_images").iterdir())
    assert "MacularCube48x8" in folder.name
    with caplog.at_level(logging.INFO, "data.volumes"):
        assert read_volume(folder).spacing is None
    assert "not a Cirrus cube size" in caplog.text and "pass --spacing" in caplog.text  # the advice, when it helps
    caplog.clear()
    with caplog.at_level(logging.INFO, "data.volumes"):
        v = read_volume(folder, spacing=(0.5, 0.02, 0.1))
    assert v.spacing == (0.5, 0.02, 0.1) and "spacing" not in caplog.text, caplog.text


# ------------------------------------------------------------------------------------ 4: colliding input names
@pytest.fixture(scope="module")
def oct_checkpoint(tmp_path_factory):
    """An untrained OCT checkpoint (the name check needs only the task it names)."""
    from models import build_model
    from utils.checkpoint import save_checkpoint
    from utils.config import Settings

    s = Settings(name="unet", channels=[4, 8, 8, 16, 16])
    model = build_model("unet", num_classes=s.num_classes, channels=tuple(s.channels))
    path = tmp_path_factory.mktemp("ck") / "model_best.pth.tar"
    state = {"model_name": "unet", "settings": s.to_dict(), "epoch": 1, "state_dict": model.state_dict()}
    save_checkpoint(path, {**state, "normalization": {"mean": [0.2] * 3, "std": [0.1] * 3}})
    return path


def test_colliding_outputs_are_refused_before_predicting(tiny_dataset, oct_checkpoint, tmp_path, monkeypatch):
    """`A.img` with `A.gif.img` (A.gif.img's picture folder `A.gif/` is A's GIF) and `quantify.csv.img` (its folder
    is the fluid table) failed with `[Errno 21] Is a directory` after every volume had been predicted."""
    volume = next((tiny_dataset / "Edema_testset" / "original_images").iterdir())
    for name in ("A.img", "A.gif.img", "quantify.csv.img"):
        shutil.copytree(volume, tmp_path / name)
    out = tmp_path / "out"
    ck = ["--checkpoint", str(oct_checkpoint), "--out", str(out)]
    a, a_gif = str(tmp_path / "A.img"), str(tmp_path / "A.gif.img")
    message = _cli(predict_script, [a, a_gif, *ck], monkeypatch)
    assert f"{a} and {a_gif} would both be written as 'A.gif'" in message, message
    message = _cli(predict_script, [a_gif, a, *ck], monkeypatch)  # in either order
    assert f"{a_gif} and {a} would both be written as 'A.gif'" in message, message
    message = _cli(predict_script, [str(tmp_path / "quantify.csv.img"), *ck, "--report"], monkeypatch)
    assert "its name 'quantify.csv' is one of the output folder's own" in message, message
    assert not out.exists()


# ----------------------------------------------------------------------------------------- 5: a large image
def test_a_large_valid_image_is_read_and_a_too_large_one_is_called_too_large(tmp_path, monkeypatch):
    """A valid 15000 x 15000 PNG (225 M pixels, over Pillow's 179 M bomb limit) was called damaged."""
    import data.common as image_reader
    from data.common import DatasetError
    from data.oct import read_grey
    from data.photos import read_rgb

    big = tmp_path / "big.png"
    im = Image.new("L", (15000, 15000))  # black: the PNG is a few hundred kB
    im.paste(200, (0, 0, 10, 10))
    im.save(big, compress_level=1)
    del im
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        grey = read_grey(big)
    assert grey.shape == (15000, 15000) and grey[5, 5] == 200 and grey[20, 20] == 0
    del grey
    # past the reader's pixel limit, or the memory free: refused as too large (the pixel count), not as damaged
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(small)
    monkeypatch.setattr(image_reader, "MAX_PIXELS", 1000)
    too_large = r"small.png: the image is too large to read \(40 x 30 = 1,200 pixels, more than this reader's limit"
    for read in (read_grey, read_rgb):
        with pytest.raises(DatasetError, match=too_large):
            read(small)
    monkeypatch.undo()
    monkeypatch.setattr(image_reader, "_free_memory", lambda: 1000)
    with pytest.raises(DatasetError, match=r"too large to read \(40 x 30 = 1,200 pixels, 3,600 bytes decoded") as e:
        read_rgb(small)
    assert "damaged" not in str(e.value) and "corrupt" not in str(e.value)


# ------------------------------------------------------------------------------------------ 6: read-only cache
def _read_only(monkeypatch, folder: Path) -> None:
    """Writes under ``folder`` fail as on a read-only mount (the tests run as root, whom permission bits do not
    stop): opening a file there for writing, making a folder there, renaming into it."""
    import builtins
    import io

    inside = str(folder.resolve()) + os.sep
    real_open, real_os_open = builtins.open, os.open
    real_mkdir, real_replace, real_rename = os.mkdir, os.replace, os.rename

    def check(path) -> None:
        if isinstance(path, (str, os.PathLike)) and (os.path.abspath(path) + os.sep).startswith(inside):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            check(file)
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            check(path)
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)  # pathlib's
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: check(path) or real_mkdir(path, *a, **k))
    monkeypatch.setattr(os, "replace", lambda src, dst, *a, **k: check(dst) or real_replace(src, dst, *a, **k))
    monkeypatch.setattr(os, "rename", lambda src, dst, *a, **k: check(dst) or real_rename(src, dst, *a, **k))


def test_a_full_read_only_cache_is_read_and_a_missing_entry_names_the_folder(tiny_dataset, tmp_path, monkeypatch):
    """A cache on a read-only mount that already held every entry was refused; now it is read, and only a volume
    it lacks (which needs a write) is an error naming the folder."""
    from data.cache import CacheError, VolumeCache, compute_normalization
    from data.oct import find_volumes

    cache = tmp_path / "cache"
    train, val = find_volumes(tiny_dataset, "train"), find_volumes(tiny_dataset, "val")
    expected = [VolumeCache(cache).load(r)[0].copy() for r in train]
    before = _tree(cache)
    _read_only(monkeypatch, cache)
    with pytest.raises(OSError, match="Read-only"):  # the simulation holds
        (cache / "probe").write_bytes(b"x")
    ro = VolumeCache(cache)
    assert all(np.array_equal(ro.load(r)[0], e) for r, e in zip(train, expected))
    assert compute_normalization(train, ro)["slice_sizes"] == [[64, 48]]
    with pytest.raises(CacheError, match=rf"{cache}: cannot add {val[0].pid}-image-\w+\.npy to the decode cache"):
        ro.load(val[0])
    monkeypatch.undo()
    assert _tree(cache) == before


# ------------------------------------------------------------------------------------------------ 7: --select
def test_an_unknown_select_is_refused_before_training(tmp_path):
    """`train.py --select bogus` trained a whole epoch, then failed on the first validation."""
    from tasks import get_task

    assert get_task("oct").figure_names() == (
        *(f"dice_{n}" for n in ("mean", "REA", "SRF", "PED")),
        *(f"auc_{n}" for n in ("mean", "REA", "SRF", "PED")),
        *("fluid_dice", "fluid_dice_bscan", "fluid_false_bscans", "fluid_area_ratio"),
    )
    assert "f1" in get_task("vessel").figure_names() and "threshold" in get_task("vessel").figure_names()
    get_task("oct").check_select("dice_mean+auc_REA")  # valid sums pass
    run = tmp_path / "run"
    # no data set at all: the check comes before anything is read or written
    argv = ["train.py", "--select", "dice_mean+bogus", "-d", str(tmp_path / "none"), "--out", str(run)]
    line = _one_error_line(_run(*argv), "--select dice_mean+bogus", "no figure 'bogus'", "dice_mean, dice_REA")
    assert "dataset" not in line and not run.exists()
