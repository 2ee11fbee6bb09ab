"""Export a checkpoint for deployment: ONNX (with a dynamic batch) or TorchScript.

    python -m tools.export runs/demo/checkpoint/model_best.pth.tar --format onnx --out model.onnx

The exported graph takes the normalised 3-channel input (B, 3, H, W) float32 and returns ``seg_logits``
(B, 4, H, W) and ``cls_logits`` (B, 3); the mean and std to normalise with are printed and stored in the ONNX
metadata (``mean``, ``std``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from models import model_from_checkpoint
from utils.io import atomic_path


class ExportWrapper(nn.Module):
    """Plain tuple outputs for exporters: (seg_logits, cls_logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        cls = out.cls_logits if out.cls_logits is not None else out.seg_logits.new_zeros(x.shape[0], 0)
        return out.seg_logits, cls


def export(ckpt: str | Path, fmt: str, out: str | Path, height: int, width: int, opset: int = 18) -> Path:
    model, settings, state = model_from_checkpoint(ckpt)
    wrapper = ExportWrapper(model).eval()
    example = torch.randn(2, 3, height, width)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    norm = state.get("normalization") or {}
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be onnx or torchscript, got {fmt!r}")
    with atomic_path(out) as tmp:
        _write(wrapper, example, fmt, tmp, opset, norm, settings.name)
    return out


def _write(wrapper: nn.Module, example: torch.Tensor, fmt: str, tmp: Path, opset: int, norm: dict, name: str) -> None:
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the graph is for one H x W
            traced = torch.jit.trace(wrapper, example, check_trace=False)
        traced.save(str(tmp))
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
    a = p.parse_args(argv)
    suffix = ".onnx" if a.format == "onnx" else ".pt"
    out = Path(a.out) if a.out else Path(a.checkpoint).with_suffix("").with_suffix(suffix)
    path = export(a.checkpoint, a.format, out, a.height, a.width, a.opset)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"error: {e}")
