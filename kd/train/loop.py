"""The training loop: one step and one loop for every data path.

:func:`kd.train.run.distill` trains through here whether its data sits in memory
(:class:`kd.train.feed.MemoryFeed`) or on disk (:class:`kd.train.feed.CorpusFeed`), in one process
or in several under ``torchrun``; ``bench/recipe_probe.py`` calls :func:`training_step` as well.
What the loop reads from its data is a :class:`Feed`: each item's English sentence id and the
teacher's vector of a sentence id. What it asks of the run goes through :class:`Hooks`: whether to
stop (Stop and the time limit, agreed between the processes), what to evaluate on evaluation steps
(held-out pairs, the watch set), where to checkpoint, whom to tell after each step.

One step, in order: the student embeds the batch (its frozen layers cached, so only the top
trains), the distillation loss pulls each item to its English sentence's teacher vector, the
ranking term ranks that vector first among a bank of teacher vectors, the gradient is clipped
to norm 1, AdamW steps and the learning rate follows warm-up then linear decay. With N processes
each embeds its slice of the batch and weighs its loss by its share, so that DDP's averaged
gradient is the gradient of the whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from kd.config import TrainConfig
from kd.models.encoder import autocast
from kd.train.distributed import World, shard_range, sum_arrays
from kd.train.losses import distillation_loss, sampled_rank_loss
from kd.train.parts import step_record
from kd.train.stopping import EvaluationCut

RANK_BANK = 65_536
"""Most teacher vectors the ranking term ranks against per step: every training sentence up to
this many (where :func:`kd.train.losses.sampled_rank_loss` is :func:`kd.train.losses.rank_loss`
exactly), a fixed seeded sample of them beyond it, so a corpus of millions costs no more per
step."""


class Feed(Protocol):
    """What the loop reads from a run's data (:mod:`kd.train.feed` has the two kinds)."""

    n_items: int
    n_english: int

    def target(self, idx: np.ndarray) -> np.ndarray:
        """The English sentence id of each item in ``idx``."""

    def teacher(self, ids: np.ndarray) -> np.ndarray:
        """The teacher's unit vectors of English sentence ids ``ids``: (len(ids), D) float32."""


class BatchPlan:
    """Shuffled batches of similar length (less padding), in a shuffled order; deterministic.

    Items are shuffled, cut into pools of 50 batches, sorted by length inside each pool, cut into
    batches, and the batches shuffled again. Held as one int32 array of item ids (4 bytes an
    item), so a corpus of millions costs no list of arrays.

    Example:
        >>> lengths = np.random.default_rng(0).integers(3, 40, size=500)
        >>> plan = BatchPlan(lengths, 32, seed=1, epoch=0)
        >>> len(plan), sorted(np.concatenate(list(plan)).tolist()) == list(range(500))
        (16, True)
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> None:
        rng = np.random.default_rng([seed, epoch])
        n = len(lengths)
        perm = rng.permutation(n)
        pool = batch_size * 50  # a multiple of the batch size: batch i starts at i * batch_size
        self.items = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
        for start in range(0, n, pool):
            chunk = perm[start : start + pool]
            self.items[start : start + len(chunk)] = chunk[
                np.argsort(lengths[chunk], kind="stable")
            ]
        del perm
        self.batch_size = batch_size
        self.order = rng.permutation(-(-n // batch_size))

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        for b in self.order:
            start = int(b) * self.batch_size
            yield self.items[start : start + self.batch_size].astype(np.int64)


@dataclass
class RankBank:
    """The teacher vectors the ranking term ranks against, and their sentence ids."""

    vectors: torch.Tensor  # (K, D)
    ids: torch.Tensor  # (K,)

    @classmethod
    def of(cls, feed: Feed, seed: int, device: str = "cpu") -> RankBank:
        ids = np.arange(feed.n_english)
        if len(ids) > RANK_BANK:
            ids = np.sort(np.random.default_rng([seed, 1]).choice(ids, RANK_BANK, replace=False))
        vectors = torch.from_numpy(feed.teacher(ids)).to(device)
        return cls(vectors, torch.from_numpy(ids).to(device))


def training_step(
    embed: Callable[[np.ndarray], torch.Tensor],
    idx: np.ndarray,
    feed: Feed,
    bank: RankBank | None,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    schedule,
    params: list[torch.Tensor],
    precision: str,
    device: str = "cpu",
    share: float = 1.0,
    step: int = 0,
) -> torch.Tensor:
    """One optimisation step on the items ``idx``; returns the (detached) loss of the batch.

    ``embed`` maps item ids to student vectors (B, D); ``params`` are every trained tensor (the
    top layers and the head), clipped together; ``share`` weighs this process's loss by its part
    of the global batch (1 in one process); ``step`` (steps done before this one) names it in
    the error when the loss is not finite.
    """
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    target = feed.target(idx)
    t = torch.from_numpy(feed.teacher(target)).to(device)  # (B, D)
    with autocast(device_type, precision):
        s = embed(idx).float()  # (B, D)
    loss = distillation_loss(cfg.loss, s, t, cfg.temperature)
    if cfg.rank_weight and bank is not None:
        tid = torch.from_numpy(np.asarray(target)).to(device)
        rank = sampled_rank_loss(s, t, bank.vectors, bank.ids, tid, cfg.temperature)
        loss = loss + cfg.rank_weight * rank
    if not torch.isfinite(loss):
        raise ValueError(f"the loss became {loss.item()} at step {step}; lower --lr")
    optimizer.zero_grad(set_to_none=True)
    (loss * share).backward()  # DDP averages over processes: the whole batch's mean
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()
    return loss.detach()


@dataclass
class Hooks:
    """What the loop asks of the run around its steps (each optional)."""

    halted: Callable[[], bool] = lambda: False
    """Polled before every step: Stop or the time limit (every process must get the same)."""
    evaluate: Callable[[int], dict] | None = None
    """On evaluation steps, in the first process: what to add to the step's record (held-out
    metrics, the watch set); may raise :class:`kd.train.stopping.EvaluationCut`."""
    on_step: Callable[[int, dict], None] | None = None
    """After every step, in the first process: ``(step, record)``."""
    checkpoint: Callable[[int], None] | None = None
    """Every ``checkpoint_every`` steps, in every process."""


@dataclass
class LoopEnd:
    step: int
    stopped: bool
    history: list[dict] = field(default_factory=list)


def train_loop(
    embed: Callable[[np.ndarray], torch.Tensor],
    feed: Feed,
    lengths: np.ndarray,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    schedule,
    params: list[torch.Tensor],
    precision: str,
    total: int,
    *,
    step: int = 0,
    world: World | None = None,
    device: str = "cpu",
    bank: RankBank | None = None,
    hooks: Hooks | None = None,
) -> LoopEnd:
    """Train from ``step`` to ``total`` steps over ``cfg.epochs`` epochs of :class:`BatchPlan`
    batches (the steps before ``step`` are skipped, as after a resume)."""
    world = world or World()
    hooks = hooks or Hooks()
    steps_per_epoch = cfg.steps_per_epoch(feed.n_items)
    eval_every = cfg.eval_interval(total)
    started, done_at_start = time.perf_counter(), step
    end = LoopEnd(step, False)
    for epoch in range(cfg.epochs):
        batches = BatchPlan(lengths, cfg.batch_size, cfg.seed, epoch)
        for b, idx in enumerate(batches):
            if epoch * steps_per_epoch + b < end.step:
                continue  # done before a resume
            if end.step >= total:
                break
            if hooks.halted():
                end.stopped = True
                break
            lo, hi = shard_range(len(idx), world.size, world.rank)
            mine = idx[lo:hi] if hi > lo else idx[:1]  # a process with no share computes, weighs 0
            share = (hi - lo) / len(idx) * world.size
            loss = training_step(
                embed,
                mine,
                feed,
                bank,
                cfg,
                optimizer,
                schedule,
                params,
                precision,
                device,
                share,
                end.step,
            )
            end.step += 1
            batch_loss = sum_arrays(world, (loss * share / world.size).reshape(1))
            rate = (end.step - done_at_start) / max(time.perf_counter() - started, 1e-9)
            epoch_at = epoch + (b + 1) / len(batches)
            record = step_record(
                float(batch_loss.item()), optimizer, epoch_at, rate, cfg, end.step, total
            )
            due = eval_every and end.step % eval_every == 0 and end.step < total
            if world.main and due and hooks.evaluate:
                try:
                    record |= hooks.evaluate(end.step)
                except EvaluationCut:  # stopped during this evaluation: the next poll ends it
                    record.pop("eval", None)
                    record.pop("watch", None)
            if world.main:
                kept = {k: v for k, v in record.items() if k not in ("eval", "watch")}
                end.history.append({"step": end.step} | kept)
                if hooks.on_step:
                    hooks.on_step(end.step, record)
            every = cfg.checkpoint_every
            if every and end.step % every == 0 and end.step < total and hooks.checkpoint:
                hooks.checkpoint(end.step)
        if end.stopped or end.step >= total:
            break
    return end
