import numpy as np
import pytest
import torch

from models import build_model
from tools.export import main as export_main
from utils.checkpoint import save_checkpoint
from utils.config import Settings

SMALL = [4, 8, 8, 16, 16]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("unet_nested", channels=tuple(SMALL))
    path = tmp_path_factory.mktemp("exp") / "model_best.pth.tar"
    save_checkpoint(
        path,
        {
            "model_name": "unet_nested",
            "settings": Settings(name="unet_nested", channels=SMALL).to_dict(),
            "epoch": 1,
            "state_dict": model.state_dict(),
            "normalization": {"mean": [0.2] * 3, "std": [0.1] * 3},
        },
    )
    return path, model.eval()


def test_onnx_matches_pytorch_with_a_dynamic_batch(ckpt, tmp_path):
    import onnxruntime as ort

    path, model = ckpt
    out = export_main(
        [str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--height", "48", "--width", "32"]
    )
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["model"] == "unet_nested" and meta["mean"] == "[0.2, 0.2, 0.2]"
    for batch in (1, 3):
        x = torch.randn(batch, 3, 48, 32)
        seg, cls = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref = model(x)
        assert seg.shape == (batch, 4, 48, 32) and cls.shape == (batch, 3)
        assert np.abs(seg - ref.seg_logits.numpy()).max() < 1e-3
        assert np.abs(cls - ref.cls_logits.numpy()).max() < 1e-3


def test_torchscript_matches_pytorch(ckpt, tmp_path):
    path, model = ckpt
    out = export_main(
        [str(path), "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--height", "48", "--width", "32"]
    )
    scripted = torch.jit.load(str(out))
    x = torch.randn(2, 3, 48, 32)
    with torch.no_grad():
        seg, cls = scripted(x)
        ref = model(x)
    assert torch.allclose(seg, ref.seg_logits, atol=1e-5) and torch.allclose(cls, ref.cls_logits, atol=1e-5)
