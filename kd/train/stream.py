"""What a run needs beyond one process: DDP under ``torchrun``, checkpoints with every
process's random state, and one line when a peer is lost.

:func:`kd.train.run.distill` is the one training path; with ``cfg.stream`` or under ``torchrun`` it
reads its data from the corpus folder on disk (:class:`kd.train.feed.CorpusFeed`) and, with N
processes, every process builds the same global batches (:class:`kd.train.loop.BatchPlan`) and
trains on its slice of each; ``DistributedDataParallel`` averages the gradients, and each
process's loss is weighted by its share of the batch, so one step is the step one process would
take on the whole batch. The encoding work (teacher vectors, frozen-layer states, the ridge
head's inputs) is split between the processes too. The first alone evaluates, reports and saves
the student; checkpoints carry every process's random state.

Two things differ from one process by design: dropout masks (each process draws its own, seeded
by ``seed + rank``) and ``--loss kl``, whose softmax runs over each process's slice of the batch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kd.config import TrainConfig
from kd.models.encoder import Encoder
from kd.train.checkpoint import load_checkpoint, read_extra, save_checkpoint
from kd.train.distributed import World, broadcast_object, gather_tensors
from kd.train.parts import check_resumable

__all__ = ["is_peer_failure", "resume", "save_checkpoint_all", "wrap"]


class _Step(nn.Module):
    """The student as one module whose forward embeds a batch of item ids: what DDP wraps."""

    def __init__(self, student: Encoder, runner) -> None:
        super().__init__()
        self.student = student
        self.runner = runner

    def forward(self, idx: np.ndarray) -> torch.Tensor:
        return self.runner.embed(idx)  # (B, D)


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process went away."""
    kinds = tuple(getattr(dist, n) for n in ("DistError",) if hasattr(dist, n))
    text = str(err).lower()
    return isinstance(err, kinds) or any(
        w in text
        for w in (
            "gloo",
            "nccl",
            "connection reset",
            "connection closed",
            "connection refused",
            "broken pipe",
            "timed out",
        )
    )


def wrap(student: Encoder, runner, world: World, device_type: str) -> nn.Module:
    """The student as one module whose forward embeds a batch of item ids; under DDP with
    several processes."""
    module = _Step(student, runner)
    if not world.parallel:
        return module
    ids = [torch.cuda.current_device()] if device_type == "cuda" else None
    with warnings.catch_warnings():  # torch 2.13 renames broadcast_buffers; same meaning
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def _rng_states(device: str) -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def save_checkpoint_all(
    world: World, ckpt: Path, named, optimizer, meta: dict, device: str
) -> None:
    """The first process writes the checkpoint, with every rank's random state beside its own."""
    extra = {}
    for kind, state in _rng_states(device).items():
        # Collectives move tensors on the device NCCL owns; gloo takes them where they are.
        gathered = gather_tensors(world, state.to(device))
        extra |= {f"rng/rank{r}/{kind}": s.cpu() for r, s in enumerate(gathered)}
    if world.main:
        save_checkpoint(ckpt, named, optimizer, meta | {"world_size": world.size}, extra)


def resume(cfg: TrainConfig, world: World, ckpt: Path, named, optimizer, schedule) -> int:
    """Restore a checkpoint and fast-forward the schedule; returns the step to continue from.

    The first process reads it and refuses one made with other settings; the others receive it
    from the first (so ``--out`` need not be on a filesystem every machine sees). Each process
    continues its own random stream where the checkpoint has it."""
    payload, error = None, None
    if world.main:
        try:
            meta = load_checkpoint(ckpt, named, optimizer)
            check_resumable(cfg, meta)
            extra = read_extra(ckpt)
            payload = {
                "step": int(meta["step"]),
                "params": {k: v.detach().cpu() for k, v in named.items()},
                "optimizer": optimizer.state_dict(),
                "rng": {k: v for k, v in extra.items() if k.startswith("rng/rank")},
            }
        except ValueError as err:
            error = str(err)
    if world.parallel:
        error = broadcast_object(world, error)
    if error is not None:
        raise ValueError(error)
    if world.parallel:
        payload = broadcast_object(world, payload)
        if not world.main:
            with torch.no_grad():
                for k, v in named.items():
                    v.copy_(payload["params"][k].to(v.device))
            optimizer.load_state_dict(payload["optimizer"])
    mine = payload["rng"]
    if f"rng/rank{world.rank}/cpu" in mine:
        torch.set_rng_state(mine[f"rng/rank{world.rank}/cpu"])
    if f"rng/rank{world.rank}/cuda" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine[f"rng/rank{world.rank}/cuda"])
    with warnings.catch_warnings():  # fast-forwarding the schedule, not skipping a step
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(payload["step"]):
            schedule.step()
    return payload["step"]
