"""The streaming training path: the same distillation, with the data on disk and, under
``torchrun``, spread over several processes (DDP).

:func:`kd.train.distill` comes here when ``cfg.stream`` is set or ``torchrun`` started several
processes; a plain ``kd distill`` keeps the in-memory path. The recipe is the same (ridge head,
loss on the unit sphere, ranking term, frozen-layer cache, warm-up then linear decay); what
differs is where things live and who does what:

- the corpus is streamed from its sources into files (:mod:`kd.corpus`), the teacher's vectors
  into a float16 cache keyed by sentence (:class:`kd.disk_cache.TeacherCache`), the frozen
  layers' outputs into parts on disk (:class:`kd.disk_cache.DiskPrefixCache`): peak memory
  does not grow with the corpus;
- the ranking term ranks against a fixed seeded sample of at most :data:`RANK_BANK` training
  sentences (all of them below that), :func:`kd.losses.sampled_rank_loss`;
- with N processes every rank builds the same global batches (:func:`kd.train_parts.epoch_batches`)
  and trains on its slice of each; ``DistributedDataParallel`` averages the gradients, and each
  rank's loss is weighted by its share of the batch, so one step is the step one process would
  take on the whole batch. The encoding work (teacher vectors, frozen-layer states, the ridge
  head's inputs) is split between the ranks too. Rank 0 alone evaluates, reports, writes
  checkpoints and saves the student.

Two things differ from one process by design: dropout masks (each rank draws its own, seeded by
``seed + rank``) and ``--loss kl``, whose softmax runs over each rank's slice of the batch.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd.checkpoint import load_checkpoint, read_extra, save_checkpoint
from kd.config import TrainConfig
from kd.distributed import (
    World,
    any_rank,
    barrier,
    broadcast_object,
    gather_tensors,
    init,
    peer_lost,
    shard_range,
    shutdown,
    sum_arrays,
)
from kd.evaluate import evaluate
from kd.losses import distillation_loss, sampled_rank_loss
from kd.models import Encoder, autocast, pick_device, prepare_torch, resolve_precision

log = logging.getLogger("kd")

RANK_BANK = 65_536
"""Most teacher vectors the ranking term ranks against per step (a seeded sample beyond it)."""


class BatchPlan:
    """:func:`kd.train_parts.epoch_batches` for a corpus of millions: the same batches in the same
    order, held as one int32 array of item ids (4 bytes an item) instead of a list of arrays.

    Example:
        >>> from kd.train_parts import epoch_batches
        >>> lengths = np.random.default_rng(0).integers(3, 40, size=500)
        >>> plan = BatchPlan(lengths, 32, seed=1, epoch=0)
        >>> all((a == b).all() for a, b in zip(plan, epoch_batches(lengths, 32, 1, 0)))
        True
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


class _Step(nn.Module):
    """The student as one module whose forward embeds a batch of item ids: what DDP wraps."""

    def __init__(self, student: Encoder, runner) -> None:
        super().__init__()
        self.student = student
        self.runner = runner

    def forward(self, idx: np.ndarray) -> torch.Tensor:
        return self.runner.embed(idx)  # (B, D)


def _is_peer_failure(err: BaseException) -> bool:
    import torch.distributed as dist

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


def distill_stream(
    cfg: TrainConfig,
    on_step: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
):
    """:func:`kd.train.distill` on the streaming path (same arguments, same result)."""
    world, device = init(pick_device(cfg.device))
    try:
        return _run(cfg, world, device, on_step, should_stop, status, progress)
    except (RuntimeError, OSError) as err:  # gloo raises both when a peer's socket closes
        if world.parallel and _is_peer_failure(err):
            raise peer_lost(world, err) from None
        raise
    finally:
        shutdown(world)


def _run(cfg, world: World, device, on_step, should_stop, status, progress):
    from kd.delta import weights_fingerprint
    from kd.disk_cache import make_stream_runner, teacher_bank
    from kd.stopping import StopCheck
    from kd.train_parts import (
        CHECKPOINT,
        RIDGE_ITEMS,
        RunResult,
        check_resumable,
        fit_linear_head,
        peak_rss_gb,
        save_run,
        seed_everything,
        step_record,
        warmup_then_linear_decay,
    )

    main = world.main
    say = (status or (lambda msg: log.info(msg))) if main else (lambda msg: None)

    def phase(name: str):
        if not (main and progress):
            return None
        return lambda d, n: progress(name, d, n)

    halt = StopCheck(should_stop if main else None, cfg.max_minutes)
    out = Path(cfg.out)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    prepare_torch(device_type)
    seed_everything(cfg.seed)

    def check_stop() -> None:
        """Every rank learns of a Stop on rank 0 (one small all-reduce)."""
        if any_rank(world, halt.halted(), device):
            halt.halted()
            halt.reason = halt.reason or "another rank stopped"
            halt.check()

    where = f" in {world.size} processes" if world.parallel else ""
    say(f"loading teacher {cfg.teacher} and student {cfg.student} on {device}{where}")
    teacher = Encoder.load(cfg.teacher, device)
    student = Encoder.load(cfg.student, device)
    teacher.requires_grad_(False)
    teacher.max_seq_length = min(teacher.max_seq_length, cfg.max_seq_length * 2)
    base_fingerprint = weights_fingerprint(student)

    say("reading parallel data as a stream, into the corpus cache")
    corpus = _open_corpus(cfg, world, say)
    say(f"{corpus.n_items} training items: {corpus.summary()}")
    check_stop()

    precision = resolve_precision(cfg.precision, device_type)
    say(f"teacher encodes the English side (once, float16 cache on disk; {precision})")
    bank = teacher_bank(teacher, corpus, precision, world, phase("teacher"))
    eval_sets = corpus.eval_sets
    eval_teacher = {}
    metrics: dict = {
        "config": cfg.to_dict(),
        "data": corpus.summary(),
        "sources": corpus.info["sources"],
        "stream": True,
        "world_size": world.size,
    }
    if main and eval_sets:
        say("evaluating the teacher and the untrained student on held-out pairs")
        eval_teacher = {lang: teacher.encode(en) for lang, (en, _x) in eval_sets.items()}
        metrics["teacher"] = evaluate(eval_sets, eval_teacher, halt.guard(teacher.encode))
        metrics["student_untrained"] = evaluate(eval_sets, eval_teacher, halt.guard(student.encode))
    check_stop()

    from kd.student_forward import embed_in_batches, trainable_parameters

    say(f"caching the student's {cfg.freeze_layers} frozen layers on disk")
    prepare_started = time.perf_counter()
    params = trainable_parameters(student, cfg.freeze_layers)
    full_length = student.max_seq_length
    student.max_seq_length = min(student.max_seq_length, cfg.max_seq_length)
    with autocast(device_type, precision):
        runner = make_stream_runner(
            student,
            corpus,
            cfg.freeze_layers,
            cfg.max_seq_length,
            world,
            dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
            progress=phase("student cache"),
        )
    lengths = runner.lengths()
    check_stop()

    # The ridge head: each rank embeds its share of the seeded sample; the sum gives all rows.
    fit_on = np.arange(corpus.n_items)
    if len(fit_on) > RIDGE_ITEMS:
        fit_on = np.sort(np.random.default_rng(cfg.seed).choice(fit_on, RIDGE_ITEMS, replace=False))
    say(f"fitting the linear head in closed form (ridge, {len(fit_on)} items)")
    student.head, student.normalize = None, False
    a, b = shard_range(len(fit_on), world.size, world.rank)
    hidden = student.transformer.config.hidden_size
    pooled = torch.zeros((len(fit_on), hidden), dtype=torch.float32, device=device)
    if b > a:
        with autocast(device_type, precision):
            pooled[a:b] = torch.from_numpy(embed_in_batches(runner, fit_on[a:b])).to(device)
    pooled = sum_arrays(world, pooled).cpu().numpy()
    student.head = fit_linear_head(pooled, bank.get(corpus.target(fit_on))).to(device)
    student.normalize = True
    student.dim = student.head.out_features
    del pooled

    steps_per_epoch = cfg.steps_per_epoch(corpus.n_items)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    head_params = list(student.head.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": cfg.lr}, {"params": head_params, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    schedule = warmup_then_linear_decay(optimizer, total, cfg.warmup)
    eval_every = cfg.eval_interval(total)
    named = {f"p{i}": p for i, p in enumerate(params)}
    named |= {f"head.{k}": v for k, v in student.head.named_parameters()}

    # Dropout: each rank its own masks (seed + rank); a resumed rank continues its own stream.
    torch.manual_seed(cfg.seed + world.rank)
    step = 0
    ckpt = out / CHECKPOINT
    if cfg.resume:
        step = _resume(cfg, world, ckpt, named, optimizer, check_resumable)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(step):
                schedule.step()
        say(f"resumed from {ckpt} at step {step} of {total}")

    module = _Step(student, runner)
    if world.parallel:
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.cuda.current_device()] if device_type == "cuda" else None
        with warnings.catch_warnings():  # torch 2.13 renames broadcast_buffers; same meaning
            warnings.simplefilter("ignore", FutureWarning)
            module = DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    bank_ids = np.arange(corpus.n_english)
    if len(bank_ids) > RANK_BANK:
        rng = np.random.default_rng([cfg.seed, 1])
        bank_ids = np.sort(rng.choice(bank_ids, RANK_BANK, replace=False))
    rank_bank = torch.from_numpy(bank.get(bank_ids)).to(device) if cfg.rank_weight else None
    rank_ids = torch.from_numpy(bank_ids).to(device)

    student.train()
    halt.training = True
    stopped = False
    started, done_at_start = time.perf_counter(), step
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        batches = BatchPlan(lengths, cfg.batch_size, cfg.seed, epoch)
        for bi, idx in enumerate(batches):
            global_step = epoch * steps_per_epoch + bi
            if global_step < step:
                continue
            if step >= total:
                break
            if any_rank(world, halt.halted(), device):
                stopped = True
                break
            lo, hi = shard_range(len(idx), world.size, world.rank)
            mine = idx[lo:hi] if hi > lo else idx[:1]  # a rank with no share computes, weighs 0
            share = (hi - lo) / len(idx) * world.size
            target = corpus.target(mine)
            t = torch.from_numpy(bank.get(target)).to(device)  # (b, D)
            with autocast(device_type, precision):
                s = module(mine).float()  # (b, D)
            loss = distillation_loss(cfg.loss, s, t, cfg.temperature)
            if cfg.rank_weight:
                tid = torch.from_numpy(target).to(device)
                rank = sampled_rank_loss(s, t, rank_bank, rank_ids, tid, cfg.temperature)
                loss = loss + cfg.rank_weight * rank
            if not torch.isfinite(loss):
                raise ValueError(f"the loss became {loss.item()} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            (loss * share).backward()  # DDP averages over ranks: the whole batch's mean
            torch.nn.utils.clip_grad_norm_(params + head_params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            batch_loss = sum_arrays(world, (loss.detach() * share / world.size).reshape(1))

            rate = (step - done_at_start) / max(time.perf_counter() - started, 1e-9)
            epoch_at = epoch + (bi + 1) / len(batches)
            record = step_record(
                float(batch_loss.item()), optimizer, epoch_at, rate, cfg, step, total
            )
            if main and eval_every and step % eval_every == 0 and eval_sets and step < total:
                record["eval"] = evaluate(eval_sets, eval_teacher, student.encode)
            if main:
                history.append({"step": step} | {k: v for k, v in record.items() if k != "eval"})
                if on_step:
                    on_step(step, record)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                _save(
                    world, ckpt, named, optimizer, {"step": step, "config": cfg.to_dict()}, device
                )
        if stopped or step >= total:
            break

    if stopped and step and cfg.checkpoint_every:
        _save(world, ckpt, named, optimizer, {"step": step, "config": cfg.to_dict()}, device)
    student.eval()
    student.max_seq_length = full_length
    metrics |= {
        "steps": step,
        "total_steps": total,
        "stopped": stopped,
        "prepare_seconds": started - prepare_started,
        "train_seconds": time.perf_counter() - started,
        "peak_rss_gb": peak_rss_gb(),
    }
    saved_kind = "full"
    if main:
        if halt.reason:
            metrics["stop_reason"] = halt.reason
        if eval_sets:
            say("evaluating the distilled student")
            metrics["student_distilled"] = evaluate(eval_sets, eval_teacher, student.encode)
        saved = save_run(
            student, teacher, cfg, base_fingerprint, metrics, history, None, stopped, say
        )
        saved_kind = saved.kind
    barrier(world)  # the others wait until rank 0 has written everything
    return RunResult(out=out, metrics=metrics, steps=step, stopped=stopped, saved=saved_kind)


def _open_corpus(cfg: TrainConfig, world: World, say):
    """The corpus folder: built by the first process of each machine, then opened by all."""
    from kd.corpus import open_corpus

    corpus, note = None, None
    error = None
    if world.local_rank == 0:
        try:
            corpus, note = open_corpus(cfg)
        except ValueError as err:  # tell the others, so that every rank ends with the message
            error = str(err)
    error = broadcast_object(world, error) if world.parallel else error
    if error is not None:
        raise ValueError(error)
    barrier(world)
    if corpus is None:
        corpus, note = open_corpus(cfg, build=False)
    if note:
        say(note)
    return corpus


def _rng_states(device: str) -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _save(world: World, ckpt: Path, named, optimizer, meta: dict, device: str) -> None:
    """Rank 0 writes the checkpoint, with every rank's random state beside its own."""
    extra = {}
    for kind, state in _rng_states(device).items():
        # Collectives move tensors on the device NCCL owns; gloo takes them where they are.
        gathered = gather_tensors(world, state.to(device))
        extra |= {f"rng/rank{r}/{kind}": s.cpu() for r, s in enumerate(gathered)}
    if world.main:
        save_checkpoint(ckpt, named, optimizer, meta | {"world_size": world.size}, extra)


def _resume(cfg, world: World, ckpt: Path, named, optimizer, check) -> int:
    """Rank 0 reads the checkpoint; the others receive it from rank 0 (so ``--out`` need not be
    on a filesystem every machine sees). Returns the step to continue from."""
    payload, error = None, None
    if world.main:
        try:
            meta = load_checkpoint(ckpt, named, optimizer)
            check(cfg, meta)
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
    return payload["step"]
