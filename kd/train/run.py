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
3. The loss compares directions on the unit sphere (:mod:`kd.train.losses`), so shrinking the
   student's vectors to zero is no longer a way out.
4. The bottom layers stay frozen and their outputs are cached (:mod:`kd.train.student_forward`): the
   student keeps the multilingual alignment those layers hold and each step costs a fraction
   of a full pass.
5. A ranking term (``rank_weight``): each item also learns to rank its own English sentence
   first among the teacher's vectors of all training sentences (:func:`kd.train.losses.rank_loss`).
   The squared error says *where* a translation should land; the ranking term also says
   *where not*, which is what cross-lingual retrieval tests.
6. Where the hardware multiplies bfloat16 fast (CUDA, a CPU with AMX), the teacher's vectors,
   the frozen-layer cache and the training steps compute in bf16 (``precision``); weights and
   the before/after evaluations stay fp32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kd.config import TrainConfig
from kd.data.dataset import Dataset
from kd.evaluate.collapse import collapse_check, reference_values, verdicts
from kd.evaluate.metrics import evaluate
from kd.evaluate.sts import cached_encode, embed_sts, read_sts, sts_report
from kd.evaluate.watch import watch_set
from kd.models.delta import weights_fingerprint
from kd.models.encoder import Encoder, autocast, pick_device, prepare_torch, resolve_precision
from kd.models.fast import fast_encoder
from kd.train import stream
from kd.train.distributed import (
    World,
    any_rank,
    barrier,
    init,
    launched,
    peer_lost,
    shard_range,
    shutdown,
    sum_arrays,
)
from kd.train.feed import CorpusFeed, MemoryFeed
from kd.train.loop import Hooks, RankBank, train_loop
from kd.train.parts import (  # noqa: F401  (teacher_vectors: kd.train.run's API)
    CHECKPOINT,
    RIDGE_ITEMS,
    RunResult,
    fit_linear_head,
    peak_rss_gb,
    save_run,
    seed_everything,
    teacher_vectors,
    warmup_then_linear_decay,
)
from kd.train.stopping import EvaluationCut, RunStopped, StopCheck
from kd.train.student_forward import embed_in_batches, trainable_parameters

log = logging.getLogger("kd")

OnStep = Callable[[int, dict], None]


def distill(
    cfg: TrainConfig,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_eval: Callable[[str, dict], None] | None = None,
) -> RunResult:
    """Run one distillation; save the student, its config and ``metrics.json`` in ``cfg.out``.

    The data sits in memory (:class:`kd.train.feed.MemoryFeed`), or on disk with ``cfg.stream`` and
    under ``torchrun`` (:class:`kd.train.feed.CorpusFeed`, several processes through DDP:
    :mod:`kd.train.stream`); the phases and the loop (:mod:`kd.train.loop`) are the same.

    Args:
        cfg: the run's configuration.
        on_step: called after every optimisation step with ``(step, metrics)``; metrics hold
            ``loss``, ``lr``, ``epoch``, ``items_per_s``, ``eta_s`` and ``total_steps``, plus
            ``eval`` (per-language metrics) on evaluation steps.
        should_stop: polled every step and from every other phase (once a batch, through
            :class:`kd.train.stopping.StopCheck`, as ``cfg.max_minutes`` is): when it returns True
            during training the run ends early and the student trained so far is evaluated
            (for at most :data:`kd.train.stopping.STOP_GRACE_S` more seconds) and saved; before
            training begins, :class:`kd.train.stopping.RunStopped` is raised.
        status: receives one-line descriptions of the phases (loading, caching, ...).
        progress: ``(phase, done, total)`` during the encoding phases.
        on_eval: ``(stage, per-language metrics)`` for the held-out evaluations outside the
            steps: ``student_untrained`` before training and ``student_head`` at step 0, once
            the linear head has its start (``cfg.head``) and before the first step.

    Example:
        >>> distill(TrainConfig(out="student", epochs=1))  # doctest: +SKIP
    """
    streamed = cfg.stream or launched()
    world, device = (
        init(pick_device(cfg.device)) if streamed else (World(), pick_device(cfg.device))
    )
    try:
        return _distill(
            cfg, world, device, streamed, on_step, should_stop, status, progress, on_eval
        )
    except (RuntimeError, OSError) as err:  # gloo raises both when a peer's socket closes
        if world.parallel and stream.is_peer_failure(err):
            raise peer_lost(world, err) from None
        raise
    finally:
        shutdown(world)


def _distill(
    cfg, world: World, device: str, streamed: bool, on_step, should_stop, status, progress, on_eval
):
    main = world.main
    say = (status or (lambda msg: log.info(msg))) if main else (lambda msg: None)

    def phase(name: str):
        if not (main and progress):
            return None
        return lambda d, n: progress(name, d, n)

    halt = StopCheck(should_stop if main else None, cfg.max_minutes)  # Stop and time limit

    def check_stop() -> None:
        """Every process learns of a Stop in the first one (one small all-reduce)."""
        if any_rank(world, halt.halted(), device):
            halt.reason = halt.reason or "another process stopped"
            halt.check()

    out = Path(cfg.out)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    prepare_torch(device_type)
    seed_everything(cfg.seed)

    where = f" in {world.size} processes" if world.parallel else ""
    say(f"loading teacher {cfg.teacher} and student {cfg.student} on {device}{where}")
    teacher = Encoder.load(cfg.teacher, device)
    student = Encoder.load(cfg.student, device)
    teacher.requires_grad_(False)
    teacher.max_seq_length = min(teacher.max_seq_length, cfg.max_seq_length * 2)
    base_fingerprint = weights_fingerprint(student)  # a delta names the weights it applies to
    check_stop()

    feed = (CorpusFeed if streamed else MemoryFeed).open(cfg, world, say)
    say(f"{feed.n_items} training items: {feed.summary()}")
    check_stop()

    # Training computes in bf16 where the hardware makes it fast (CUDA, a CPU with AMX); the
    # before/after evaluations encode in exact fp32, as `kd eval` does.
    precision = resolve_precision(cfg.precision, device_type)
    # The teacher is fixed: its passes take the fastest path this CPU was measured to have
    # (processes of one job could measure differently: they take PyTorch unless told).
    asked = "torch" if world.parallel and cfg.teacher_path == "auto" else cfg.teacher_path
    fast_teacher, fast = fast_encoder(teacher, asked)
    say(f"teacher encodes the English side (once, cached; {precision}; {fast.describe()})")
    feed.encode_teacher(fast_teacher, precision, world, halt.progress(phase("teacher")))
    # The config as run: `data` names the sources read, the default's included (`everyday`, say).
    config = cfg.to_dict() | {"data": feed.specs or cfg.data}
    metrics: dict = {"config": config, "data": feed.summary(), "sources": feed.sources}
    metrics["teacher_path"] = fast.to_dict()
    if streamed:
        metrics |= {"stream": True, "world_size": world.size}
    evals = _Evaluations(cfg, feed, fast_teacher, student, halt, on_eval, phase) if main else None
    if evals is not None:
        evals.before(metrics, say)
    check_stop()

    say(f"caching the student's {cfg.freeze_layers} frozen layers for {feed.n_items} items")
    prepare_started = time.perf_counter()
    params = trainable_parameters(student, cfg.freeze_layers)
    # Training reads at most max_seq_length tokens; the saved student keeps its full length
    # (restored below), or two long sentences that differ after token 48 would embed alike.
    full_length = student.max_seq_length
    student.max_seq_length = min(student.max_seq_length, cfg.max_seq_length)
    with autocast(device_type, precision):
        runner = feed.runner(
            student,
            cfg.freeze_layers,
            cfg.max_seq_length,
            world,
            torch.bfloat16 if precision == "bf16" else torch.float32,
            halt.progress(phase("student cache")),
        )
    lengths = runner.lengths()
    check_stop()
    _start_head(student, runner, feed, cfg, world, device, device_type, precision, halt, say)
    if evals is not None and not cfg.resume:
        evals.step_zero(metrics, say)

    total = cfg.steps_per_epoch(feed.n_items) * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    trained = params + list(student.head.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": params, "lr": cfg.lr},
            {"params": list(student.head.parameters()), "lr": cfg.head_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    schedule = warmup_then_linear_decay(optimizer, total, cfg.warmup)
    named = {f"p{i}": p for i, p in enumerate(params)}
    named |= {f"head.{k}": v for k, v in student.head.named_parameters()}

    # Dropout: each process its own masks (seed + rank); a resumed one continues its own.
    torch.manual_seed(cfg.seed + world.rank)
    ckpt = out / CHECKPOINT
    step = 0
    if cfg.resume:
        step = stream.resume(cfg, world, ckpt, named, optimizer, schedule)
        say(f"resumed from {ckpt} at step {step} of {total}")

    def checkpoint(at: int) -> None:
        meta = {"step": at, "config": cfg.to_dict()}
        stream.save_checkpoint_all(world, ckpt, named, optimizer, meta, device)

    def evaluate_step(at: int) -> dict:
        return evals.during(at) if evals is not None else {}

    student.train()
    halt.training = True  # from here on an early end keeps the student trained so far
    started = time.perf_counter()
    end = train_loop(
        stream.wrap(student, runner, world, device_type),
        feed,
        lengths,
        cfg,
        optimizer,
        schedule,
        trained,
        precision,
        total,
        step=step,
        world=world,
        device=device,
        bank=RankBank.of(feed, cfg.seed, device) if cfg.rank_weight else None,
        hooks=Hooks(
            halted=lambda: any_rank(world, halt.halted(), device),
            evaluate=evaluate_step,
            on_step=on_step,
            checkpoint=checkpoint,
        ),
    )
    if end.stopped and end.step and cfg.checkpoint_every:
        checkpoint(end.step)  # stopped early: --resume continues from here exactly
    student.eval()
    student.max_seq_length = full_length
    stopped = end.stopped
    saved_kind = "full"
    if main:
        if halt.reason:
            metrics["stop_reason"] = halt.reason
        stopped = evals.after(metrics, end, say) or stopped
        evals.alarms(metrics, end.history)
        metrics |= {
            "steps": end.step,
            "total_steps": total,
            "stopped": stopped,
            "prepare_seconds": started - prepare_started,  # frozen-layer cache + head fit
            "train_seconds": time.perf_counter() - started,
            "peak_rss_gb": peak_rss_gb(),
        }
        saved = save_run(
            student, teacher, cfg, base_fingerprint, metrics, end.history, evals.watch, stopped, say
        )
        saved_kind = saved.kind
    barrier(world)  # the others wait until the first process has written everything
    return RunResult(out=out, metrics=metrics, steps=end.step, stopped=stopped, saved=saved_kind)


def _start_head(student, runner, feed, cfg, world, device, device_type, precision, halt, say):
    """The linear head (student width -> teacher width) the training starts from.

    ``cfg.head == "ridge"``: fitted in closed form (ridge regression from the untrained
    student's pooled outputs to the teacher's vectors). A 384 x 384 map is well determined by
    far fewer items than a long run has: it is fitted on a seeded sample (the whole set up to
    RIDGE_ITEMS, so the default run uses every item); each process embeds its share, the sum
    gives all rows. ``"plain"``: the identity where the widths match (the untrained student's
    own space), else a seeded random map; gradient descent does the rest."""
    if cfg.head == "plain":
        width = feed.teacher(np.arange(1)).shape[1]
        hidden = student.transformer.config.hidden_size
        say(f"a plain linear head ({hidden} -> {width}): no closed-form fit, training does it all")
        torch.manual_seed(cfg.seed)
        head = torch.nn.Linear(hidden, width)
        if hidden == width:
            with torch.no_grad():
                head.weight.copy_(torch.eye(width))
                head.bias.zero_()
        student.head, student.normalize, student.dim = head.to(device), True, width
        return
    fit_on = np.arange(feed.n_items)
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
    halt.check()
    pooled = sum_arrays(world, pooled).cpu().numpy()
    student.head = fit_linear_head(pooled, feed.teacher(feed.target(fit_on))).to(device)
    student.normalize = True
    student.dim = student.head.out_features


class _Evaluations:
    """What the first process measures around training: the held-out pairs before, during and
    after, the watch set (:mod:`kd.evaluate.watch`) and STS before and after (``cfg.sts``)."""

    def __init__(
        self,
        cfg: TrainConfig,
        feed,
        teacher: Encoder,
        student: Encoder,
        halt,
        on_eval=None,
        phase=None,
    ) -> None:
        self.on_eval = on_eval or (lambda stage, per_lang: None)
        self.phase = phase or (lambda name: None)
        self.cfg, self.teacher, self.student, self.halt = cfg, teacher, student, halt
        self.eval_sets = feed.eval_sets
        self.eval_teacher = {
            lang: teacher_vectors(teacher, en, progress=halt.progress())
            for lang, (en, _x) in self.eval_sets.items()
        }
        self.watch = None
        self.sts_sets = _sts_sets(cfg)
        self.untrained_sts = None
        self.references: dict[str, float] = {}  # unrelated cosines the collapse alarm uses

    def _student(self, name: str = "student") -> dict:
        # Encoder.encode runs in eval mode (no dropout) and restores training mode afterwards.
        return evaluate(self.eval_sets, self.eval_teacher, self._counted(self.student, name))

    def _counted(self, model: Encoder, name: str):
        """``model.encode`` guarded by Stop and reporting its progress over the held-out
        sentences as the phase ``evaluation: NAME`` (each model encodes both sides)."""
        total = sum(len(en) + len(x) for en, x in self.eval_sets.values())
        report = self.phase(f"evaluation: {name}")
        encode = self.halt.guard(model.encode)
        done = [0]

        def counted(texts, *args, **kwargs):
            out = encode(texts, *args, **kwargs)
            done[0] += len(texts)
            if report:
                report(min(done[0], total), total)
            return out

        return counted

    def before(self, metrics: dict, say) -> None:
        guard = self.halt.guard
        if self.eval_sets:
            say("evaluating the teacher and the untrained student on held-out pairs")
            metrics["teacher"] = evaluate(
                self.eval_sets, self.eval_teacher, self._counted(self.teacher, "teacher")
            )
            metrics["student_untrained"] = self._student("untrained student")
            self.on_eval("student_untrained", metrics["student_untrained"])
            self.references = reference_values(metrics)
        # A few held-out translations watched through the run (kd.evaluate.watch): the untrained
        # student's vectors first, where its width is the teacher's.
        self.watch = watch_set(self.eval_sets, guard(self.teacher.encode))
        if self.watch is not None:
            self.watch.snapshot("untrained", guard(self.student.encode))
        if self.sts_sets:
            say(f"STS: embedding {self.cfg.sts_pairs} pairs a language with the untrained student")
            self.untrained_sts = cached_encode(guard(self.student.encode))
            embed_sts(self.sts_sets, self.untrained_sts)  # remembered: training changes it

    def step_zero(self, metrics: dict, say) -> None:
        """The student with its starting head, before the first step: held-out pairs and the
        watch set. With the ridge head this is where most of the journey happens."""
        if self.eval_sets:
            say(f"evaluating the student with its {self.cfg.head} head, before the first step")
            metrics["student_head"] = self._student("step 0")
            self.on_eval("student_head", metrics["student_head"])
        if self.watch is not None:
            label = "linear head (step 0)" if self.cfg.head == "ridge" else "plain head (step 0)"
            self.watch.snapshot(label, self.halt.guard(self.student.encode))

    def collapse(self, per_lang: dict) -> dict:
        """The collapse alarm's fields of a step record, from one evaluation's metrics
        (:mod:`kd.evaluate.collapse`): kept in ``history.json`` beside the loss."""
        check = collapse_check(per_lang["mean"].get("unrelated_cosine"), self.references)
        return {
            "unrelated_cosine": check["unrelated_cosine"],
            "collapse_threshold": check["threshold"],
            "collapse_alarm": check["alarm"],
        }

    def during(self, step: int) -> dict:
        if not self.eval_sets:
            return {}
        per_lang = self._student()
        record = {"eval": per_lang, **self.collapse(per_lang)}
        if self.watch is not None:
            self.watch.snapshot(f"step {step}", self.halt.guard(self.student.encode))
            record["watch"] = self.watch
        return record

    def after(self, metrics: dict, end, say) -> bool:
        """The distilled student's numbers into ``metrics``; True when they were cut short."""
        try:  # after a Stop or the time limit, for STOP_GRACE_S at most (kd.train.stopping)
            if self.eval_sets:
                say("evaluating the distilled student")
                metrics["student_distilled"] = self._student("distilled student")
            if self.watch is not None:
                label = "distilled" if not end.stopped else f"stopped (step {end.step})"
                self.watch.snapshot(label, self.halt.guard(self.student.encode))
            if self.sts_sets:
                say("STS: scoring the teacher, the untrained and the distilled student")
                guard = self.halt.guard
                models = {
                    "student_untrained": self.untrained_sts,
                    "student_distilled": guard(self.student.encode),
                }
                metrics["sts"] = sts_report(self.sts_sets, guard(self.teacher.encode), models)
        except EvaluationCut as cut:
            metrics["evaluation_cut"] = str(cut)
            say(str(cut))
            return True
        return False

    def alarms(self, metrics: dict, history: list[dict]) -> None:
        """The run's alarms into ``metrics``: ``collapse`` (the references, the threshold, the
        unrelated cosine at each evaluation, the last one's check, whether it ever rang) and
        ``verdicts`` (each measure of the distilled student against the untrained one)."""
        if not self.eval_sets:
            return
        # Step 0 (the head before training) is checked here; every evaluation during the run
        # already recorded its verdict in its step record (:meth:`collapse`).
        head = metrics.get("student_head", {}).get("mean", {}).get("unrelated_cosine")
        by_step, rang = [], []
        if head is not None:
            by_step.append({"step": 0, "unrelated_cosine": head})
            rang.append(collapse_check(head, self.references)["alarm"])
        for r in history:
            if r.get("unrelated_cosine") is not None:
                by_step.append({"step": r["step"], "unrelated_cosine": r["unrelated_cosine"]})
                rang.append(bool(r.get("collapse_alarm")))
        final = metrics.get("student_distilled", {}).get("mean", {}).get("unrelated_cosine")
        check = collapse_check(final, self.references)
        ever = check["alarm"] or any(rang)
        metrics["collapse"] = {
            "references": self.references,
            "threshold": check["threshold"],
            "by_step": by_step,
            "final": check,
            "alarm": bool(ever),
        }
        metrics["verdicts"] = verdicts(metrics)


def _sts_sets(cfg: TrainConfig) -> dict:
    """The STS sets scored before and after training (``cfg.sts``), capped at ``sts_pairs``."""
    if not cfg.sts:
        return {}
    langs = ["en", *cfg.langs]
    present = read_sts(cfg.sts, max_rows=cfg.sts_pairs)
    return {lang: s for lang, s in present.items() if lang in langs}


__all__ = ["Dataset", "RunResult", "RunStopped", "distill", "fit_linear_head", "teacher_vectors"]
