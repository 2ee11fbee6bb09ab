#!/usr/bin/env python
"""Speed of the project's paths against the original code's way of running the same networks.

    python bench.py                      # on a GPU: every model, every measurement, a table and docs-ready JSON
    python bench.py --device cpu --quick # the CPU path: inference ms per slice

Modes: ``baseline`` runs the network as the original code did (fp32, eager, NCHW, batch 8); ``fast`` is the
project's GPU default path (bf16 autocast, channels_last, larger slice batches) plus ``torch.compile``.
Times are medians of timed repetitions after warm-up (CUDA events on a GPU); ratios are against the baseline
measured in the same run. The floor is FLOPs over the measured bf16 matmul rate and bytes over the measured copy
bandwidth, whichever is larger.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from models import build_model, list_models

SLICES, H, W = 128, 1024, 512


def timed(fn, device: torch.device, warmup: int, reps: int) -> list[float]:
    """Milliseconds of each repetition after ``warmup`` calls (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def inference_fn(name: str, mode: str, device: torch.device, slices: int, amp: bool | None = None):
    """Model only, one volume of ``slices`` x H x W already on the device, class labels out.

    baseline: the original's loop (float input, fp32, eager, NCHW, batch 8). fast: the project's ``Predictor`` as
    eval.py / test.py run it (uint8 volume, neighbours stacked and normalised on the device, bf16, channels_last,
    compiled on a GPU, batch 32, argmax of the logits).
    """
    from inference.predictor import Member, Predictor
    from tasks.oct import predict_volume

    torch.manual_seed(0)
    model = build_model(name).to(device).eval()
    g = torch.Generator(device="cpu").manual_seed(0)
    volume = torch.randint(0, 256, (slices, H, W), generator=g, dtype=torch.uint8).to(device)
    if mode == "baseline":
        x = (volume.float() / 255 - 0.2) / 0.2
        x = torch.stack([x, x, x], 1)  # the original read 3-channel PNGs prepared beforehand

        @torch.inference_mode()
        def run():
            out = torch.empty(slices, H, W, dtype=torch.int64, device=device)
            for i in range(0, slices, 8):
                out[i : i + 8] = model(x[i : i + 8]).seg_logits.softmax(1).argmax(1)
            return out
    else:
        model = model.to(memory_format=torch.channels_last)
        predictor = Predictor([Member(model, [0.2] * 3, [0.2] * 3)], device, batch_size=32, compile=None, amp=amp)

        def run():
            return predict_volume(predictor, volume)

    return run


def bench_inference(run, mode: str, device: torch.device, slices: int, reps: int) -> dict:
    """Median milliseconds per volume of ``inference_fn``'s ``run``, and its peak device memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = timed(run, device, warmup=3 if mode == "fast" else 1, reps=reps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"ms_per_volume": statistics.median(ms), "ms_per_slice": statistics.median(ms) / slices, "peak_gib": peak}


def flops_and_bytes(name: str) -> tuple[float, float]:
    """Forward FLOPs of one full-size slice, and the fewest bytes a volume must move (input, weights, labels)."""
    model = build_model(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, H, W))
    weights = sum(p.numel() * 2 for p in model.parameters())  # bf16
    return counter.get_total_flops() * SLICES, SLICES * (3 * H * W * 2 + H * W) + weights


def hardware_rates(device: torch.device) -> dict:
    """Measured bf16 matmul FLOP/s and device copy bandwidth (bytes read + written per second)."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    mm = statistics.median(timed(lambda: a @ a, device, 3, 10))
    buf = torch.empty(2**28, device=device, dtype=torch.uint8)
    dst = torch.empty_like(buf)
    cp = statistics.median(timed(lambda: dst.copy_(buf), device, 3, 10))
    return {"matmul_flops": 2 * n**3 / (mm / 1e3), "copy_bytes_per_s": 2 * buf.numel() / (cp / 1e3)}


def cpu_rates(n: int = 2048) -> dict:
    """This CPU's measured matrix rates (operations per second): fp32 and bf16 products (oneDNN / MKL), and int8
    with int32 accumulation (``torch._int_mm``, VNNI / AMX where the CPU has them)."""
    cpu = torch.device("cpu")
    a = torch.randn(n, n)
    rates = {}
    for key, x in (("fp32", a), ("bf16", a.bfloat16())):
        rates[key] = 2 * n**3 / (statistics.median(timed(lambda x=x: x @ x, cpu, 2, 5)) / 1e3)
    q = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    rates["int8"] = 2 * n**3 / (statistics.median(timed(lambda: torch._int_mm(q, q), cpu, 2, 5)) / 1e3)
    return rates


def cpu_identity() -> dict:
    """The CPU as ``lscpu`` names it, with the flags that decide these figures (AVX-512, VNNI, bf16, AMX)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"model_name": "unknown (no lscpu)", "flags": []}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in flags if f.startswith(("avx512", "amx")) or "vnni" in f or "bf16" in f]
    return {
        "model_name": fields.get("Model name", "").strip(),
        "cpus": fields.get("CPU(s)", "").strip(),
        "flags": wanted,
    }


CUBE = 128  # B-scans of a Cirrus macular cube: what --backends reports per volume

# bench.py --backends: every way this toolkit can run a network on the CPU, as (label, backend, precision)
CPU_PATHS = [
    ("torch fp32 channels_last", "torch", "fp32"),
    ("torch bf16 autocast channels_last", "torch", "bf16"),
    ("torch.compile fp32", "compile", "fp32"),
    ("onnxruntime fp32", "onnxruntime", "fp32"),
    ("openvino fp32", "openvino", "fp32"),
    ("openvino bf16", "openvino", "bf16"),
    ("openvino int8", "openvino", "int8"),
]


def backend_fn(name: str, backend: str, precision: str, slices: int, graphs: Path, threads: int | None):
    """One volume of ``slices`` B-scans (H x W, uint8) through the ``Predictor`` on a CPU path, labels out; int8 runs
    a graph quantised here on random B-scans (timing only: its accuracy is ``tools.quantize``'s business)."""
    from inference import backends
    from inference.predictor import Member, Predictor
    from inference.quantize import quantize_openvino
    from tasks.oct import predict_volume

    torch.manual_seed(0)
    model = build_model(name).eval().to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    volume = torch.randint(0, 256, (slices, H, W), generator=g, dtype=torch.uint8)
    member = Member(model, [0.2] * 3, [0.2] * 3)
    kwargs = dict(device="cpu", batch_size=8, amp=precision == "bf16", threads=threads)
    if backend == "compile":
        predictor = Predictor([member], compile=True, backend="torch", **kwargs)
    elif precision == "int8":
        predictor = Predictor([member], backend="torch", **kwargs)
        cache = backends.GraphCache.for_model(model, graphs)
        calib = [((torch.randint(0, 256, (2, 3, H, W), generator=g).float() / 255 - 0.2) / 0.2).numpy()]
        xml = quantize_openvino(cache.fp32_graph(model), calib, cache.dir / "bench_int8.xml", max_drop=None)
        predictor.use_runner(0, backends.GraphRunner(model, "openvino", cache, "int8", threads, graph=xml))
    else:
        predictor = Predictor([member], backend=backend, **kwargs)
        predictor.use_runner(0, backends.make_runner(model, backend, None, precision, threads, graphs))

    def run():
        return predict_volume(predictor, volume)

    return run


def bench_cpu_backends(
    names: list[str], slices: int, reps: int, threads: int | None, tmp: Path, only: list[str] | None = None
) -> dict:
    """``bench.py --backends``: per-volume seconds (128 B-scans of H x W, from ``slices`` timed) of each CPU path
    against the original way (fp32, eager, NCHW, batch 8) measured in the same run, and the floor each precision's
    measured matrix rate sets; ``only``: the paths whose label holds one of these words (the original way always
    runs)."""
    if threads:
        torch.set_num_threads(threads)
    rates = cpu_rates()
    out = {"cpu": cpu_identity(), "rates_ops_per_s": rates, "slices_timed": slices, "rows": []}
    print(f"CPU: {out['cpu']}; matrix rates (TOPS) " + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in rates.items()))
    for name in names:
        flops = flops_and_bytes(name)[0] / SLICES  # per B-scan
        base = None
        paths = [p for p in CPU_PATHS if not only or any(word in p[0] for word in only)]
        for label, backend, precision in [("original: fp32 eager NCHW batch 8", "baseline", "fp32"), *paths]:
            try:
                if backend == "baseline":
                    run = inference_fn(name, "baseline", torch.device("cpu"), slices)
                else:
                    run = backend_fn(name, backend, precision, slices, tmp / "graphs", threads)
                ms = statistics.median(timed(run, torch.device("cpu"), 1, reps))
            except Exception as e:  # noqa: BLE001  (a path that cannot run here is a row that says why)
                row = {"model": name, "path": label, "error": f"{type(e).__name__}: {e}"[:200]}
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
                continue
            per_slice = ms / slices
            floor = flops / rates["int8" if precision == "int8" else precision]
            row = {
                "model": name,
                "path": label,
                "ms_per_slice": per_slice,
                "s_per_volume": per_slice * CUBE / 1e3,
                "floor_s_per_volume": floor * CUBE,
                "times_floor": per_slice / 1e3 / floor,
            }
            base = base or row
            row["speedup"] = base["ms_per_slice"] / per_slice
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{CUBE} B-scans of {H} x {W} per volume, model only ({slices} timed, median of {reps})")
    print("| model | path | s per volume | x original | floor s | x floor |\n|---|---|---|---|---|---|")
    for r in out["rows"]:
        if "error" in r:
            print(f"| {r['model']} | {r['path']} | failed: {r['error']} | | | |")
        else:
            print(
                f"| {r['model']} | {r['path']} | {r['s_per_volume']:.1f} | {r['speedup']:.2f} | "
                f"{r['floor_s_per_volume']:.1f} | {r['times_floor']:.1f} |"
            )
    return out


def synthetic_volumes(root: Path, n: int) -> Path:
    from data.synthetic import write_dataset

    return write_dataset(root / "oct", seed=4, train=n, val=1, test=n, slices=SLICES, height=H, width=W, jobs=8)


def _timed_steps(step, device: torch.device, steps: int, batch: int) -> dict:
    for _ in range(5):  # warm-up: workers started, cuDNN autotuned, graphs compiled
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wait = [0.0]
    t0 = time.perf_counter()
    for _ in range(steps):
        step(wait)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return {"images_per_s": steps * batch / total, "data_wait_fraction": wait[0] / total}


def _next(it_holder: list, loader, wait: list | None):
    t0 = time.perf_counter()
    try:
        batch = next(it_holder[0])
    except StopIteration:
        it_holder[0] = iter(loader)
        batch = next(it_holder[0])
    if wait is not None:
        wait[0] += time.perf_counter() - t0
    return batch


def training_step(name: str, mode: str, device: torch.device, data: Path, workers: int):
    """One training step at batch 16 with mix_33 and the real data pipeline, as a function of the wait counter.

    baseline: the original's step (fp32, eager, NCHW, float input). fast: ``Trainer.train_step``, exactly what
    train.py runs (uint8 to the device, bf16, channels_last, compiled on a GPU, no per-step host syncs).
    """
    from data.cache import VolumeCache
    from data.dataset import SliceDataset
    from data.oct import find_volumes
    from data.transforms import Augment
    from engine.trainer import Trainer
    from inference.predictor import normalize
    from losses import build_loss
    from utils.config import Settings

    if mode == "fast":
        s = Settings(
            name=name,
            loss="mix_33",
            batch_size=16,
            workers=workers,
            data_dir=str(data),
            cache_dir=str(data.parent / "cache"),
            out=tempfile.mkdtemp(prefix=f"train-{name}-", dir=data.parent),
            steps_per_epoch=10_000,
        ).validate()
        trainer = Trainer(s, device=device)
        trainer.model.train()
        loader = trainer.loader(0)
        holder = [iter(loader)]

        def step(wait=None):
            trainer.train_step(_next(holder, loader, wait))

        return step

    torch.manual_seed(0)
    model = build_model(name).to(device).train()
    loss_fn = build_loss("mix_33", deep_supervision=True).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    ds = SliceDataset(find_volumes(data, "train"), VolumeCache(data.parent / "cache"), Augment())
    loader = torch.utils.data.DataLoader(
        ds, batch_size=16, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0
    )
    holder = [iter(loader)]

    def step(wait=None):
        batch = _next(holder, loader, wait)
        x = normalize(batch["image"], [0.2] * 3, [0.2] * 3).to(device)  # float32 crosses the bus, as the original
        out = model(x)
        parts = loss_fn(out, batch["label"].to(device).long(), batch["det"].to(device))
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()
        parts["total"].item()  # the original logged every step

    return step


# Issue 17's targets for the fast path at full size (128 slices of 1024 x 512): (column, bound, "<=" or ">=").
TARGETS = {
    "unet": [("ms_per_volume", 40, "<="), ("train_images_per_s", 700, ">=")],
    "unet_nested": [("ms_per_volume", 100, "<="), ("train_images_per_s", 300, ">=")],
    "*": [
        ("train_data_wait_fraction", 0.05, "<"),
        ("test_py_s_per_volume", 0.5, "<="),
        ("test_py_eager_s_per_volume", 0.5, "<="),
    ],
}

# Kernel / operator names: convolutions and matrix products (cuDNN, CUTLASS, oneDNN), and the layout changes that
# cuDNN runs around them (memory-bound: counted with the element-wise work).
# Inductor names its fused element-wise kernels after the operations they came from (``triton_poi_fused_convolution_
# relu_0`` is the bias and ReLU after a convolution, ``cpp_fused_convolution_0`` a layout copy): memory-bound, whatever
# the name says; its matrix templates (``triton_tem_``) are convolutions and products.
_LAYOUT = re.compile(
    r"nchwToNhwc|nhwcToNchw|transpose|permute|copy_|contiguous|^triton_(poi|red|per)_|^cpp_fused|^triton_for_", re.I
)
_CONV = re.compile(
    r"conv|xmma|gemm|cutlass|wgrad|dgrad|fprop|winograd|fft2d|mkldnn|onednn|^triton_tem_|\baten::(addmm|mm|bmm)\b",
    re.I,
)


def resumed_training(ckpt: Path, flush: bool, steps: int, batch: int) -> dict:
    """Training steps from a trained checkpoint (its weights and optimiser moments, its crop size), with denormal
    floats kept (x86's default) or flushed to zero (``inference.predictor.flush_denormals``, which ``Trainer`` sets on
    the CPU). Run in a fresh process each (``--resumed``): the flag reaches only the threads started after it is set.
    The input is random: the trained weights alone bring the denormals (the checkpoint itself holds none)."""
    from engine.trainer import make_optimizer
    from inference.predictor import flush_denormals
    from models.registry import model_from_checkpoint

    if flush:
        flush_denormals()
    model, s, state = model_from_checkpoint(ckpt)
    model = model.to(memory_format=torch.channels_last).train()
    opt = make_optimizer(s, model.parameters())
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    g = torch.Generator().manual_seed(0)
    size = s.crop_size or 128
    x = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, s.num_classes, (batch, size, size), generator=g)

    def step(wait=None):
        loss = torch.nn.functional.cross_entropy(model(x).seg_logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return {
        "denormals": "flushed" if flush else "kept",
        "crop_size": size,
        **_timed_steps(step, torch.device("cpu"), steps, batch),
    }


def bench_resumed_training(ckpt: Path, steps: int, batch: int) -> list[dict]:
    """``resumed_training`` with denormals kept, then flushed, each in its own process; the second row's
    ``speedup`` is against the first."""
    rows = []
    for flag in ("kept", "flushed"):
        cmd = [sys.executable, __file__, "--resumed", str(ckpt), "--denormals", flag]
        cmd += ["--steps", str(steps), "--batch", str(batch)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"bench.py --resumed {ckpt} ({flag}) failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows[1]["speedup"] = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    return rows


def kernel_kind(name: str) -> str:
    """``conv`` for convolution / matrix kernels, ``memory`` for everything else (element-wise, reductions,
    normalisation, layout copies: work whose time is set by bytes moved)."""
    return "conv" if _CONV.search(name) and not _LAYOUT.search(name) else "memory"


def profile_fn(fn, device: torch.device, runs: int = 3, top: int = 12) -> dict:
    """Where ``fn``'s time goes (``torch.profiler``; ``fn`` already warmed up): the ``top`` kernels by self time on
    the device (operators on a CPU), the share in convolutions vs memory-bound work, and on a GPU the fraction of
    wall time the GPU was busy (low: launch- or host-bound, where CUDA graphs would pay)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(runs):
            fn()
        if cuda:
            torch.cuda.synchronize()
        wall_us = (time.perf_counter() - t0) * 1e6
    events = prof.key_averages()
    if cuda:  # the kernels (and copies) themselves; failing that, the operators' time on the device
        times = {e.key: e.self_device_time_total for e in events if str(e.device_type).endswith("CUDA")}
        times = times or {e.key: e.self_device_time_total for e in events if e.key.startswith("aten::")}
    else:  # operators only: Python ranges (the loader's __next__, Optimizer.step) are host time, not kernels
        times = {e.key: e.self_cpu_time_total for e in events if e.key.startswith("aten::")}
    times = {k: float(t) for k, t in times.items() if t > 0}
    total = sum(times.values()) or 1.0
    conv = sum(t for k, t in times.items() if kernel_kind(k) == "conv")
    ranked = sorted(times.items(), key=lambda kv: -kv[1])[:top]
    out = {
        "runs": runs,
        "ms_per_run": wall_us / runs / 1e3,
        "conv_share": conv / total,
        "memory_share": 1 - conv / total,
        "top": [
            {"name": k[:120], "ms_per_run": t / runs / 1e3, "share": t / total, "kind": kernel_kind(k)}
            for k, t in ranked
        ],
    }
    if cuda:
        out["gpu_busy_fraction"] = min(1.0, total / wall_us)
    return out


def check_targets(row: dict) -> list[str]:
    """Issue 17's targets that ``row`` (a fast row at full size) holds a figure for: one line each, met or MISSED."""
    lines = []
    for col, bound, op in TARGETS.get(row["model"], []) + TARGETS["*"]:
        if not isinstance(row.get(col), float | int):
            continue
        v = row[col]
        ok = {"<=": v <= bound, ">=": v >= bound, "<": v < bound}[op]
        lines.append(f"{row['model']} {col} = {v:.4g} (target {op} {bound}): {'met' if ok else 'MISSED'}")
    return lines


def bench_data(data: Path, workers: int, batches: int, augment=None) -> dict:
    """Images/s of the data pipeline alone (cache -> workers -> batches), with ``augment`` (default: flips only)."""
    from data.cache import VolumeCache
    from data.dataset import SliceDataset
    from data.oct import find_volumes
    from data.transforms import Augment

    ds = SliceDataset(find_volumes(data, "train"), VolumeCache(data.parent / "cache"), augment or Augment())
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers, drop_last=True)
    holder = [iter(loader)]
    _next(holder, loader, None)
    t0 = time.perf_counter()
    for _ in range(batches):
        _next(holder, loader, None)
    return {"images_per_s": batches * 16 / (time.perf_counter() - t0)}


def bench_test_py(ckpt_dir: Path, name: str, mode: str, data: Path, device: torch.device) -> dict:
    """End to end through test.py: BMP files on disk (a fresh decode cache) to saved .npy, per test volume.

    A first run warms up (cuDNN autotuning, compilation: inductor also keeps its kernels on disk between runs); the
    timed run starts from an empty decode cache, so BMP decoding is inside the time. baseline: fp32, eager, batch 8;
    fast: test.py's defaults with batch 32; fast-eager: the same with ``--no-compile``. The timed run is a new
    ``torch.compile`` of a new model, as every test.py run is: its tracing (not the kernels, cached on disk) is
    inside the time, which fast-eager shows the cost of.
    """
    import test as test_script
    from utils.checkpoint import save_checkpoint
    from utils.config import Settings

    ckpt = ckpt_dir / f"{name}.pth.tar"
    save_checkpoint(
        ckpt,
        {
            "model_name": name,
            "settings": Settings(name=name).to_dict(),
            "epoch": 0,
            "state_dict": build_model(name).state_dict(),
            "normalization": {"mean": [0.2] * 3, "std": [0.2] * 3},
        },
    )
    flags = {
        "baseline": ["--no-amp", "--no-compile", "--batch-size", "8"],
        "fast": ["--batch-size", "32"],
        "fast-eager": ["--no-compile", "--batch-size", "32"],
    }[mode]
    argv = ["--seg", "--det", "--seg-path", str(ckpt), "-d", str(data), "--force", "--device", str(device), *flags]
    test_script.main([*argv, "--cache-dir", str(ckpt_dir / f"warm-cache-{mode}"), "--out", str(ckpt_dir / "warm")])
    n = len(list((data / "Edema_testset" / "original_images").iterdir()))
    cold = tempfile.mkdtemp(prefix="cold-cache-", dir=ckpt_dir)
    t0 = time.perf_counter()
    test_script.main([*argv, "--cache-dir", cold, "--out", str(ckpt_dir / "timed")])
    return {"s_per_volume": (time.perf_counter() - t0) / n}


def check_agreement(
    ckpt: Path,
    data: Path | None,
    device: torch.device,
    splits: tuple[str, ...] = ("val",),
    amp: bool | None = None,
    cache_dir: str | None = None,
) -> dict:
    """A trained checkpoint's fast path (bf16 — by default on a GPU only —, channels_last, compiled on a GPU)
    against fp32 eager: the fraction of pixels given the same class and the change in mean Dice, over ``splits``."""
    from engine.cli import task_for
    from engine.evaluate import compare_predictors
    from tasks import load_predictor

    settings, task = task_for([str(ckpt)], cache_dir)
    records = [r for split in splits for r in task.records(split, data or settings.data_dir)]
    fp32 = load_predictor([ckpt], device=device, amp=False, compile=False, batch_size=8)
    fast = load_predictor([ckpt], device=device, batch_size=32, compile=None, amp=amp)
    found = compare_predictors(task, fp32, fast, records)
    dice = {"fp32": found["reference"]["dice_mean"], "fast": found["other"]["dice_mean"]}
    out = {
        "checkpoint": str(ckpt),
        "volumes": len(records),
        "pixel_agreement": found["pixel_agreement"],
        "dice_fp32": dice["fp32"],
        "dice_fast": dice["fast"],
        "dice_difference": abs(dice["fp32"] - dice["fast"]),
    }
    out["passed"] = out["pixel_agreement"] >= 0.999 and out["dice_difference"] < 0.002
    return out


def bench_cache_key(folder: Path, reps: int = 20) -> dict:
    """Milliseconds per volume of the decode cache's key (stat fields of every slice) against the alternatives: the
    old key (path, size, mtime), a content hash of the files (blake2b), and decoding the volume itself."""
    import hashlib

    from data.cache import _key
    from data.oct import list_slices, read_grey, stack_slices

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(1, SLICES + 1):
        Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)).save(folder / f"{i}.bmp")
    paths = list_slices(folder)

    def old_key(ps):
        return [(p.resolve(), p.stat().st_size, p.stat().st_mtime_ns) for p in ps]

    def content_hash(ps):
        h = hashlib.blake2b()
        for p in ps:
            h.update(p.read_bytes())
        return h.hexdigest()

    def decode(ps):
        return stack_slices(ps, read_grey)

    fns = {"key_ms": _key, "old_key_ms": old_key, "content_hash_ms": content_hash, "decode_ms": decode}
    return {k: statistics.median(timed(lambda f=f: f(paths), torch.device("cpu"), 1, reps)) for k, f in fns.items()}


def main(argv=None) -> dict:
    global SLICES, H, W
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list_models())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="inference only, few slices (the CPU report)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="fast mode in bf16 (default: on a GPU)"
    )
    p.add_argument("--slices", type=int, default=128, help="slices per volume (default 128)")
    p.add_argument("--size", type=int, nargs=2, default=[1024, 512], metavar=("H", "W"), help="slice size")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--agreement", type=Path, metavar="CKPT", help="a trained OCT checkpoint: fast path vs fp32")
    p.add_argument("-d", "--data-dir", type=Path, help="dataset of --agreement (default: the checkpoint's)")
    p.add_argument("--cache-key", action="store_true", help="only the decode cache's key cost per volume (CPU)")
    p.add_argument(
        "--backends",
        action="store_true",
        help="only the CPU paths (PyTorch eager / bf16 / compile, ONNX Runtime, OpenVINO fp32 / bf16 / int8) against "
        "the original way, per volume, timed on --slices B-scans (default 8 here)",
    )
    p.add_argument("--threads", type=int, help="--backends: CPU threads [default: every core]")
    p.add_argument(
        "--resumed",
        type=Path,
        metavar="CKPT",
        help="only training steps/s on the CPU from a trained checkpoint, denormals kept vs flushed (--steps, --batch)",
    )
    p.add_argument("--denormals", choices=("kept", "flushed"), help=argparse.SUPPRESS)  # --resumed's child process
    p.add_argument("--batch", type=int, default=16, help="--resumed: patches per step")
    p.add_argument("--paths", nargs="+", help="--backends: only the paths whose name holds one of these words")
    p.add_argument(
        "--profile",
        action="store_true",
        help="torch.profiler on the fast path: top kernels, share in convolutions vs memory-bound work",
    )
    a = p.parse_args(argv)
    if a.resumed:  # a CPU measurement whatever --device says
        if a.denormals:  # the child: one row, printed last
            row = resumed_training(a.resumed, a.denormals == "flushed", a.steps, a.batch)
            print(json.dumps(row))
            return row
        results = {"device": "cpu", "torch": torch.__version__, "cpu": cpu_identity()}
        results["resumed_training"] = rows = bench_resumed_training(a.resumed, a.steps, a.batch)
        print("\n".join(json.dumps(r) for r in rows))
        if a.json:
            a.json.write_text(json.dumps(results, indent=1))
        return results
    SLICES, (H, W) = a.slices, a.size
    device = torch.device(a.device)
    results: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": [],
    }
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        results["hardware"] = hardware_rates(device)
    tmp = Path(tempfile.mkdtemp(prefix="oct-bench-"))
    try:
        if a.backends:
            slices = a.slices if a.slices != 128 else 8
            results["backends"] = bench_cpu_backends(a.models, slices, a.reps, a.threads, tmp, a.paths)
            if a.json:
                a.json.write_text(json.dumps(results, indent=1))
            return results
        if a.cache_key:
            results["cache_key"] = bench_cache_key(tmp / "volume.img", a.reps)
            print(json.dumps(results["cache_key"]))
            return results
        return _run(a, device, results, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(a: argparse.Namespace, device: torch.device, results: dict, tmp: Path) -> dict:
    slices = 4 if a.quick else SLICES
    data = None if a.quick else synthetic_volumes(tmp, 4)
    for name in a.models:
        flops, nbytes = flops_and_bytes(name)
        base = None
        for mode in ("baseline", "fast"):
            run = inference_fn(name, mode, device, slices, a.amp)
            row = {"model": name, "mode": mode, **bench_inference(run, mode, device, slices, a.reps)}
            profile = a.profile and mode == "fast"
            if profile:
                row["profile_inference"] = profile_fn(run, device)
            del run
            if not a.quick:
                step = training_step(name, mode, device, data, a.workers)
                row.update({f"train_{k}": v for k, v in _timed_steps(step, device, a.steps, 16).items()})
                if profile:
                    row["profile_training"] = profile_fn(step, device, runs=5)
                del step
            if "hardware" in results:
                hw = results["hardware"]
                row["floor_ms_per_volume"] = 1e3 * max(flops / hw["matmul_flops"], nbytes / hw["copy_bytes_per_s"])
                row["times_floor"] = row["ms_per_volume"] / row["floor_ms_per_volume"]
            base = base or row
            row["inference_speedup"] = base["ms_per_volume"] / row["ms_per_volume"]
            if "train_images_per_s" in row:
                row["train_speedup"] = row["train_images_per_s"] / base["train_images_per_s"]
            if not a.quick:
                row["test_py_s_per_volume"] = bench_test_py(tmp, name, mode, data, device)["s_per_volume"]
                row["test_py_speedup"] = base["test_py_s_per_volume"] / row["test_py_s_per_volume"]
                if mode == "fast":  # does compiling pay for a short test.py run? (on a CPU both are eager)
                    eager = bench_test_py(tmp, name, "fast-eager", data, device)["s_per_volume"]
                    row["test_py_eager_s_per_volume"] = eager
            row["gflops_per_volume"] = flops / 1e9
            results["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("profile_")}), flush=True)
    if not a.quick:
        from engine.trainer import augment_for
        from utils.config import Settings

        results["data_pipeline"] = bench_data(data, a.workers, 40)
        results["data_pipeline_oct_augmentation"] = bench_data(data, a.workers, 40, augment_for(Settings()))
        print("data pipeline alone:", json.dumps(results["data_pipeline"]))
        print("with the OCT default augmentation:", json.dumps(results["data_pipeline_oct_augmentation"]))
    if a.agreement:
        results["agreement"] = check_agreement(a.agreement, a.data_dir, device)
        print("fast path vs fp32:", json.dumps(results["agreement"]))
    cols = [
        "model",
        "mode",
        "ms_per_volume",
        "ms_per_slice",
        "peak_gib",
        "inference_speedup",
        "floor_ms_per_volume",
        "times_floor",
        "train_images_per_s",
        "train_data_wait_fraction",
        "train_speedup",
        "test_py_s_per_volume",
        "test_py_speedup",
        "test_py_eager_s_per_volume",
    ]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results["rows"]:
        print(
            "| " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |"
        )
    if (SLICES, H, W) == (128, 1024, 512) and not a.quick:
        results["targets"] = [line for r in results["rows"] if r["mode"] == "fast" for line in check_targets(r)]
        print("\n".join(["targets (issue 17, full size):", *results["targets"]]))
    for r in results["rows"]:
        for key in ("profile_inference", "profile_training"):
            if key in r:
                print(_profile_table(f"{r['model']} {key.removeprefix('profile_')}", r[key]))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return results


def _profile_table(title: str, prof: dict) -> str:
    busy = f", GPU busy {prof['gpu_busy_fraction']:.0%} of wall time" if "gpu_busy_fraction" in prof else ""
    lines = [
        f"{title}: {prof['ms_per_run']:.1f} ms per run; convolutions {prof['conv_share']:.0%}, "
        f"memory-bound {prof['memory_share']:.0%} of kernel time{busy}",
        "| kernel | kind | ms per run | share |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{k['name']}` | {k['kind']} | {k['ms_per_run']:.3g} | {k['share']:.1%} |" for k in prof["top"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
