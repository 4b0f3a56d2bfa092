"""Error inspector: which held-out pairs a model retrieves wrongly, and what it ranked instead.

A retrieval accuracy of 0.93 hides the 7 % that fail; reading them tells a teacher more than the
number (a near-synonym ranked first, a sentence too short to mean anything, a script the model
never learnt). For one language's held-out pairs ``(english_i, translation_i)`` each translation
ranks every English sentence of the set by cosine, as in
:func:`kd.evaluate.metrics.retrieval_accuracy` (``src2trg``); a pair is wrong when its own English
sentence is not first. For each wrong pair we keep the sentence, the right English sentence with
its score and rank, and the top ``k`` the model ranked instead.

Two models side by side (the untrained and the distilled student) give the pairs distillation
*fixed* (wrong before, right after) and those it *broke* (right before, wrong after).

Everything here is numpy on vectors, except :func:`encode_error_vectors`, which encodes with the
encoders it is given. :func:`retrieval_errors` returns a JSON-ready dict (``kd eval --errors``,
the app's Analyse tab and ``kd report`` read it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kd.evaluate.metrics import _unit

Encode = Callable[[list[str]], np.ndarray]

SPACES = ("cross", "own")
"""Where a student's retrieval happens. ``cross``: translations by the model, English by the
teacher (the headline number: does the student land on the teacher's English point?); ``own``:
both sides by the model (its own multilingual space)."""


def rank_pairs(x: np.ndarray, en: np.ndarray, k: int = 5) -> dict[str, np.ndarray]:
    """For each translation (row of ``x``), the ``k`` best English rows and where its own is.

    Ties go to the lower row, as ``argmax`` breaks them in :mod:`kd.evaluate.metrics`, so the
    wrong pairs here are exactly those its ``src2trg_accuracy`` counts as wrong.

    Returns:
        ``top`` (n, k) row ids, ``top_scores`` (n, k) cosines, ``gold_scores`` (n,) the cosine
        with the right English row, ``gold_rank`` (n,) its rank (1 = first), ``right`` (n,) bool.

    Example:
        >>> r = rank_pairs(np.eye(3), np.eye(3), k=2)
        >>> r["right"].tolist(), r["gold_rank"].tolist()
        ([True, True, True], [1, 1, 1])
    """
    if x.shape != en.shape or len(x) == 0:
        raise ValueError(
            f"error inspection needs two non-empty matrices of one shape, got {x.shape} and "
            f"{en.shape}"
        )
    k = max(1, min(int(k), len(en)))
    sim = _unit(x) @ _unit(en).T  # (n, n)
    n = len(x)
    order = np.argsort(-sim, axis=1, kind="stable")  # (n, n), ties: lower row first
    gold = np.arange(n)
    gold_scores = sim[gold, gold]
    # Rank as argmax sees it: rows that score higher, plus equal rows that come before.
    gold_rank = 1 + (sim > gold_scores[:, None]).sum(1)
    gold_rank += ((sim == gold_scores[:, None]) & (gold[None, :] < gold[:, None])).sum(1)
    top = order[:, :k]
    return {
        "top": top,
        "top_scores": np.take_along_axis(sim, top, axis=1),
        "gold_scores": gold_scores,
        "gold_rank": gold_rank,
        "right": sim.argmax(1) == gold,
    }


def _pair_entry(i: int, ranks: dict, english: list[str], translations: list[str]) -> dict:
    """One pair as JSON: the sentence, its right English sentence, and what ranked first."""
    return {
        "pair": int(i),
        "sentence": translations[i],
        "english": english[i],
        "gold_score": round(float(ranks["gold_scores"][i]), 4),
        "gold_rank": int(ranks["gold_rank"][i]),
        "top": [
            {"pair": int(j), "english": english[j], "score": round(float(s), 4)}
            for j, s in zip(ranks["top"][i], ranks["top_scores"][i], strict=True)
        ],
    }


def _worst_first(ids: np.ndarray, ranks: dict) -> list[int]:
    """Wrong pairs, the most confident mistakes first (largest gap between first and right)."""
    gap = ranks["top_scores"][ids, 0] - ranks["gold_scores"][ids]
    return [int(ids[j]) for j in np.argsort(-gap, kind="stable")]


def retrieval_errors(
    english: list[str],
    translations: list[str],
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    k: int = 5,
    limit: int = 10,
    before: str | None = None,
    after: str | None = None,
) -> dict:
    """The wrong pairs of each model on one language's held-out set, JSON-ready.

    Args:
        english: the English sentences, row-aligned with ``translations``.
        translations: the sentences in the other language.
        vectors: model name -> (translation vectors, English vectors), each (n, d); the English
            side is the teacher's in the cross-model space (:data:`SPACES`).
        k: how many of the best-ranked English sentences to keep per wrong pair.
        limit: most wrong pairs listed per model (and fixed / broken pairs listed); the counts
            are always complete.
        before, after: two names of ``vectors`` (the untrained and the distilled student) whose
            difference gives the pairs distillation fixed and broke.

    Returns:
        ``{"pairs", "k", "models": {name: {"accuracy", "right", "wrong", "errors": [...]}},
        "fixed": {...}, "broken": {...}}``; each listed pair holds ``sentence``, ``english``,
        ``gold_score``, ``gold_rank`` and ``top`` (``[{"pair", "english", "score"}]``), and under
        ``fixed`` / ``broken`` one such entry per model (``before`` and ``after``).

    Example:
        >>> en, x = ["a", "b"], ["A", "B"]
        >>> v = np.eye(2)
        >>> out = retrieval_errors(en, x, {"m": (v[::-1], v)})
        >>> out["models"]["m"]["wrong"], out["models"]["m"]["errors"][0]["top"][0]["english"]
        (2, 'b')
    """
    if len(english) != len(translations):
        raise ValueError(
            f"{len(english)} English sentences but {len(translations)} translations; they must "
            "be row-aligned"
        )
    if limit < 0:
        raise ValueError(f"the number of errors to list must be 0 or more, got {limit}")
    ranks = {name: rank_pairs(x, en, k) for name, (x, en) in vectors.items()}
    out: dict = {"pairs": len(english), "k": int(min(k, len(english))), "models": {}}
    for name, r in ranks.items():
        wrong = np.flatnonzero(~r["right"])
        out["models"][name] = {
            "accuracy": round(float(r["right"].mean()), 4),
            "right": int(r["right"].sum()),
            "wrong": len(wrong),
            "errors": [
                _pair_entry(i, r, english, translations) for i in _worst_first(wrong, r)[:limit]
            ],
        }
    if before and after:
        for name in (before, after):
            if name not in ranks:
                raise ValueError(f"no model named {name!r}; have {', '.join(ranks)}")
        b, a = ranks[before], ranks[after]
        for key, ids, shown_by in (
            ("fixed", np.flatnonzero(~b["right"] & a["right"]), b),
            ("broken", np.flatnonzero(b["right"] & ~a["right"]), a),
        ):
            listed = _worst_first(ids, shown_by)[:limit] if len(ids) else []
            out[key] = {
                "before": before,
                "after": after,
                "count": len(ids),
                "pairs": [
                    {
                        "before": _pair_entry(i, b, english, translations),
                        "after": _pair_entry(i, a, english, translations),
                    }
                    for i in listed
                ],
            }
    return out


def encode_error_vectors(
    english: list[str],
    translations: list[str],
    teacher_en: np.ndarray | None,
    encoders: dict[str, Encode],
    space: str = "cross",
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Each model's (translation, English) vectors for :func:`retrieval_errors`.

    In the ``cross`` space the English side is ``teacher_en`` (computed once), wherever a model's
    vectors have the teacher's width; a model of another width falls back to its own space, said
    in the returned notes.

    Returns:
        (name -> (x vectors, English vectors), notes for the reader).
    """
    if space not in SPACES:
        raise ValueError(f"unknown retrieval space {space!r}; pick one of {', '.join(SPACES)}")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    notes: list[str] = []
    for name, encode in encoders.items():
        vecs = encode(list(english) + list(translations))  # (2n, d)
        en, x = vecs[: len(english)], vecs[len(english) :]
        if space == "cross" and teacher_en is not None:
            if teacher_en.shape[1] == x.shape[1]:
                en = teacher_en
            else:
                notes.append(
                    f"{name} has {x.shape[1]}-d vectors, the teacher {teacher_en.shape[1]}-d: "
                    "its pairs are retrieved in its own space"
                )
        out[name] = (x, en)
    return out, notes


def _pair_lines(entry: dict, indent: str = "    ") -> list[str]:
    lines = [
        f"{indent}right: {entry['english']}  ({entry['gold_score']:.3f}, rank {entry['gold_rank']})"
    ]
    lines += [
        f"{indent}{n}. {hit['score']:.3f}  {hit['english']}"
        for n, hit in enumerate(entry["top"], 1)
    ]
    return lines


def format_errors(errors: dict[str, dict], space: str, notes: list[str] | None = None) -> str:
    """Plain text of :func:`retrieval_errors` results, language -> result (``kd eval --errors``)."""
    where = {
        "cross": "each translation by the model against the teacher's English sentences",
        "own": "each translation against the English sentences, both by the model",
    }[space]
    lines = [f"Errors: {where} ({space} space); wrong pairs, the most confident mistakes first"]
    lines += [f"  note: {note}" for note in notes or []]
    for lang, result in errors.items():
        lines += ["", f"== {lang}: {result['pairs']} held-out pairs"]
        for name, m in result["models"].items():
            lines.append(
                f"{name}: {m['right']} of {result['pairs']} right ({m['accuracy']:.1%}), "
                f"{m['wrong']} wrong" + (f"; {len(m['errors'])} shown" if m["errors"] else "")
            )
            for entry in m["errors"]:
                lines.append(f"  [{entry['pair']}] {entry['sentence']}")
                lines += _pair_lines(entry)
        for key, verb in (("fixed", "fixed by"), ("broken", "broken by")):
            if key not in result:
                continue
            part = result[key]
            lines.append(
                f"{verb} distillation ({part['before']} wrong -> {part['after']} right)"
                if key == "fixed"
                else f"{verb} distillation ({part['before']} right -> {part['after']} wrong)"
            )
            lines[-1] += f": {part['count']} pairs"
            for pair in part["pairs"]:
                lines.append(f"  [{pair['before']['pair']}] {pair['before']['sentence']}")
                for side in ("before", "after"):
                    lines.append(f"   {part[side]}:")
                    lines += _pair_lines(pair[side], "      ")
    return "\n".join(lines)
