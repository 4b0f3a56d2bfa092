"""Distillation losses: how far the student's vector is from the teacher's.

All three take student vectors ``s`` (B, D) and teacher vectors ``t`` (B, D); row i of ``t`` is
the teacher's embedding of the English sentence whose translation (or itself) gave row i of
``s``. Teacher vectors are unit length (all-MiniLM-L6-v2 ends with ``Normalize``).

Why ``mse`` normalises the student first. The paper's loss is the mean squared error
``MSE(M'(s), M(s)) + MSE(M'(t), M(s))``. Applied to raw student outputs against unit-length
teacher outputs with the per-element mean, it has a cheap near-minimum: shrink every student
vector towards zero, where the loss sits at 1/D (the per-dimension variance of unit vectors)
and the student forgets everything (offline-assets.md; sentence-transformers issue #1164). Since
the teacher's vectors live on the unit sphere, we compare on the sphere: ``s`` is normalised, so
the zero solution does not exist, and we sum over dimensions instead of averaging, so the
gradient is not divided by D. For unit vectors ``||s - t||^2 = 2 - 2 cos(s, t)``: the loss is
still the paper's squared error, measured where the teacher's vectors live.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def mse_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Squared error on the unit sphere: mean over the batch of ``||s/|s| - t||^2``.

    Example:
        >>> t = F.normalize(torch.randn(4, 8), dim=-1)
        >>> round(float(mse_loss(3 * t, t)), 6)  # scale does not matter, direction does
        0.0
    """
    s = F.normalize(s, dim=-1)  # (B, D)
    return ((s - t) ** 2).sum(-1).mean()


def cos_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``1 - cos(s, t)``, averaged over the batch (half of :func:`mse_loss`)."""
    return (1 - F.cosine_similarity(s, t, dim=-1)).mean()


def kl_loss(s: torch.Tensor, t: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """The student learns the teacher's similarity distribution over the batch.

    For row i, the teacher's distribution is ``softmax_j(cos(t_i, t_j) / T)`` and the student's
    ``softmax_j(cos(s_i, t_j) / T)``; the loss is ``KL(teacher || student)`` averaged over rows.
    Comparing student rows with teacher columns (not with other student rows) keeps the student
    anchored in the teacher's space, not just shaped like it.

    Example:
        >>> t = F.normalize(torch.randn(6, 8), dim=-1)
        >>> float(kl_loss(t, t)) < 1e-6
        True
    """
    s = F.normalize(s, dim=-1)
    t = F.normalize(t, dim=-1)
    teacher_logits = t @ t.T / temperature  # (B, B)
    student_logits = s @ t.T / temperature  # (B, B)
    p = F.log_softmax(teacher_logits, dim=-1)
    q = F.log_softmax(student_logits, dim=-1)
    return F.kl_div(q, p, log_target=True, reduction="batchmean")


def rank_loss(
    s: torch.Tensor, bank: torch.Tensor, target: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """Retrieval into the teacher's space: each student vector must rank its own English
    sentence first among the teacher's vectors of *every* training sentence.

    ``s`` (B, D) student vectors, ``bank`` (U, D) the teacher's unit vectors of all U training
    sentences, ``target`` (B,) the row of ``bank`` each item belongs to. Cross-entropy over the
    cosines divided by ``temperature``. The squared error pulls each translation towards its
    sentence's point; this term also pushes it away from the other sentences' points, which is
    what cross-lingual retrieval asks for. Added to the distillation loss for every item, English
    sentences included (``TrainConfig.rank_weight``); measured on the dev set, it lifts
    cross-model accuracy and the student's own alignment, at some cost in English fidelity
    (docs/results.md).

    Example:
        >>> bank = F.normalize(torch.randn(10, 8), dim=-1)
        >>> float(rank_loss(bank[:3], bank, torch.arange(3), 0.01)) < 0.01
        True
    """
    logits = F.normalize(s, dim=-1) @ bank.T / temperature  # (B, U)
    return F.cross_entropy(logits, target)


def sampled_rank_loss(
    s: torch.Tensor,
    t: torch.Tensor,
    bank: torch.Tensor,
    bank_ids: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 0.05,
) -> torch.Tensor:
    """:func:`rank_loss` against a bank that need not hold every training sentence.

    ``t`` (B, D) is each item's own teacher vector (the positive), ``bank`` (K, D) teacher
    vectors of K sentences with ids ``bank_ids`` (K,), ``target`` (B,) each item's sentence id.
    A bank row of the item's own sentence is masked, so the positive counts once. With the
    whole set as the bank this is :func:`rank_loss` exactly (the positive column moved first);
    the streaming path uses a fixed sample of at most ``kd.train.loop.RANK_BANK`` sentences, so a
    corpus of millions costs no more per step than one of thousands.

    Example:
        >>> bank = F.normalize(torch.randn(10, 8), dim=-1)
        >>> ids = torch.arange(10)
        >>> a = sampled_rank_loss(bank[:3], bank[:3], bank, ids, ids[:3], 0.1)
        >>> bool(torch.isclose(a, rank_loss(bank[:3], bank, ids[:3], 0.1)))
        True
    """
    s = F.normalize(s, dim=-1)
    positive = (s * t).sum(-1, keepdim=True) / temperature  # (B, 1)
    negative = s @ bank.T / temperature  # (B, K)
    negative = negative.masked_fill(bank_ids[None, :] == target[:, None], float("-inf"))
    logits = torch.cat([positive, negative], dim=1)  # (B, 1 + K)
    return F.cross_entropy(logits, torch.zeros(len(s), dtype=torch.long, device=s.device))


def distillation_loss(
    name: str, s: torch.Tensor, t: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Dispatch on the config's ``loss`` name (mse, kl or cos)."""
    if name == "mse":
        return mse_loss(s, t)
    if name == "cos":
        return cos_loss(s, t)
    if name == "kl":
        return kl_loss(s, t, temperature)
    raise ValueError(f"unknown loss '{name}'; use mse, kl or cos")
