"""Property-based tests (hypothesis) for the readers and the metrics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from data.common import DatasetError
from data.oct import classes_to_grey, grey_to_classes, list_slices
from metrics import roc_auc, volume_dice

FAST = settings(max_examples=60, deadline=None)


@FAST
@given(st.sets(st.integers(1, 40), min_size=1, max_size=25), st.booleans())
def test_list_slices_sorts_numerically_or_reports_gaps(tmp_path_factory, numbers, stray):
    folder = tmp_path_factory.mktemp("slices")
    for n in numbers:
        (folder / f"{n}.bmp").write_bytes(b"")
    if stray:
        (folder / ".DS_Store").write_bytes(b"")
    if numbers == set(range(1, len(numbers) + 1)):
        assert [int(p.stem) for p in list_slices(folder)] == sorted(numbers)
    else:
        with pytest.raises(DatasetError, match="without gaps"):
            list_slices(folder)


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 3)))
def test_label_grey_round_trip(classes):
    assert (grey_to_classes(classes_to_grey(classes)) == classes).all()


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6))))
def test_unmapped_grey_values_are_always_reported(grey):
    bad = sorted(set(np.unique(grey).tolist()) - {0, 128, 191, 255})
    if bad:
        with pytest.raises(DatasetError, match=str(bad[0])):
            grey_to_classes(grey)
    else:
        assert grey_to_classes(grey).max() <= 3


@FAST
@given(arrays(np.uint8, (3, 5, 4), elements=st.integers(0, 3)))
def test_label_bmp_round_trip(tmp_path_factory, classes):
    from data.oct import read_grey

    folder = tmp_path_factory.mktemp("bmp")
    Image.fromarray(classes_to_grey(classes[0])).save(folder / "1.bmp")
    assert (grey_to_classes(read_grey(folder / "1.bmp")) == classes[0]).all()


volumes = arrays(np.uint8, (2, 4, 5), elements=st.integers(0, 3))


@FAST
@given(volumes, volumes)
def test_dice_is_bounded_symmetric_and_nan_exactly_when_absent(pred, gt):
    d = volume_dice(pred, gt)
    for k in range(3):
        if (gt == k + 1).any():
            assert 0 <= d[k] <= 1
            if (pred == k + 1).any():
                assert d[k] == pytest.approx(volume_dice(gt, pred)[k])
        else:
            assert np.isnan(d[k])
    assert np.all((volume_dice(gt, gt) == 1) | np.isnan(volume_dice(gt, gt)))


@FAST
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_auc_matches_pairwise_counting_and_flips(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], dtype=float)
    auc = roc_auc(y, s)
    if y.all() or not y.any():
        assert np.isnan(auc)
        return
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg))
    assert auc == pytest.approx(pairwise)
    assert roc_auc(y, -s) == pytest.approx(1 - auc)
