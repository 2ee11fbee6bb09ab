"""Photos unlike DRIVE's files that used to give a plausible wrong result: rotated JPEGs, TIFFs whose stored values
are not their colours, a hot pixel in 16-bit data, palette labels with white first, DRIVE-layout names, and the
Python API's field-of-view mask."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from data.common import DatasetError
from data.photos import find_photos, read_binary, read_rgb

DRIVE = Path(os.environ.get("DRIVE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "DRIVE"))
ROOT = Path(__file__).resolve().parents[1]


def _photo(h=40, w=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_an_orientation_tag_is_applied_to_photos_and_labels(tmp_path):
    """A phone JPEG stored sideways with orientation 6 ("rotate 90 clockwise to display") is read as displayed, as
    its label was drawn; it had been read sideways (AUC 0.50 on such photos, masks that fit no viewer)."""
    rgb = _photo()
    stored = np.rot90(rgb, 1)  # what the camera stored: displaying it turns it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "p.png", exif=exif)
    assert np.array_equal(read_rgb(tmp_path / "p.png"), rgb)
    label = np.zeros((40, 30), np.uint8)
    label[5:9, 3:20] = 255
    Image.fromarray(np.rot90(label, 1)).save(tmp_path / "l.png", exif=exif)
    assert np.array_equal(read_binary(tmp_path / "l.png"), label > 0)


def test_tiffs_are_read_as_their_colours_not_their_stored_values(tmp_path):
    """A palette TIFF holds indices, an ImageJ mask stores white as 0 (MINISWHITE): tifffile's raw values were
    taken for colours (a photo read as indices, a label read inverted: AUC 0.02)."""
    rgb = _photo()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "pal.tif")
    expected = np.asarray(Image.open(tmp_path / "pal.tif").convert("RGB"))
    assert np.array_equal(read_rgb(tmp_path / "pal.tif"), expected) and expected.std() > 10
    label = np.zeros((40, 30), bool)
    label[10:20, 5:8] = True
    stored = np.where(label, 0, 255).astype(np.uint8)  # white-is-zero: a vessel is stored as 0
    tifffile.imwrite(tmp_path / "inv.tif", stored, photometric="miniswhite")
    assert np.array_equal(read_binary(tmp_path / "inv.tif"), label)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb.astype(np.uint16) * 257, photometric="rgb")  # plain: tifffile
    assert np.array_equal(read_rgb(tmp_path / "rgb16.tif"), rgb)
    for orientation, turned in ((3, rgb[::-1, ::-1]), (6, np.rot90(rgb, -1)), (8, np.rot90(rgb, 1))):
        stored = rgb.astype(np.uint16) * 257  # 16-bit: tifffile's path, which turns it as Pillow would
        tifffile.imwrite(tmp_path / "rot.tif", stored, photometric="rgb", extratags=[(274, 3, 1, orientation)])
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(rgb).save(tmp_path / "rot.png", exif=exif)
        assert np.array_equal(read_rgb(tmp_path / "rot.tif"), turned)
        assert np.array_equal(read_rgb(tmp_path / "rot.png"), turned)  # Pillow's reading of the same tag
    grey = rgb[..., 0]  # an 8-bit grey TIFF, whose orientation Pillow would drop
    tifffile.imwrite(tmp_path / "g6.tif", np.rot90(grey, 1), photometric="minisblack", extratags=[(274, 3, 1, 6)])
    assert np.array_equal(read_rgb(tmp_path / "g6.tif")[..., 0], grey)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([grey, grey]), photometric="minisblack")
    with pytest.raises(DatasetError, match="stack.tif: a stack of 2 images"):
        read_rgb(tmp_path / "stack.tif")


def test_one_hot_pixel_does_not_squeeze_a_16_bit_photo(tmp_path, caplog):
    """12-bit data in a 16-bit TIFF plus one pixel at 65535 had become a nearly black photo (F1 0.000); the top
    0.01% of values is clipped instead, with a warning; a photo without outliers keeps its 0..max scaling."""
    rgb = _photo(100, 100)
    twelve = rgb.astype(np.uint16) * 16  # 0..4080
    tifffile.imwrite(tmp_path / "plain.tif", twelve, photometric="rgb")
    assert np.array_equal(read_rgb(tmp_path / "plain.tif"), np.round(twelve / twelve.max() * 255).astype(np.uint8))
    hot = twelve.copy()
    hot[0, 0, 0] = 65535
    tifffile.imwrite(tmp_path / "hot.tif", hot, photometric="rgb")
    with caplog.at_level(logging.WARNING, "data.photos"):
        got = read_rgb(tmp_path / "hot.tif")
    # 30,000 values; the "higher" 99.99th percentile is the 2nd-largest value: the largest 12-bit one
    assert got[0, 0, 0] == 255 and np.array_equal(got.ravel()[1:], read_rgb(tmp_path / "plain.tif").ravel()[1:])
    assert "hot.tif" in caplog.text and "1 brighter pixels clipped" in caplog.text


def test_a_palette_label_whose_first_colour_is_white_is_read_by_its_colours(tmp_path):
    """DRIVE's 2nd_manual GIFs store vessels as index 1 of a black-then-white palette, so indices are the label;
    a palette with white first (index 0 = vessel colour... white) must be read by colour, or the label inverts."""
    label = np.zeros((40, 30), bool)
    label[3:7, :] = True
    for name, palette in (("black_first.png", [0, 0, 0, 255, 255, 255]), ("white_first.png", [255, 255, 255, 0, 0, 0])):
        im = Image.fromarray(np.where(label, 1, 0).astype(np.uint8) if name.startswith("black") else
                             np.where(label, 0, 1).astype(np.uint8), mode="P")  # fmt: skip
        im.putpalette(palette)
        im.save(tmp_path / name)
        assert np.array_equal(read_binary(tmp_path / name), label), name


def test_drive_layout_reads_every_image_type_and_refuses_two_photos_for_one_label(tmp_path):
    """A photo saved as .png in a DRIVE folder was skipped without a word; `01_test (2).tif` was scored against
    01_manual1.gif as a second photo 01."""
    base = tmp_path / "DRIVE" / "test"
    for d in ("images", "1st_manual", "mask"):
        (base / d).mkdir(parents=True)
    (tmp_path / "DRIVE" / "training" / "images").mkdir(parents=True)
    for nn, ext in (("01", ".tif"), ("02", ".png"), ("03", ".TIF")):
        Image.fromarray(_photo()).save(
            base / "images" / f"{nn}_test{ext}", format="TIFF" if "tif" in ext.lower() else "PNG"
        )
        Image.fromarray(np.zeros((40, 30), np.uint8)).save(base / "1st_manual" / f"{nn}_manual1.gif")
    names = [r.name for r in find_photos(tmp_path / "DRIVE", "test")]
    assert names == ["01_test", "02_test", "03_test"]
    Image.fromarray(_photo(seed=1)).save(base / "images" / "01_test (2).tif")
    with pytest.raises(DatasetError, match=r"01_test \(2\)\.tif and .*01_test\.tif would both be scored against"):
        find_photos(tmp_path / "DRIVE", "test")


@pytest.mark.skipif(not DRIVE.is_dir(), reason="needs the DRIVE data set beside the checkout")
def test_the_python_api_takes_any_field_of_view_mask_and_warns_when_scale_cannot_be_measured(caplog):
    """Segmenter.predict(rgb, fov) ANDed the probabilities with the mask bitwise: a 0/254 (JPEG) or 0/128 mask
    gave no vessels at all. And a crop without a dark border gives --scale auto nothing to measure: predicted as
    it is, with a warning (it had been resized by the frame's size, up to 6.75 times)."""
    from tasks.vessel import Segmenter

    seg = Segmenter.from_checkpoint([ROOT / "checkpoints" / "drive_unet.pth.tar"], device="cpu")
    rgb = read_rgb(DRIVE / "test" / "images" / "01_test.tif")
    fov = read_binary(DRIVE / "test" / "mask" / "01_test_mask.gif")
    _, reference = seg.predict(rgb, fov)
    for stored in (fov.astype(np.uint8) * 254, fov.astype(np.uint8) * 128, fov.astype(np.uint8) * 255):
        _, mask = seg.predict(rgb, stored)
        assert mask.dtype == bool and np.array_equal(mask, reference)
    with pytest.raises(ValueError, match="fov is"):
        seg.predict(rgb, fov[:-1])
    crop = np.ascontiguousarray(rgb[200:400, 200:400])
    with caplog.at_level(logging.WARNING, "tasks.vessel"):
        seg.predict(crop)
    assert "--scale auto cannot measure the pixel scale" in caplog.text


def test_eval_refuses_a_val_count_that_would_score_training_photos(tmp_path):
    """`eval.py --split val --val-count 8` on a run that held out 4 photos scored 4 photos it was trained on."""
    from types import SimpleNamespace

    import eval as eval_script

    task = SimpleNamespace(states=[{"settings": {"data_dir": str(tmp_path), "val_count": 4}}])
    with pytest.raises(ValueError, match="--val-count 8, but the model was trained holding out 4 cases"):
        eval_script.check_val_count(SimpleNamespace(val_count=8), task, "val", tmp_path)
    eval_script.check_val_count(SimpleNamespace(val_count=8), task, "test", tmp_path)  # not the validation split
    eval_script.check_val_count(SimpleNamespace(val_count=8), task, "val", tmp_path / "other")  # other data
    eval_script.check_val_count(SimpleNamespace(val_count=4), task, "val", tmp_path)  # the run's own


def test_a_lossy_0_1_label_is_cut_at_its_own_midpoint_and_unmatched_fov_masks_are_refused(tmp_path, caplog):
    """A 0/1 label saved as JPEG holds 0..2: cut at the type's midpoint (127.5) it was empty. A field-of-view mask
    whose name matches no photo was ignored (the mask computed from the photo instead) without a word."""
    label = np.zeros((40, 30), np.uint8)
    label[10:20, 5:15] = 1
    noisy = label.copy()
    noisy[10, 5] = 2  # what JPEG leaves of a 0/1 label
    noisy[0, 0] = 1
    Image.fromarray(noisy).save(tmp_path / "l.png")
    with caplog.at_level(logging.WARNING, "data.photos"):
        got = read_binary(tmp_path / "l.png")
    assert got[10:20, 5:15].all() and got.sum() == 101 and "binarised at 0.5" in caplog.text
    for d in ("image", "mask", "fov"):
        (tmp_path / "set" / d).mkdir(parents=True)
    Image.fromarray(_photo()).save(tmp_path / "set" / "image" / "a.png")
    Image.fromarray(label * 255).save(tmp_path / "set" / "mask" / "a.png")
    Image.fromarray(label * 255).save(tmp_path / "set" / "fov" / "a_mask.png")  # HRF / DRIVE naming: a's mask
    assert find_photos(tmp_path / "set", "train")[0].fov == tmp_path / "set" / "fov" / "a_mask.png"
    Image.fromarray(label * 255).save(tmp_path / "set" / "fov" / "b.png")
    with pytest.raises(DatasetError, match=r"fov: masks without a photo of the same name: \['b'\]"):
        find_photos(tmp_path / "set", "train")


def test_an_unlabelled_photo_in_a_labelled_drive_split_is_named_and_not_copied_silently(tmp_path, caplog):
    """A label saved under another name (02_manual1.png) left photo 02 unlabelled without a word until eval failed
    on it; the rescaling tool dropped such photos without a count."""
    from tools.rescale_photos import write_rescaled

    base = tmp_path / "DRIVE" / "test"
    for d in ("images", "1st_manual", "mask"):
        (base / d).mkdir(parents=True)
    (tmp_path / "DRIVE" / "training" / "images").mkdir(parents=True)
    for nn in ("01", "02"):
        Image.fromarray(_photo()).save(base / "images" / f"{nn}_test.tif")
    label = np.zeros((40, 30), np.uint8)
    label[5:9] = 255
    Image.fromarray(label).save(base / "1st_manual" / "01_manual1.gif")
    Image.fromarray(label).save(base / "1st_manual" / "02_manual1.png")  # not where DRIVE's layout looks
    with caplog.at_level(logging.WARNING):
        records = find_photos(tmp_path / "DRIVE", "test")
        write_rescaled(tmp_path / "DRIVE", tmp_path / "x2", 2.0, splits=("test",))
    assert [r.label is None for r in records] == [False, True]
    assert "no label for 02_test (expected at" in caplog.text and "1st_manual/<NN>_manual1.gif" in caplog.text
    assert "1 photos without a label were not copied: test/02_test" in caplog.text
    assert [p.name for p in (tmp_path / "x2" / "test" / "image").iterdir()] == ["01_test.png"]


def test_jpeg_and_colour_shifted_copies_keep_their_labels_exact(tmp_path):
    """The copies issue 25 scores the shipped vessel model on: a JPEG of quality 75 (the photo changed as a publisher
    changes it, the label and field of view kept as PNG, exact) and a white-balance shift (each channel times its
    gain, rounded and clipped)."""
    from tools.rescale_photos import recolour, write_rescaled

    rgb = np.array([[[100, 200, 250]]], np.uint8)
    shifted, none = recolour(rgb, (1.1, 1.0, 0.5), None)
    assert none is None and shifted.tolist() == [[[110, 200, 125]]]
    assert recolour(np.array([[[250, 0, 0]]], np.uint8), (1.2, 1, 1), None)[0].tolist() == [[[255, 0, 0]]]  # clipped
    with pytest.raises(ValueError, match="gains"):
        recolour(rgb, (1.0, -1.0, 1.0), None)
    with pytest.raises(ValueError, match="quality"):
        recolour(rgb, None, 0)
    base = tmp_path / "DRIVE" / "test"
    for d in ("images", "1st_manual", "mask"):
        (base / d).mkdir(parents=True)
    (tmp_path / "DRIVE" / "training" / "images").mkdir(parents=True)
    yy, xx = np.mgrid[:40, :30]
    photo = np.stack([4 * yy + 40, 5 * xx + 30, (yy + xx) * 2 + 10], axis=2).astype(np.uint8)  # smooth, as photos are
    Image.fromarray(photo).save(base / "images" / "01_test.tif")
    label = np.zeros((40, 30), np.uint8)
    label[5:9] = 255
    Image.fromarray(label).save(base / "1st_manual" / "01_manual1.gif")
    write_rescaled(tmp_path / "DRIVE", tmp_path / "jpeg", 1.0, splits=("test",), jpeg=75)
    out = tmp_path / "jpeg" / "test"
    jpeg = np.asarray(Image.open(out / "image" / "01_test.jpg"))
    assert jpeg.shape == photo.shape and 0 < np.abs(jpeg.astype(int) - photo).mean() < 20  # changed, not replaced
    assert np.array_equal(np.asarray(Image.open(out / "mask" / "01_test.png")) > 0, label > 0)
    assert [r.name for r in find_photos(tmp_path / "jpeg", "test")] == ["01_test"]  # read back as a paired set
