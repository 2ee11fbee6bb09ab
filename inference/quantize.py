"""int8 post-training quantisation of an exported graph with OpenVINO's NNCF (``tools.quantize`` drives it with a
checkpoint's own data and an accuracy check; ``bench.py`` times the result)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.io import atomic_path

log = logging.getLogger(__name__)


def label_agreement(compiled, items, class_bias: Sequence[float] | None = None) -> float:
    """Mean over the classes other than background of the pooled Dice between ``compiled``'s labels and the
    reference labels of ``items`` ((input, labels) pairs); classes absent from both count as agreeing."""
    bias = 0.0 if class_bias is None else np.asarray(class_bias, np.float32).reshape(1, -1, 1, 1)
    classes = np.arange(1, compiled.outputs[0].get_partial_shape()[1].get_length())
    inter, total = np.zeros(len(classes)), np.zeros(len(classes))
    for x, ref in items:
        labels = (compiled(x)[compiled.outputs[0]] + bias).argmax(1)
        for i, c in enumerate(classes):
            a, b = labels == c, ref == c
            inter[i] += np.logical_and(a, b).sum()
            total[i] += a.sum() + b.sum()
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return float(dice.mean())


def quantize_openvino(
    onnx_path: str | Path,
    inputs: list[np.ndarray],
    out_xml: str | Path,
    class_bias: Sequence[float] | None = None,
    max_drop: float | None = 0.01,
) -> Path:
    """``onnx_path``'s graph with int8 weights and activations, calibrated on ``inputs`` (network inputs as the
    predictor feeds them: normalised (B, 3, H, W) float32), written as OpenVINO IR ``out_xml`` + its ``.bin``, each
    atomically (the caller's record, written last, is what makes the pair valid).

    NNCF's MIXED preset (symmetric weights, asymmetric activations: the ReLU outputs are one-sided). With
    ``max_drop``, NNCF's accuracy control (``quantize_with_accuracy_control``) returns layers to fp32, the most
    sensitive first, until the int8 labels of ``inputs`` agree with the fp32 graph's (``label_agreement``, with the
    checkpoint's ``class_bias``) within ``max_drop``: on the shipped OCT model plain int8 moved the demo's mean Dice
    by 0.015, over the 0.005 issue 27 allows. ``tools.quantize`` checks the task's own figures afterwards."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    items = [a[i : i + 1] for a in inputs for i in range(a.shape[0])]
    calibration = nncf.Dataset(items)
    if not max_drop:
        quantized = nncf.quantize(model, calibration, subset_size=len(items), preset=nncf.QuantizationPreset.MIXED)
    else:
        fp32 = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        bias = 0.0 if class_bias is None else np.asarray(class_bias, np.float32).reshape(1, -1, 1, 1)
        pairs = [(x, (fp32(x)[fp32.outputs[0]] + bias).argmax(1)) for x in items]
        quantized = nncf.quantize_with_accuracy_control(
            model,
            calibration_dataset=calibration,
            validation_dataset=nncf.Dataset(pairs, lambda pair: pair[0]),
            validation_fn=lambda compiled, data: label_agreement(compiled, data, class_bias),
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(items),
            preset=nncf.QuantizationPreset.MIXED,
        )
    out_xml = Path(out_xml)
    with (
        atomic_path(out_xml.with_suffix(".bin"), suffix=".bin") as tmp_bin,
        atomic_path(out_xml, suffix=".xml") as tmp_xml,
    ):
        # ov.save_model names the .bin after the .xml: saved under the temporary .xml name, then the .bin moved
        ov.save_model(quantized, str(tmp_xml), compress_to_fp16=False)
        Path(tmp_xml).with_suffix(".bin").replace(tmp_bin)
    return out_xml
