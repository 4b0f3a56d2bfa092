"""A run's data: pairs from its sources, held-out pairs split by English sentence, training items.

The one builder used by ``kd distill``, the app and the benchmarks:

1. :func:`load_pairs` reads the run's parallel sources (:mod:`kd.sources`): the ``--data``
   sources when given, else the default one (``KD_DATA``, an everyday Hub set, or the offline
   software-message catalogs, in that order).
2. :func:`build_dataset` holds out evaluation pairs **by English sentence**: everyday sets are
   multi-way parallel (one English sentence has a translation in most languages), so a held-out
   sentence leaves training in every language at once, never only in the one it was drawn for.
   The held-out pairs come from the same sources as the training pairs, so the teacher-alone
   baseline beside them means what it should.
3. The training *items* are every distinct English sentence (its target: itself) and every
   translation (its target: its English sentence), plus English-only rows (English without
   translation, from ``--english``: :mod:`kd.english_sources`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import numpy as np

from kd.config import TrainConfig
from kd.data import Pair, english_key

log = logging.getLogger("kd")

EvalSets = dict[str, tuple[list[str], list[str]]]
DEFAULT_SPEC = "default"  # in --data: the default source, as when no --data is given


@dataclass
class Dataset:
    """Training items and held-out evaluation pairs of one run."""

    english: list[str]  # distinct English sentences: the teacher's inputs
    texts: list[str]  # student inputs: every English sentence, then every translation
    target: np.ndarray  # (n_items,) index into ``english`` of each item's teacher vector
    langs: list[str]  # (n_items,) language of each item
    eval_sets: EvalSets = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)  # training pairs per source
    note: str | None = None  # one line about the data worth telling the user

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for lang in self.langs:
            counts[lang] = counts.get(lang, 0) + 1
        return counts


def load_pairs(cfg: TrainConfig) -> tuple[list[Pair], str | None]:
    """The run's parallel pairs and an optional note about them.

    ``--data`` sources, when given, replace the default source (name ``default`` among them to
    keep it); without them the default source is read when ``max_pairs`` asks for pairs at
    all. Streamed Hub sets stop after ``max_pairs + eval_pairs`` rows a language when
    ``max_pairs`` is set.
    """
    from kd.sources import default_sources, read_sources

    specs = list(cfg.data) or ([DEFAULT_SPEC] if cfg.max_pairs else [])
    note = None
    if DEFAULT_SPEC in specs:  # "default" stands for the default source, beside the others
        default, note = default_sources(cfg.langs)
        specs = list(
            dict.fromkeys(x for s in specs for x in (default if s == DEFAULT_SPEC else [s]))
        )
    if not specs:
        return [], None
    per_lang = cfg.max_pairs + cfg.eval_pairs if cfg.max_pairs else 0
    pairs = read_sources(specs, cfg.langs, per_lang=per_lang, seed=cfg.seed)
    return [p for p in pairs if p.lang in cfg.langs or p.other is None], note


def held_out_english(
    translations: list[Pair], langs: list[str], eval_pairs: int, seed: int = 0
) -> set[str]:
    """English keys to hold out so that each language gets about ``eval_pairs`` test pairs.

    Keys are drawn in a random order fixed by ``seed``; a key is taken while any language that
    has a pair with it still needs pairs. Languages with no more than ``eval_pairs`` pairs are
    not evaluated (all their pairs train).

    Example:
        >>> ps = [Pair(f"S {i}.", f"T {i}.", lang, "x") for i in range(10) for lang in ("de", "fr")]
        >>> len(held_out_english(ps, ["de", "fr"], 3))
        3
    """
    if not eval_pairs:
        return set()
    by_key: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for p in translations:
        by_key.setdefault(english_key(p.en), []).append(p.lang)
        counts[p.lang] = counts.get(p.lang, 0) + 1
    need = {lang: eval_pairs for lang in langs if counts.get(lang, 0) > eval_pairs}
    keys = sorted(by_key)
    random.Random(seed).shuffle(keys)
    held: set[str] = set()
    for key in keys:
        if not need:
            break
        wanted = [lang for lang in by_key[key] if lang in need]
        if not wanted:
            continue
        held.add(key)
        for lang in wanted:
            need[lang] -= 1
            if need[lang] <= 0:
                del need[lang]
    return held


def build_dataset(cfg: TrainConfig, pairs: list[Pair], english_rows: list[str]) -> Dataset:
    """Hold out ``eval_pairs`` per language (by English sentence) and build the items.

    ``max_pairs`` (when set) caps each language's training pairs, drawn at random with the
    run's seed from what is left after the hold-out.
    """
    translations = [p for p in pairs if p.other is not None]
    held = held_out_english(translations, cfg.langs, cfg.eval_pairs, cfg.seed)
    eval_sets: EvalSets = {}
    by_lang: dict[str, list[Pair]] = {}
    for p in translations:
        if english_key(p.en) in held:
            en, x = eval_sets.setdefault(p.lang, ([], []))
            if len(en) < cfg.eval_pairs:
                en.append(p.en)
                x.append(p.other)
        else:
            by_lang.setdefault(p.lang, []).append(p)
    train: list[Pair] = []
    for lang in cfg.langs:
        lang_pairs = by_lang.get(lang, [])
        if not lang_pairs:
            log.warning("no parallel pairs for '%s': it is trained through English rows only", lang)
            continue
        if cfg.max_pairs and len(lang_pairs) > cfg.max_pairs:
            lang_pairs = random.Random(f"{cfg.seed}:{lang}").sample(lang_pairs, cfg.max_pairs)
        train += lang_pairs
    rows = [p.en for p in pairs if p.other is None] + list(english_rows)
    rows = [s for s in rows if english_key(s) not in held]

    english = list(dict.fromkeys([p.en for p in train] + rows))
    if not english:
        raise ValueError("no training data left after holding out the evaluation pairs")
    index = {s: i for i, s in enumerate(english)}
    sources: dict[str, int] = {}
    for p in train:
        sources[p.source] = sources.get(p.source, 0) + 1
    return Dataset(
        english=english,
        texts=english + [p.other for p in train],
        target=np.array(list(range(len(english))) + [index[p.en] for p in train]),
        langs=["en"] * len(english) + [p.lang for p in train],
        eval_sets={lang: eval_sets[lang] for lang in cfg.langs if lang in eval_sets},
        sources=sources,
    )


def tatoeba_sets(directory, langs: list[str] | None = None, max_pairs: int = 0) -> EvalSets:
    """Evaluation sets from a Tatoeba-format folder: language -> (English, translations), the
    first ``max_pairs`` pairs of each language (0: all). The one builder of ``kd eval``'s and
    ``kd plot``'s sets, as :func:`build_dataset` is of a run's held-out sets.

    Example:
        >>> from pathlib import Path
        >>> dev = Path(__file__).parents[2] / "shared" / "data" / "tatoeba-dev"
        >>> len(tatoeba_sets(dev, ["de"], 5)["de"][0]) if dev.is_dir() else 5
        5
    """
    from kd.data import read_tatoeba

    sets: EvalSets = {}
    for lang, pairs in read_tatoeba(directory, langs).items():
        pairs = pairs[:max_pairs] if max_pairs else pairs
        sets[lang] = ([p.en for p in pairs], [p.other for p in pairs])
    return sets


def read_dataset(cfg: TrainConfig) -> Dataset:
    """Everything :func:`kd.train.distill` trains and evaluates on, for ``cfg``."""
    from kd.english_sources import english_rows

    pairs, note = load_pairs(cfg)
    rows = english_rows(cfg.english, cfg.english_rows, seed=cfg.seed)
    data = build_dataset(cfg, pairs, rows)
    data.note = note
    return data
