"""CPU backends (issue 27): ONNX Runtime and OpenVINO against PyTorch fp32, the graph cache, the fallbacks."""

import json
import warnings

import numpy as np
import pytest
import torch

from inference import backends
from inference.backends import GRAPH_VERSION, GraphCache, GraphRunner, choose_backend, make_runner
from inference.predictor import Member, Predictor
from models import build_model

GRAPH_BACKENDS = [b for b in ("onnxruntime", "openvino") if backends.library_available(b)]
SMALL = (4, 8, 8, 16, 16)


@pytest.fixture
def graphs(tmp_path, monkeypatch):
    """Every graph of the test in a folder of its own."""
    folder = tmp_path / "graphs"
    monkeypatch.setattr(backends, "graph_cache_dir", lambda: folder)
    return folder


def small_model(name="unet_nested", seed=0):
    torch.manual_seed(seed)
    return build_model(name, channels=SMALL).eval()


def test_the_default_backends_are_installed():
    # requirements.txt holds openvino (the CPU default) and onnx (its exporter); the suite must test them, not skip
    assert "openvino" in GRAPH_BACKENDS and "onnxruntime" in GRAPH_BACKENDS


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
@pytest.mark.parametrize("name", ["unet", "unet_nested_dilated", "sa_unet"])
def test_a_graph_gives_pytorchs_logits_at_sizes_it_was_not_exported_at(graphs, backend, name):
    model = small_model(name)
    runner = make_runner(model, backend)
    assert isinstance(runner, GraphRunner)
    for shape in [(1, 3, 37, 53), (3, 3, 64, 48), (2, 3, 100, 17)]:  # odd sizes: padded outside the graph
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x)
        out = runner(x)
        assert out.seg_logits.shape == ref.seg_logits.shape and out.cls_logits.shape == ref.cls_logits.shape
        assert (out.seg_logits - ref.seg_logits).abs().max() < 1e-3
        assert (out.cls_logits - ref.cls_logits).abs().max() < 1e-3


def test_the_graph_is_keyed_by_the_weights_loaded_and_the_code_and_exported_once(graphs, tmp_path, monkeypatch):
    model = small_model()
    make_runner(model, "openvino")
    entry = GraphCache(backends.graph_key(model))
    record = json.loads(entry.record.read_text())
    assert entry.dir.parent == graphs and record["key"] == backends.graph_key(model)
    assert record["graph_version"] == GRAPH_VERSION and record["verified_max_abs_diff"] < 1e-3
    stamp = entry.onnx.stat().st_mtime_ns
    make_runner(model, "onnxruntime")  # the second backend reads the same file
    assert entry.onnx.stat().st_mtime_ns == stamp
    # other weights (a checkpoint replaced after it was loaded holds others), or other model code: another graph
    other = small_model(seed=1)
    assert backends.graph_key(other) != backends.graph_key(model)
    monkeypatch.setattr(backends, "code_digest", lambda: "models/ edited")
    assert backends.graph_key(model) != record["key"]


@pytest.mark.parametrize("damage", ["corrupt", "stale", "truncated record"])
def test_a_corrupt_or_stale_graph_is_rebuilt(graphs, damage):
    model = small_model()
    make_runner(model, "openvino")
    entry = GraphCache(backends.graph_key(model))
    if damage == "corrupt":
        entry.onnx.write_bytes(b"\x00" * 100)
    elif damage == "stale":
        record = json.loads(entry.record.read_text())
        entry.record.write_text(json.dumps({**record, "graph_version": GRAPH_VERSION - 1}))
    else:
        entry.record.write_text('{"key": ')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt quietly, not a fallback to PyTorch
        runner = make_runner(model, "openvino")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (runner(x).seg_logits - model(x).seg_logits).abs().max() < 1e-3
    assert json.loads(entry.record.read_text())["graph_version"] == GRAPH_VERSION


def test_a_missing_library_falls_back_to_pytorch_with_one_warning(monkeypatch):
    real = backends.importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    with pytest.warns(UserWarning, match="openvino package is not installed") as seen:
        assert choose_backend("openvino", torch.device("cpu")) == "torch"
    assert len(seen) == 1
    assert choose_backend("auto", torch.device("cpu")) == "onnxruntime"  # auto moves on without a word
    assert choose_backend("auto", torch.device("cuda")) == "torch"


def test_a_backend_that_fails_while_running_falls_back_once(graphs):
    model = small_model()
    runner = make_runner(model, "openvino")

    def broken(a):
        raise RuntimeError("device lost")

    runner._run = broken
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match="openvino failed, PyTorch runs the model") as seen:
        first = runner(x)
        second = runner(x)
    assert len(seen) == 1
    with torch.no_grad():
        assert torch.equal(first.seg_logits, model(x).seg_logits) and torch.equal(second.seg_logits, first.seg_logits)


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_fusion_flips_and_windows_on_a_backend_equal_pytorchs(graphs, backend):
    members = [Member(small_model(seed=s), [0.2] * 3, [0.2] * 3, weight=w) for s, w in ((0, 1.0), (1, 2.0))]
    x = torch.randint(0, 256, (3, 3, 70, 90), dtype=torch.uint8)
    kwargs = dict(device="cpu", batch_size=2, tta_flip=True, window=48, overlap=0.5)
    ref = Predictor(members, backend="torch", **kwargs).predict(lambda a, b: x[a:b], 3, keep_probs=True)
    got = Predictor(members, backend=backend, **kwargs).predict(lambda a, b: x[a:b], 3, keep_probs=True)
    assert (got.probs - ref.probs).abs().max() < 1e-4
    assert (got.labels == ref.labels).float().mean() > 0.999


def test_int8_without_a_quantised_graph_is_refused_not_run_in_fp32(graphs):
    from utils.errors import ToolkitError

    with pytest.raises(ToolkitError, match="tools.quantize"):
        make_runner(small_model(), "openvino", precision="int8")
    with pytest.raises(ValueError, match="OpenVINO; it cannot run with --backend torch"):
        Predictor([Member(small_model(), [0.2] * 3, [0.2] * 3)], device="cpu", backend="torch", int8=True)


@pytest.fixture(scope="module")
def demo_test_volumes(tmp_path_factory):
    """Test volumes of the demo's kind (the generator's AI Challenger layout, 256 x 128 B-scans), fewer and
    shorter: the backends are compared on what the shipped OCT model reads."""
    from data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("demo") / "oct"
    write_dataset(root, seed=11, train=1, val=1, test=2, slices=8, height=256, width=128)
    return root


@pytest.mark.parametrize(("backend", "amp"), [(b, False) for b in GRAPH_BACKENDS] + [("openvino", True)])
def test_shipped_oct_model_labels_agree_with_pytorch_fp32(graphs, demo_test_volumes, backend, amp):
    from engine.cli import task_for
    from engine.evaluate import compare_predictors
    from tasks import load_predictor
    from tasks.base import SHIPPED_DIR

    ckpt = SHIPPED_DIR / "oct_unet.pth.tar"
    _, task = task_for([ckpt])
    records = task.records("test", demo_test_volumes)
    fp32 = load_predictor([ckpt], device="cpu", amp=False, backend="torch")
    other = load_predictor([ckpt], device="cpu", amp=amp, backend=backend)
    found = compare_predictors(task, fp32, other, records)
    assert found["pixel_agreement"] >= 0.999, found
    assert abs(found["reference"]["dice_mean"] - found["other"]["dice_mean"]) < 0.005, found


def test_int8_is_kept_only_with_its_accuracy_check_and_predict_runs_it(graphs, demo_test_volumes, tmp_path):
    import predict
    from inference.backends import GraphCache
    from tasks.base import SHIPPED_DIR
    from tasks.oct import OctTask
    from tools import quantize

    ckpt = SHIPPED_DIR / "oct_unet.pth.tar"
    record = quantize.main(["--seg-path", str(ckpt), "-d", str(demo_test_volumes), "--split", "test"])
    figures = record["check"]["figures"]
    assert set(figures) == set(OctTask.int8_tolerances)
    for f in figures.values():  # the record's arithmetic, and the check it made
        assert f["change"] == pytest.approx(f["int8"] - f["fp32"]) and abs(f["change"]) <= f["tolerance"]
    assert record["passed"] and record["pixel_agreement"] > 0.99 and record["calibration"]["inputs"] == 8
    entry = GraphCache(record["key"])
    assert entry.dir.parent == graphs and (entry.dir / "int8.bin").is_file()

    volume = next((demo_test_volumes / "Edema_testset" / "original_images").iterdir())
    out = tmp_path / "int8"
    predict.main([str(volume), "--int8", "--out", str(out)])
    fp32_out = tmp_path / "fp32"
    predict.main([str(volume), "--backend", "torch", "--out", str(fp32_out)])
    a, b = (np.load(next(o.glob("segment/*_labelMark_volumes.npy"))) for o in (out, fp32_out))
    assert a.shape == b.shape and (a == b).mean() > 0.99

    # a graph whose check fails is recorded as refused, and --int8 says why instead of running it
    rec = json.loads((entry.dir / "int8.json").read_text())
    (entry.dir / "int8.json").write_text(json.dumps({**rec, "passed": False}))
    with pytest.raises(Exception, match="int8 refused: its accuracy check failed"):
        predict.main([str(volume), "--int8", "--out", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    # so is an int8 graph whose files changed after the check
    (entry.dir / "int8.json").write_text(json.dumps(rec))
    (entry.dir / "int8.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(Exception, match="missing or changed"):
        predict.main([str(volume), "--int8", "--out", str(tmp_path / "changed")])


def test_quantize_refuses_when_a_figure_moves_beyond_its_tolerance(graphs, demo_test_volumes, monkeypatch):
    from tasks.base import SHIPPED_DIR
    from tasks.oct import OctTask
    from tools import quantize

    monkeypatch.setattr(OctTask, "int8_tolerances", {"dice_mean": -1.0})  # no change is small enough
    record = quantize.main(
        ["--seg-path", str(SHIPPED_DIR / "oct_unet.pth.tar"), "-d", str(demo_test_volumes), "--split", "test",
         "--inputs", "4", "--max-drop", "0"]
    )  # fmt: skip
    assert not record["passed"] and "dice_mean" in record["summary"]


def test_a_volume_is_read_ahead_while_the_model_loads_and_a_changed_one_is_read_again(demo_test_volumes, tmp_path):
    import shutil

    from data import volumes

    src = next((demo_test_volumes / "Edema_testset" / "original_images").iterdir())
    folder = tmp_path / src.name
    shutil.copytree(src, folder)
    volumes.read_ahead(folder)
    ahead = volumes.read_volume(folder)
    assert np.array_equal(ahead.image, volumes.read_volume(folder).image)
    assert volumes._ahead_key(folder, None, None) not in volumes._AHEAD  # taken once
    volumes.read_ahead(folder)
    volumes._AHEAD[volumes._ahead_key(folder, None, None)][1].result()
    (folder / "1.bmp").unlink()  # the folder changes after the read ahead: its result is not used
    shutil.copy(src / "2.bmp", folder / "1.bmp")
    again = volumes.read_volume(folder)
    assert np.array_equal(again.image[0], again.image[1]) and not np.array_equal(again.image[0], ahead.image[0])
    # a slice rewritten in place (the folder's own stat unchanged): read again too
    volumes.read_ahead(folder)
    volumes._AHEAD[volumes._ahead_key(folder, None, None)][1].result()
    with open(folder / "1.bmp", "r+b") as f:
        f.write((src / "3.bmp").read_bytes())
    edited = volumes.read_volume(folder)
    assert np.array_equal(edited.image[0], again.image[2])


def test_shipped_drive_model_on_openvino_agrees_with_pytorch_fp32(graphs):
    """The vessel task's path on a backend: a real DRIVE test photo, resized to the model's scale and predicted in
    sliding windows, gives PyTorch's mask."""
    import os
    from pathlib import Path

    from engine.cli import task_for
    from engine.evaluate import compare_predictors
    from tasks import load_predictor
    from tasks.base import SHIPPED_DIR

    drive = Path(os.environ.get("DRIVE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "DRIVE"))
    ckpt = SHIPPED_DIR / "drive_unet.pth.tar"
    _, task = task_for([ckpt])
    records = task.records("test", drive)[:1]
    fp32 = load_predictor([ckpt], device="cpu", amp=False, backend="torch")
    other = load_predictor([ckpt], device="cpu", amp=False, backend="openvino")
    found = compare_predictors(task, fp32, other, records)
    assert found["pixel_agreement"] >= 0.999, found
    assert abs(found["reference"]["f1"] - found["other"]["f1"]) < 0.002 and found["reference"]["f1"] > 0.75, found
