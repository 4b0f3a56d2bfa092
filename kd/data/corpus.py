"""A run's data on disk: pairs streamed from their sources into files that are read, not loaded.

The streaming training path (``--stream``, ``torchrun``: :class:`kd.train.feed.CorpusFeed`) uses
this instead of :func:`kd.data.dataset.read_dataset`, whose lists hold every sentence in memory.
Here the sources are read one pair at a time (:func:`iter_source_pairs`), in three passes that apply
:mod:`kd.data.split`'s rules (as the in-memory :func:`kd.data.dataset.build_dataset` does, so both
paths hold the same items in the same order): the held-out English sentences, each language's sample
limit under ``max_pairs``, then the training items, written as UTF-8 blobs plus offsets: every
distinct English sentence (target: itself) and every translation (target: its English sentence),
English-only rows included.

What stays in memory per pair is a few fixed-size numbers (a 64-bit hash while deduplicating,
offsets in memory-mapped arrays afterwards), never the text. The folder is keyed by the sources
(paths, sizes, modification times) and the settings that shape it, built once and reused by
later runs and by ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kd.config import TrainConfig
from kd.data.english_sources import english_rows
from kd.data.pairs import Pair, english_key, iter_pairs
from kd.data.sources import (
    EVERYDAY_DIR,
    EVERYDAY_SPEC,
    GETTEXT_SPEC,
    file_lang,
    folder_files,
    read_source,
    run_specs,
    tatoeba_langs,
)
from kd.data.split import held_out_keys, hold_out, kept, sample_limits, sentence_hash
from kd.io import atomic_directory, atomic_write_json, cache_dir

log = logging.getLogger("kd")

VERSION = 2
"""Bump when the layout or the rules change: it invalidates every corpus folder."""

LANGS_FILE, EVAL_FILE, INFO_FILE = "langs.json", "eval.json", "info.json"


# ---- reading sources one pair at a time ---------------------------------------------------------
def iter_source_pairs(
    specs: list[str],
    langs: list[str],
    per_lang: int = 0,
    seed: int = 0,
    spill: Path | None = None,
) -> Iterator[Pair]:
    """The pairs of ``specs`` (``--data`` forms), streamed where the source allows.

    Files and folders of ``.tsv``/``.jsonl`` stream line by line (:func:`kd.data.pairs.iter_pairs`);
    ``hf:`` sets, Tatoeba folders and ``gettext`` go through :func:`kd.data.sources.read_source`
    (an ``hf:`` set is streamed from the Hub and stops at ``per_lang`` a language; what one such
    call returns is held in memory, so cap it with ``--max-pairs``). With ``spill`` (a folder),
    those are read once and written there, and a second pass streams them from it.
    """
    wanted = set(langs)
    for number, spec in enumerate(specs):
        path = Path(spec.strip()).expanduser()
        plain = not spec.startswith("hf:") and spec.strip() != GETTEXT_SPEC
        prefix = ""
        if spec.strip() == EVERYDAY_SPEC:  # kd's own set: its files, labelled as read_source does
            path, prefix = EVERYDAY_DIR, f"{EVERYDAY_SPEC}/"
        if plain and path.is_file():
            only = langs[0] if len(langs) == 1 else None
            files = [(path, file_lang(path, only), path.name)]
        elif plain and path.is_dir() and not tatoeba_langs(path):
            files = [
                (f, file_lang(f), prefix + f.relative_to(path).as_posix())
                for f in folder_files(path)
            ]
            if not files:
                read_source(spec, langs)  # its one-line message about an empty folder
        else:
            saved = spill / f"source-{number}.jsonl" if spill is not None else None
            if saved is not None and saved.exists():
                with saved.open(encoding="utf-8") as fh:
                    yield from (Pair(*json.loads(line)) for line in fh)
                continue
            pairs = read_source(spec, langs, per_lang, seed)
            if saved is not None:
                with saved.open("w", encoding="utf-8") as fh:
                    for q in pairs:
                        fh.write(json.dumps([q.en, q.other, q.lang, q.source]) + "\n")
            yield from pairs
            continue
        for file, lang, source in files:
            is_json = file.suffix.lower() in (".jsonl", ".json")
            if lang is not None and lang not in wanted and not is_json:
                continue
            for pair in iter_pairs(file, lang, source):
                if pair.lang == "en" or pair.lang in wanted:
                    yield pair


def _source_stamp(specs: list[str]) -> list:
    """What identifies the sources' content cheaply: each file's path, size and mtime."""
    stamp = []
    for spec in specs:
        path = EVERYDAY_DIR if spec == EVERYDAY_SPEC else Path(spec).expanduser()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            try:
                st = f.stat()
                stamp.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                stamp.append([spec])
    return stamp


# ---- reading without mapping --------------------------------------------------------------------
class PreadArray:
    """A 1-D ``.npy`` array on disk, read with ``pread`` on demand.

    A memory map would do the same job, but every page it touches (and the pages the kernel
    reads ahead) count as this process's resident memory until the map is dropped, so one
    pass over a large corpus would grow the peak with the corpus; ``pread`` leaves those pages
    to the kernel's page cache.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
        >>> np.save(path, np.arange(10, 20))
        >>> a = PreadArray(path)
        >>> len(a), int(a[3]), a[2:5].tolist(), a.take([9, 0]).tolist()
        (10, 13, [12, 13, 14], [19, 10])
    """

    def __init__(self, path: str | Path) -> None:
        with open(path, "rb") as fh:
            fmt = np.lib.format
            version = fmt.read_magic(fh)
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            self.offset = fh.tell()
        if not shape or fortran:
            raise ValueError(f"{path}: expected a C-ordered array of rows")
        self.dtype, self.n, self.row = np.dtype(dtype), shape[0], tuple(shape[1:])
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.row, dtype=np.int64))
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)

    def __len__(self) -> int:
        return self.n

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (read-only)."""
        size = self.row_bytes
        data = os.pread(self.fd, (stop - start) * size, self.offset + start * size)
        return np.frombuffer(data, dtype=self.dtype).reshape(-1, *self.row)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            return self.read(start, stop)[::step]
        return self.read(int(key), int(key) + 1)[0]

    def take(self, idx) -> np.ndarray:
        """``array[idx]``: one read of the span when it is dense, else one read an item."""
        idx = np.asarray(idx, dtype=np.int64)
        if not len(idx):
            return np.empty((0, *self.row), dtype=self.dtype)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        if hi - lo <= 4 * len(idx):
            return self.read(lo, hi)[idx - lo]
        return np.stack([self.read(int(i), int(i) + 1)[0] for i in idx])


# ---- the corpus folder --------------------------------------------------------------------------
class Corpus:
    """Training items on disk: ``texts(idx)``, ``target`` (item -> English id), ``english(ids)``.

    Items ``0 .. n_english-1`` are the distinct English sentences (English id = item id), the
    rest the translations, in stream order.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        load = lambda name: PreadArray(self.root / f"{name}.npy")  # noqa: E731
        self._en_off, self._x_off = load("en_off"), load("x_off")
        self._first = load("english_first")  # (U,) en-blob entry of each distinct sentence
        self._x_target, self._x_lang = load("x_target"), load("x_lang")
        # Texts are read with pread, not memory-mapped: pages a read touched stay in the page
        # cache, not in this process's resident memory, however much of the corpus is read.
        self._en_fd = os.open(self.root / "en.bin", os.O_RDONLY)
        self._x_fd = os.open(self.root / "x.bin", os.O_RDONLY)
        self.langs: list[str] = json.loads((self.root / LANGS_FILE).read_text())
        self.eval_sets = {
            k: (v[0], v[1]) for k, v in json.loads((self.root / EVAL_FILE).read_text()).items()
        }
        self.info = json.loads((self.root / INFO_FILE).read_text())
        self.n_english = len(self._first)
        self.n_items = self.n_english + len(self._x_target)

    def __del__(self) -> None:
        for fd in (getattr(self, "_en_fd", None), getattr(self, "_x_fd", None)):
            if fd is not None:
                os.close(fd)

    def text(self, i: int) -> str:
        if i < self.n_english:
            fd, off, j = self._en_fd, self._en_off, int(self._first[i])
        else:
            fd, off, j = self._x_fd, self._x_off, i - self.n_english
        a, b = int(off[j]), int(off[j + 1])
        return os.pread(fd, b - a, a).decode("utf-8")

    def texts(self, idx) -> list[str]:
        """Texts of items ``idx``; a range is read in a few large reads."""
        if isinstance(idx, range) and idx.step == 1 and len(idx) > 1:
            return self._span(idx.start, idx.stop)
        return [self.text(int(i)) for i in idx]

    def _span(self, a: int, b: int) -> list[str]:
        out = []
        if a < self.n_english:  # English items: their entries in the en blob, in order
            entries = self._first.read(a, min(b, self.n_english))
            out += self._blob_texts(self._en_fd, self._en_off, entries)
        if b > self.n_english:
            j0, j1 = max(a, self.n_english) - self.n_english, b - self.n_english
            out += self._blob_texts(self._x_fd, self._x_off, np.arange(j0, j1))
        return out

    @staticmethod
    def _blob_texts(fd: int, off: PreadArray, entries: np.ndarray) -> list[str]:
        lo, hi = int(entries[0]), int(entries[-1]) + 2
        bounds = off.read(lo, hi) if hi - lo <= 4 * len(entries) + 2 else None
        if bounds is None:
            return [os.pread(fd, int(off[e + 1] - off[e]), int(off[e])).decode() for e in entries]
        start = int(bounds[0])
        blob = os.pread(fd, int(bounds[-1]) - start, start)
        return [
            blob[int(bounds[e - lo]) - start : int(bounds[e - lo + 1]) - start].decode()
            for e in entries
        ]

    @property
    def english_hash(self) -> np.ndarray:
        """(U,) uint64: :func:`sentence_hash` of each distinct English sentence (read whole)."""
        return np.load(self.root / "english_hash.npy")

    def english(self, ids) -> list[str]:
        return self.texts(ids)

    def target(self, idx: np.ndarray) -> np.ndarray:
        """English id of each item: (len(idx),) int64."""
        idx = np.asarray(idx, dtype=np.int64)
        out = idx.copy()
        x = idx >= self.n_english
        out[x] = self._x_target.take(idx[x] - self.n_english)
        return out

    def summary(self) -> dict[str, int]:
        return dict(self.info["summary"])

    @property
    def key(self) -> str:
        return self.root.name


def corpus_key(cfg: TrainConfig, specs: list[str]) -> str:
    shape = {
        "version": VERSION,
        "sources": _source_stamp(specs),
        "specs": specs,
        "langs": cfg.langs,
        "max_pairs": cfg.max_pairs,
        "eval_pairs": cfg.eval_pairs,
        "english_rows": cfg.english_rows,
        "english": cfg.english,
        "english_sources": _source_stamp([e for e in cfg.english if Path(e).expanduser().exists()]),
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:20]


def open_corpus(cfg: TrainConfig, build: bool = True) -> tuple[Corpus | None, str | None]:
    """The run's corpus folder, built from the sources when missing and ``build`` is set
    (``None`` when it is missing and another process builds it)."""
    specs, note = run_specs(cfg.data, cfg.langs, cfg.max_pairs)
    root = cache_dir("corpus") / corpus_key(cfg, specs)
    if (root / INFO_FILE).exists():
        return Corpus(root), note
    if not build:
        return None, note
    build_corpus(cfg, specs, root)
    return Corpus(root), note


def build_corpus(cfg: TrainConfig, specs: list[str], root: Path) -> None:
    """Pass over the sources twice and write the corpus folder ``root`` (atomically)."""
    per_lang = cfg.max_pairs + cfg.eval_pairs if cfg.max_pairs else 0
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".spill-") as spill:

        def stream() -> Iterator[Pair]:
            if not specs:
                return iter(())
            return iter_source_pairs(specs, cfg.langs, per_lang, cfg.seed, Path(spill))

        held = held_out_keys(stream(), cfg.langs, cfg.eval_pairs)
        limits = sample_limits(stream(), held, cfg.max_pairs, cfg.seed)
        _write_corpus(cfg, specs, root, stream, held, limits)


def _write_corpus(
    cfg: TrainConfig, specs: list[str], root: Path, stream, held: set[str], limits: dict
) -> None:
    """Pass 3: the training items and held-out pairs into the corpus folder."""
    lang_ids = {lang: i for i, lang in enumerate(["en", *cfg.langs])}
    eval_sets: dict[str, tuple[list[str], list[str]]] = {}
    taken: dict[str, int] = {}
    sources: dict[str, int] = {}
    en_off, x_off = array("q", [0]), array("q", [0])
    en_hash, x_entry, x_lang = array("Q"), array("q"), array("B")
    with atomic_directory(root) as tmp:
        with open(tmp / "en.bin", "wb") as en_fh, open(tmp / "x.bin", "wb") as x_fh:

            def add_english(text: str) -> int:
                data = text.encode("utf-8")
                en_fh.write(data)
                en_off.append(en_off[-1] + len(data))
                en_hash.append(sentence_hash(text))
                return len(en_hash) - 1

            for p in stream():
                key = english_key(p.en)
                if key in held:
                    hold_out(eval_sets, p, cfg.eval_pairs)
                    continue
                if p.other is None:
                    add_english(p.en)
                    continue
                if not kept(p, limits, cfg.seed):
                    continue
                taken[p.lang] = taken.get(p.lang, 0) + 1
                sources[p.source] = sources.get(p.source, 0) + 1
                x_entry.append(add_english(p.en))
                data = p.other.encode("utf-8")
                x_fh.write(data)
                x_off.append(x_off[-1] + len(data))
                x_lang.append(lang_ids[p.lang])
            rows = english_rows(cfg.english, cfg.english_rows, seed=cfg.seed)
            for s in rows:
                if english_key(s) not in held:
                    add_english(s)
        if not en_hash:
            raise ValueError("no training data left after holding out the evaluation pairs")
        for lang in cfg.langs:
            if not taken.get(lang):
                log.warning(
                    "no parallel pairs for '%s': it is trained through English rows only", lang
                )
        # Deduplicate the English side by its hash: distinct sentences in order of first
        # appearance; each translation's target is the id of its sentence.
        hashes = np.frombuffer(en_hash, dtype=np.uint64)
        uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # distinct sentences by first appearance
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        entry_target = rank[inverse.reshape(-1)]  # (entries,) English id of each entry
        x_target = entry_target[np.frombuffer(x_entry, dtype=np.int64)] if x_entry else []
        np.save(tmp / "en_off.npy", np.frombuffer(en_off, dtype=np.int64))
        np.save(tmp / "x_off.npy", np.frombuffer(x_off, dtype=np.int64))
        np.save(tmp / "english_first.npy", first[order].astype(np.int64))
        np.save(tmp / "english_hash.npy", uniq[order])
        np.save(tmp / "x_target.npy", np.asarray(x_target, dtype=np.int64))
        np.save(tmp / "x_lang.npy", np.frombuffer(x_lang, dtype=np.uint8))
        summary = {"en": len(uniq)}
        del hashes, uniq, first, inverse, order, rank, entry_target
        for lang in cfg.langs:
            if taken.get(lang):
                summary[lang] = taken[lang]
        atomic_write_json(tmp / LANGS_FILE, ["en", *cfg.langs])
        atomic_write_json(
            tmp / EVAL_FILE, {lang: eval_sets[lang] for lang in cfg.langs if lang in eval_sets}
        )
        atomic_write_json(
            tmp / INFO_FILE,
            {"summary": summary, "sources": sources, "specs": specs, "version": VERSION},
        )
