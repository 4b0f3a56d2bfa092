"""The pieces of a run around its loop (:func:`kd.train.run.distill`, :mod:`kd.train.loop`).

The teacher's cached vectors, the closed-form head, the learning-rate schedule, seeding, what a
step reports, whether a checkpoint may be resumed, and how a finished run is written.
"""

from __future__ import annotations

import hashlib
import logging
import random
import resource
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd.config import TrainConfig
from kd.io import atomic_write_json, atomic_write_npy, cache_dir
from kd.models.delta import save_student, trained_keys
from kd.models.encoder import Encoder, encode_precision

log = logging.getLogger("kd")

CHECKPOINT = "checkpoint"
"""The folder inside a run's ``out`` where checkpoints go."""


# ---- data ----------------------------------------------------------------------------------------
def teacher_vectors(
    teacher: Encoder, sentences: list[str], progress=None, precision: str = "auto"
) -> np.ndarray:
    """Teacher embeddings, unit length, cached on disk by (weights, precision, sentences)."""
    key = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]
    computed = encode_precision(precision, teacher.device_name)
    path = cache_dir("teacher") / f"{teacher.fingerprint()}-{computed}-{key}.npy"
    if path.exists():
        try:
            vecs = np.load(path)
            if vecs.shape[0] == len(sentences):
                return vecs
        except (OSError, ValueError):
            log.warning("%s: unreadable cache file, recomputing", path)
    vecs = teacher.encode(sentences, progress=progress, precision=precision)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    atomic_write_npy(path, vecs)
    return vecs


# ---- the head ----------------------------------------------------------------------------------
RIDGE_ITEMS = 30_000
"""Most training items the closed-form head is fitted on (a seeded sample beyond that)."""


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


# ---- the schedule ----------------------------------------------------------------------------
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
    saved: str = "full"
    """``full`` or ``delta``: the form :func:`kd.models.delta.save_student` wrote."""


def step_record(
    loss: float, optimizer, epoch: float, rate: float, cfg: TrainConfig, step: int, total: int
) -> dict:
    """What ``on_step`` receives after a step (``rate``: steps a second so far)."""
    return {
        "loss": loss,
        "lr": optimizer.param_groups[0]["lr"],
        "epoch": epoch,
        "items_per_s": rate * cfg.batch_size,
        "eta_s": (total - step) / max(rate, 1e-9),
        "total_steps": total,
    }


def save_run(
    student: Encoder,
    teacher: Encoder,
    cfg: TrainConfig,
    base_fingerprint: str,
    metrics: dict,
    history: list[dict],
    watch,
    stopped: bool,
    say: Callable[[str], None],
):
    """Write a finished run into ``cfg.out``: the student (full or a delta, :mod:`kd.models.delta`),
    ``kd_config.json``, ``metrics.json``, ``history.json`` and the watch set; the checkpoint
    goes unless the run stopped early. Returns :class:`kd.models.delta.Saved`."""
    out = Path(cfg.out)
    say(f"saving the student to {out}")
    # The teacher's fingerprint lets an index built by the teacher accept this student's queries.
    run_config = metrics.get("config", cfg.to_dict()) | {
        "teacher_fingerprint": teacher.fingerprint()
    }
    saved = save_student(
        student,
        out,
        cfg.save,
        base=cfg.student,
        base_fingerprint=base_fingerprint,
        changed=trained_keys(student),
        extra={"config": run_config, "metrics": _headline(metrics)},
        keep=(CHECKPOINT,),
    )
    say(saved.describe())
    atomic_write_json(out / "kd_config.json", run_config)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "history.json", history)
    if watch is not None and watch.frames:
        watch.save(out)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not stopped:
        shutil.rmtree(ckpt, ignore_errors=True)
    return saved


def _headline(metrics: dict) -> dict:
    """The run's numbers a delta's manifest carries: held-out results, STS, time and memory."""
    keys = ("teacher", "student_untrained", "student_head", "student_distilled", "sts", "steps")
    keys += ("stopped",)
    keys += ("train_seconds", "peak_rss_gb")
    return {k: metrics[k] for k in keys if k in metrics}


# ---- seeding, resuming, memory ------------------------------------------------------------
def check_resumable(cfg: TrainConfig, meta: dict) -> None:
    """Refuse ``--resume`` when the checkpoint was made with other settings (those in
    ``TrainConfig.RESUME_FREE`` may change)."""
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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators, from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
