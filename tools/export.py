"""Export a checkpoint for deployment: ONNX (with a dynamic batch) or TorchScript.

    python -m tools.export runs/demo/checkpoint/model_best.pth.tar --format onnx --out model.onnx

The exported graph takes the normalised 3-channel input (B, 3, H, W) float32 and returns ``seg_logits``
(B, 4, H, W; a calibrated checkpoint's class offsets already added, so their argmax is the toolkit's labels) and
``cls_logits`` (B, 3); the mean and std to normalise with are printed and stored in the ONNX metadata (``mean``,
``std``, and ``class_bias``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from models import model_from_checkpoint
from utils.checkpoint import checked_class_bias
from utils.io import check_output_file, output_file

log = logging.getLogger(__name__)


class ExportWrapper(nn.Module):
    """Plain tuple outputs for exporters: (seg_logits, cls_logits), the segmentation logits with a calibrated
    checkpoint's class offsets added (``class_bias``, as ``inference.predictor`` adds them)."""

    def __init__(self, model: nn.Module, class_bias: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("class_bias", None if class_bias is None else torch.tensor(class_bias).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        seg = out.seg_logits if self.class_bias is None else out.seg_logits + self.class_bias
        cls = out.cls_logits if out.cls_logits is not None else out.seg_logits.new_zeros(x.shape[0], 0)
        return seg, cls


def export(
    ckpt: str | Path, fmt: str, out: str | Path, height: int, width: int, opset: int = 18, force: bool = False
) -> Path:
    """Write ``ckpt``'s model as ``fmt`` to ``out`` through the toolkit's one output writer: never over the
    checkpoint itself, over another existing file only with ``force`` and only when the toolkit wrote it."""
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be onnx or torchscript, got {fmt!r}")
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(
                f"--format onnx needs the {' and '.join(missing)} package{'s' * (len(missing) > 1)}: "
                f"pip install {' '.join(missing)} (or export with --format torchscript)"
            )
    out = Path(out)
    protected = [("the checkpoint being exported", Path(ckpt))]
    check_output_file(out, force, protected)  # before the (slow) load and trace
    model, settings, state = model_from_checkpoint(ckpt)
    bias = checked_class_bias(state.get("class_bias"), settings.num_classes, ckpt)
    wrapper = ExportWrapper(model, bias).eval()
    example = torch.randn(2, 3, height, width)
    norm = dict(state.get("normalization") or {})
    # what the input must be before mean / std: a vessel model trained on the green channel or its CLAHE (its
    # --preprocess) needs the same done to a photo outside the toolkit; the metadata says which
    norm["preprocess"] = settings.task_settings.get("preprocess", "rgb")
    if norm["preprocess"] != "rgb":
        log.warning(
            f"{ckpt}: the model sees photos preprocessed by {norm['preprocess']!r} (data.photos.network_input); "
            "the exported graph does not do it: apply it before the graph (the metadata's 'preprocess' says so)"
        )
    with output_file(out, force, protected) as tmp:
        _write(wrapper, example, fmt, tmp, opset, norm, settings.name)
    return out


def _write(wrapper: nn.Module, example: torch.Tensor, fmt: str, tmp: Path, opset: int, norm: dict, name: str) -> None:
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the graph is for one H x W
            traced = torch.jit.trace(wrapper, example, check_trace=False)
        # serialised in memory and written by Python: libtorch's file writer aborts the process on a full disk
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        tmp.write_bytes(buffer.getvalue())
    elif fmt == "onnx":
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["seg_logits", "cls_logits"],
            dynamic_shapes={"x": {0: batch}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
        )
        import onnx

        m = onnx.load(str(tmp))
        for k, v in {
            "mean": json.dumps(norm.get("mean")),
            "std": json.dumps(norm.get("std")),
            "model": name,
            "preprocess": norm.get("preprocess", "rgb"),
            "class_bias": json.dumps(None if wrapper.class_bias is None else wrapper.class_bias.flatten().tolist()),
        }.items():
            entry = m.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(m, str(tmp))


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", help="output file (default: next to the checkpoint, .onnx or .pt)")
    p.add_argument("--height", type=int, default=1024, help="slice height the graph is built for")
    p.add_argument("--width", type=int, default=512, help="slice width the graph is built for")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--force", action="store_true", help="replace an earlier export of this toolkit at --out")
    a = p.parse_args(argv)
    suffix = ".onnx" if a.format == "onnx" else ".pt"
    out = Path(a.out) if a.out else Path(a.checkpoint).with_suffix("").with_suffix(suffix)
    path = export(a.checkpoint, a.format, out, a.height, a.width, a.opset, a.force)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, RuntimeError) as e:  # FileExistsError, CheckpointError among them
        sys.exit("error: " + " ".join(str(e).split()))
