import numpy as np
import pytest
import torch

from data.dataset import stack_neighbours
from inference.predictor import Member, Predictor, normalize
from models import build_model
from tasks.oct import neighbour_batch, predict_volume

SMALL = (4, 8, 8, 8, 8)
MEAN, STD = [0.3] * 3, [0.2] * 3


def _volume(n=5, h=24, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def _model(seed):
    torch.manual_seed(seed)
    return build_model("unet", channels=SMALL).eval()


def test_predict_volume_matches_the_model_slice_by_slice():
    model, vol = _model(0), _volume()
    pred = predict_volume(Predictor([Member(model, MEAN, STD)], "cpu", batch_size=2), torch.from_numpy(vol))
    x = normalize(torch.from_numpy(stack_neighbours(vol, np.arange(5))), MEAN, STD)
    with torch.no_grad():
        out = model(x)
    assert pred.labels.dtype == torch.uint8 and pred.labels.shape == (5, 24, 20)
    assert torch.equal(pred.labels, out.seg_logits.argmax(1).to(torch.uint8))
    assert np.allclose(pred.det.numpy(), out.cls_logits.sigmoid().numpy(), atol=1e-6)


def test_fusion_averages_probabilities_with_weights():
    a, b, vol = _model(1), _model(2), _volume(seed=3)
    x = normalize(torch.from_numpy(stack_neighbours(vol, np.arange(5))), MEAN, STD)
    with torch.no_grad():
        pa, pb = a(x).seg_logits.softmax(1), b(x).seg_logits.softmax(1)
        da, db = a(x).cls_logits.sigmoid(), b(x).cls_logits.sigmoid()
    members = [Member(a, MEAN, STD, weight=1), Member(b, MEAN, STD, weight=3)]
    fused = predict_volume(Predictor(members, "cpu"), torch.from_numpy(vol))
    assert torch.equal(fused.labels, (0.25 * pa + 0.75 * pb).argmax(1).to(torch.uint8))
    assert np.allclose(fused.det.numpy(), (0.25 * da + 0.75 * db).numpy(), atol=1e-6)


def test_flip_tta_and_resize_keep_native_shape():
    model, vol = _model(4), _volume(n=3, h=30, w=18)
    predictor = Predictor([Member(model, MEAN, STD, resize=(16, 16))], "cpu", tta_flip=True)
    pred = predict_volume(predictor, torch.from_numpy(vol))
    assert pred.labels.shape == (3, 30, 18) and pred.det.shape == (3, 3)


def test_resize_resamples_logits_before_the_softmax():
    model, vol = _model(4), _volume(n=3, h=30, w=18)
    pred = predict_volume(Predictor([Member(model, MEAN, STD, resize=(16, 16))], "cpu"), torch.from_numpy(vol), True)
    x = normalize(torch.from_numpy(stack_neighbours(vol, np.arange(3))), MEAN, STD)
    with torch.no_grad():
        logits = model(torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear")).seg_logits
    up = torch.nn.functional.interpolate(logits, size=(30, 18), mode="bilinear")
    assert torch.allclose(pred.probs, up.softmax(1), atol=1e-5)
    wrong = torch.nn.functional.interpolate(logits.softmax(1), size=(30, 18), mode="bilinear")  # the old order
    assert (pred.probs - wrong).abs().max() > 1e-3


def test_resample_probabilities_is_exact_on_a_sigmoid_edge():
    from inference.predictor import resample_probabilities

    # an edge p(x) = sigmoid(2x) sampled at x = 0..3, doubled: the fine pixel at coarse x = 0.25 is sigmoid(0.5)
    coarse = torch.sigmoid(2 * torch.arange(4.0)).view(1, 1, 1, 4)
    fine = resample_probabilities(coarse, (1, 8))[0, 0, 0]
    assert fine[1].item() == pytest.approx(0.622459, abs=1e-5)  # sigmoid(0.5)
    assert fine[5].item() == pytest.approx(0.989013, abs=1e-5)  # sigmoid(2 * 2.25 = 4.5)
    # interpolating the probabilities would give 0.75 * 0.5 + 0.25 * sigmoid(2) = 0.595199 at x = 0.25
    plain = torch.nn.functional.interpolate(coarse, size=(1, 8), mode="bilinear")[0, 0, 0]
    assert plain[1].item() == pytest.approx(0.595199, abs=1e-5)
    # certain pixels stay finite and keep their order
    certain = resample_probabilities(torch.tensor([[[[0.0, 1.0]]]]), (1, 4))[0, 0, 0]
    assert torch.isfinite(certain).all() and certain[0] < 1e-5 and certain[-1] > 1 - 1e-5
    assert torch.all(certain[1:] >= certain[:-1])


def test_bad_weights_and_batch_size():
    with pytest.raises(ValueError, match="sum to > 0"):
        Predictor([Member(_model(0), MEAN, STD, weight=0)], "cpu")
    with pytest.raises(ValueError, match=">= 0"):
        Predictor([Member(_model(0), MEAN, STD, weight=2), Member(_model(1), MEAN, STD, weight=-1)], "cpu")
    with pytest.raises(ValueError, match="batch size"):
        Predictor([Member(_model(0), MEAN, STD)], "cpu", batch_size=0)


def test_neighbour_batch_on_the_device_matches_the_training_stack():
    vol = _volume(n=6)
    for start, stop in [(0, 6), (0, 2), (4, 6), (5, 6)]:
        expected = stack_neighbours(vol, np.arange(start, stop))
        assert np.array_equal(neighbour_batch(torch.from_numpy(vol), start, stop).numpy(), expected)


def test_a_failing_compile_falls_back_to_the_same_eager_model():
    from inference.predictor import CompiledOrEager, maybe_compile

    model = _model(5)
    assert maybe_compile(model, torch.device("cpu"), None) is model  # the CPU default is eager
    wrapped = CompiledOrEager(model)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    wrapped.compiled = (broken,)
    x = torch.randn(2, 3, 16, 16)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"), torch.no_grad():
        out = wrapped(x)
    assert wrapped.compiled is None
    with torch.no_grad():
        assert torch.equal(out.seg_logits, model(x).seg_logits)


def test_prefetched_keeps_order_loads_ahead_and_raises_at_the_failing_item():
    """``-j N`` in eval.py / test.py: N threads decode the next records while the model works on this one."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from utils.io import prefetched

    running, most = set(), [0]
    lock = threading.Lock()

    def load(i):
        with lock:
            running.add(i)
            most[0] = max(most[0], len(running))
        time.sleep(0.05)
        with lock:
            running.discard(i)
        if i == 5:
            raise ValueError("item 5 is damaged")
        return i * 10

    with ThreadPoolExecutor(3) as pool:
        got = []
        with pytest.raises(ValueError, match="item 5"):
            for item, value in prefetched(range(8), load, pool, ahead=3):
                got.append((item, value))
    assert got == [(i, i * 10) for i in range(5)] and most[0] == 3
