"""Several processes, one run: what ``torchrun`` tells each process, and the collectives kd uses.

``torchrun --nproc_per_node=N -m kd distill ...`` starts N copies of ``kd distill`` and gives each
its place in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``). :func:`init` reads them and joins the process group: NCCL on
GPUs, gloo on CPUs. Without those variables (a plain ``kd distill``) nothing here runs: the
:class:`World` is one process of rank 0 and every helper is a no-op.

What each rank does is :mod:`kd.train.stream`'s business; this module only says who is who, splits
ranges of work, and turns a peer's death into one clear line (:class:`PeerLost`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

TIMEOUT_ENV = "KD_DIST_TIMEOUT_S"
"""Seconds a collective waits for the other ranks before the job ends (default 1800)."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: global ``rank`` of ``size``, ``local_rank`` of
    ``local_size`` on its machine.

    Example:
        >>> World().main, World(rank=1, size=2).main
        (True, False)
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, logs and writes checkpoints and the student."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}"


def from_env() -> World:
    """The world ``torchrun`` describes in the environment (one process without it)."""
    env = os.environ
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
        local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise ValueError(
            "WORLD_SIZE, RANK, LOCAL_RANK must be whole numbers (launch with torchrun)"
        ) from None
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank < max(local_size, 1):
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={size}")
    return World(rank, size, local_rank, max(local_size, 1))


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun``."""
    return from_env().parallel


def init(device: str) -> tuple[World, str]:
    """Join the process group when launched by ``torchrun``; return the world and the device.

    On CUDA each rank takes the GPU of its local rank (made the current device, so ``"cuda"``
    names it) and NCCL; on the CPU, gloo. A single process returns ``World()`` and ``device``
    unchanged.
    """
    world = from_env()
    if not world.parallel:
        return world, device
    if device == "cuda":
        if torch.cuda.device_count() < world.local_size:
            raise ValueError(
                f"{world.local_size} processes on this machine but {torch.cuda.device_count()} "
                "GPUs; give torchrun --nproc_per_node at most the number of GPUs"
            )
        # "cuda" now means this GPU: kd's device checks (autocast, attention kernels) keep
        # working on the plain name.
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout)
    return world, device


def shutdown(world: World) -> None:
    if world.parallel and dist.is_initialized():
        # A group whose peer is gone cannot part cleanly; the process ends anyway, and the
        # error that ended the job is what gets said, not this one.
        with contextlib.suppress(RuntimeError, OSError):
            dist.destroy_process_group()


class PeerLost(ValueError):
    """Another rank of the job stopped (crashed, was killed, or timed out)."""


def peer_lost(world: World, err: BaseException) -> PeerLost:
    first = " ".join(str(err).split())[:160] or type(err).__name__
    return PeerLost(
        f"{world.describe()}: another process of this torchrun job stopped ({first}); the job "
        "ends here. Rerun the same command with --resume to continue from the last checkpoint"
    )


def barrier(world: World) -> None:
    """Wait for every rank (a no-op in one process)."""
    if world.parallel:
        dist.barrier()


def broadcast_object(world: World, obj=None):
    """Rank 0's ``obj`` on every rank (small picklable values only: a flag, a dict, a path)."""
    if not world.parallel:
        return obj
    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(world: World, flag: bool, device: str = "cpu") -> bool:
    """True on every rank when ``flag`` is True on any: a stop asked on rank 0 stops all."""
    if not world.parallel:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def sum_arrays(world: World, array: torch.Tensor) -> torch.Tensor:
    """Elementwise sum of ``array`` over the ranks (each fills its own rows, zeros elsewhere)."""
    if world.parallel:
        dist.all_reduce(array)
    return array


def gather_tensors(world: World, t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``t`` (same shape and dtype on all ranks), in rank order."""
    if not world.parallel:
        return [t]
    out = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(out, t)
    return out


def shard_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """The ``index``-th of ``parts`` contiguous, near-equal slices of ``range(n)``.

    Example:
        >>> [shard_range(10, 3, i) for i in range(3)]
        [(0, 4), (4, 7), (7, 10)]
    """
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)
