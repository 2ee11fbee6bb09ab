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
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
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


def prepare(name: str, mode: str, device: torch.device):
    model = build_model(name).to(device)
    if mode == "fast" and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if mode == "fast" and device.type == "cuda" else model
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if mode == "fast" and device.type == "cuda" else nullcontext()
    return model, fwd, amp


def bench_inference(name: str, mode: str, device: torch.device, slices: int, reps: int) -> dict:
    """Model only: one volume of ``slices`` x 3 x H x W already on the device, argmax labels out."""
    model, fwd, amp = prepare(name, mode, device)
    model.eval()
    batch = 8 if mode == "baseline" else 32
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(slices, 3, H, W, generator=g).to(device)
    if mode == "fast" and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run():
        out = torch.empty(slices, H, W, dtype=torch.uint8, device=device)
        for i in range(0, slices, batch):
            with amp:
                out[i : i + batch] = fwd(x[i : i + batch]).seg_logits.argmax(1)
        return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = timed(run, device, warmup=2 if mode == "fast" else 1, reps=reps)
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


def synthetic_volumes(root: Path, n: int) -> Path:
    from data.synthetic import write_dataset

    return write_dataset(root / "oct", seed=4, train=n, val=1, test=n, slices=SLICES, height=H, width=W, jobs=8)


def bench_training(name: str, mode: str, device: torch.device, data: Path, steps: int, workers: int) -> dict:
    """Images/s with mix_33 and the real data pipeline (BMP cache -> workers -> uint8 to the device)."""
    from data.cache import VolumeCache
    from data.dataset import SliceDataset
    from data.oct import find_volumes
    from data.transforms import Augment
    from losses import build_loss
    from utils.inference import normalize

    model, fwd, amp = prepare(name, mode, device)
    model.train()
    loss_fn = build_loss("mix_33", deep_supervision=True).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    ds = SliceDataset(find_volumes(data, "train"), VolumeCache(data.parent / "cache"), Augment())
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=16,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
    it = iter(loader)
    wait = 0.0

    def step():
        nonlocal it, wait
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        wait += time.perf_counter() - t0
        x = normalize(batch["image"].to(device, non_blocking=True), [0.2] * 3, [0.2] * 3)
        if mode == "fast" and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            out = fwd(x)
        parts = loss_fn(out, batch["label"].to(device, non_blocking=True).long(), batch["det"].to(device))
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()

    for _ in range(5):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wait, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return {"images_per_s": steps * 16 / total, "data_wait_fraction": wait / total}


def bench_data(data: Path, workers: int, batches: int) -> dict:
    from data.cache import VolumeCache
    from data.dataset import SliceDataset
    from data.oct import find_volumes
    from data.transforms import Augment

    ds = SliceDataset(find_volumes(data, "train"), VolumeCache(data.parent / "cache"), Augment())
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return {"images_per_s": batches * 16 / (time.perf_counter() - t0)}


def bench_test_py(ckpt_dir: Path, name: str, data: Path, device: torch.device) -> dict:
    """End to end: BMP files on disk to saved .npy, through test.py, amortised over the test volumes."""
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
    argv = [
        "--seg",
        "--det",
        "--seg-path",
        str(ckpt),
        "-d",
        str(data),
        "--cache-dir",
        str(data.parent / "tcache"),
        "--batch-size",
        "32",
        "--force",
        "--device",
        str(device),
    ]
    test_script.main([*argv, "--out", str(ckpt_dir / "warm")])  # decode cache, cuDNN autotune
    n = len(list((data / "Edema_testset" / "original_images").iterdir()))
    t0 = time.perf_counter()
    test_script.main([*argv, "--out", str(ckpt_dir / "timed")])
    return {"s_per_volume": (time.perf_counter() - t0) / n}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list_models())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="inference only, few slices (the CPU report)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--json", type=Path, help="write every figure here")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    results: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": [],
    }
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        results["hardware"] = hardware_rates(device)
    slices = 4 if a.quick else SLICES
    tmp = Path(tempfile.mkdtemp(prefix="oct-bench-"))
    data = None if a.quick else synthetic_volumes(tmp, 4)
    for name in a.models:
        flops, nbytes = flops_and_bytes(name)
        base = None
        for mode in ("baseline", "fast") if device.type == "cuda" else ("baseline",):
            row = {"model": name, "mode": mode, **bench_inference(name, mode, device, slices, a.reps)}
            if not a.quick:
                row.update(
                    {f"train_{k}": v for k, v in bench_training(name, mode, device, data, 30, a.workers).items()}
                )
            if "hardware" in results:
                hw = results["hardware"]
                row["floor_ms_per_volume"] = 1e3 * max(flops / hw["matmul_flops"], nbytes / hw["copy_bytes_per_s"])
            base = base or row
            row["inference_speedup"] = base["ms_per_volume"] / row["ms_per_volume"]
            if "train_images_per_s" in row:
                row["train_speedup"] = row["train_images_per_s"] / base["train_images_per_s"]
            row["gflops_per_volume"] = flops / 1e9
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
        if not a.quick:
            results["rows"][-1]["test_py_s_per_volume"] = bench_test_py(tmp, name, data, device)["s_per_volume"]
    if not a.quick:
        results["data_pipeline"] = bench_data(data, a.workers, 40)
    cols = [
        "model",
        "mode",
        "ms_per_volume",
        "ms_per_slice",
        "peak_gib",
        "inference_speedup",
        "floor_ms_per_volume",
        "train_images_per_s",
        "train_data_wait_fraction",
        "train_speedup",
        "test_py_s_per_volume",
    ]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results["rows"]:
        print(
            "| " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |"
        )
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
