"""Data parallelism through torch.distributed, started by ``torchrun``.

``torchrun --nproc_per_node 4 -m deconas.cli train ...`` runs one process per GPU (or per CPU
worker with the gloo backend); each draws its own patches and the gradients are averaged, so
the effective batch is ``world_size x data.batch``. Rank 0 alone validates and writes files.
Without torchrun (no ``WORLD_SIZE`` in the environment) everything here is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .runtime import pick_device


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def setup(device_name=None) -> torch.device:
    """Join the process group when launched by torchrun; return this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return pick_device(device_name)
    use_cuda = torch.cuda.is_available() and (device_name is None or str(device_name).startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_gather(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean(value: float) -> float:
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (e.g. an error decided by the writer)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
