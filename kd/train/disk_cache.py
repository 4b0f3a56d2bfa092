"""What the streaming path computes once and keeps on disk: teacher vectors, frozen-layer states.

- :class:`TeacherCache`: the teacher's unit vectors in float16, keyed by the English sentence
  (:func:`kd.data.split.sentence_hash`) inside a folder named by the teacher's fingerprint and
  precision. Segments of sorted keys plus a memory-mapped ``(n, D)`` array; a run looks its
  sentences up, encodes only the missing ones and adds a segment, so later epochs, later runs
  and other corpora sharing sentences reuse them. float16 keeps 3 significant digits, plenty
  for unit vectors (cosine error ~1e-4).
- :class:`DiskPrefixCache`: the outputs of the student's frozen bottom layers for every item,
  written in parts of :data:`PART` items and read back through memory maps, so memory does not
  grow with the corpus. With ``--freeze-layers 0`` there is no such cache (:class:`
  StreamFullForward` runs the whole student and keeps only token counts on disk).

Both are filled in parallel: the missing work is split between the processes of a machine
(``local_rank`` of ``local_size``), each writing its own files atomically; then every process
reads all of them. A killed run leaves whole files only, and the next one computes what is
missing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kd.data.corpus import Corpus, PreadArray
from kd.io import atomic_write_bytes, atomic_write_npy, cache_dir
from kd.models.encoder import Encoder, encode_precision
from kd.train.distributed import World, barrier, shard_range
from kd.train.student_forward import FrozenPrefixCache, layer_stack

PART = 4096
"""Items per file of the frozen-layer cache and of the token counts."""
CHUNK = 8192
"""Sentences the teacher encodes per segment of its cache."""

Progress = Callable[[int, int], None]


# ---- teacher vectors ----------------------------------------------------------------------------
class TeacherCache:
    """float16 teacher vectors on disk, keyed by sentence hash (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.reload()

    def reload(self) -> None:
        self.keys: list[np.ndarray] = []
        self.vecs: list[PreadArray] = []
        for k in sorted(self.root.glob("*.keys.npy")):
            v = k.with_name(k.name.replace(".keys.npy", ".vecs.npy"))
            try:
                keys, vecs = np.load(k), PreadArray(v)
            except (OSError, ValueError):
                continue  # a segment half-written by a killed run: its sentences are recomputed
            if len(keys) == len(vecs):
                self.keys.append(keys)
                self.vecs.append(vecs)

    def locate(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment and row of each hash: ``(seg, row)``, ``seg == -1`` where it is missing."""
        seg = np.full(len(hashes), -1, dtype=np.int32)
        row = np.zeros(len(hashes), dtype=np.int64)
        for s, keys in enumerate(self.keys):
            pos = np.searchsorted(keys, hashes)
            pos = np.minimum(pos, len(keys) - 1)
            hit = (seg < 0) & (keys[pos] == hashes)
            seg[hit], row[hit] = s, pos[hit]
        return seg, row

    def add(self, hashes: np.ndarray, vecs: np.ndarray) -> None:
        """Write one segment (vectors first, keys last: the keys file marks it whole)."""
        order = np.argsort(hashes, kind="stable")
        keys = np.ascontiguousarray(hashes[order])
        name = hashlib.sha256(keys.tobytes()).hexdigest()[:16] + f"-{os.getpid()}"
        atomic_write_npy(self.root / f"{name}.vecs.npy", vecs[order].astype(np.float16))
        atomic_write_npy(self.root / f"{name}.keys.npy", keys)


class TeacherBank:
    """The run's teacher vectors, English id -> unit vector, read from a :class:`TeacherCache`."""

    def __init__(self, cache: TeacherCache, seg: np.ndarray, row: np.ndarray) -> None:
        self.cache, self.seg, self.row = cache, seg, row
        self.dim = cache.vecs[0].row[0] if cache.vecs else 0

    def get(self, ids) -> np.ndarray:
        """Vectors of English ids ``ids``: (len(ids), D) float32."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        segs = self.seg[ids]
        for s in np.unique(segs):
            at = np.flatnonzero(segs == s)
            rows = self.row[ids[at]]
            order = np.argsort(rows)  # memory maps read fastest in order
            out[at[order]] = self.cache.vecs[int(s)].take(rows[order])
        return out


def teacher_bank(
    teacher: Encoder,
    corpus: Corpus,
    precision: str,
    world: World,
    progress: Progress | None = None,
) -> TeacherBank:
    """The corpus's English sentences encoded by the teacher, computing only what the cache
    lacks; the missing sentences are shared out between the processes of each machine."""
    computed = encode_precision(precision, teacher.device_name)
    cache = TeacherCache(cache_dir("teacher-f16", f"{teacher.fingerprint()}-{computed}"))
    hashes = np.asarray(corpus.english_hash)
    seg, _row = cache.locate(hashes)
    missing = np.flatnonzero(seg < 0)
    a, b = shard_range(len(missing), world.local_size, world.local_rank)
    mine = missing[a:b]
    for start in range(0, len(mine), CHUNK):
        ids = mine[start : start + CHUNK]
        vecs = teacher.encode(corpus.english(ids), precision=precision)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        cache.add(hashes[ids], vecs)
        if progress:
            progress(min(start + CHUNK, len(mine)), len(mine))
    barrier(world)
    cache.reload()
    seg, row = cache.locate(hashes)
    cache.keys = []  # looked up once: 8 bytes a sentence less to hold through the run
    if (seg < 0).any():
        raise ValueError(
            f"{cache.root}: {int((seg < 0).sum())} teacher vectors are missing after encoding "
            "(is the cache folder shared with another machine that is still writing it?)"
        )
    return TeacherBank(cache, seg, row)


# ---- the student's side: frozen-layer states or token counts, in parts -------------------------
def _parts(n_items: int) -> list[tuple[int, int]]:
    return [(a, min(a + PART, n_items)) for a in range(0, n_items, PART)]


def _my_parts(n_items: int, world: World) -> list[tuple[int, int]]:
    return [p for i, p in enumerate(_parts(n_items)) if i % world.local_size == world.local_rank]


def _folder(kind: str, encoder: Encoder, corpus: Corpus, *settings) -> Path:
    key = json_key(encoder.fingerprint(), corpus.key, *settings)
    return cache_dir(kind, key)


def json_key(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


class DiskPrefixCache(FrozenPrefixCache):
    """:class:`kd.train.student_forward.FrozenPrefixCache` whose states live in files on disk."""

    def __init__(
        self,
        encoder: Encoder,
        corpus: Corpus,
        k: int,
        max_length: int,
        world: World,
        dtype: torch.dtype = torch.float32,
        progress: Progress | None = None,
    ) -> None:
        self._bind(encoder, k)
        self.dtype = dtype
        raw = np.int16 if dtype in (torch.bfloat16, torch.float16) else np.float32
        root = _folder("frozen", encoder, corpus, k, max_length, str(dtype))
        mine = _my_parts(corpus.n_items, world)
        for done, (a, b) in enumerate(mine, start=1):
            lengths_file = root / f"{a:012d}.len.npy"
            if lengths_file.exists():
                continue
            lengths, data = self._compute(corpus, a, b, max_length, raw)
            atomic_write_bytes(root / f"{a:012d}.bin", data)
            atomic_write_npy(lengths_file, lengths)  # written last: marks the part whole
            if progress:
                progress(done, len(mine))
        barrier(world)
        self._open(root, corpus.n_items, raw)

    def _compute(self, corpus: Corpus, a: int, b: int, max_length: int, raw) -> tuple:
        texts = corpus.texts(range(a, b))
        chunks: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                idx = order[start : start + 64]
                batch = self.encoder.tokenize([texts[i] for i in idx], max_length)
                hidden = self.bottom_forward(batch)  # (B, T, H)
                for row, i in enumerate(idx):
                    n = int(batch["attention_mask"][row].sum())
                    chunks[i] = hidden[row, :n].to(self.dtype).cpu()
        lengths = np.array([c.shape[0] for c in chunks], dtype=np.int32)
        flat = torch.cat(chunks)
        array = flat.view(torch.int16).numpy() if raw is np.int16 else flat.numpy()
        return lengths, np.ascontiguousarray(array).tobytes()

    def _open(self, root: Path, n_items: int, raw) -> None:
        self._maps, self._offsets = [], []
        lengths = []
        dim = self.encoder.transformer.config.hidden_size
        for a, _b in _parts(n_items):
            n = np.load(root / f"{a:012d}.len.npy")
            lengths.append(n)
            # Within one part of PART items, token offsets fit in 32 bits.
            self._offsets.append(
                np.concatenate([[0], np.cumsum(n, dtype=np.int64)]).astype(np.int32)
            )
            self._maps.append(os.open(root / f"{a:012d}.bin", os.O_RDONLY))  # read by pread
        self._lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)
        self._raw, self._row_bytes = raw, np.dtype(raw).itemsize * dim

    def __del__(self) -> None:
        for fd in getattr(self, "_maps", []):
            os.close(fd)

    def lengths(self) -> np.ndarray:
        return self._lengths

    def item_states(self, i: int) -> torch.Tensor:
        p, j = divmod(i, PART)
        a, b = int(self._offsets[p][j]), int(self._offsets[p][j + 1])
        data = os.pread(self._maps[p], (b - a) * self._row_bytes, a * self._row_bytes)
        rows = torch.from_numpy(np.frombuffer(data, dtype=self._raw).reshape(b - a, -1).copy())
        return rows.view(self.dtype) if self._raw is np.int16 else rows  # (n_i, H)


class StreamFullForward:
    """The whole student on each batch, tokenizing the batch's texts as it goes; the token
    counts (for batching by length) are computed once and kept on disk."""

    def __init__(
        self,
        encoder: Encoder,
        corpus: Corpus,
        max_length: int,
        world: World,
        progress: Progress | None = None,
    ) -> None:
        self.encoder, self.corpus, self.max_length = encoder, corpus, max_length
        root = _folder("token-counts", encoder, corpus, max_length)
        mine = _my_parts(corpus.n_items, world)
        for done, (a, b) in enumerate(mine, start=1):
            path = root / f"{a:012d}.len.npy"
            if not path.exists():
                texts = [encoder.prefix + t for t in corpus.texts(range(a, b))]
                ids = encoder.tokenizer(texts, truncation=True, max_length=max_length)
                atomic_write_npy(path, np.array([len(x) for x in ids["input_ids"]], np.int32))
            if progress:
                progress(done, len(mine))
        barrier(world)
        parts = [np.load(root / f"{a:012d}.len.npy") for a, _b in _parts(corpus.n_items)]
        self._lengths = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def lengths(self) -> np.ndarray:
        return self._lengths

    def embed(self, idx: np.ndarray) -> torch.Tensor:
        batch = self.encoder.tokenize(self.corpus.texts(idx), self.max_length)
        return self.encoder(batch)


def make_stream_runner(
    encoder: Encoder,
    corpus: Corpus,
    freeze_layers: int,
    max_length: int,
    world: World,
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
) -> DiskPrefixCache | StreamFullForward:
    """The frozen-layer cache on disk (``freeze_layers > 0``), or the full forward (0)."""
    stack = layer_stack(encoder.transformer)
    if freeze_layers > 0 and stack is not None:
        k = min(freeze_layers, len(stack[1]))
        return DiskPrefixCache(encoder, corpus, k, max_length, world, dtype, progress)
    return StreamFullForward(encoder, corpus, max_length, world, progress)
