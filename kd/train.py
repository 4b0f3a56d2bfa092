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
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd.checkpoint import load_checkpoint, save_checkpoint
from kd.config import TrainConfig
from kd.data import Pair, read_pairs, sample_per_lang, split_by_english
from kd.evaluate import evaluate
from kd.io import atomic_write_json, atomic_write_npy, cache_dir
from kd.losses import distillation_loss
from kd.models import Encoder, autocast, pick_device, prepare_torch
from kd.student_forward import embed_in_batches, make_runner, trainable_parameters

log = logging.getLogger("kd")

OnStep = Callable[[int, dict], None]
CHECKPOINT = "checkpoint"


# ---- data --------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Training items and held-out evaluation pairs of one run."""

    english: list[str]  # distinct English sentences: the teacher's inputs
    texts: list[str]  # student inputs: every English sentence, then every translation
    target: np.ndarray  # (n_items,) index into ``english`` of each item's teacher vector
    langs: list[str]  # (n_items,) language of each item
    eval_sets: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for lang in self.langs:
            counts[lang] = counts.get(lang, 0) + 1
        return counts


def load_pairs(cfg: TrainConfig) -> list[Pair]:
    """Parallel pairs for the run: the offline gettext catalogs, then any ``--data`` files."""
    from kd.gettext_source import gettext_pairs

    pairs: list[Pair] = []
    if cfg.max_pairs > 0:
        per_lang = cfg.max_pairs + cfg.eval_pairs
        pairs = sample_per_lang(gettext_pairs(cfg.langs), per_lang, seed=cfg.seed)
    # A file without an ``en<TAB>xx`` header is in the run's language when there is only one.
    default_lang = cfg.langs[0] if len(cfg.langs) == 1 else None
    for path in cfg.data:
        pairs += [
            p for p in read_pairs(path, default_lang) if p.lang in cfg.langs or p.lang == "en"
        ]
    return pairs


def build_dataset(cfg: TrainConfig, pairs: list[Pair], english_rows: list[str]) -> Dataset:
    """Hold out ``eval_pairs`` per language (split by English sentence) and build the items."""
    from kd.data import english_key

    train: list[Pair] = []
    eval_sets: dict[str, tuple[list[str], list[str]]] = {}
    by_lang: dict[str, list[Pair]] = {}
    for p in pairs:
        if p.other is not None:
            by_lang.setdefault(p.lang, []).append(p)
        else:
            train.append(p)
    held_out_en: set[str] = set()
    for lang in cfg.langs:
        lang_pairs = by_lang.get(lang, [])
        if not lang_pairs:
            log.warning("no parallel pairs for '%s': it is trained through English rows only", lang)
            continue
        if cfg.eval_pairs and len(lang_pairs) > cfg.eval_pairs:
            rest, test = split_by_english(lang_pairs, cfg.eval_pairs, seed=cfg.seed)
            eval_sets[lang] = ([p.en for p in test], [p.other for p in test])
            held_out_en |= {english_key(p.en) for p in test}
            lang_pairs = rest
        train += lang_pairs[: cfg.max_pairs] if cfg.max_pairs else lang_pairs
    train = [p for p in train if english_key(p.en) not in held_out_en]
    rows = [s for s in english_rows if english_key(s) not in held_out_en]

    english = list(dict.fromkeys([p.en for p in train] + rows))
    index = {s: i for i, s in enumerate(english)}
    translations = [p for p in train if p.other is not None]
    if not english:
        raise ValueError("no training data left after holding out the evaluation pairs")
    return Dataset(
        english=english,
        texts=english + [p.other for p in translations],
        target=np.array(list(range(len(english))) + [index[p.en] for p in translations]),
        langs=["en"] * len(english) + [p.lang for p in translations],
        eval_sets=eval_sets,
    )


def teacher_vectors(teacher: Encoder, sentences: list[str], progress=None) -> np.ndarray:
    """Teacher embeddings, unit length, cached on disk by (teacher weights, sentences)."""
    key = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]
    path = cache_dir("teacher") / f"{teacher.fingerprint()}-{key}.npy"
    if path.exists():
        try:
            vecs = np.load(path)
            if vecs.shape[0] == len(sentences):
                return vecs
        except (OSError, ValueError):
            log.warning("%s: unreadable cache file, recomputing", path)
    vecs = teacher.encode(sentences, progress=progress)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    atomic_write_npy(path, vecs)
    return vecs


# ---- the head ----------------------------------------------------------------------------------
def fit_linear_head(x: np.ndarray, y: np.ndarray, ridge: float = 10.0) -> nn.Linear:
    """Closed-form ridge regression ``y ~ x W + b`` as an ``nn.Linear``; x (n, d_in), y (n, d_out).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(200, 4)); w = np.arange(8.0).reshape(4, 2)
        >>> head = fit_linear_head(x, x @ w + 1, ridge=1e-6)
        >>> bool(np.allclose(head.weight.detach().numpy().T, w, atol=1e-3))
        True
    """
    x1 = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)  # (n, d_in + 1)
    reg = ridge * np.eye(x1.shape[1])
    reg[-1, -1] = 0.0  # the bias is not shrunk
    w = np.linalg.solve(x1.T @ x1 + reg, x1.T @ y.astype(np.float64))  # (d_in + 1, d_out)
    head = nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w[:-1].T).float())
        head.bias.copy_(torch.from_numpy(w[-1]).float())
    return head


# ---- batches -------------------------------------------------------------------------------------
def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled batches of similar length (less padding), in a shuffled order; deterministic.

    Items are shuffled, cut into pools of 50 batches, sorted by length inside each pool, cut into
    batches, and the batches shuffled again.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(perm), pool):
        chunk = perm[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def warmup_then_linear_decay(optimizer, total: int, warmup: float):
    """Learning rate rising linearly over the first ``warmup`` fraction of ``total`` steps, then
    falling linearly to zero at step ``total``."""
    warm = max(1, int(warmup * total))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm + 1)),
    )


# ---- the run -------------------------------------------------------------------------------------
@dataclass
class RunResult:
    out: Path
    metrics: dict
    steps: int
    stopped: bool


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
        should_stop: polled every step; when it returns True the run ends early and the
            student trained so far is evaluated and saved.
        status: receives one-line descriptions of the phases (loading, caching, ...).
        progress: ``(phase, done, total)`` during the encoding phases.

    Example:
        >>> distill(TrainConfig(out="student", epochs=1))  # doctest: +SKIP
    """
    say = status or (lambda msg: log.info(msg))
    out = Path(cfg.out)
    device = pick_device(cfg.device)
    prepare_torch(device)
    _seed_everything(cfg.seed)

    say(f"loading teacher {cfg.teacher} and student {cfg.student} on {device}")
    teacher = Encoder.load(cfg.teacher, device)
    student = Encoder.load(cfg.student, device)
    teacher.requires_grad_(False)
    teacher.max_seq_length = min(teacher.max_seq_length, cfg.max_seq_length * 2)

    say("reading parallel data")
    from kd.english_text import english_sentences

    english_rows = english_sentences(cfg.english_rows, seed=cfg.seed) if cfg.english_rows else []
    data = build_dataset(cfg, load_pairs(cfg), english_rows)
    say(f"{len(data.texts)} training items: {data.summary()}")

    say("teacher encodes the English side (once, cached)")
    tvec = teacher_vectors(
        teacher, data.english, progress=lambda d, n: progress and progress("teacher", d, n)
    )
    eval_teacher = {lang: teacher_vectors(teacher, en) for lang, (en, _x) in data.eval_sets.items()}

    metrics: dict = {"config": cfg.to_dict(), "data": data.summary()}
    if data.eval_sets:
        say("evaluating the teacher and the untrained student on held-out pairs")
        metrics["teacher"] = evaluate(data.eval_sets, eval_teacher, teacher.encode)
        metrics["student_untrained"] = evaluate(data.eval_sets, eval_teacher, student.encode)

    say(f"caching the student's {cfg.freeze_layers} frozen layers for {len(data.texts)} items")
    prepare_started = time.perf_counter()
    params = trainable_parameters(student, cfg.freeze_layers)
    student.max_seq_length = min(student.max_seq_length, cfg.max_seq_length)
    runner = make_runner(
        student,
        data.texts,
        cfg.freeze_layers,
        cfg.max_seq_length,
        progress=lambda d, n: progress and progress("student cache", d, n),
    )
    lengths = runner.lengths()

    say("fitting the linear head in closed form (ridge)")
    student.head, student.normalize = None, False
    pooled = embed_in_batches(runner, np.arange(len(data.texts)))
    student.head = fit_linear_head(pooled, tvec[data.target]).to(device)
    student.normalize = True
    student.dim = student.head.out_features
    del pooled

    steps_per_epoch = math.ceil(len(data.texts) / cfg.batch_size)
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
    named = {f"p{i}": p for i, p in enumerate(params)}
    named |= {f"head.{k}": v for k, v in student.head.named_parameters()}

    step = 0
    ckpt = out / CHECKPOINT
    if cfg.resume:
        meta = load_checkpoint(ckpt, named, optimizer)
        _check_resumable(cfg, meta)
        step = int(meta["step"])
        with warnings.catch_warnings():  # fast-forwarding the schedule, not skipping a step
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(step):
                schedule.step()
        say(f"resumed from {ckpt} at step {step} of {total}")

    targets = torch.from_numpy(tvec).to(device)  # (U, D)
    target_idx = torch.from_numpy(data.target)
    student.train()
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
            if should_stop and should_stop():
                stopped = True
                break
            with autocast(device):
                s = runner.embed(idx)  # (B, D)
            t = targets[target_idx[idx].to(device)]  # (B, D)
            loss = distillation_loss(cfg.loss, s.float(), t, cfg.temperature)
            if not torch.isfinite(loss):
                raise ValueError(f"the loss became {loss.item()} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params + list(student.head.parameters()), 1.0)
            optimizer.step()
            schedule.step()
            step += 1

            elapsed = time.perf_counter() - started
            rate = (step - done_at_start) / max(elapsed, 1e-9)
            record = {
                "loss": float(loss.item()),
                "lr": optimizer.param_groups[0]["lr"],
                "epoch": epoch + (b + 1) / len(batches),
                "items_per_s": rate * cfg.batch_size,
                "eta_s": (total - step) / max(rate, 1e-9),
                "total_steps": total,
            }
            if cfg.eval_every and step % cfg.eval_every == 0 and data.eval_sets and step < total:
                record["eval"] = _evaluate_student(student, data, eval_teacher)
            history.append({"step": step} | {k: v for k, v in record.items() if k != "eval"})
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
    if data.eval_sets:
        say("evaluating the distilled student")
        metrics["student_distilled"] = _evaluate_student(student, data, eval_teacher)
    metrics |= {
        "steps": step,
        "total_steps": total,
        "stopped": stopped,
        "prepare_seconds": started - prepare_started,  # frozen-layer cache + head fit
        "train_seconds": time.perf_counter() - started,
        "peak_rss_gb": peak_rss_gb(),
    }
    say(f"saving the student to {out}")
    student.save(out, keep=(CHECKPOINT,))
    # The teacher's fingerprint lets an index built by the teacher accept this student's queries.
    run_config = cfg.to_dict() | {"teacher_fingerprint": teacher.fingerprint()}
    atomic_write_json(out / "kd_config.json", run_config)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "history.json", history)
    if ckpt.exists() and not stopped:
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)
    return RunResult(out=out, metrics=metrics, steps=step, stopped=stopped)


def _evaluate_student(student: Encoder, data: Dataset, eval_teacher) -> dict:
    was = student.training
    result = evaluate(data.eval_sets, eval_teacher, student.encode)
    student.train(was)
    return result


def _check_resumable(cfg: TrainConfig, meta: dict) -> None:
    saved = TrainConfig.from_dict(meta.get("config", {})).to_dict()
    now = cfg.to_dict()
    diff = [k for k in now if k not in TrainConfig.RESUME_FREE and saved.get(k) != now[k]]
    if diff:
        raise ValueError(
            f"cannot resume: the checkpoint was made with different settings ({', '.join(diff)}); "
            "use the same options, or a new --out"
        )


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


__all__ = ["Dataset", "RunResult", "build_dataset", "distill", "fit_linear_head"]
