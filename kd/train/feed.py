"""A run's data as the training loop reads it (:class:`kd.train.loop.Feed`): in memory or on disk.

Both hold the same items in the same order (every distinct English sentence, then every
translation; :mod:`kd.data.dataset` and :mod:`kd.data.corpus` follow one rule for what is held out
and what is sampled) and give the loop the same three things: each item's English sentence id, the
teacher's vectors of those sentences, and the student's runner over the items (its frozen layers
cached). They differ in where the data lives:

- :class:`MemoryFeed` (``kd distill``): lists of sentences (:func:`kd.data.dataset.read_dataset`),
  the teacher's vectors as one float32 array cached on disk by sentence list, the frozen
  layers' states in memory;
- :class:`CorpusFeed` (``--stream`` and ``torchrun``): the corpus folder (:mod:`kd.data.corpus`),
  the teacher's vectors in a float16 cache keyed by sentence, the frozen layers' states in
  parts on disk, the encoding shared out between the processes: peak memory does not grow with
  the corpus.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from kd.config import TrainConfig
from kd.data.corpus import Corpus, open_corpus
from kd.data.dataset import Dataset, EvalSets, read_dataset
from kd.models.encoder import Encoder
from kd.train.disk_cache import make_stream_runner, teacher_bank
from kd.train.distributed import World, barrier, broadcast_object
from kd.train.parts import teacher_vectors
from kd.train.student_forward import make_runner

Progress = Callable[[int, int], None]


class MemoryFeed:
    """The in-memory data of a run (:class:`kd.data.dataset.Dataset`)."""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.n_items = len(data.texts)
        self.n_english = len(data.english)
        self.eval_sets: EvalSets = data.eval_sets
        self.sources = data.sources
        self.specs = data.specs
        self.note = data.note
        self._vectors: np.ndarray | None = None

    @classmethod
    def open(cls, cfg: TrainConfig, world: World, say: Callable[[str], None]) -> MemoryFeed:
        say("reading parallel data")
        feed = cls(read_dataset(cfg))
        if feed.note:
            say(feed.note)
        return feed

    def summary(self) -> dict[str, int]:
        return self.data.summary()

    def encode_teacher(
        self, teacher: Encoder, precision: str, world: World, progress: Progress | None = None
    ) -> None:
        self._vectors = teacher_vectors(
            teacher, self.data.english, progress=progress, precision=precision
        )

    def teacher(self, ids: np.ndarray) -> np.ndarray:
        return self._vectors[ids]

    def target(self, idx: np.ndarray) -> np.ndarray:
        return self.data.target[idx]

    def runner(
        self,
        student: Encoder,
        freeze_layers: int,
        max_length: int,
        world: World,
        dtype: torch.dtype,
        progress: Progress | None = None,
    ):
        texts = self.data.texts
        return make_runner(student, texts, freeze_layers, max_length, progress, dtype)


class CorpusFeed:
    """The corpus folder of a run (:class:`kd.data.corpus.Corpus`), shared by its processes."""

    def __init__(self, corpus: Corpus, note: str | None = None) -> None:
        self.corpus = corpus
        self.n_items = corpus.n_items
        self.n_english = corpus.n_english
        self.eval_sets: EvalSets = corpus.eval_sets
        self.sources = corpus.info["sources"]
        self.specs = list(corpus.info.get("specs", []))
        self.note = note
        self._bank = None

    @classmethod
    def open(cls, cfg: TrainConfig, world: World, say: Callable[[str], None]) -> CorpusFeed:
        """The corpus folder: built by the first process of each machine, then opened by all."""
        say("reading parallel data as a stream, into the corpus cache")
        corpus, note, error = None, None, None
        if world.local_rank == 0:
            try:
                corpus, note = open_corpus(cfg)
            except ValueError as err:  # tell the others, so that every process ends with it
                error = str(err)
        error = broadcast_object(world, error) if world.parallel else error
        if error is not None:
            raise ValueError(error)
        barrier(world)
        if corpus is None:
            corpus, note = open_corpus(cfg, build=False)
        if note:
            say(note)
        return cls(corpus, note)

    def summary(self) -> dict[str, int]:
        return self.corpus.summary()

    def encode_teacher(
        self, teacher: Encoder, precision: str, world: World, progress: Progress | None = None
    ) -> None:
        self._bank = teacher_bank(teacher, self.corpus, precision, world, progress)

    def teacher(self, ids: np.ndarray) -> np.ndarray:
        return self._bank.get(ids)

    def target(self, idx: np.ndarray) -> np.ndarray:
        return self.corpus.target(idx)

    def runner(
        self,
        student: Encoder,
        freeze_layers: int,
        max_length: int,
        world: World,
        dtype: torch.dtype,
        progress: Progress | None = None,
    ):
        return make_stream_runner(
            student, self.corpus, freeze_layers, max_length, world, dtype, progress
        )
