"""Bitext mining: find the translation pairs hidden in two unaligned lists of sentences.

The score is Artetxe & Schwenk's ratio margin ("Margin-based parallel corpus mining with
multilingual sentence embeddings", ACL 2019). Raw cosine is a poor absolute score: some sentences
(short, generic ones, "hubs") sit close to everything, and some models (e5) put every pair of
sentences at cosine 0.7-0.9. The margin divides a pair's cosine by how close each side already is
to its own k nearest neighbours on the other side::

    margin(x, y) = cos(x, y) / ( sum_{z in NN_k(x)} cos(x, z) / 2k
                                + sum_{v in NN_k(y)} cos(y, v) / 2k )

so a pair scores well above 1 only when x and y are closer to each other than to the rest of
the other list. The formula is the same seen from either side: ``margin(x, y)`` mining
``src -> tgt`` is ``margin(y, x)`` mining ``tgt -> src``.

Candidates are each sentence's k nearest neighbours by cosine on the other side, in both
directions (computed block by block, so memory grows with the lists, not with their product).
Four ways to turn candidates into pairs (``strategy``):

- ``forward``: every source sentence keeps its best target (a target may be taken twice);
- ``backward``: every target keeps its best source;
- ``intersection``: only pairs that are each other's best (precise, misses more);
- ``max`` (the default): the candidates of both directions, best margin first, each sentence
  used at most once. The paper found it the best on BUCC; on the built test below the four were
  within 0.003 F1 of each other at a fitting threshold (docs/mining.md), and ``max`` is kept for
  its one-to-one pairs.

A pair is kept when its margin reaches ``threshold``, whose scale is the model's
(:func:`default_threshold`).

:func:`mining_benchmark` measures a model: for each language, planted Tatoeba dev pairs hidden
among distractors on both sides (English news sentences; foreign everyday sentences whose
translations are not in the pool), precision, recall and F1 of the mined pairs, and the
xSIM-style error rate (how often a planted foreign sentence's best English candidate by margin
is not its translation: the error rate of LASER's xSIM, with distractors on the English side
as xSIM++ adds them).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd.data.pairs import MAX_CHARS, clean_text, english_key, read_tatoeba, read_tsv, stream_lines
from kd.langs import DEV_LANGS
from kd.models.registry import DEFAULT_STUDENT, prebuilt_dir

DEFAULT_K = 4
"""Neighbours on each side in the margin's denominator: the paper's k (LASER's default)."""

DEFAULT_THRESHOLD = 1.06
"""Margin a pair must reach to be kept, for a model not measured here: CCMatrix's threshold for
LASER's ratio margin (Schwenk et al. 2021)."""

E5_THRESHOLD = 1.025
PREBUILT_THRESHOLD = 1.295
"""The thresholds of the two default models: the one threshold with the best mean F1 over the 12
languages of the built test (``bench/mining.py``; docs/mining.md). The margin's scale is the
model's: a model whose cosines all lie within 0.7-0.9 (e5) has margins close to 1, a distilled one
spreads them wider, so one threshold for every model keeps far too many pairs or far too few."""

STRATEGIES = ("max", "intersection", "forward", "backward")
DEFAULT_STRATEGY = "max"

BLOCK = 2048
"""Rows of one block of the similarity matrix: (BLOCK, m) float32 at a time."""

_READ_LIMIT = MAX_CHARS * 8 + 8
"""Bytes of one line read at a time: a longer line is skipped without holding it in memory."""


@dataclass(frozen=True)
class Mined:
    """One mined pair: indices into the source and target lists, and its margin."""

    src: int
    tgt: int
    margin: float


def default_threshold(model: str | None) -> float:
    """The threshold measured for ``model`` (the pre-built student's folder, or
    intfloat/multilingual-e5-small), else :data:`DEFAULT_THRESHOLD`.

    Example:
        >>> default_threshold("intfloat/multilingual-e5-small") == E5_THRESHOLD
        True
    """
    name = (model or "").strip()
    if name == DEFAULT_STUDENT:
        return E5_THRESHOLD
    prebuilt = prebuilt_dir()
    if name and prebuilt is not None and Path(name).expanduser().resolve() == prebuilt:
        return PREBUILT_THRESHOLD
    return DEFAULT_THRESHOLD


# ---- reading ---------------------------------------------------------------------------------
def read_sentences(path: str | Path, max_lines: int) -> list[str]:
    """The sentences of a UTF-8 file of one sentence a line (blank lines and lines longer than
    :data:`kd.data.pairs.MAX_CHARS` skipped), for mining.

    Raises:
        ValueError: one line naming the file: missing, not a file, binary, not UTF-8, more than
            ``max_lines`` sentences (it stops reading there), or no sentence at all.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "de.txt"
        >>> _ = p.write_text("Guten Morgen.\\n\\n Danke  schön.\\n", encoding="utf-8")
        >>> read_sentences(p, 10)
        ['Guten Morgen.', 'Danke schön.']
    """
    path = Path(path)
    sentences: list[str] = []
    lines = too_long = 0
    for number, line in stream_lines(path, _READ_LIMIT, "a UTF-8 file of one sentence a line"):
        lines = number
        text = clean_text(line) if line is not None else None
        if text is None or len(text) > MAX_CHARS:
            too_long += 1
        elif text:
            if len(sentences) == max_lines:
                raise ValueError(
                    f"{path}: more than {max_lines:,} sentences; mine at most {max_lines:,} a "
                    "file (split it, or raise the limit)"
                )
            sentences.append(text)
    if not sentences:
        why = (
            "empty file"
            if lines == 0
            else f"every line longer than {MAX_CHARS:,} characters"
            if too_long
            else "only blank lines"
        )
        raise ValueError(f"{path}: no sentences found ({why}); give one sentence a line")
    return sentences


# ---- margin scoring --------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``a``'s ``k`` nearest rows of ``b`` by cosine, best first, block by block.

    Returns:
        (cosines ``(n, k)``, indices into ``b`` ``(n, k)``).
    """
    a, b = _unit(a), _unit(b)
    k = min(k, len(b))
    sims = np.empty((len(a), k), dtype=np.float32)
    idx = np.empty((len(a), k), dtype=np.int64)
    for start in range(0, len(a), BLOCK):
        block = a[start : start + BLOCK] @ b.T  # (B, m)
        top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < len(b) else None
        if top is None:
            top = np.broadcast_to(np.arange(len(b)), block.shape)
        cos = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-cos, axis=1, kind="stable")
        sims[start : start + len(block)] = np.take_along_axis(cos, order, axis=1)
        idx[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
    return sims, idx


def margin_candidates(
    src: np.ndarray, tgt: np.ndarray, k: int = DEFAULT_K
) -> tuple[list[Mined], list[Mined]]:
    """Each source sentence's best target and each target's best source by ratio margin, among
    their ``k`` nearest neighbours by cosine.

    Returns:
        (forward: one :class:`Mined` per source row, backward: one per target row).

    Raises:
        ValueError: an empty side, or vectors of different widths.
    """
    if len(src) == 0 or len(tgt) == 0:
        raise ValueError("nothing to mine: one of the two lists is empty")
    if src.shape[1] != tgt.shape[1]:
        raise ValueError(f"vectors of different widths: {src.shape[1]} and {tgt.shape[1]}")
    k = max(1, min(k, len(src), len(tgt)))
    fwd_cos, fwd_idx = knn(src, tgt, k)  # (n, k)
    bwd_cos, bwd_idx = knn(tgt, src, k)  # (m, k)
    src_mean = fwd_cos.mean(axis=1)  # (n,) how close each source already is to its neighbours
    tgt_mean = bwd_cos.mean(axis=1)  # (m,)
    # margin = cos / ((src_mean + tgt_mean) / 2): the paper's sum / 2k on each side
    fwd = fwd_cos / ((src_mean[:, None] + tgt_mean[fwd_idx]) / 2)  # (n, k)
    bwd = bwd_cos / ((tgt_mean[:, None] + src_mean[bwd_idx]) / 2)  # (m, k)
    f_best, b_best = fwd.argmax(axis=1), bwd.argmax(axis=1)
    forward = [
        Mined(i, int(fwd_idx[i, j]), float(fwd[i, j])) for i, j in enumerate(f_best.tolist())
    ]
    backward = [
        Mined(int(bwd_idx[i, j]), i, float(bwd[i, j])) for i, j in enumerate(b_best.tolist())
    ]
    return forward, backward


def select(forward: list[Mined], backward: list[Mined], strategy: str) -> list[Mined]:
    """The pairs ``strategy`` keeps from the two directions' best candidates, best margin first
    (no threshold yet)."""
    if strategy == "forward":
        chosen = list(forward)
    elif strategy == "backward":
        chosen = list(backward)
    elif strategy == "intersection":
        back = {(m.src, m.tgt) for m in backward}
        chosen = [m for m in forward if (m.src, m.tgt) in back]
    elif strategy == "max":
        chosen, used_src, used_tgt = [], set(), set()
        for m in sorted([*forward, *backward], key=lambda m: (-m.margin, m.src, m.tgt)):
            if m.src not in used_src and m.tgt not in used_tgt:
                chosen.append(m)
                used_src.add(m.src)
                used_tgt.add(m.tgt)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    return sorted(chosen, key=lambda m: (-m.margin, m.src, m.tgt))


def mine(
    src: np.ndarray,
    tgt: np.ndarray,
    k: int = DEFAULT_K,
    threshold: float = DEFAULT_THRESHOLD,
    strategy: str = DEFAULT_STRATEGY,
) -> list[Mined]:
    """The translation pairs between two lists of sentence vectors, best margin first.

    Args:
        src: ``(n, d)`` vectors of the source sentences.
        tgt: ``(m, d)`` vectors of the target sentences (same model, or models sharing a space).
        k: neighbours in the margin (clamped to the shorter list).
        threshold: the least margin kept.
        strategy: ``max``, ``intersection``, ``forward`` or ``backward`` (module docstring).

    Raises:
        ValueError: an empty list, different widths, an unknown strategy, ``k`` below 1.

    Example:
        >>> v = np.eye(3, dtype=np.float32)
        >>> [(m.src, m.tgt) for m in mine(v, v[[2, 0, 1]], k=2, threshold=1.0)]
        [(0, 1), (1, 2), (2, 0)]
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    forward, backward = margin_candidates(src, tgt, k)
    return [m for m in select(forward, backward, strategy) if m.margin >= threshold]


# ---- scoring against known pairs -------------------------------------------------------------
def pair_scores(mined: Sequence[Mined], gold: set[tuple[int, int]]) -> dict[str, float]:
    """Precision, recall and F1 of mined pairs against the planted ones (a pair is right when
    both its indices match a planted pair)."""
    right = sum((m.src, m.tgt) in gold for m in mined)
    precision = right / len(mined) if mined else 0.0
    recall = right / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "mined": len(mined)}


def best_threshold(candidates: Sequence[Mined], gold: set[tuple[int, int]]) -> tuple[float, float]:
    """(threshold, F1) of the margin cut that maximises F1 over ``candidates`` (an oracle: it
    looks at the answers, so it says how good a threshold could be, not what one gets)."""
    ordered = sorted(candidates, key=lambda m: -m.margin)
    right = np.cumsum([(m.src, m.tgt) in gold for m in ordered])  # right among the top i+1
    if not len(right) or not gold:
        return float("inf"), 0.0
    n = np.arange(1, len(ordered) + 1)
    f1 = 2 * right / (n + len(gold))  # 2PR/(P+R) with P = right/n, R = right/len(gold)
    best = int(f1.argmax())
    return ordered[best].margin, float(f1[best])


def xsim_error(forward: Sequence[Mined], gold_tgt: dict[int, int]) -> float:
    """xSIM-style error: the share of planted source sentences whose best target by margin
    (over the whole target list, distractors included) is not their translation."""
    wrong = sum(forward[i].tgt != j for i, j in gold_tgt.items())
    return wrong / len(gold_tgt) if gold_tgt else 0.0


def held_out_xsim(
    sets: dict[str, tuple[list[str], list[str]]],
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    k: int = DEFAULT_K,
) -> dict:
    """xSIM-style mining error on held-out pairs, from vectors already made: each language's
    translations against one pool of every language's English sentences (the other languages'
    are the distractors), best target by margin; wrong when that is not its own English
    sentence (by text, so an English sentence shared by two languages counts once). What
    ``kd report`` shows beside :func:`mining_benchmark`, whose distractors need more encoding.

    Args:
        sets: language -> (English sentences, translations), row-aligned.
        vectors: language -> (English vectors, translation vectors), by one model.

    Returns:
        ``{"pool": size, "k": k, "per_lang": {lang: {"queries", "xsim_error"}}, "mean": {...}}``.
    """
    texts: dict[str, np.ndarray] = {}
    for lang, (english, _x) in sets.items():
        for text, vec in zip(english, vectors[lang][0], strict=True):
            texts.setdefault(text, vec)
    if not texts:
        raise ValueError("held-out mining needs pairs in at least one language")
    pool_text = list(texts)
    pool = np.stack([texts[t] for t in pool_text])
    where = {t: i for i, t in enumerate(pool_text)}
    per_lang = {}
    for lang, (english, _x) in sets.items():
        forward, _backward = margin_candidates(vectors[lang][1], pool, k)
        gold = {i: where[text] for i, text in enumerate(english)}
        per_lang[lang] = {"queries": len(english), "xsim_error": xsim_error(forward, gold)}
    mean = float(np.mean([e["xsim_error"] for e in per_lang.values()]))
    return {"pool": len(pool), "k": k, "per_lang": per_lang, "mean": {"xsim_error": mean}}


# ---- the built test --------------------------------------------------------------------------
@dataclass
class MiningTest:
    """One language's test: foreign sentences (``src``) and English ones (``tgt``), shuffled,
    with the planted pairs as (src index, tgt index)."""

    lang: str
    src: list[str]
    tgt: list[str]
    gold: set[tuple[int, int]]


DISTRACTOR_SOURCES = ("flores", "pud", "xsid")
"""everyday-parallel's sources whose foreign sides serve as distractors. NTREX is left out: its
English is WMT newstest2019's source text, which news-english (the English distractors) holds."""


def _foreign_distractors(everyday: Path, lang: str) -> list[tuple[str, str]]:
    """(English key, foreign sentence) of every everyday pair in ``lang``, deduplicated."""
    seen, out = set(), []
    for source in DISTRACTOR_SOURCES:
        path = everyday / source / f"{lang}.tsv"
        if not path.is_file():
            continue
        for pair in read_tsv(path, lang):
            if pair.other not in seen:
                seen.add(pair.other)
                out.append((english_key(pair.en), pair.other))
    return out


def build_tests(
    data: Path,
    langs: Sequence[str] | None = None,
    planted: int = 200,
    foreign_distractors: int = 800,
    english_distractors: int = 1800,
    seed: int = 0,
) -> list[MiningTest]:
    """The built mining test of each language, from the shared data folder ``data``.

    For each language: ``planted`` Tatoeba dev pairs (``data/tatoeba-dev``, distinct on both
    sides), hidden among ``foreign_distractors`` foreign sentences from
    ``data/everyday-parallel`` and ``english_distractors`` English news sentences from
    ``data/news-english/en.txt`` (one English draw shared by every language). No distractor's
    translation is in the pool: a foreign distractor whose English side (compared as
    :func:`kd.data.pairs.english_key`) is among the English sentences is dropped.

    Raises:
        ValueError: a missing folder or file, or too few sentences for the sizes asked.
    """
    from kd.data.english_sources import read_english_file

    data = Path(data)
    tatoeba = read_tatoeba(data / "tatoeba-dev", list(langs) if langs else list(DEV_LANGS))
    rng = random.Random(seed)
    all_tatoeba_keys = {english_key(p.en) for pairs in tatoeba.values() for p in pairs}
    news = [s for s in read_english_file(data / "news-english" / "en.txt")]
    news = [s for s in news if english_key(s) not in all_tatoeba_keys]
    if len(news) < english_distractors:
        raise ValueError(f"only {len(news)} English distractors; asked for {english_distractors}")
    en_distractors = random.Random(f"{seed}:en").sample(news, english_distractors)
    tests = []
    for lang, pairs in tatoeba.items():
        keys, others, kept = set(), set(), []
        for p in pairs:  # distinct on both sides: one right answer per planted sentence
            key = english_key(p.en)
            if key not in keys and p.other not in others:
                keys.add(key)
                others.add(p.other)
                kept.append(p)
        if len(kept) < planted:
            raise ValueError(f"{lang}: only {len(kept)} distinct Tatoeba pairs; asked {planted}")
        chosen = random.Random(f"{seed}:{lang}").sample(kept, planted)
        tgt_keys = {english_key(p.en) for p in chosen} | {english_key(s) for s in en_distractors}
        pool = [
            x
            for key, x in _foreign_distractors(data / "everyday-parallel", lang)
            if key not in tgt_keys and key not in all_tatoeba_keys and x not in others
        ]
        if len(pool) < foreign_distractors:
            raise ValueError(
                f"{lang}: only {len(pool)} foreign distractors; asked for {foreign_distractors}"
            )
        x_distractors = random.Random(f"{seed}:{lang}:x").sample(pool, foreign_distractors)
        src = [p.other for p in chosen] + x_distractors
        tgt = [p.en for p in chosen] + en_distractors
        src_order, tgt_order = list(range(len(src))), list(range(len(tgt)))
        rng.shuffle(src_order)  # no position gives a pair away
        rng.shuffle(tgt_order)
        src_at = {old: new for new, old in enumerate(src_order)}
        tgt_at = {old: new for new, old in enumerate(tgt_order)}
        tests.append(
            MiningTest(
                lang=lang,
                src=[src[i] for i in src_order],
                tgt=[tgt[i] for i in tgt_order],
                gold={(src_at[i], tgt_at[i]) for i in range(planted)},
            )
        )
    return tests


def score_test(
    test: MiningTest,
    src: np.ndarray,
    tgt: np.ndarray,
    k: int = DEFAULT_K,
    threshold: float = DEFAULT_THRESHOLD,
    strategy: str = DEFAULT_STRATEGY,
    sweep: Sequence[float] | None = None,
) -> dict:
    """Precision, recall, F1 at ``threshold``, the xSIM-style error, and the oracle threshold
    with its F1, of one built test from its vectors; with ``sweep``, also the F1 at each of those
    thresholds (``f1_by_threshold``)."""
    forward, backward = margin_candidates(src, tgt, k)
    candidates = select(forward, backward, strategy)
    kept = [m for m in candidates if m.margin >= threshold]
    out = pair_scores(kept, test.gold)
    out["xsim_error"] = xsim_error(forward, dict(test.gold))
    out["oracle_threshold"], out["oracle_f1"] = best_threshold(candidates, test.gold)
    out["planted"], out["src_size"], out["tgt_size"] = len(test.gold), len(src), len(tgt)
    if sweep is not None:
        out["f1_by_threshold"] = [
            pair_scores([m for m in candidates if m.margin >= t], test.gold)["f1"] for t in sweep
        ]
    return out


def _encoder(model) -> Callable[[list[str]], np.ndarray]:
    """A text -> vectors function from an object with ``encode`` or a plain callable, memoised
    by sentence (the English distractors are shared by every language: encoded once)."""
    fn = model.encode if hasattr(model, "encode") else model
    memo: dict[str, np.ndarray] = {}

    def encode(texts: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in memo))
        if new:
            memo.update(zip(new, np.asarray(fn(new), dtype=np.float32), strict=True))
        return np.stack([memo[t] for t in texts])

    return encode


MEAN_KEYS = ("precision", "recall", "f1", "xsim_error", "oracle_f1")


def _sweep_means(per_lang: dict, mean: dict, sweep: list[float]) -> None:
    """The sweep's best threshold over all languages, and each language's leave-one-out F1."""
    table = np.array([r["f1_by_threshold"] for r in per_lang.values()])  # (langs, thresholds)
    best = int(table.mean(axis=0).argmax())
    mean["sweep_threshold"], mean["sweep_f1"] = sweep[best], float(table.mean(axis=0)[best])
    if len(table) < 2:  # no other language to choose a threshold on
        return
    for i, r in enumerate(per_lang.values()):
        others = np.delete(table, i, axis=0).mean(axis=0)
        j = int(others.argmax())
        r["loo_threshold"], r["loo_f1"] = sweep[j], float(table[i, j])
    mean["loo_f1"] = float(np.mean([r["loo_f1"] for r in per_lang.values()]))


def mining_benchmark(
    model,
    data: str | Path,
    langs: Sequence[str] | None = None,
    *,
    planted: int = 200,
    foreign_distractors: int = 800,
    english_distractors: int = 1800,
    k: int = DEFAULT_K,
    threshold: float | None = None,
    strategy: str = DEFAULT_STRATEGY,
    seed: int = 0,
    sweep: Sequence[float] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Mining F1 and xSIM-style error of ``model`` on the built test, JSON-ready.

    Args:
        model: anything with ``encode(list[str]) -> np.ndarray (n, d)`` (a
            :class:`kd.models.encoder.Encoder`), or such a function.
        data: the shared data folder (holding ``tatoeba-dev``, ``news-english`` and
            ``everyday-parallel``).
        langs: the languages (default: Tatoeba's 12 dev languages).
        threshold: the least margin (default: the one measured for the model, by its ``name``:
            :func:`default_threshold`).
        sweep: thresholds to score besides ``threshold``: then ``mean`` also holds the one
            threshold of them with the best mean F1 over the languages (``sweep_threshold``,
            ``sweep_f1``), and each language a leave-one-out F1 (``loo_f1``: at the threshold
            best over the *other* languages; what a threshold chosen this way gets on a
            language it never saw; its mean is ``mean["loo_f1"]``; with two languages or more).
        progress: called ``(lang, done, total)`` after each language.

    Returns:
        ``{"settings": {...}, "per_lang": {lang: {precision, recall, f1, xsim_error,
        oracle_threshold, oracle_f1, mined, planted, src_size, tgt_size}}, "mean": {precision,
        recall, f1, xsim_error, oracle_f1}}``.

    Raises:
        ValueError: missing data, or sizes the data cannot fill.
    """
    if threshold is None:
        threshold = default_threshold(getattr(model, "name", None))
    tests = build_tests(
        Path(data), langs, planted, foreign_distractors, english_distractors, seed=seed
    )
    encode = _encoder(model)
    per_lang = {}
    for done, test in enumerate(tests, start=1):
        src, tgt = encode(test.src), encode(test.tgt)
        per_lang[test.lang] = score_test(test, src, tgt, k, threshold, strategy, sweep)
        if progress:
            progress(test.lang, done, len(tests))
    mean = {key: float(np.mean([r[key] for r in per_lang.values()])) for key in MEAN_KEYS}
    if sweep is not None:
        _sweep_means(per_lang, mean, list(sweep))
    settings = {
        "planted": planted,
        "foreign_distractors": foreign_distractors,
        "english_distractors": english_distractors,
        "k": k,
        "threshold": threshold,
        "strategy": strategy,
        "seed": seed,
        "sweep": list(sweep) if sweep is not None else None,
    }
    return {"settings": settings, "per_lang": per_lang, "mean": mean}
