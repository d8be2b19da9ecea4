"""Several processes (``torchrun``): who am I, wait for the others, combine numbers, and a deterministic teardown.

With ``torchrun --nproc_per_node=N -m dlb_edu ...`` every process trains the same model (DistributedDataParallel
averages the gradients) on its own share of every epoch. Everything here is a no-op in a single process, so the
trainer calls it unconditionally.

Teardown. Gloo's process group owns C++ threads; if a process reaches interpreter exit while its process group is
still alive (not destroyed, or destroyed while another object such as the DDP wrapper still holds it), the group is
torn down during interpreter finalization, in no fixed order with the rest, and a thread that is still joinable
there ends the process with "terminate called without an active exception". Ranks also reach the end at different
times (rank 0 writes the outputs), so one rank may be closing its connections while another still uses its own.
:func:`shutdown` makes the end deterministic: every rank waits at a barrier (no rank is still communicating), then
destroys the group explicitly, from the main thread, before the interpreter exits; callers drop their DDP wrapper
first (``cli.py`` returns from the training function before calling it).
"""
from __future__ import annotations

import gc
import os

import torch

from .errors import ConfigError


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless :func:`init_distributed` has joined a process group."""
    dist = _dist()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


def init_distributed() -> None:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group, NCCL on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _dist() is not None:
        return
    import torch.distributed as dist
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def shutdown(clean: bool = True) -> None:
    """Leave the process group. ``clean``: every rank got here normally, so wait for all of them first.

    After an error other ranks may be inside a collective that will never complete: then no barrier (torchrun stops
    the other processes when one fails), only the local teardown.
    """
    dist = _dist()
    if dist is None:
        return
    gc.collect()  # a DDP wrapper caught in a reference cycle would otherwise keep the group alive until exit
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def check_supported(config, world_size: int) -> None:
    """The settings that one process supports and several do not."""
    if world_size == 1:
        return
    if config.forward == "split":
        raise ConfigError("forward split is not supported with several processes (DDP needs one forward per "
                          "backward): use --forward joint")


def barrier() -> None:
    dist = _dist()
    if dist is not None:
        dist.barrier()


def average(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the processes (``t`` itself in one process)."""
    dist = _dist()
    if dist is None:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def any_process(flag: bool, device) -> bool:
    """True on every process if ``flag`` is true on any: all of them then take the same branch."""
    dist = _dist()
    if dist is None:
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every process's ``t`` stacked along the first dimension, in rank order (``t`` itself in one process).

    A collective on tensors (on the training device: NCCL takes GPU tensors only); every process passes the same
    shape, as the ranks' batches of one step have (equal shares of the epoch, one batch size).
    """
    dist = _dist()
    if dist is None:
        return t
    t = t.contiguous()
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return torch.cat(out)


def gather(obj) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` in one process)."""
    dist = _dist()
    if dist is None:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
