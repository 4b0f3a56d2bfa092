"""Multilingual knowledge distillation (Reimers & Gurevych, EMNLP 2020), top to bottom.

A frozen English teacher M maps a sentence s to M(s). The student M' sees parallel pairs (s, t),
t a translation of s, and learns

    loss = || M'(s) - M(s) ||^2  +  || M'(t) - M(s) ||^2

so that a translation lands where the teacher put the English sentence. Here that equation is
``distillation_loss(student(text), teacher_vectors[target])`` over *items*: every distinct
English sentence (target: itself) and every translation (target: its English sentence). Items
are the pairs with the repeated English terms counted once; English-only rows, from everyday
text, contribute the first term alone and pull student(en) towards teacher(en), which decides
most of the alignment on everyday sentences.

The recipe, and why:
1. The teacher encodes each English sentence once; its vectors are cached on disk.
2. The student gets a linear head (student dim -> teacher dim) fitted in closed form (ridge
   regression) from its untrained outputs to the teacher's vectors: training starts in the
   teacher's space instead of far from it, which is what made plain MSE collapse.
3. The loss compares directions on the unit sphere (:mod:`kd.losses`), so shrinking the
   student's vectors to zero is no longer a way out.
4. The bottom layers stay frozen and their outputs are cached (:mod:`kd.student_forward`): the
   student keeps the multilingual alignment those layers hold and each step costs a fraction
   of a full pass.
5. A ranking term (``rank_weight``): each item also learns to rank its own English sentence
   first among the teacher's vectors of all training sentences (:func:`kd.losses.rank_loss`).
   The squared error says *where* a translation should land; the ranking term also says
   *where not*, which is what cross-lingual retrieval tests.
6. Where the hardware multiplies bfloat16 fast (CUDA, a CPU with AMX), the teacher's vectors,
   the frozen-layer cache and the training steps compute in bf16 (``precision``); weights and
   the before/after evaluations stay fp32.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kd.checkpoint import load_checkpoint, save_checkpoint
from kd.config import TrainConfig
from kd.dataset import Dataset, read_dataset
from kd.delta import weights_fingerprint
from kd.evaluate import evaluate
from kd.losses import distillation_loss, rank_loss
from kd.models import (
    Encoder,
    autocast,
    pick_device,
    prepare_torch,
    resolve_precision,
)
from kd.stopping import EvaluationCut, RunStopped, StopCheck
from kd.student_forward import embed_in_batches, make_runner, trainable_parameters
from kd.train_parts import (  # noqa: F401  (teacher_vectors, epoch_batches: kd.train's API)
    CHECKPOINT,
    RIDGE_ITEMS,
    RunResult,
    check_resumable,
    epoch_batches,
    fit_linear_head,
    peak_rss_gb,
    save_run,
    seed_everything,
    step_record,
    teacher_vectors,
    warmup_then_linear_decay,
)
from kd.watch import watch_set

log = logging.getLogger("kd")

OnStep = Callable[[int, dict], None]


def distill(
    cfg: TrainConfig,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> RunResult:
    """Run one distillation; save the student, its config and ``metrics.json`` in ``cfg.out``.

    Args:
        cfg: the run's configuration.
        on_step: called after every optimisation step with ``(step, metrics)``; metrics hold
            ``loss``, ``lr``, ``epoch``, ``items_per_s``, ``eta_s`` and ``total_steps``, plus
            ``eval`` (per-language metrics) on evaluation steps.
        should_stop: polled every step and from every other phase (once a batch, through
            :class:`kd.stopping.StopCheck`, as ``cfg.max_minutes`` is): when it returns True
            during training the run ends early and the student trained so far is evaluated
            (for at most :data:`kd.stopping.STOP_GRACE_S` more seconds) and saved; before
            training begins, :class:`kd.stopping.RunStopped` is raised.
        status: receives one-line descriptions of the phases (loading, caching, ...).
        progress: ``(phase, done, total)`` during the encoding phases.

    Example:
        >>> distill(TrainConfig(out="student", epochs=1))  # doctest: +SKIP
    """
    from kd.distributed import launched

    if cfg.stream or launched():  # data on disk, and DDP under torchrun (kd/stream.py)
        from kd.stream import distill_stream

        return distill_stream(cfg, on_step, should_stop, status, progress)
    say = status or (lambda msg: log.info(msg))
    halt = StopCheck(should_stop, cfg.max_minutes)  # Stop and the time limit, in every phase
    out = Path(cfg.out)
    device = pick_device(cfg.device)
    prepare_torch(device)
    seed_everything(cfg.seed)

    say(f"loading teacher {cfg.teacher} and student {cfg.student} on {device}")
    teacher = Encoder.load(cfg.teacher, device)
    student = Encoder.load(cfg.student, device)
    teacher.requires_grad_(False)
    teacher.max_seq_length = min(teacher.max_seq_length, cfg.max_seq_length * 2)
    base_fingerprint = weights_fingerprint(student)  # a delta names the weights it applies to

    halt.check()
    say("reading parallel data")
    data = read_dataset(cfg)
    if data.note:
        say(data.note)
    say(f"{len(data.texts)} training items: {data.summary()}")

    # Training computes in bf16 where the hardware makes it fast (CUDA, a CPU with AMX); the
    # before/after evaluations encode in exact fp32, as `kd eval` does.
    precision = resolve_precision(cfg.precision, device)
    say(f"teacher encodes the English side (once, cached; {precision})")
    tvec = teacher_vectors(
        teacher,
        data.english,
        progress=halt.progress(lambda d, n: progress and progress("teacher", d, n)),
        precision=precision,
    )
    eval_teacher = {
        lang: teacher_vectors(teacher, en, progress=halt.progress())
        for lang, (en, _x) in data.eval_sets.items()
    }

    metrics: dict = {"config": cfg.to_dict(), "data": data.summary(), "sources": data.sources}
    if data.eval_sets:
        say("evaluating the teacher and the untrained student on held-out pairs")
        metrics["teacher"] = evaluate(data.eval_sets, eval_teacher, halt.guard(teacher.encode))
        metrics["student_untrained"] = evaluate(
            data.eval_sets, eval_teacher, halt.guard(student.encode)
        )
    # A few held-out translations watched through the run (kd.watch): the untrained student's
    # vectors first, where its width is the teacher's.
    watch = watch_set(data.eval_sets, halt.guard(teacher.encode))
    if watch is not None:
        watch.snapshot("untrained", halt.guard(student.encode))
    sts_sets = _sts_sets(cfg)
    if sts_sets:
        from kd.sts import cached_encode, embed_sts

        say(f"STS: embedding {cfg.sts_pairs} pairs a language with the untrained student")
        untrained_sts = cached_encode(halt.guard(student.encode))
        embed_sts(sts_sets, untrained_sts)  # remembered: training changes the student

    say(f"caching the student's {cfg.freeze_layers} frozen layers for {len(data.texts)} items")
    prepare_started = time.perf_counter()
    params = trainable_parameters(student, cfg.freeze_layers)
    # Training reads at most max_seq_length tokens; the saved student keeps its full length
    # (restored below), or two long sentences that differ after token 48 would embed alike.
    full_length = student.max_seq_length
    student.max_seq_length = min(student.max_seq_length, cfg.max_seq_length)
    with autocast(device, precision):
        runner = make_runner(
            student,
            data.texts,
            cfg.freeze_layers,
            cfg.max_seq_length,
            progress=halt.progress(lambda d, n: progress and progress("student cache", d, n)),
            dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
        )
    lengths = runner.lengths()

    # A 384 x 384 map is well determined by far fewer items than a long run has: fit it on a
    # seeded sample (the whole set up to RIDGE_ITEMS, so the default run uses every item).
    fit_on = np.arange(len(data.texts))
    if len(fit_on) > RIDGE_ITEMS:
        fit_on = np.sort(np.random.default_rng(cfg.seed).choice(fit_on, RIDGE_ITEMS, replace=False))
    say(f"fitting the linear head in closed form (ridge, {len(fit_on)} items)")
    student.head, student.normalize = None, False
    with autocast(device, precision):
        pooled = embed_in_batches(runner, fit_on)
    halt.check()
    student.head = fit_linear_head(pooled, tvec[data.target[fit_on]]).to(device)
    student.normalize = True
    student.dim = student.head.out_features
    del pooled
    if watch is not None and not cfg.resume:
        watch.snapshot("linear head (step 0)", student.encode)

    steps_per_epoch = cfg.steps_per_epoch(len(data.texts))
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    optimizer = torch.optim.AdamW(
        [
            {"params": params, "lr": cfg.lr},
            {"params": list(student.head.parameters()), "lr": cfg.head_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    schedule = warmup_then_linear_decay(optimizer, total, cfg.warmup)
    eval_every = cfg.eval_interval(total)
    named = {f"p{i}": p for i, p in enumerate(params)}
    named |= {f"head.{k}": v for k, v in student.head.named_parameters()}

    step = 0
    ckpt = out / CHECKPOINT
    if cfg.resume:
        meta = load_checkpoint(ckpt, named, optimizer)
        check_resumable(cfg, meta)
        step = int(meta["step"])
        with warnings.catch_warnings():  # fast-forwarding the schedule, not skipping a step
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(step):
                schedule.step()
        say(f"resumed from {ckpt} at step {step} of {total}")

    targets = torch.from_numpy(tvec).to(device)  # (U, D)
    target_idx = torch.from_numpy(data.target)
    student.train()
    halt.training = True  # from here on an early end keeps the student trained so far
    stopped = False
    started, done_at_start = time.perf_counter(), step
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)
        for b, idx in enumerate(batches):
            global_step = epoch * steps_per_epoch + b
            if global_step < step:
                continue  # already done before a resume
            if step >= total:
                break
            if halt.halted():
                stopped = True
                break
            with autocast(device, precision):
                s = runner.embed(idx)  # (B, D)
            t = targets[target_idx[idx].to(device)]  # (B, D)
            loss = distillation_loss(cfg.loss, s.float(), t, cfg.temperature)
            if cfg.rank_weight:
                rank = rank_loss(s.float(), targets, target_idx[idx].to(device), cfg.temperature)
                loss = loss + cfg.rank_weight * rank
            if not torch.isfinite(loss):
                raise ValueError(f"the loss became {loss.item()} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params + list(student.head.parameters()), 1.0)
            optimizer.step()
            schedule.step()
            step += 1

            rate = (step - done_at_start) / max(time.perf_counter() - started, 1e-9)
            record = step_record(
                float(loss.item()),
                optimizer,
                epoch + (b + 1) / len(batches),
                rate,
                cfg,
                step,
                total,
            )
            if eval_every and step % eval_every == 0 and data.eval_sets and step < total:
                try:
                    record["eval"] = _evaluate_student(student, data, eval_teacher, halt)
                    if watch is not None:
                        watch.snapshot(f"step {step}", halt.guard(student.encode))
                        record["watch"] = watch
                except EvaluationCut:  # stopped during this evaluation, and out of time
                    record.pop("eval", None)
                    stopped = True
            kept = {k: v for k, v in record.items() if k not in ("eval", "watch")}
            history.append({"step": step} | kept)
            if on_step:
                on_step(step, record)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                save_checkpoint(ckpt, named, optimizer, {"step": step, "config": cfg.to_dict()})
        if stopped or step >= total:
            break

    if stopped and step and cfg.checkpoint_every:
        # Stopped early: checkpoint where we are, so --resume continues from here exactly.
        save_checkpoint(ckpt, named, optimizer, {"step": step, "config": cfg.to_dict()})
    student.eval()
    student.max_seq_length = full_length
    if halt.reason:
        metrics["stop_reason"] = halt.reason
    try:  # after a Stop or the time limit, for STOP_GRACE_S at most (kd.stopping)
        if data.eval_sets:
            say("evaluating the distilled student")
            metrics["student_distilled"] = _evaluate_student(student, data, eval_teacher, halt)
        if watch is not None:
            label = "distilled" if not stopped else f"stopped (step {step})"
            watch.snapshot(label, halt.guard(student.encode))
        if sts_sets:
            from kd.sts import sts_report

            say("STS: scoring the teacher, the untrained and the distilled student")
            distilled = halt.guard(student.encode)
            models = {"student_untrained": untrained_sts, "student_distilled": distilled}
            metrics["sts"] = sts_report(sts_sets, halt.guard(teacher.encode), models)
    except EvaluationCut as cut:
        stopped = True
        metrics["evaluation_cut"] = str(cut)
        say(str(cut))
    metrics |= {
        "steps": step,
        "total_steps": total,
        "stopped": stopped,
        "prepare_seconds": started - prepare_started,  # frozen-layer cache + head fit
        "train_seconds": time.perf_counter() - started,
        "peak_rss_gb": peak_rss_gb(),
    }
    saved = save_run(student, teacher, cfg, base_fingerprint, metrics, history, watch, stopped, say)
    return RunResult(out=out, metrics=metrics, steps=step, stopped=stopped, saved=saved.kind)


def _sts_sets(cfg: TrainConfig) -> dict:
    """The STS sets scored before and after training (``cfg.sts``), capped at ``sts_pairs``."""
    if not cfg.sts:
        return {}
    from kd.sts import read_sts

    langs = ["en", *cfg.langs]
    present = read_sts(cfg.sts, max_rows=cfg.sts_pairs)
    return {lang: s for lang, s in present.items() if lang in langs}


def _evaluate_student(student: Encoder, data: Dataset, eval_teacher, halt=None) -> dict:
    # Encoder.encode runs in eval mode (no dropout) and restores training mode afterwards.
    encode = halt.guard(student.encode) if halt is not None else student.encode
    return evaluate(data.eval_sets, eval_teacher, encode)


__all__ = ["Dataset", "RunResult", "RunStopped", "distill", "fit_linear_head", "teacher_vectors"]
