"""The one inference object: a stack of inputs (B-scans with their neighbours, a photo) -> class labels,
probabilities and detection scores, batched, with fusion of several models, flip TTA, resizing and windows.

Validation during training, eval.py, test.py, predict.py and the Python APIs all use it. It knows no task: what an
input is (which slices are stacked, how a photo becomes a tensor) is the caller's business, which hands ``predict`` a
function that returns a batch of inputs on the device, and the caller says how a model sees its inputs (resizing,
windows).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.backends import choose_backend, make_runner
from models import model_from_checkpoint
from utils.checkpoint import CheckpointError, checked_class_bias
from utils.config import Settings


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_for(device: torch.device, amp: bool | None):
    """bf16 autocast on a GPU by default; on the CPU only when asked."""
    use = (device.type == "cuda") if amp is None else amp
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


class CompiledOrEager:
    """``torch.compile`` of one or more modules that falls back to the eager modules, with one warning, when a call
    fails: a backend or toolchain failure must not cost a run. The predictor wraps a model (``wrapped(x)``); the
    trainer wraps the network and the loss and runs its whole step through ``run`` (a compile failure can surface in
    the backward, compiled lazily). Compiled and eager modules share their parameters, so a fallback changes speed,
    never results.
    """

    def __init__(self, *modules: nn.Module, enabled: bool = True) -> None:
        self.eager = modules
        self.compiled = tuple(torch.compile(m) for m in modules) if enabled else None

    def run(self, step: Callable, *args, **kwargs):
        """``step(*modules, *args, **kwargs)`` with the compiled modules; after a failure, and from then on, with the
        eager ones (``step`` must start from a clean state, e.g. zeroed gradients)."""
        if self.compiled is not None:
            try:
                return step(*self.compiled, *args, **kwargs)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001  (any compile failure; the eager retry raises real errors)
                warnings.warn(f"torch.compile failed, running eager instead ({type(e).__name__}: {e})", stacklevel=3)
                self.compiled = None
        return step(*self.eager, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        """The one wrapped module called on ``args``."""
        if len(self.eager) != 1:
            raise TypeError("CompiledOrEager of several modules is called through run(step, ...)")
        return self.run(_call, *args, **kwargs)


def _call(module: nn.Module, *args, **kwargs):
    return module(*args, **kwargs)


def flush_denormals() -> None:
    """Flush denormal floats (below 1.2e-38) to zero in PyTorch's CPU kernels. A trained fp32 network's activations
    and gradients are full of them (its checkpoint holds none), and x86 cores compute on them in microcode: resumed
    DRIVE training ran 4.7x slower and its PyTorch inference 1.9x slower with them (``bench.py --resumed``,
    docs/BENCHMARKS.md), while no figure moved (nothing that small changes a probability). The flag is per thread
    and OpenMP's threads take it from the thread that starts them, so it is set before the first parallel kernel:
    by ``Trainer`` and ``engine.cli.build_predictor`` first thing, by ``Predictor.from_checkpoints`` before it
    builds a model, and by ``Predictor`` on the CPU (the main thread at least). OpenVINO and ONNX Runtime are asked
    for the same (``inference.backends``)."""
    torch.set_flush_denormal(True)


def compile_wanted(device: torch.device, enabled: bool | None) -> bool:
    """``--compile``: on (True), off (False), or by default (None) on a GPU only."""
    return (device.type == "cuda") if enabled is None else enabled


def maybe_compile(module: nn.Module, device: torch.device, enabled: bool | None):
    """The module compiled with an eager fallback when ``compile_wanted``, else the module itself."""
    return CompiledOrEager(module) if compile_wanted(device, enabled) else module


def normalize(x_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, C, H, W) uint8 on the device -> float, (x / 255 - mean) / std per channel."""
    m = torch.as_tensor(mean, device=x_u8.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x_u8.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x_u8.float() / 255.0 - m) / s


def biased(logits: torch.Tensor, bias: Sequence[float] | None) -> torch.Tensor:
    """(B, C, H, W) class logits with a per-class offset added (as they are without one)."""
    if bias is None:
        return logits
    return logits.float() + torch.as_tensor(bias, dtype=torch.float32, device=logits.device).view(1, -1, 1, 1)


def resample_probabilities(probs: torch.Tensor, size: tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """(B, 1, h, w) probabilities of one class -> (B, 1, H, W), resampled bilinearly as log-odds.

    A soft edge is a sigmoid of the distance to it, so its log-odds are linear across it and a linear interpolation
    of them puts every threshold's crossing where the finer map would have had it; interpolating the probabilities
    themselves moves a crossing above 0.5 into the vessel and one below 0.5 out of it (thin vessels thin out at a
    threshold of 0.65). nnU-Net v2 resamples logits before its softmax for the same reason. On DRIVE's test photos
    resized x1.77, a DRIVE model (issue 25's ``base_s1``) lost 0.0064 F1 against its native figure this way where it
    lost 0.0098 before, and 0.0051 against 0.0056 at x0.6. Probabilities are clamped to [1e-6, 1 - 1e-6]
    (log-odds within +-13.8) so that certain pixels stay finite."""
    z = torch.logit(probs.float(), eps=1e-6)
    return torch.sigmoid(F.interpolate(z, size=size, mode="bilinear", align_corners=False, antialias=antialias))


def class_index(scores: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) class scores -> (B, H, W) uint8 index of the largest (the first among equals). Taken in the
    channels_last layout: on a CPU, torch's argmax across the channels of an NCHW tensor is 10x slower (93 against 9
    ms per 1024x512 slice of 4 classes), and the graphs of ``inference.backends`` return NCHW."""
    return scores.contiguous(memory_format=torch.channels_last).argmax(1).to(torch.uint8)


@dataclass
class Member:
    """One model of an ensemble with the input handling it was trained with."""

    model: nn.Module
    mean: Sequence[float]
    std: Sequence[float]
    resize: tuple[int, int] | None = None
    weight: float = 1.0
    # added to the class logits before the softmax (log-probability offsets, one per class): a calibrated model's
    # shift of the background against the lesions (``tools.calibrate``), None where it has none
    class_bias: Sequence[float] | None = None
    # the checkpoint file it came from: its SHA-256 keys the exported graph of a non-PyTorch backend
    source: str | Path | None = None


@dataclass
class Prediction:
    """What ``Predictor.predict`` returns, on the predictor's device."""

    labels: torch.Tensor  # (N, H, W) uint8 class indices
    det: torch.Tensor | None  # (N, K) float32 detection probabilities, or None without detection heads
    probs: torch.Tensor | None = None  # (N, C, H, W) float32 class probabilities, when asked for


class Predictor:
    """Predicts a stack of N inputs batch by batch; several members are fused by weighted probabilities."""

    def __init__(
        self,
        members: Sequence[Member],
        device: torch.device | str | None = None,
        batch_size: int = 16,
        amp: bool | None = None,
        tta_flip: bool = False,
        window: int | None = None,
        overlap: float = 0.5,
        compile: bool | None = False,
        backend: str | None = "torch",
        int8: bool = False,
        threads: int | None = None,
    ) -> None:
        """``backend``: ``torch``, ``onnxruntime``, ``openvino`` or ``auto`` (``inference.backends``; on a GPU
        always PyTorch); ``int8``: OpenVINO's quantised graph of each checkpoint (``tools.quantize``); ``threads``:
        the non-PyTorch backends' CPU threads (PyTorch's are set by the caller, once per process)."""
        if not members:
            raise ValueError("Predictor needs at least one model")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if any(m.weight < 0 for m in members) or sum(m.weight for m in members) <= 0:
            raise ValueError(f"fusion weights must be >= 0 and sum to > 0, got {[m.weight for m in members]}")
        self.members = list(members)
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cpu":
            flush_denormals()  # the main thread at least; every thread where nothing ran in parallel before
        self.batch_size = batch_size
        self.amp = amp
        self.tta_flip = tta_flip
        self.window = window
        self.overlap = overlap
        total = sum(m.weight for m in self.members)
        self._weights = [m.weight / total for m in self.members]
        self.backend = choose_backend(backend, self.device)
        if int8 and self.backend != "openvino":
            why = (
                f"on {self.device} (pass --device cpu)"
                if self.device.type != "cpu"
                else f"with --backend {backend}"
                if backend not in (None, "auto", "openvino")
                else "without the openvino package (pip install openvino)"
            )
            raise ValueError(f"int8 inference runs on the CPU with OpenVINO; it cannot run {why}")
        precision = "int8" if int8 else "bf16" if (amp and self.device.type == "cpu") else "fp32"
        # compile=None: compiled on a GPU (with an eager fallback); the eager modules stay in self.members
        self._run = {
            id(m): maybe_compile(m.model, self.device, compile)
            if self.backend == "torch"
            else make_runner(m.model, self.backend, m.source, precision, threads)
            for m in self.members
        }

    def runner(self, index: int) -> Callable:
        """What runs member ``index``: its model, its compiled model, or an ``inference.backends.GraphRunner``."""
        return self._run[id(self.members[index])]

    def use_runner(self, index: int, runner: Callable) -> None:
        """Member ``index`` run by ``runner`` (``x -> SegDetOutput``, e.g. an ``inference.backends.GraphRunner``)
        instead of the backend's own."""
        self._run[id(self.members[index])] = runner

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path],
        weights: Sequence[float] | None = None,
        device=None,
        options: Callable[[Settings], dict] | None = None,
        **kwargs,
    ) -> Predictor:
        """Members from checkpoints; ``options(settings)`` says how a model trained with ``settings`` sees its
        inputs: ``resize`` (H, W) and a sliding ``window`` (the first checkpoint's, unless ``window`` is given)."""
        if weights is not None and len(weights) != len(paths):
            raise ValueError(f"{len(weights)} fusion weights for {len(paths)} checkpoints")
        device = torch.device(device) if device is not None else default_device()
        if device.type == "cpu":
            flush_denormals()  # before loading: building a model starts PyTorch's threads
        members, seen = [], []
        for i, p in enumerate(paths):
            model, settings, state = model_from_checkpoint(p)
            kind = (settings.task, settings.num_classes, settings.num_detect)
            seen.append((p, kind))
            # fusable: one task, one class count, and one detection count among the models that detect
            if len({k[:2] for _, k in seen}) > 1 or len({k[2] for _, k in seen} - {0}) > 1:
                (a, ka), (b, kb) = seen[0], seen[-1]
                raise CheckpointError(
                    f"cannot fuse {a} (task {ka[0]}, {ka[1]} classes, {ka[2]} detection outputs) with {b} "
                    f"(task {kb[0]}, {kb[1]} classes, {kb[2]} detection outputs)"
                )
            if "normalization" not in state:
                raise CheckpointError(
                    f"{p}: the checkpoint holds no input normalisation (the training images' mean and std, which "
                    "every checkpoint train.py writes carries); it cannot be used as it is"
                )
            seen_as = options(settings) if options is not None else {}
            if i == 0 and "window" not in kwargs:
                kwargs["window"] = seen_as.get("window")
            model = model.to(device, memory_format=torch.channels_last)  # faster on GPUs and CPUs alike
            norm = state["normalization"]
            w = 1.0 if weights is None else weights[i]
            bias = checked_class_bias(state.get("class_bias"), settings.num_classes, p)
            members.append(Member(model, norm["mean"], norm["std"], seen_as.get("resize"), w, bias, source=p))
        return cls(members, device, **kwargs)

    def upload(self, array: np.ndarray) -> torch.Tensor:
        """A host array (a read-only memmap too) on the device, as it is (uint8 stays uint8), through pinned memory."""
        if self.device.type != "cuda":
            return torch.from_numpy(np.require(array, requirements=["C", "W"])).to(self.device)  # read-only: copied
        pinned = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, array.dtype)).dtype, pin_memory=True)
        pinned.numpy()[...] = array  # the one host copy
        return pinned.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def predict(self, batch: Callable[[int, int], torch.Tensor], n: int, keep_probs: bool = False) -> Prediction:
        """``batch(start, stop)`` gives inputs start..stop-1 as (B, C, H, W) uint8 on the device; -> labels (N, H, W)
        uint8, detection probabilities (N, K) and, with ``keep_probs``, class probabilities (N, C, H, W)."""
        for m in self.members:
            m.model.eval()
        labels = probs = None
        det_parts: list[torch.Tensor] = []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            x_u8 = batch(start, stop)
            if labels is None:
                labels = torch.empty((n, *x_u8.shape[-2:]), dtype=torch.uint8, device=x_u8.device)
            if self._direct(x_u8.shape[-2:]) and not keep_probs:
                # one model, no flips, no resizing, no windows: the class is the argmax of the logits (softmax is
                # monotonic), and no probability map is ever made
                member = self.members[0]
                out = self._model_out(member, normalize(x_u8, member.mean, member.std))
                labels[start:stop] = class_index(biased(out.seg_logits, member.class_bias))
                det = None if out.cls_logits is None else out.cls_logits.float().sigmoid()
            else:
                p, det = self._fused(x_u8)
                labels[start:stop] = class_index(p)
                if keep_probs:
                    if probs is None:
                        probs = torch.empty((n, *p.shape[1:]), dtype=torch.float32, device=p.device)
                    probs[start:stop] = p
            if det is not None:
                det_parts.append(det)
        return Prediction(labels, torch.cat(det_parts) if det_parts else None, probs)

    def _direct(self, hw: tuple[int, int]) -> bool:
        return (
            len(self.members) == 1
            and not self.tta_flip
            and self.members[0].resize in (None, tuple(hw))
            and not (self.window and max(hw) > self.window)
        )

    def _fused(self, x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The one fusion loop: members' (and flips') probabilities averaged with the fusion weights (detection over
        the members that have a detection head, their weights renormalised)."""
        probs_sum, det_sum, det_weight = None, None, 0.0
        for member, w in zip(self.members, self._weights):
            x = normalize(x_u8, member.mean, member.std)
            probs, det = self._forward(member, x)
            if self.tta_flip:
                p_f, d_f = self._forward(member, x.flip(-1))
                probs = (probs + p_f.flip(-1)) / 2
                det = None if det is None else (det + d_f) / 2
            probs_sum = w * probs if probs_sum is None else probs_sum + w * probs
            if det is not None:
                det_sum = w * det if det_sum is None else det_sum + w * det
                det_weight += w
        if det_sum is not None and det_weight != 1.0:
            det_sum = det_sum / det_weight
        return probs_sum, det_sum

    def _forward(self, member: Member, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, C, H, W) normalised -> (probabilities (B, C, H, W) float32, detection probs (B, K) or None)."""
        if self.window and max(x.shape[-2:]) > self.window:
            return self._sliding(member, x), None
        return self._whole(member, x)

    def _sliding(self, member: Member, x: torch.Tensor) -> torch.Tensor:
        """Overlapping windows blended with a Gaussian weight (centre pixels count most), as nnU-Net does."""
        win = self.window
        h, w = x.shape[-2:]
        ph, pw = max(win - h, 0), max(win - w, 0)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        hh, ww = x.shape[-2:]
        stride = max(int(win * (1 - self.overlap)), 1)

        def starts(n):
            s = list(range(0, n - win + 1, stride))
            return s if s[-1] == n - win else [*s, n - win]

        g = torch.exp(-0.5 * ((torch.arange(win, device=x.device) - (win - 1) / 2) / (win / 8)) ** 2)
        weight = (g[:, None] * g[None, :]).clamp_min(1e-3)
        tiles = [(y, xx) for y in starts(hh) for xx in starts(ww)]
        acc, norm = None, torch.zeros(hh, ww, device=x.device)
        for i in range(0, len(tiles), self.batch_size):
            chunk = tiles[i : i + self.batch_size]
            batch = torch.cat([x[..., y : y + win, xx : xx + win] for y, xx in chunk])
            probs, _ = self._whole(member, batch)
            probs = probs.view(len(chunk), x.shape[0], *probs.shape[1:])
            if acc is None:
                acc = torch.zeros(x.shape[0], probs.shape[2], hh, ww, device=x.device)
            for (y, xx), p in zip(chunk, probs):
                acc[..., y : y + win, xx : xx + win] += p * weight
                norm[y : y + win, xx : xx + win] += weight
        return (acc / norm)[..., :h, :w]

    def _model_out(self, member: Member, x: torch.Tensor):
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(self.device, self.amp):
            return self._run[id(member)](x)

    def _whole(self, member: Member, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, w = x.shape[-2:]
        if member.resize and member.resize != (h, w):
            x = F.interpolate(x, size=member.resize, mode="bilinear", align_corners=False)
        out = self._model_out(member, x)
        logits = biased(out.seg_logits.float(), member.class_bias)
        if logits.shape[-2:] != (h, w):  # logits resampled, not probabilities: see resample_probabilities
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        probs = logits.softmax(1)
        det = out.cls_logits.float().sigmoid() if out.cls_logits is not None else None
        return probs, det
