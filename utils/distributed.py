"""torch.distributed plumbing: process group, sharding, gathering, and the multi-GPU self-launch.

``torchrun --nproc_per_node=N train.py ...`` (or several nodes) runs one process per GPU. A plain
``CUDA_VISIBLE_DEVICES=0,1,2,3 python train.py ...`` with more than one visible GPU re-launches itself through
torchrun with one process per GPU, so the original command lines use every GPU through DDP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from utils.errors import ToolkitError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when launched by torchrun (RANK / WORLD_SIZE set); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(info.local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", info.local_rank))
        else:
            dist.init_process_group("gloo")
    return info


def device_for(info: DistInfo) -> torch.device:
    return torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def shard(items: list, info: DistInfo) -> list:
    """Every ``world_size``-th item starting at ``rank``: each item on exactly one process."""
    return items[info.rank :: info.world_size]


def gather_objects(obj, info: DistInfo) -> list:
    """Every process's ``obj``, in rank order, on every process (works for uneven sizes)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / info.world_size
    return t


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def relaunch_on_all_gpus(script: str, argv: list[str]) -> int | None:
    """When several GPUs are visible and this is not already a torchrun worker, run ``script`` under torchrun
    with one process per GPU and return its exit code; otherwise return None (run here, in one process)."""
    if "WORLD_SIZE" in os.environ or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return None
    n = torch.cuda.device_count()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", script, *argv]
    print(f"{n} GPUs visible: running {' '.join(cmd[1:])}", flush=True)
    return subprocess.call(cmd)


@contextmanager
def shared_staged_output_dir(final, force: bool, info: DistInfo, protected=()):
    """``utils.io.staged_output_dir`` for several processes: the main one locks and creates the staging folder, every
    process writes its share into it, and the main one puts it in place once all have finished."""
    from utils.io import staged_output_dir

    if not info.enabled:
        with staged_output_dir(final, force, protected) as out:
            yield out
        return
    cm, stage, error = None, None, None
    if info.is_main:
        cm = staged_output_dir(final, force, protected)
        try:
            stage = str(cm.__enter__())
        except Exception as e:  # e.g. the folder exists without --force, or is in use: every process must stop
            error = str(e)
    error, stage = broadcast_object((error, stage), info)
    if error:
        raise ToolkitError(error)
    try:
        yield Path(stage)
        barrier(info)  # every process has written its share
    except BaseException as e:
        if cm is not None:
            cm.__exit__(type(e), e, e.__traceback__)
        raise
    if cm is not None:
        cm.__exit__(None, None, None)
    barrier(info)
