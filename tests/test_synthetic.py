import hashlib

import numpy as np
import pytest

from data.cache import VolumeCache
from data.oct import find_volumes
from data.synthetic import generate_volume, write_dataset


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*.bmp")):
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path):
    a = write_dataset(tmp_path / "a", seed=5, train=1, val=1, test=1, slices=3, height=48, width=32)
    b = write_dataset(tmp_path / "b", seed=5, train=1, val=1, test=1, slices=3, height=48, width=32)
    c = write_dataset(tmp_path / "c", seed=6, train=1, val=1, test=1, slices=3, height=48, width=32)
    d = write_dataset(tmp_path / "d", seed=5, train=1, val=1, test=1, slices=3, height=48, width=32, jobs=2)
    assert _digest(a) == _digest(b) == _digest(d) != _digest(c)


def test_layout_is_the_real_one(tiny_dataset):
    train = find_volumes(tiny_dataset, "train")
    assert train[0].image_paths[0].parent.name.endswith(".img")
    assert train[0].label_paths[0].parent.parent.name == "label_images"
    assert [p.name for p in train[0].image_paths] == [f"{i}.bmp" for i in range(1, 9)]


@pytest.mark.parametrize("style", ["cirrus", "spectralis", "topcon", "mixed"])
def test_looks_like_oct(style):
    image, classes = generate_volume(np.random.default_rng(2), slices=24, height=256, width=128, style=style)
    img = image.astype(float)
    top, retina = img[:, :20].mean(), img[:, 80:140].mean()
    assert top < 0.6 * retina  # dark vitreous above a brighter retina
    # the brightest rows of a column (RPE / ellipsoid band) lie well below the top of the image
    assert np.median(img[:, :, 64].argmax(1)) > 40
    # lesions span adjacent slices, and lesion pixels are darker than the retina around them
    present = (classes > 0).reshape(24, -1).any(1)
    edges = np.flatnonzero(np.diff(np.r_[0, present.astype(int), 0]))
    runs = edges[1::2] - edges[::2]  # lengths of the runs of consecutive lesion slices
    assert len(runs) >= 1 and runs.min() >= 2
    assert img[classes == 1].mean() < retina if (classes == 1).any() else True


def test_some_patients_are_healthy_and_every_lesion_type_occurs():
    counts = []
    for seed in range(20):
        _, classes = generate_volume(np.random.default_rng(seed), slices=12, height=64, width=48)
        counts.append(np.bincount(classes.ravel(), minlength=4)[1:])
    counts = np.array(counts)
    assert (counts.sum(1) == 0).sum() >= 1  # healthy patients
    assert (counts > 0).sum(0).min() >= 3  # each of REA, SRF, PED in several patients


@pytest.mark.parametrize("style", ["cirrus", "spectralis", "topcon"])
def test_vessel_shadows_are_dark_but_not_lesions(style):
    image, classes = generate_volume(np.random.default_rng(4), slices=4, height=256, width=128, style=style)
    # per column, the mean retina-and-below brightness: shadow columns are much darker than their neighbours
    col = image[:, 100:, :].astype(float).mean((0, 1))
    smooth = np.convolve(col, np.ones(9) / 9, mode="same")
    shadow_cols = np.flatnonzero(col[5:-5] < 0.85 * smooth[5:-5]) + 5
    assert len(shadow_cols) > 0
    assert (classes[:, :, shadow_cols] == 0).mean() > 0.9


def test_cache_round_trip_of_labels(tiny_dataset, tmp_path):
    rec = find_volumes(tiny_dataset, "val")[0]
    image, labels = VolumeCache(tmp_path).load(rec)
    assert image.shape == labels.shape and set(np.unique(labels)) <= {0, 1, 2, 3}


def test_scanner_styles_differ_as_scanners_do():
    """Same eye, three scanners: Spectralis' averaged frames are smoother than Cirrus' single frames, Topcon's
    background is the brightest; an unknown style is an error."""
    looks = {}
    for style in ("cirrus", "spectralis", "topcon"):
        image, _ = generate_volume(np.random.default_rng(11), slices=4, height=256, width=128, style=style)
        img = image.astype(float)
        rough = np.abs(np.diff(img[:, 90:140], axis=2)).mean()  # pixel-to-pixel variation inside the retina
        looks[style] = {"rough": rough, "vitreous": img[:, :15].mean()}
    assert looks["spectralis"]["rough"] < looks["cirrus"]["rough"]
    assert looks["topcon"]["vitreous"] > max(looks["cirrus"]["vitreous"], looks["spectralis"]["vitreous"])
    with pytest.raises(ValueError, match="style must be one of"):
        generate_volume(np.random.default_rng(0), 2, 32, 16, style="oct2000")


def test_lesion_looks_and_sizes_vary_and_test_labels_are_written(tmp_path):
    heights, ped_levels = [], []  # the tallest column of each lesion type in each eye, in rows
    for seed in range(30):
        image, classes = generate_volume(np.random.default_rng(seed), slices=8, height=128, width=64, style="cirrus")
        for c in (1, 2, 3):
            if (classes == c).any():
                heights.append((classes == c).sum(axis=1).max())
        if (classes == 3).any():
            ped_levels.append(np.median(image[classes == 3]))
    assert min(heights) <= 3 and max(heights) >= 0.15 * 128  # from a few pixels to large detachments
    assert max(ped_levels) - min(ped_levels) > 40  # serous (dark) and fibrovascular (grey) PED
    root = write_dataset(tmp_path / "d", seed=1, train=1, val=1, test=1, slices=3, height=48, width=32)
    assert find_volumes(root, "test")[0].label_paths is not None
    kept = write_dataset(tmp_path / "k", 1, 1, 1, 1, slices=3, height=48, width=32, test_labels=False)
    assert find_volumes(kept, "test")[0].label_paths is None


# ---------------------------------------------------------------------------------- --variety wide (issue 23, item 4)
def _wide_eye(seed=4, h=256, w=128):
    """A wide eye without lesions, cysts, drusen, foci, opacity or publisher (tests add the one they check)."""
    from data.synthetic import _patient

    p = _patient(np.random.default_rng(seed), h, w, "cirrus", "wide")
    p["lesions"] = {k: [] for k in p["lesions"]}
    p["wide"].update(cysts=[], drusen=[], foci=0, opacity=None, publisher=None, display=None, hyaloid=None, erm=None)
    return p


def _bscan_of(p, h=256, w=128, seed=0):
    from data.synthetic import _bscan

    return _bscan(p, 0.5, h, w, np.random.default_rng(seed))


def test_the_classic_variety_is_unchanged_and_wide_spans_more_eyes():
    from data.synthetic import _patient

    classic = [_patient(np.random.default_rng(s), 256, 128)["thick"] / 256 for s in range(40)]
    wide = [_patient(np.random.default_rng(s), 256, 128, variety="wide")["thick"] / 256 for s in range(40)]
    assert min(classic) >= 0.18 and max(classic) <= 0.22  # the demo's eyes as before
    assert min(wide) < 0.15 and max(wide) > 0.23  # thin and thick retinas
    tilts = [_patient(np.random.default_rng(s), 256, 128, variety="wide")["tilt"] / 256 for s in range(40)]
    assert min(tilts) < -0.06 and max(tilts) > 0.06  # beyond the classic +-0.05
    # the classic eye draws nothing more: the same seed gives the same B-scans as before the wide variety existed
    a, _ = generate_volume(np.random.default_rng(5), 2, 64, 48, "cirrus")
    assert hashlib.md5(a.tobytes()).hexdigest() == "7dd698035256a5828e1e171c54532a0b"
    with pytest.raises(ValueError, match="variety"):
        generate_volume(np.random.default_rng(5), 2, 64, 48, "cirrus", "narrow")


def test_drusen_foci_and_membranes_change_the_picture_but_are_never_labelled():
    from data.synthetic import Blob

    p = _wide_eye()
    plain, plain_cls = _bscan_of(p)
    assert not plain_cls.any()
    p["wide"]["drusen"] = [Blob(0.5, 0.5, 0.2, 0.3, 12.0, np.zeros((3, 2)))]  # a 12-row bump under the RPE
    p["wide"]["foci"] = 20
    img, cls = _bscan_of(p)
    assert not cls.any()  # not fluid
    assert np.abs(img.astype(int) - plain).mean() > 2  # but visible
    p["wide"].update(drusen=[], foci=0, hyaloid=(0.2, 0.6, 0.08, 200.0), erm=(0.1, 0.5, 0.008, 220.0))
    img, cls = _bscan_of(p)
    assert not cls.any()  # membranes over a dark vitreous gap: not fluid either
    brighter = img.astype(int) - plain > 60
    assert brighter.sum() > 50 and plain[brighter].mean() < 60  # lines drawn over the dark vitreous


def test_cysts_are_rea_inside_the_retina_and_dark():
    p = _wide_eye()
    plain, _ = _bscan_of(p)
    # one cyst at the middle column, half-way down the retina, 6 rows tall
    p["wide"]["cysts"] = [(0.5, 0.5, 0.5, 0.08, 6.0, 0.3)]
    img, cls = _bscan_of(p)
    assert set(np.unique(cls)) == {0, 1}
    rows, cols = np.nonzero(cls == 1)
    assert 6 <= rows.max() - rows.min() + 1 <= 16 and abs(cols.mean() - 63.5) < 2  # 12 rows, on a curved retina
    assert img[cls == 1].mean() < plain[cls == 1].mean() - 10  # darker than the retina it replaces


def test_a_published_copy_is_blurred_and_blocky_at_the_same_size():
    from data.synthetic import _published

    img, _ = _bscan_of(_wide_eye())
    copy = _published(img, 0.5, 0.5, 60)
    assert copy.shape == img.shape and copy.dtype == np.uint8
    grad = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert grad(copy) < 0.8 * grad(img)  # speckle smoothed away by the shrink
    assert 0 < np.abs(copy.astype(int) - img).mean() < 30


def test_a_log_display_lifts_the_floor_and_compresses_the_contrast():
    from data.synthetic import _displayed

    img = np.array([[0, 25, 150, 255]], np.uint8)  # vitreous, dark fluid, retina, RPE
    out = _displayed(img, 60.0, 10.0).astype(int)
    assert out[0, 0] == 60 and out[0, 3] == 255  # the floor, and white stays white
    assert out[0, 2] - out[0, 1] < 150 - 25  # fluid closer to the retina than before
    assert list(out[0]) == sorted(out[0])  # the order of greys kept
