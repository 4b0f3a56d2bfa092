"""Numbers to print beside the pictures, so they are not just pretty.

Distances in a 2-D map mean little, so alignment is measured in the ORIGINAL embedding space
(:func:`translation_cosine`; :func:`teacher_space_numbers` for a student's translations against
the teacher's English vectors, what distillation trains), and the map itself gets a score of how
far to believe it (:func:`projection_trustworthiness`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "cosine_matrix",
    "projection_trustworthiness",
    "teacher_space_numbers",
    "translation_cosine",
    "translation_cosine_by_lang",
]


def _unit_rows(vectors: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric (n, d) array") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D (n, d) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or inf; re-encode those sentences or drop them")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has an all-zero row; cosine is undefined for it")
    return arr / norms


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """(n, n) cosine similarities of the rows of ``vectors`` (n, d).

    Example:
        >>> cosine_matrix(np.array([[1.0, 0.0], [1.0, 1.0]])).round(3).tolist()
        [[1.0, 0.707], [0.707, 1.0]]
    """
    unit = _unit_rows(vectors, "vectors")
    return np.clip(unit @ unit.T, -1.0, 1.0)


def translation_cosine_by_lang(
    vectors_by_model: Mapping[str, np.ndarray],
    langs: Sequence[str],
    pair_ids: Sequence[int],
    *,
    anchor: str = "en",
) -> pd.DataFrame:
    """Mean cosine between each translation and its ``anchor`` sentence, per model and language.

    Row i of every matrix is the sentence in ``langs[i]`` with pair ``pair_ids[i]``; a
    translation is compared with the ``anchor`` row of the same pair (the first, if a pair has
    several). Translations without an anchor row are skipped.

    Returns:
        Long-form frame with columns ``model, lang, cosine, n_pairs``, models in dict order,
        languages in first appearance order.

    Raises:
        ValueError: on no models, mismatched lengths, bad vectors, or no translation that has
            an ``anchor`` row.

    Example:
        >>> v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> translation_cosine_by_lang({"m": v}, ["en", "de", "en", "de"], [0, 0, 1, 1])
          model lang    cosine  n_pairs
        0     m   de  0.853553        2
    """
    if not vectors_by_model:
        raise ValueError("vectors_by_model is empty; pass at least one model -> (n, d) vectors")
    n = len(langs)
    if len(pair_ids) != n:
        raise ValueError(f"got {n} langs but {len(pair_ids)} pair_ids; pass one of each per row")
    lang = np.asarray([str(x) for x in langs], dtype=object)
    pair = np.asarray(pair_ids)
    anchors: dict[object, int] = {}
    for i in np.flatnonzero(lang == anchor):
        anchors.setdefault(pair[i].item(), int(i))
    src = [i for i in range(n) if lang[i] != anchor and pair[i].item() in anchors]
    if not src:
        raise ValueError(
            f"no translation has an {anchor!r} sentence with the same pair_id; pass rows in "
            f"{anchor!r} and in other languages that share pair_ids"
        )
    src_idx = np.asarray(src)
    dst_idx = np.asarray([anchors[pair[i].item()] for i in src])
    order = list(dict.fromkeys(lang[src_idx]))
    rows = []
    for model, vectors in vectors_by_model.items():
        unit = _unit_rows(vectors, f"vectors of model {model!r}")
        if unit.shape[0] != n:
            raise ValueError(
                f"model {model!r} has {unit.shape[0]} vectors but there are {n} langs; pass "
                "one vector per sentence"
            )
        cos = np.einsum("ij,ij->i", unit[src_idx], unit[dst_idx])  # (n_pairs,)
        for code in order:
            mask = lang[src_idx] == code
            rows.append((str(model), code, float(cos[mask].mean()), int(mask.sum())))
    return pd.DataFrame(rows, columns=["model", "lang", "cosine", "n_pairs"])


def translation_cosine(
    vectors_by_model: Mapping[str, np.ndarray],
    langs: Sequence[str],
    pair_ids: Sequence[int],
    *,
    anchor: str = "en",
) -> dict[str, float]:
    """For each model, mean cosine between each translation and its English sentence.

    Measured in the original embedding space (not in 2-D), over all translation rows that have
    an ``anchor`` row with the same pair id. 1.0 means every translation sits exactly on its
    English sentence.

    Args:
        vectors_by_model: model name -> (n, d) vectors, row i = sentence i for every model.
        langs: n language codes.
        pair_ids: n integers; a translation and its English source share one.
        anchor: the language translations are compared with.

    Returns:
        ``{model: mean cosine}`` in dict order.

    Raises:
        ValueError: as :func:`translation_cosine_by_lang`.

    Example:
        >>> v = np.array([[1.0, 0.0], [1.0, 0.0]])
        >>> translation_cosine({"teacher": v}, ["en", "de"], [7, 7])
        {'teacher': 1.0}
    """
    per_lang = translation_cosine_by_lang(vectors_by_model, langs, pair_ids, anchor=anchor)
    weighted = per_lang["cosine"] * per_lang["n_pairs"]
    sums = weighted.groupby(per_lang["model"], sort=False).sum()
    counts = per_lang["n_pairs"].groupby(per_lang["model"], sort=False).sum()
    return {str(m): float(sums[m] / counts[m]) for m in sums.index}


def teacher_space_numbers(
    teacher_en: np.ndarray, student_x: np.ndarray, pair_ids: Sequence[int]
) -> dict[str, float | int]:
    """How well the student puts translations where the teacher put their English sentences.

    Measured in the original embedding space, one vector model against another: the student's
    vector of translation x is compared with the TEACHER's vector of its English sentence (the
    anchor), which is what distillation trains (student(x) ≈ teacher(en)).

    Args:
        teacher_en: (m, d) teacher vectors of m English sentences.
        student_x: (n, d) student vectors of n translations, in the teacher's dimension d.
        pair_ids: n integers in 0..m-1: the row of ``teacher_en`` each translation belongs to.

    Returns:
        ``{"mean_cos": .., "mean_distance": .., "retrieval": .., "n": .., "pool": ..}``: the
        mean cos(student(x), teacher(en)), 1 minus that, the fraction of translations whose
        nearest anchor by cosine is their own English sentence (retrieval into the teacher's
        space; a tie goes to the lower row, as argmax does), the number of translations, and the
        number of English sentences each one is retrieved among (m): a retrieval figure means
        little without its pool.

    Raises:
        ValueError: on bad vectors, dimensions that differ, or pair ids outside 0..m-1.

    Example:
        >>> t = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> s = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])  # the last one lands on anchor 0
        >>> {k: round(v, 3) for k, v in teacher_space_numbers(t, s, [0, 1, 1]).items()}
        {'mean_cos': 0.667, 'mean_distance': 0.333, 'retrieval': 0.667, 'n': 3, 'pool': 2}
    """
    teacher = _unit_rows(teacher_en, "teacher_en")  # (m, d)
    student = _unit_rows(student_x, "student_x")  # (n, d)
    m, d = teacher.shape
    n = student.shape[0]
    if student.shape[1] != d:
        raise ValueError(
            f"student_x has dimension {student.shape[1]} but teacher_en has {d}: the student's "
            "vectors must be in the teacher's space, i.e. the same dimension"
        )
    pid = np.asarray(pair_ids)
    if pid.shape != (n,):
        raise ValueError(
            f"pair_ids has shape {pid.shape} but student_x has {n} rows; pass one anchor row "
            "per translation"
        )
    if pid.dtype.kind not in "iu":
        raise ValueError("pair_ids must be integers: the row of teacher_en of each translation")
    bad = (pid < 0) | (pid >= m)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"pair_ids must be rows of teacher_en, 0..{m - 1}; got {int(pid[i])} at row {i}"
        )
    cos = np.clip(np.einsum("ij,ij->i", student, teacher[pid]), -1.0, 1.0)  # (n,)
    hits = 0
    for start in range(0, n, 1024):  # (1024, m) similarity blocks
        stop = min(start + 1024, n)
        nearest = np.argmax(student[start:stop] @ teacher.T, axis=1)
        hits += int((nearest == pid[start:stop]).sum())
    mean_cos = float(cos.mean())
    return {
        "mean_cos": mean_cos,
        "mean_distance": 1.0 - mean_cos,
        "retrieval": hits / n,
        "n": int(n),
        "pool": int(m),
    }


def projection_trustworthiness(
    high: np.ndarray,
    low: np.ndarray,
    n_neighbors: int = 5,
    *,
    max_points: int = 2000,
    seed: int = 0,
    metric: str = "cosine",
) -> float:
    """How far to believe a 2-D map: ``sklearn.manifold.trustworthiness`` in 0..1.

    1.0 means every point's nearest neighbours on the map are also near it in the original
    space. Above ``max_points`` points a seeded random subset is scored (the cost is quadratic).

    Args:
        high: (n, d) vectors that were projected (all models stacked, as projected).
        low: (n, 2) coordinates of the same rows.
        n_neighbors: neighbourhood size; lowered to fit small n (it must be below n / 2).
        max_points: score at most this many rows.
        seed: seed of the subsample.
        metric: distance in the original space (cosine, as the projection uses).

    Returns:
        The trustworthiness, a float in 0..1.

    Raises:
        ValueError: on mismatched row counts, fewer than 4 rows, or NaN/inf.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(100, 5))
        >>> round(projection_trustworthiness(x, x[:, :2], metric="euclidean"), 2) > 0.5
        True
    """
    from sklearn.manifold import trustworthiness

    hi = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    if hi.ndim != 2 or lo.ndim != 2:
        raise ValueError(f"high and low must be 2-D arrays, got shapes {hi.shape} and {lo.shape}")
    if hi.shape[0] != lo.shape[0]:
        raise ValueError(
            f"high has {hi.shape[0]} rows but low has {lo.shape[0]}; pass the coordinates of "
            "the same rows that were projected"
        )
    n = hi.shape[0]
    if n < 4:
        raise ValueError(f"trustworthiness needs at least 4 points, got {n}")
    if not (np.isfinite(hi).all() and np.isfinite(lo).all()):
        raise ValueError("high or low has NaN or inf; project finite vectors")
    if int(n_neighbors) < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors!r}")
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        hi, lo, n = hi[keep], lo[keep], max_points
    k = min(int(n_neighbors), (n - 1) // 2)  # sklearn requires n_neighbors < n / 2
    return float(trustworthiness(hi, lo, n_neighbors=k, metric=metric))
