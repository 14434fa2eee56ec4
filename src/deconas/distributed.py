"""Data parallelism through torch.distributed, started by ``torchrun``.

``torchrun --nproc_per_node 4 -m deconas.cli train ...`` runs one process per GPU (or per CPU
worker with the gloo backend); each draws its own patches and the gradients are averaged, so
the effective batch is ``world_size x data.batch``. Rank 0 alone validates and writes files.
``deconas search`` and ``deconas derive`` use the same process group (docs/search.md, "The
search under torchrun"): every rank trains its own sampled architecture and the supernet's
gradients are averaged by :func:`all_reduce_grads`.
Without torchrun (no ``WORLD_SIZE`` in the environment) everything here is a no-op.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterable, List

import torch
import torch.distributed as dist

from deconas.errors import UserError
from deconas.runtime import pick_device


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_world_size() -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE): they share its cores."""
    n = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(n) if n.isdigit() and int(n) > 0 else world_size()


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


def _comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_floats(values: List[float]) -> List[List[float]]:
    """Every rank's list of floats (all the same length), in rank order; float64, exact."""
    if world_size() == 1:
        return [list(values)]
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    out = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return [o.cpu().tolist() for o in out]


def all_reduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients over the ranks, in one flat all-reduce.

    Each rank may have run a different sub-network of the same module (the search's sampled
    architectures), so a parameter can have a gradient on some ranks and none on others. A
    missing gradient counts as zeros, so the result is the gradient of the mean loss over
    the ranks' architectures; a parameter no rank used keeps ``grad = None``, so Adam skips
    it exactly as in a single process. A flag per parameter travels in the same buffer.
    Every rank gets the same bits: the reduction is done once per element and shared.
    """
    world = world_size()
    if world == 1:
        return
    params = [p for p in params if p.requires_grad]
    dev = params[0].device if params else torch.device("cpu")
    numel = sum(p.numel() for p in params)
    buf = torch.zeros(numel + len(params), dtype=torch.float32, device=dev)
    flags = buf[numel:]
    off = 0
    for i, p in enumerate(params):
        if p.grad is not None:
            buf[off:off + p.numel()].copy_(p.grad.reshape(-1))
            flags[i] = 1.0
        off += p.numel()
    if dev.type != _comm_device().type:  # pragma: no cover - CPU tensors under NCCL
        moved = buf.to(_comm_device())
        dist.all_reduce(moved)
        buf.copy_(moved)
    else:
        dist.all_reduce(buf)
    buf[:numel].div_(world)
    off = 0
    used = flags.tolist()
    for i, p in enumerate(params):
        n = p.numel()
        if used[i] > 0:
            g = buf[off:off + n].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        else:
            p.grad = None
        off += n


def same_on_every_rank(tensors: Iterable[torch.Tensor]) -> bool:
    """True when these tensors are bitwise equal on every rank (a digest is compared)."""
    if world_size() == 1:
        return True
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digests = all_gather(h.hexdigest())
    return all(d == digests[0] for d in digests)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank0_speaks(body) -> int:
    """Run a command's ``body(main_process)`` in every process: under torchrun each rank hits
    the same error, so rank 0 reports it (one line, via the CLI) and the others exit 2 quietly."""
    main_process = int(os.environ.get("RANK", "0") or 0) == 0
    try:
        return body(main_process)
    except UserError:
        if main_process:
            raise
        return 2
    finally:
        cleanup()
