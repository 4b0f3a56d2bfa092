"""Language bias: does a model prefer a sentence in the query's own language to its translation?

Per-language retrieval (Tatoeba's task, :mod:`kd.evaluate.metrics`) asks each translation to
find its English sentence among English sentences only. A multilingual search index mixes
languages, and there a model can fail in a way that test cannot see: it ranks *any* sentence in
the query's own language above the translation, because the languages sit apart in its space.
Roy et al. (2020, LAReQA) named this language bias; Reimers & Gurevych (2020, sec. "Language
Bias") measured it as the drop in performance from per-language pools to one pool that mixes all
languages, and found distilled students drop far less than models such as LASER or mUSE.

Here, for held-out pairs in several languages, each model embeds every sentence (its own space).
Each translation is a query against **one pool** holding every English sentence and every
translation of every language (the query itself left out, identical sentences counted once).
Its nearest neighbour is:

- ``translation``: its English sentence (any English sentence of the same text);
- ``own_language``: another sentence in the query's language;
- ``other``: anything else, split into ``other_english`` (a wrong English sentence) and
  ``other_language`` (a sentence in a third language); ``same_meaning`` counts those third-language
  sentences that translate the query's own English sentence (Tatoeba's languages share some
  English sentences: not a mistake of meaning, but not the translation asked for either).

``per_language_accuracy`` is the same queries against their own language's English sentences
only; ``drop`` = per-language minus mixed accuracy. Everything is numpy on vectors except
:func:`encode_bias_vectors`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kd.evaluate.metrics import _unit

Encode = Callable[[list[str]], np.ndarray]
CATEGORIES = ("translation", "own_language", "other")
CHUNK = 1024  # queries scored at once: (CHUNK, pool) floats, whatever the pool's size


def _nearest(queries: np.ndarray, pool: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """Row of ``pool`` nearest (cosine) to each query, never the pool row ``skip[i]`` (-1: none).

    Scored in chunks of :data:`CHUNK` queries, so memory stays (CHUNK, pool) for any pool.
    """
    q, p = _unit(queries), _unit(pool)
    out = np.empty(len(q), dtype=np.int64)
    for start in range(0, len(q), CHUNK):
        sim = q[start : start + CHUNK] @ p.T  # (chunk, pool)
        rows = np.arange(len(sim))
        own = skip[start : start + CHUNK]
        sim[rows[own >= 0], own[own >= 0]] = -np.inf
        out[start : start + CHUNK] = sim.argmax(1)
    return out


def _pool(
    sets: dict[str, tuple[list[str], list[str]]],
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, list[str], list[str], list[set[str]]]:
    """The mixed pool: every distinct English sentence, then every distinct (language, text);
    with each row's language, text and the English sentences it stands for."""
    rows: dict[tuple[str, str], np.ndarray] = {}
    means: dict[tuple[str, str], set[str]] = {}
    for lang, (english, translations) in sets.items():
        en_v, x_v = vectors[lang]
        for text, v in zip(english, en_v, strict=True):
            rows.setdefault(("en", text), v)
            means.setdefault(("en", text), {text})
        for text, en, v in zip(translations, english, x_v, strict=True):
            rows.setdefault((lang, text), v)
            means.setdefault((lang, text), set()).add(en)
    keys = list(rows)
    pool = np.vstack([rows[key] for key in keys])
    return pool, [k[0] for k in keys], [k[1] for k in keys], [means[k] for k in keys]


def language_bias(
    sets: dict[str, tuple[list[str], list[str]]],
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict:
    """One model's language bias on held-out pairs in several languages, JSON-ready.

    Args:
        sets: language -> (English sentences, translations), row-aligned; English itself is not
            a language here (its sentences are the targets).
        vectors: language -> (English vectors, translation vectors), by one model.

    Returns:
        ``{"pool": size, "per_lang": {lang: {...}}, "mean": {...}}``; each entry holds
        ``queries``, the counts and shares (``*_share``) of :data:`CATEGORIES` (``other`` split
        into ``other_english`` and ``other_language``, of which ``same_meaning``),
        ``per_language_accuracy``,
        ``mixed_accuracy`` (= ``translation_share``) and ``drop``. ``mean`` averages the shares
        over languages, each language weighing the same.

    Example:
        >>> sets = {"de": (["a", "b"], ["A", "B"]), "fr": (["c", "d"], ["C", "D"])}
        >>> e = np.eye(8)
        >>> vec = {"de": (e[:2], e[:2]), "fr": (e[2:4], e[2:4])}
        >>> language_bias(sets, vec)["mean"]["mixed_accuracy"]
        1.0
    """
    if not sets:
        raise ValueError("language bias needs held-out pairs in at least one language")
    if "en" in sets:
        raise ValueError("English is the target side; list the other languages only")
    for lang, (english, translations) in sets.items():
        en_v, x_v = vectors[lang]
        if not (len(english) == len(translations) == len(en_v) == len(x_v)) or not english:
            raise ValueError(
                f"{lang}: needs as many English sentences, translations and vectors of each "
                "(and at least one pair)"
            )
    pool, pool_lang, pool_text, pool_means = _pool(sets, vectors)
    index = {
        (lang, text): i for i, (lang, text) in enumerate(zip(pool_lang, pool_text, strict=True))
    }
    per_lang: dict[str, dict] = {}
    for lang, (english, translations) in sets.items():
        en_v, x_v = vectors[lang]
        # Per-language pool: the language's own English sentences; right = same English text.
        own = _nearest(x_v, en_v, np.full(len(x_v), -1))
        per_language = float(np.mean([english[j] == english[i] for i, j in enumerate(own)]))
        skip = np.array([index[(lang, t)] for t in translations])
        hits = _nearest(x_v, pool, skip)
        counts = dict.fromkeys(
            ("translation", "own_language", "other_english", "other_language", "same_meaning"), 0
        )
        for i, j in enumerate(hits):
            if pool_lang[j] == "en":
                counts["translation" if pool_text[j] == english[i] else "other_english"] += 1
            elif pool_lang[j] == lang:
                counts["own_language"] += 1
            else:
                counts["other_language"] += 1
                counts["same_meaning"] += english[i] in pool_means[j]
        counts["other"] = counts["other_english"] + counts["other_language"]
        n = len(translations)
        entry: dict = {"queries": n, **counts}
        entry.update({f"{key}_share": counts[key] / n for key in counts})
        entry["per_language_accuracy"] = per_language
        entry["mixed_accuracy"] = entry["translation_share"]
        entry["drop"] = per_language - entry["mixed_accuracy"]
        per_lang[lang] = entry
    keys = [k for k in next(iter(per_lang.values())) if k.endswith(("_share", "accuracy", "drop"))]
    mean = {k: float(np.mean([e[k] for e in per_lang.values()])) for k in keys}
    mean["queries"] = sum(e["queries"] for e in per_lang.values())
    return {"pool": len(pool), "per_lang": per_lang, "mean": mean}


def bias_texts(sets: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    """Every sentence of ``sets`` in one list: each language's English, then its translations."""
    return [s for english, translations in sets.values() for s in (*english, *translations)]


def split_bias_vectors(
    vecs: np.ndarray, sets: dict[str, tuple[list[str], list[str]]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One model's vectors of :func:`bias_texts` back into language -> (English vectors,
    translation vectors)."""
    out, at = {}, 0
    for lang, (english, _translations) in sets.items():
        n = len(english)
        out[lang] = (vecs[at : at + n], vecs[at + n : at + 2 * n])
        at += 2 * n
    return out


def encode_bias_vectors(
    sets: dict[str, tuple[list[str], list[str]]], encode: Encode
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """language -> (English vectors, translation vectors) by one model, in one encode call."""
    return split_bias_vectors(encode(bias_texts(sets)), sets)


def format_bias_table(results: dict[str, dict]) -> str:
    """A plain-text table: one row per (model, language); model name -> :func:`language_bias`."""
    cols = (
        ("per_language_accuracy", "per-lang acc"),
        ("mixed_accuracy", "mixed acc"),
        ("drop", "drop"),
        ("own_language_share", "NN own lang"),
        ("other_share", "NN other"),
        ("same_meaning_share", "same meaning"),
    )
    header = f"{'model':<22}{'lang':<6}" + "".join(f"{label:>14}" for _, label in cols)
    lines = [header, "-" * len(header)]
    for model, bias in results.items():
        for lang, entry in [*bias["per_lang"].items(), ("mean", bias["mean"])]:
            lines.append(
                f"{model:<22}{lang:<6}" + "".join(f"{entry[key]:>14.3f}" for key, _ in cols)
            )
    return "\n".join(lines)


def bias_heading(results: dict[str, dict]) -> str:
    """The lines above :func:`format_bias_table`: what the pool is and what the columns mean."""
    pool = next(iter(results.values()))["pool"] if results else 0
    return (
        f"Language bias: each translation against one pool of {pool} sentences mixing every "
        "language (English included), each model embedding all of them\n"
        "  per-lang acc: its English sentence is nearest among its language's English "
        "sentences only; mixed acc: nearest in the mixed pool; drop = per-lang - mixed\n"
        "  NN own lang / NN other: share of queries whose nearest neighbour is another "
        "sentence in the query's language / anything else that is not its translation; same "
        "meaning: of NN other, a sentence in a third language translating the same English one"
    )
