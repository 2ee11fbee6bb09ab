"""CPU inference backends: the same network run by PyTorch, ONNX Runtime or OpenVINO, as one callable.

``Predictor`` calls a model as ``model(x) -> SegDetOutput``; a :class:`GraphRunner` is called the same way and runs an
exported graph instead, so fusion, flip TTA, resizing and sliding windows (the predictor's, around the call) work
on every backend unchanged. On this project's CPU OpenVINO runs the fp32 networks 1.5x (``unet``) to 1.8x
(``unet_nested``) faster than PyTorch's channels_last path, while ONNX Runtime is 1.35x slower than it
(docs/BENCHMARKS.md, ``bench.py --device cpu --backends``), and only OpenVINO runs int8 graphs on the CPU's VNNI
units (``tools.quantize``).

The graph is exported once per model, keyed by the SHA-256 of the weights that were loaded (not the file's: a
checkpoint replaced between the load and the hash, as a training run replaces its best, must not file the old
weights under the new key) and of the code that exports them (``models/``, ``code_digest``), with dynamic batch,
height and width, and verified against PyTorch at two sizes before it is used: the model's own padding to a
multiple of its reduction is done outside the graph (``SegDetModel.unpadded``), so nothing in the graph depends on
the input's size. The cache folder is ``$OCT_CACHE_DIR/graphs`` (default ``~/.cache/retina-lesion/graphs``), never
beside the weights; files are written atomically, and an entry that is corrupt (its SHA-256 differs from its
record), stale (another graph version) or unreadable is rebuilt. A backend whose library is missing, or whose export
or run fails, falls back to PyTorch with one warning; int8, asked for by name, never falls back.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.segdet import SegDetOutput
from utils.errors import ToolkitError
from utils.io import atomic_path, save_json_atomic, sha256_of

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
_LIBRARY = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
GRAPH_VERSION = 1  # bump when the exported graph changes meaning: older cache entries are rebuilt
# verification of a new export against PyTorch fp32 (max |logit difference|): float reassociation gives ~1e-5
VERIFY_TOLERANCE = 1e-3


def graph_cache_dir() -> Path:
    from data.cache import DEFAULT_CACHE_DIR

    return DEFAULT_CACHE_DIR / "graphs"


def library_available(backend: str) -> bool:
    return backend == "torch" or importlib.util.find_spec(_LIBRARY[backend]) is not None


def choose_backend(requested: str | None, device: torch.device) -> str:
    """``--backend``: ``auto`` (or None) is OpenVINO on a CPU, else ONNX Runtime, else PyTorch, and PyTorch on a
    GPU; a named backend that cannot run here falls back to PyTorch with one warning."""
    requested = requested or "auto"
    if requested not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if device.type != "cpu":
        if requested not in ("auto", "torch"):
            warnings.warn(
                f"--backend {requested} runs on the CPU only; on {device} PyTorch runs the models", stacklevel=2
            )
        return "torch"
    if requested == "auto":
        return next((b for b in ("openvino", "onnxruntime") if library_available(b)), "torch")
    if not library_available(requested):
        warnings.warn(
            f"--backend {requested}: the {_LIBRARY[requested]} package is not installed (pip install "
            f"{_LIBRARY[requested]}); PyTorch runs the models instead",
            stacklevel=2,
        )
        return "torch"
    return requested


def code_digest() -> str:
    """SHA-256 of the sources that decide what an export holds: the model zoo and this module's exporting code
    (not how a graph is run: a runtime option changes no graph, and re-keying would drop every int8 graph)."""
    h = hashlib.sha256(f"{GRAPH_VERSION} torch {torch.__version__}".encode())
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "models").glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for part in (_Unpadded, _pad, _export_onnx):
        h.update(inspect.getsource(part).encode())
    return h.hexdigest()


def graph_key(model: nn.Module) -> str:
    """The cache key of ``model``'s graph: its weights as loaded, and the code that exports them."""
    return hashlib.sha256((weights_digest(model) + code_digest()).encode()).hexdigest()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's class and weights (every tensor of its state dict, as they are in memory)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, 0-d too
    return h.hexdigest()


class _Unpadded(nn.Module):
    """What is exported: ``SegDetModel.unpadded`` as plain tensors (seg_logits, cls_logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.unpadded(x)
        cls = out.cls_logits if out.cls_logits is not None else out.seg_logits.new_zeros(x.shape[0], 0)
        return out.seg_logits, cls


def _pad(x: torch.Tensor, r: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % r, (-w) % r
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")  # as SegDetModel.forward pads
    return x, h, w


def _verify(model: nn.Module, run, r: int) -> float:
    """Largest |difference| between the graph's logits (``run(array) -> (seg, cls)``) and PyTorch fp32's, at two
    sizes that differ from each other and from the export's: a size baked into the graph would show here."""
    worst = 0.0
    g = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 3 * r, 2 * r), (1, 3, 2 * r, 5 * r)):
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = model.unpadded(x)
        seg, cls = run(x.numpy())
        worst = max(worst, float(np.abs(seg - ref.seg_logits.numpy()).max()))
        if ref.cls_logits is not None:
            worst = max(worst, float(np.abs(cls - ref.cls_logits.numpy()).max()))
    return worst


class GraphCache:
    """One checkpoint's exported graphs: ``<folder>/<key>/model.onnx`` (fp32, dynamic batch / height / width) with
    its record ``model.json``, and the int8 graph ``tools.quantize`` writes beside it (``int8.xml`` / ``int8.bin``,
    ``int8.json`` with its accuracy check)."""

    def __init__(self, key: str, folder: Path | None = None) -> None:
        self.key = key
        self.dir = Path(folder or graph_cache_dir()) / key[:32]
        self.onnx = self.dir / "model.onnx"
        self.record = self.dir / "model.json"

    @classmethod
    def for_model(cls, model: nn.Module, folder: Path | None = None) -> GraphCache:
        return cls(graph_key(model), folder)

    def _valid(self) -> dict | None:
        """The record when it names this key and graph version and the file's bytes match it; else None."""
        try:
            rec = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        if rec.get("key") != self.key or rec.get("graph_version") != GRAPH_VERSION:
            return None
        try:
            return rec if sha256_of(self.onnx) == rec.get("onnx_sha256") else None
        except OSError:
            return None

    def fp32_graph(self, model: nn.Module) -> Path:
        """``model.onnx``, exported and verified first when the cache holds no valid one."""
        if self._valid() is None:
            self.export(model)
        return self.onnx

    def export(self, model: nn.Module) -> None:
        r = model.encoder.reduction
        self.dir.mkdir(parents=True, exist_ok=True)
        log.info(f"exporting the model to ONNX once, into {self.dir} (keyed by its weights and the exporting code)")
        wrapper = _Unpadded(model).eval()
        example = torch.randn(1, 3, 2 * r, 3 * r)
        with atomic_path(self.onnx, suffix=".onnx") as tmp:
            _export_onnx(wrapper, example, tmp)
            # the check runs the file just written, before it replaces the cache's
            if importlib.util.find_spec("onnxruntime") is not None:
                import onnxruntime as ort

                session = ort.InferenceSession(str(tmp), _ort_options(None), providers=["CPUExecutionProvider"])
                diff = _verify(model, lambda a: session.run(None, {"image": a}), r)
            else:
                diff = _verify_openvino(model, tmp, r)
            if not diff <= VERIFY_TOLERANCE:
                raise ToolkitError(
                    f"the exported graph of {self.key[:12]} differs from PyTorch by {diff:.3g} (tolerance "
                    f"{VERIFY_TOLERANCE}); use --backend torch"
                )
        save_json_atomic(
            self.record,
            {
                "key": self.key,
                "graph_version": GRAPH_VERSION,
                "onnx_sha256": sha256_of(self.onnx),
                "reduction": r,
                "verified_max_abs_diff": diff,
                "torch": torch.__version__,
            },
        )


def _verify_openvino(model: nn.Module, path: Path, r: int) -> float:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return _verify(model, lambda a: tuple(compiled(a).values()), r)


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    """TorchScript-based ONNX export (0.3 s for these networks; torch.export's takes 10 s and would specialise the
    batch of one); the graph has dynamic batch, height and width."""
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["seg_logits", "cls_logits"],
            dynamic_axes={"image": axes, "seg_logits": axes, "cls_logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


class GraphRunner:
    """``runner(x) -> SegDetOutput`` like the model it stands for, run by ONNX Runtime or OpenVINO on the CPU.

    ``precision``: ``fp32``, ``bf16`` (OpenVINO's bf16 inference; ONNX Runtime has none and stays fp32, with a
    warning) or ``int8`` (OpenVINO, the checkpoint's quantised graph from ``tools.quantize``, only when its accuracy
    check passed). A failure while running falls back to the PyTorch model, with one warning.
    """

    def __init__(
        self,
        model: nn.Module,
        backend: str,
        cache: GraphCache,
        precision: str = "fp32",
        threads: int | None = None,
        graph: Path | None = None,
        source: str | Path | None = None,
    ) -> None:
        """``graph``: an int8 IR to run as it is, unchecked (what ``tools.quantize`` checks and ``bench.py``
        times); otherwise the cache's."""
        if backend not in ("onnxruntime", "openvino"):
            raise ValueError(f"GraphRunner runs onnxruntime or openvino, not {backend!r}")
        self.model = model
        self.backend = backend
        self.precision = precision
        self.reduction = model.encoder.reduction
        self.has_cls = getattr(model, "cls_head", None) is not None
        self._fallen_back = False
        self.recorded: list[np.ndarray] | None = None  # a list to keep every input in (tools.quantize's calibration)
        if precision == "int8":
            if backend != "openvino":
                raise ValueError("int8 inference runs on the openvino backend (--backend openvino)")
            self._run = _openvino_run(graph or check_int8(cache, source), "f32", threads)
            return
        graph = cache.fp32_graph(model)
        if backend == "openvino":
            self._run = _openvino_run(graph, "bf16" if precision == "bf16" else "f32", threads)
        else:
            if precision == "bf16":
                warnings.warn("ONNX Runtime has no bf16 on the CPU: it runs the model in fp32", stacklevel=2)
            self._run = _onnxruntime_run(graph, threads)

    def __call__(self, x: torch.Tensor) -> SegDetOutput:
        if self._fallen_back:
            return self.model(x)
        if self.precision == "int8":  # asked for int8: fp32 in its place would be a run nobody asked for
            return self._graph_out(x)
        try:
            return self._graph_out(x)
        except Exception as e:  # noqa: BLE001  (any backend failure; PyTorch's own run raises real errors)
            warnings.warn(
                f"{self.backend} failed, PyTorch runs the model instead ({type(e).__name__}: {e})", stacklevel=2
            )
            self._fallen_back = True
            return self.model(x)

    def _graph_out(self, x: torch.Tensor) -> SegDetOutput:
        xp, h, w = _pad(x.float(), self.reduction)
        array = np.ascontiguousarray(xp.numpy())
        if self.recorded is not None:
            self.recorded.append(array.copy())
        seg, cls = self._run(array)
        seg_t = torch.from_numpy(seg)[..., :h, :w]
        return SegDetOutput(seg_t, torch.from_numpy(cls) if self.has_cls else None, (seg_t,))


def _ort_options(threads: int | None):
    """Every ONNX Runtime session's options: denormals flushed, as PyTorch's (``flush_denormals``). ONNX Runtime sets
    the calling thread's flag from the first session a process creates, whatever later ones ask, so the export's
    check uses these too (without, it turned PyTorch's flush off again on the main thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if threads:
        options.intra_op_num_threads = threads
    return options


def _onnxruntime_run(graph: Path, threads: int | None):
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), _ort_options(threads), providers=["CPUExecutionProvider"])
    return lambda a: tuple(session.run(None, {"image": a}))


def _openvino_run(graph: Path, precision: str, threads: int | None):
    """A compiled OpenVINO model as ``run(array) -> (seg, cls)``. The precision is always set: OpenVINO's own default
    on CPUs with bf16 units is bf16, which would change the figures of a run that asked for fp32."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "CPU_DENORMALS_OPTIMIZATION": True}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(graph), "CPU", config)
    request = compiled.create_infer_request()

    def run(a: np.ndarray):
        out = request.infer({0: a})  # copies the outputs (share_outputs=False): the next call cannot change them
        return out[compiled.outputs[0]], out[compiled.outputs[1]]

    return run


def check_int8(cache: GraphCache, source: str | Path | None = None) -> Path:
    """The checkpoint's int8 graph, when ``tools.quantize`` wrote it for these weights and its accuracy check
    passed; otherwise an error that names the checkpoint and says what to run or what the check found."""
    record, xml = cache.dir / "int8.json", cache.dir / "int8.xml"
    name, again = source or "this model", f"run python -m tools.quantize --seg-path {source or 'CKPT'}"
    try:
        rec = json.loads(record.read_text())
    except (OSError, ValueError):
        raise ToolkitError(
            f"{name}: no int8 graph of its weights and this version's exporting code in {cache.dir}: {again}"
        ) from None
    if rec.get("key") != cache.key or rec.get("graph_version") != GRAPH_VERSION:
        raise ToolkitError(f"{name}: {record} belongs to other weights or another graph version: {again}")
    try:
        intact = sha256_of(xml) == rec.get("xml_sha256") and sha256_of(xml.with_suffix(".bin")) == rec.get("bin_sha256")
    except OSError:
        intact = False
    if not intact:
        raise ToolkitError(f"{name}: the int8 graph in {cache.dir} is missing or changed: {again}")
    if not rec.get("passed"):
        raise ToolkitError(
            f"{name}: int8 refused: its accuracy check failed ({rec.get('summary')}; {record}); run it in fp32"
        )
    return xml


def make_runner(
    model: nn.Module,
    backend: str,
    source: str | Path | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    cache_folder: Path | None = None,
):
    """The model itself for ``torch``; else a :class:`GraphRunner`, or the model with one warning when the export or
    the backend cannot be set up (int8 errors are raised: asking for a refused int8 must not run fp32 silently)."""
    if backend == "torch":
        return model
    cache = GraphCache.for_model(model, cache_folder)
    if precision == "int8":
        return GraphRunner(model, backend, cache, precision, threads, source=source)
    try:
        return GraphRunner(model, backend, cache, precision, threads, source=source)
    except Exception as e:  # noqa: BLE001  (an exporter or library failure must not cost the run)
        warnings.warn(
            f"--backend {backend} could not be set up for {source or 'a model'}, PyTorch runs it instead "
            f"({type(e).__name__}: {e})",
            stacklevel=2,
        )
        return model
