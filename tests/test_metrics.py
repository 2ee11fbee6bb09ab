import math

import numpy as np
import pytest
import torch

from metrics import detection_auc, roc_auc, summarize_dice, volume_dice


def test_volume_dice_by_hand():
    # 2 slices of 1x4 pixels; classes 0..3
    gt = np.array([[[1, 1, 0, 2]], [[1, 0, 0, 2]]])
    pred = np.array([[[1, 0, 0, 2]], [[1, 1, 3, 0]]])
    d = volume_dice(pred, gt)
    # REA: TP 2, FP 1, FN 1 -> 4/6; SRF: TP 1, FN 1 -> 2/3; PED absent in truth -> NaN (even with a false positive)
    assert d[0] == pytest.approx(4 / 6) and d[1] == pytest.approx(2 / 3) and math.isnan(d[2])


def test_volume_dice_accepts_tensors_and_checks_shapes():
    gt = torch.tensor([[[3, 3]]])
    assert volume_dice(gt.clone(), gt)[2] == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        volume_dice(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))


def test_summary_ignores_nan_per_class():
    per_volume = np.array([[0.5, np.nan, 1.0], [0.7, 0.4, np.nan]])
    per_class, mean = summarize_dice(per_volume)
    assert per_class.tolist() == pytest.approx([0.6, 0.4, 1.0])
    assert mean == pytest.approx((0.6 + 0.4 + 1.0) / 3)


def test_auc_by_hand_with_ties():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert math.isnan(roc_auc(np.zeros(3), np.arange(3)))


def test_auc_agrees_with_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 10, 200).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(pairwise)


def test_detection_auc_per_class():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.8, 0.3], [0.7, 0.6, 0.1]])
    auc = detection_auc(labels, scores)
    assert auc[0] == 1.0 and auc[1] == 1.0 and math.isnan(auc[2])


def test_oct_evaluator_accumulates_volumes_and_merges_processes():
    from types import SimpleNamespace

    from inference.predictor import Prediction
    from tasks.oct import OctEvaluator, Volume

    gt = np.array([[[1, 2]], [[0, 0]]], dtype=np.uint8)
    det_a = torch.tensor([[0.9, 0.9, 0.1], [0.1, 0.1, 0.2]])
    det_b = torch.tensor([[0.2, 0.3, 0.1], [0.6, 0.1, 0.2]])
    a = (SimpleNamespace(name="a"), Volume(gt, gt), Prediction(torch.from_numpy(gt), det_a))
    b = (SimpleNamespace(name="b"), Volume(gt, gt), Prediction(torch.zeros(2, 1, 2, dtype=torch.uint8), det_b))
    m = OctEvaluator()
    assert m.update(*a) == {"dice_REA": 1.0, "dice_SRF": 1.0, "dice_PED": pytest.approx(float("nan"), nan_ok=True)}
    m.update(*b)
    r = m.aggregate()
    assert r["dice_REA"] == pytest.approx(0.5) and r["dice_SRF"] == pytest.approx(0.5)
    assert math.isnan(r["dice_PED"]) and r["dice_mean"] == pytest.approx(0.5)
    # REA over 4 slices: positives 0.9, 0.2; negatives 0.1, 0.6 -> 3 of 4 pairs ordered
    assert r["auc_REA"] == pytest.approx(0.75)
    assert [row["pid"] for row in m.rows()] == ["a", "b"]
    # two processes, each with one volume, in either order: the single-process result
    p1, p2 = OctEvaluator(), OctEvaluator()
    p1.update(*b), p2.update(*a)
    p1.merge([p1.parts, p2.parts])
    assert [row["pid"] for row in p1.rows()] == ["a", "b"]
    r2 = p1.aggregate()
    assert r2.keys() == r.keys() and all(r2[k] == pytest.approx(r[k], nan_ok=True) for k in r)


def test_any_fluid_figures_by_hand():
    """Fluid is any lesion class: a PED pixel predicted where the reference says REA counts as found fluid."""
    from metrics import fluid_counts, fluid_summary

    truth = np.zeros((3, 2, 4), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 0, :2], truth[0, 1, :2] = 1, 2  # 4 fluid pixels
    pred[0, 0, :2] = 3  # 2 of them, as another class
    pred[1, 1, 3] = 2  # fluid in a fluid-free B-scan
    truth[2, 0, :2] = 2  # 2 fluid pixels
    pred[2, :, :2] = 1  # 4 predicted, 2 of them right
    counts = fluid_counts(torch.from_numpy(pred), truth)
    assert counts.tolist() == [[2, 2, 4], [0, 1, 0], [2, 4, 2]]
    got = fluid_summary(counts)
    assert got["fluid_dice"] == pytest.approx(2 * 4 / (7 + 6))  # pooled: 8 / 13
    assert got["fluid_dice_bscan"] == pytest.approx((4 / 6 + 4 / 6) / 2)  # the two B-scans with fluid
    assert got["fluid_false_bscans"] == 1.0  # the one fluid-free B-scan has predicted fluid
    assert got["fluid_area_ratio"] == pytest.approx(7 / 6)
    empty = fluid_summary(fluid_counts(torch.zeros(2, 3, 3, dtype=torch.uint8), np.zeros((2, 3, 3), np.uint8)))
    assert np.isnan(empty["fluid_dice"]) and np.isnan(empty["fluid_dice_bscan"]) and empty["fluid_false_bscans"] == 0
