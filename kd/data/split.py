"""Which pairs a run holds out and which it trains on: one rule for memory and for disk.

:func:`kd.data.dataset.build_dataset` (pairs in a list) and :func:`kd.data.corpus.build_corpus`
(pairs streamed from their sources, never all in memory) both pass over the run's pairs in their
source order and apply these rules, so the two data paths hold the same items in the same order
(:mod:`kd.train.feed`):

1. **Held out, by English sentence.** Per language, the ``eval_pairs`` English sentences whose
   :func:`sentence_hash` is smallest (a bottom-k sample: as good as a random draw, fixed by the
   data, and it needs only ``eval_pairs`` keys a language in memory). A held-out sentence
   leaves training in *every* language: everyday sets are multi-way parallel, and since a
   sentence has one hash in every language, the languages mostly choose the same sentences.
   Languages with no more than ``eval_pairs`` pairs are not evaluated (all their pairs train).
2. **Sampled, per language.** With ``max_pairs``, a language trains on the ``max_pairs`` of its
   remaining pairs whose seeded hash (:func:`pair_rank`) is smallest: a random sample fixed by
   the seed, found in one pass with ``max_pairs`` numbers a language in memory.
3. **In source order.** Every distinct English sentence in order of first appearance (the
   English sides of the kept pairs and the sources' English-only rows), then the ``--english``
   rows; the translations in source order.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable

from kd.data.pairs import Pair, english_key


def sentence_hash(text: str) -> int:
    """A 64-bit hash of a sentence (BLAKE2b): the held-out rule's order and the key of the
    on-disk caches.

    Example:
        >>> sentence_hash("Good morning.") == sentence_hash("Good morning.")
        True
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def pair_rank(p: Pair, seed: int) -> int:
    """A pair's place in its language's seeded random order (smaller: sampled first).

    Example:
        >>> a = Pair("Hello.", "Hallo.", "de", "x")
        >>> pair_rank(a, 0) == pair_rank(a, 0) != pair_rank(a, 1)
        True
    """
    return sentence_hash(f"{seed}\t{p.en}\t{p.other}")


def held_out_keys(pairs: Iterable[Pair], langs: list[str], eval_pairs: int) -> set[str]:
    """The English keys (:func:`kd.data.pairs.english_key`) held out: per language, the
    ``eval_pairs`` keys of smallest :func:`sentence_hash`; none for a language with no more
    than ``eval_pairs`` pairs.

    Example:
        >>> ps = [Pair(f"S {i}.", f"T {i}.", lang, "x") for i in range(10) for lang in ("de", "fr")]
        >>> len(held_out_keys(ps, ["de", "fr"], 3))  # multi-way: both languages pick the same
        3
    """
    if not eval_pairs:
        return set()
    heaps: dict[str, list[tuple[int, str]]] = {}
    seen: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for p in pairs:
        if p.other is None:
            continue
        counts[p.lang] = counts.get(p.lang, 0) + 1
        key = english_key(p.en)
        h = sentence_hash(key)
        heap, keys = heaps.setdefault(p.lang, []), seen.setdefault(p.lang, set())
        if key in keys:
            continue
        if len(heap) < eval_pairs:
            heapq.heappush(heap, (-h, key))
            keys.add(key)
        elif -heap[0][0] > h:
            _, gone = heapq.heapreplace(heap, (-h, key))
            keys.discard(gone)
            keys.add(key)
    held: set[str] = set()
    for lang in langs:
        if counts.get(lang, 0) > eval_pairs:
            held |= seen.get(lang, set())
    return held


def sample_limits(
    pairs: Iterable[Pair], held: set[str], max_pairs: int, seed: int
) -> dict[str, int]:
    """Per language, the largest :func:`pair_rank` a training pair may have to be kept: the
    ``max_pairs``-th smallest among the language's pairs not held out ({} without a cap, and
    no limit for a language with fewer pairs)."""
    if not max_pairs:
        return {}
    heaps: dict[str, list[int]] = {}
    for p in pairs:
        if p.other is None or english_key(p.en) in held:
            continue
        heap = heaps.setdefault(p.lang, [])
        r = -pair_rank(p, seed)
        if len(heap) < max_pairs:
            heapq.heappush(heap, r)
        elif r > heap[0]:
            heapq.heapreplace(heap, r)
    return {lang: -heap[0] for lang, heap in heaps.items() if len(heap) >= max_pairs}


def hold_out(eval_sets: dict[str, tuple[list[str], list[str]]], p: Pair, eval_pairs: int) -> None:
    """A held-out translation into its language's evaluation set (English sentences,
    translations), the first ``eval_pairs`` a language in source order."""
    if p.other is None:
        return
    en, x = eval_sets.setdefault(p.lang, ([], []))
    if len(en) < eval_pairs:
        en.append(p.en)
        x.append(p.other)


def kept(p: Pair, limits: dict[str, int], seed: int) -> bool:
    """Whether a training pair (not held out) is in its language's sample."""
    limit = limits.get(p.lang)
    return limit is None or pair_rank(p, seed) <= limit
