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
