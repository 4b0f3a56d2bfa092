"""A run's data: pairs from its sources, held-out pairs split by English sentence, training items.

The one builder used by ``kd distill``, the app and the benchmarks:

1. :func:`load_pairs` reads the run's parallel sources (:mod:`kd.data.sources`): the ``--data``
   sources when given, else the default one (``KD_DATA``, an everyday Hub set, or the offline
   software-message catalogs, in that order).
2. :func:`build_dataset` holds out evaluation pairs **by English sentence** and samples
   ``max_pairs`` a language, by :mod:`kd.data.split`'s rules (the corpus on disk follows the same):
   everyday sets are multi-way parallel (one English sentence has a translation in most
   languages), so a held-out sentence leaves training in every language at once, never only in
   the one it was drawn for. The held-out pairs come from the same sources as the training
   pairs, so the teacher-alone baseline beside them means what it should.
3. The training *items* are every distinct English sentence (its target: itself) and every
   translation (its target: its English sentence), plus English-only rows (English without
   translation, from ``--english``: :mod:`kd.data.english_sources`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from kd.config import TrainConfig
from kd.data.english_sources import english_rows
from kd.data.pairs import Pair, english_key, read_tatoeba
from kd.data.sources import read_sources, run_specs
from kd.data.split import held_out_keys, hold_out, kept, sample_limits

log = logging.getLogger("kd")

EvalSets = dict[str, tuple[list[str], list[str]]]


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
    specs: list[str] = field(default_factory=list)  # the sources read (--data, or the default)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for lang in self.langs:
            counts[lang] = counts.get(lang, 0) + 1
        return counts


def load_pairs(cfg: TrainConfig, specs: list[str] | None = None) -> tuple[list[Pair], str | None]:
    """The run's parallel pairs and an optional note about them.

    ``--data`` sources, when given, replace the default source (name ``default`` among them to
    keep it); without them the default source is read when ``max_pairs`` asks for pairs at
    all. Streamed Hub sets stop after ``max_pairs + eval_pairs`` rows a language when
    ``max_pairs`` is set.
    """
    note = None
    if specs is None:
        specs, note = run_specs(cfg.data, cfg.langs, cfg.max_pairs)
    if not specs:
        return [], None
    per_lang = cfg.max_pairs + cfg.eval_pairs if cfg.max_pairs else 0
    pairs = read_sources(specs, cfg.langs, per_lang=per_lang, seed=cfg.seed)
    return [p for p in pairs if p.lang in cfg.langs or p.other is None], note


def build_dataset(cfg: TrainConfig, pairs: list[Pair], english_rows: list[str]) -> Dataset:
    """Hold out ``eval_pairs`` per language (by English sentence), sample ``max_pairs`` per
    language from the rest, and build the items: :mod:`kd.data.split`'s rules, as the corpus on disk
    follows them."""
    held = held_out_keys(pairs, cfg.langs, cfg.eval_pairs)
    limits = sample_limits(pairs, held, cfg.max_pairs, cfg.seed)
    eval_sets: EvalSets = {}
    english: dict[str, int] = {}  # distinct English sentences, in order of first appearance
    x_texts: list[str] = []
    x_target: list[int] = []
    x_langs: list[str] = []
    sources: dict[str, int] = {}
    for p in pairs:
        if english_key(p.en) in held:
            hold_out(eval_sets, p, cfg.eval_pairs)
            continue
        if p.other is None:
            english.setdefault(p.en, len(english))
            continue
        if not kept(p, limits, cfg.seed):
            continue
        x_target.append(english.setdefault(p.en, len(english)))
        x_texts.append(p.other)
        x_langs.append(p.lang)
        sources[p.source] = sources.get(p.source, 0) + 1
    for s in english_rows:
        if english_key(s) not in held:
            english.setdefault(s, len(english))
    if not english:
        raise ValueError("no training data left after holding out the evaluation pairs")
    present = set(x_langs)
    for lang in cfg.langs:
        if lang not in present:
            log.warning("no parallel pairs for '%s': it is trained through English rows only", lang)
    return Dataset(
        english=list(english),
        texts=list(english) + x_texts,
        target=np.array(list(range(len(english))) + x_target),
        langs=["en"] * len(english) + x_langs,
        eval_sets={lang: eval_sets[lang] for lang in cfg.langs if lang in eval_sets},
        sources=sources,
    )


def tatoeba_sets(directory, langs: list[str] | None = None, max_pairs: int = 0) -> EvalSets:
    """Evaluation sets from a Tatoeba-format folder: language -> (English, translations), the
    first ``max_pairs`` pairs of each language (0: all). The one builder of ``kd eval``'s and
    ``kd plot``'s sets, as :func:`build_dataset` is of a run's held-out sets.

    Example:
        >>> from pathlib import Path
        >>> dev = Path(__file__).parents[3] / "shared" / "data" / "tatoeba-dev"
        >>> len(tatoeba_sets(dev, ["de"], 5)["de"][0]) if dev.is_dir() else 5
        5
    """
    sets: EvalSets = {}
    for lang, pairs in read_tatoeba(directory, langs).items():
        pairs = pairs[:max_pairs] if max_pairs else pairs
        sets[lang] = ([p.en for p in pairs], [p.other for p in pairs])
    return sets


def read_dataset(cfg: TrainConfig) -> Dataset:
    """Everything :func:`kd.train.run.distill` trains and evaluates on, for ``cfg``."""
    specs, note = run_specs(cfg.data, cfg.langs, cfg.max_pairs)
    pairs, _ = load_pairs(cfg, specs)
    rows = english_rows(cfg.english, cfg.english_rows, seed=cfg.seed)
    data = build_dataset(cfg, pairs, rows)
    data.note, data.specs = note, specs
    return data
