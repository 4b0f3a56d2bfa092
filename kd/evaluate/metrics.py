"""Evaluation: does the student translate, and does it live in the teacher's space?

Every metric is a plain function returning a flat dict with the field's usual names. For held-out
pairs (english_i, translation_i) in one language:

- ``src2trg_accuracy`` / ``trg2src_accuracy`` / ``mean_accuracy``: translation retrieval, as in
  the LASER/XTREME Tatoeba task. For each translation, is its nearest English sentence (cosine)
  the right one, and the other way round?
- student-vs-student (``student_*``): both sides embedded by the student. A multilingual model
  should score high here before and after distillation; distillation must not damage it.
- cross-model (``cross_*``): translations embedded by the student, English by the teacher. High
  only when the student's vectors land where the teacher put the English sentence: the point
  of distillation.
- ``english_fidelity``: mean cosine between student(en) and teacher(en).
- ``mse_x100``: mean squared error between teacher(en) and student(translation), per element,
  times 100 (as sentence-transformers' ``MSEEvaluator`` reports it).
- ``unrelated_cosine``: mean cosine of each English sentence with every *other* English sentence
  of the set, all embedded by the model. Unrelated sentences: a healthy space keeps them apart;
  a space collapsing toward one point drives this to 1 (:mod:`kd.evaluate.collapse`).

Teacher vectors of an evaluation set are computed once and reused for every model compared.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Encode = Callable[[list[str]], np.ndarray]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval_accuracy(src: np.ndarray, trg: np.ndarray) -> dict[str, float]:
    """Top-1 retrieval accuracy between row-aligned matrices (row i of src translates row i of trg).

    Example:
        >>> x = np.eye(3)
        >>> retrieval_accuracy(x, x)["mean_accuracy"]
        1.0
    """
    if src.shape != trg.shape or len(src) == 0:
        raise ValueError(
            f"retrieval needs two non-empty matrices of one shape, got {src.shape} and {trg.shape}"
        )
    sim = _unit(src) @ _unit(trg).T  # (n, n)
    gold = np.arange(len(src))
    s2t = float((sim.argmax(1) == gold).mean())
    t2s = float((sim.argmax(0) == gold).mean())
    return {"src2trg_accuracy": s2t, "trg2src_accuracy": t2s, "mean_accuracy": (s2t + t2s) / 2}


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of row-aligned vectors."""
    return float((_unit(a) * _unit(b)).sum(1).mean())


def unrelated_cosine(vectors: np.ndarray) -> float:
    """Mean cosine of every row with every *other* row (the diagonal left out); 0.0 for one row.

    Example:
        >>> unrelated_cosine(np.array([[1.0, 0.0], [0.0, 1.0]])), unrelated_cosine(np.ones((3, 2)))
        (0.0, 1.0)
    """
    n = len(vectors)
    if n < 2:
        return 0.0
    u = _unit(vectors)
    total = u.sum(0)  # (d,): sum over i, j of u_i . u_j is |sum u|^2, the diagonal adds n
    return float(np.clip((total @ total - (u * u).sum()) / (n * n - n), -1.0, 1.0))


def mse_x100(target: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error over all elements, times 100 (sentence-transformers' MSEEvaluator)."""
    return float(((target - pred) ** 2).mean() * 100)


def pair_metrics(
    teacher_en: np.ndarray, student_en: np.ndarray, student_x: np.ndarray
) -> dict[str, float]:
    """All metrics of one language from the three embeddings of its held-out pairs.

    Example:
        >>> v = np.eye(4)
        >>> m = pair_metrics(v, v, v)
        >>> m["cross_mean_accuracy"], m["english_fidelity"], m["mse_x100"]
        (1.0, 1.0, 0.0)
    """
    out = {f"student_{k}": v for k, v in retrieval_accuracy(student_x, student_en).items()}
    out["unrelated_cosine"] = unrelated_cosine(student_en)
    if teacher_en.shape[1] == student_x.shape[1]:
        out.update({f"cross_{k}": v for k, v in retrieval_accuracy(student_x, teacher_en).items()})
        out["english_fidelity"] = mean_cosine(student_en, teacher_en)
        out["mse_x100"] = mse_x100(teacher_en, student_x)
    return out


def mean_over_langs(per_lang: dict[str, dict[str, float]]) -> dict[str, float]:
    """Average each metric over languages (every language weighs the same)."""
    keys = sorted({k for m in per_lang.values() for k in m})
    return {k: float(np.mean([m[k] for m in per_lang.values() if k in m])) for k in keys}


def evaluate(
    sets: dict[str, tuple[list[str], list[str]]],
    teacher_en: dict[str, np.ndarray],
    encode: Encode,
) -> dict[str, dict[str, float]]:
    """Per-language metrics of one model, plus ``"mean"``.

    Args:
        sets: language -> (english sentences, translations), row-aligned.
        teacher_en: language -> teacher embeddings of the English side (computed once).
        encode: the model being evaluated, ``list[str] -> np.ndarray (n, d)``.
    """
    per_lang: dict[str, dict[str, float]] = {}
    for lang, (en, x) in sets.items():
        vecs = encode(list(en) + list(x))
        per_lang[lang] = pair_metrics(teacher_en[lang], vecs[: len(en)], vecs[len(en) :])
    per_lang["mean"] = mean_over_langs(per_lang)
    return per_lang


SUMMARY_KEYS = ("cross_mean_accuracy", "student_mean_accuracy", "english_fidelity", "mse_x100")


def headline_metric(metrics: dict[str, float]) -> str:
    """The one number a run is judged by: cross-model retrieval student(x) -> teacher(en) when
    it was measured (the student's vectors live in the teacher's space), else the student's own
    retrieval (a model scored alone, the teacher itself).

    Example:
        >>> headline_metric({"student_mean_accuracy": 0.9})
        'student_mean_accuracy'
    """
    return "cross_mean_accuracy" if "cross_mean_accuracy" in metrics else "student_mean_accuracy"


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table: one row per (model, language), the summary metrics as columns."""
    header = f"{'model':<22}{'lang':<6}" + "".join(f"{k:>23}" for k in SUMMARY_KEYS)
    lines = [header, "-" * len(header)]
    for model, per_lang in results.items():
        for lang, metrics in per_lang.items():
            cells = "".join(
                f"{metrics[k]:>23.3f}" if k in metrics else f"{'-':>23}" for k in SUMMARY_KEYS
            )
            lines.append(f"{model:<22}{lang:<6}{cells}")
    return "\n".join(lines)
