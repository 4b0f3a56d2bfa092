"""A sentence-embedding index in one SQLite file, searched with the ``sqlite-vec`` extension.

The file holds four tables:

- ``kd_meta``: which model built the index (id, weight fingerprint, dimension, and the teacher
  it was distilled from, if any) and how vectors are normalised. An index is never queried with
  vectors of another model: :func:`check_query_model` refuses them, naming the index's model.
- ``kd_rows``: one row per sentence: text, language, source (e.g. a file name) and an optional
  caller id, unique on (text, lang, source), so that indexing the same text twice adds nothing.
- ``kd_vectors``: each row's unit-length float32 vector: the exact cosine scores come from here.
- ``kd_bits``: a ``vec0`` virtual table of the vectors' sign bits, with two partition keys:
  the language, and a shard (0 to ``shards - 1``, 32 by default, recorded in ``kd_meta``) drawn
  from a hash of the row id.

Search is two steps: ``vec0`` finds about ``candidates`` rows near the query by Hamming distance
of sign bits (48 bytes a row for 384 dimensions, so a scan is cheap), then those rows' float
vectors are scored exactly by cosine and the best ``k`` returned. ``exact=True`` skips the first
step and scores every vector (slower, for checking the shortcut).

The first step asks every shard for its ``ceil(candidates / shards)`` nearest rows, in one SQL
statement, rather than asking the whole table for ``candidates``: sqlite-vec 0.1.9 picks a
chunk's nearest ``k`` rows by ``k`` passes over the chunk, so its KNN costs about ``k`` times the
rows scanned, and 32 queries of ``k = 7`` over 1/32 of the rows each cost ~1/32 of one query of
``k = 200`` over all of them. Shards are drawn at random, so the union is nearly the global
Hamming top ``candidates``. Where some shard holds fewer rows than it was asked for (a small
index or language) and the union falls short of ``candidates``, one unsharded query is run
instead, so a small index gets exactly the global top ``candidates``.

Each :meth:`VectorStore.add` call is one transaction: a crash (even ``kill -9``) leaves the rows
of earlier calls and none of the interrupted one. The journal is SQLite's write-ahead log, so a
search can read while an indexing run writes.

The stdlib ``sqlite3`` is used when it can load extensions; where Python was built without that
(``sqlite3.Connection.enable_load_extension`` missing), ``apsw`` is used instead.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = "2"  # 2: kd_bits gained the shard partition key
STUDENT_NOTE = "querying a teacher index with its distilled student: same space"
TEACHER_NOTE = "querying a distilled student's index with its teacher: same space"
MAX_K = 4096  # vec0 returns at most this many neighbours per query
DEFAULT_CANDIDATES = 320  # 10 per shard: recall@10 0.99 on 44k real MiniLM vectors
SHARDS = 32  # kd_bits shards of a new index; an index records its own count
CHUNK_SIZE = 512  # vec0 rows per chunk: a shard of a 100k index is ~6 chunks


def shard_of(rowid: int, shards: int) -> int:
    """The ``kd_bits`` shard of a row: a multiplicative hash of its id, so that rows in any
    periodic pattern of ids (two languages alternating, say) still spread over every shard.

    Example:
        >>> sorted({shard_of(i, 4) for i in range(1, 100, 2)})  # odd ids only
        [0, 1, 2, 3]
    """
    return ((rowid * 0x9E3779B1) & 0xFFFFFFFF) * shards >> 32


@dataclass(frozen=True)
class ModelStamp:
    """What identifies the model behind a set of vectors.

    Attributes:
        model_id: the id or directory the model was loaded from.
        fingerprint: a hash of its weights (``Encoder.fingerprint()``).
        dim: vector width.
        teacher_id: for a distilled student, the teacher it learnt from (``kd_config.json``).
        teacher_fingerprint: that teacher's fingerprint, where the run recorded it.

    Example:
        >>> ModelStamp("sentence-transformers/all-MiniLM-L6-v2", "0123abcd", 384).dim
        384
    """

    model_id: str
    fingerprint: str
    dim: int
    teacher_id: str | None = None
    teacher_fingerprint: str | None = None


@dataclass(frozen=True)
class Row:
    """A sentence to index: its text, language code, where it came from, and an optional id."""

    text: str
    lang: str
    source: str
    id: str | None = None


@dataclass(frozen=True)
class Hit:
    """One search result: the row and its cosine similarity to the query."""

    score: float
    text: str
    lang: str
    source: str
    id: str | None
    rowid: int


def check_query_model(index: ModelStamp, query: ModelStamp) -> str | None:
    """Whether vectors of ``query`` may search an index built by ``index``.

    The same weights may; so may a student distilled from the index's model (its vectors live
    in the teacher's space), and the teacher of the student that built the index.

    Returns:
        ``None`` for the same model, else a note saying which two models are mixed.

    Raises:
        ValueError: the models differ in any other way; the message names the index's model.

    Example:
        >>> t = ModelStamp("teacher", "aaaa", 384)
        >>> s = ModelStamp("student-dir", "bbbb", 384, teacher_id="teacher")
        >>> check_query_model(t, s)
        'querying a teacher index with its distilled student: same space'
    """
    if query.fingerprint == index.fingerprint and query.dim == index.dim:
        return None
    if query.dim == index.dim:
        if _learnt_from(query, index):
            return STUDENT_NOTE
        if _learnt_from(index, query):
            return TEACHER_NOTE
    built = f"this index was built with '{index.model_id}' (fingerprint {index.fingerprint})"
    if query.model_id == index.model_id:
        raise ValueError(
            f"{built}, but '{query.model_id}' now has fingerprint {query.fingerprint}: the "
            "model changed since; re-index into a new --db"
        )
    why = f"'{query.model_id}' is another model ({query.dim}-d, fingerprint {query.fingerprint})"
    if query.teacher_id == index.model_id:
        why = (
            f"'{query.model_id}' was distilled from another copy of '{index.model_id}' "
            f"(teacher fingerprint {query.teacher_fingerprint})"
        )
    raise ValueError(f"{built}; {why}; query with --model {index.model_id} (or leave it out)")


def weights_of(fingerprint: str) -> str:
    """The weights' part of a fingerprint: a fast path (``kd.models.fast``) appends its form
    (``...-onnx-int8``), which keeps cached vectors apart but is the same teacher to learn from."""
    return fingerprint.split("-", 1)[0]


def _learnt_from(student: ModelStamp, teacher: ModelStamp) -> bool:
    if student.teacher_id is None:
        return False
    if student.teacher_fingerprint is not None:
        return weights_of(student.teacher_fingerprint) == weights_of(teacher.fingerprint)
    return student.teacher_id == teacher.model_id  # older runs recorded the id only


# ---- connections -----------------------------------------------------------------------------
def pick_backend(stdlib=sqlite3) -> str:
    """``"sqlite3"`` when the stdlib module can load extensions, else ``"apsw"``.

    Raises:
        ValueError: neither can load ``sqlite-vec`` here.

    Example:
        >>> pick_backend() in ("sqlite3", "apsw")
        True
    """
    if hasattr(stdlib.Connection, "enable_load_extension"):
        return "sqlite3"
    try:
        import apsw  # noqa: F401
    except ImportError:
        raise ValueError(
            "this Python's sqlite3 cannot load extensions, which sqlite-vec needs: pip install apsw"
        ) from None
    return "apsw"


def _db_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import apsw

        errors.append(apsw.Error)
    except ImportError:
        pass
    return tuple(errors)


@contextlib.contextmanager
def _db_errors_as_value_errors(path: Path, what: str) -> Iterator[None]:
    """Turn the backend's own exceptions into a ValueError naming the file."""
    try:
        yield
    except _db_errors() as err:
        raise ValueError(f"{path}: {what} ({err})") from None


def connect(path: str | Path, create: bool = False, backend: str | None = None):
    """Open ``path`` with ``sqlite-vec`` loaded, in autocommit mode (transactions are explicit).

    Raises:
        ValueError: the file is missing (and ``create`` is false) or the extension cannot load.
    """
    import sqlite_vec

    path = Path(path)
    if not create and not path.is_file():
        raise ValueError(f"{path}: no such index; build one with: kd index --model M --db {path}")
    backend = backend or pick_backend()
    try:
        if backend == "sqlite3":
            db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            db.enable_load_extension(True)
            db.load_extension(sqlite_vec.loadable_path())
            db.enable_load_extension(False)
        else:
            import apsw

            flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
            db = apsw.Connection(str(path), flags=flags)
            db.enable_load_extension(True)
            db.load_extension(sqlite_vec.loadable_path())
            db.enable_load_extension(False)
        db.execute("PRAGMA busy_timeout = 10000")
    except _db_errors() as err:
        raise ValueError(f"{path}: cannot open as an index ({err})") from None
    return db


# ---- the store ---------------------------------------------------------------------------------
class VectorStore:
    """Sentences and their vectors in one SQLite file; see the module docstring.

    Open with :meth:`create` to add rows, with :meth:`open` to search; both check the model.

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/demo.db"
        >>> stamp = ModelStamp("demo-model", "f00d", 8)
        >>> with VectorStore.create(path, stamp) as store:
        ...     store.add([Row("Hello.", "en", "demo")], np.ones((1, 8), np.float32))
        1
        >>> with VectorStore.open(path, stamp) as store:
        ...     store.search(np.ones((1, 8), np.float32), k=1)[0][0].text
        'Hello.'
    """

    def __init__(
        self, path: Path, db, model: ModelStamp, note: str | None = None, shards: int = SHARDS
    ) -> None:
        self.path = path
        self.db = db
        self.model = model  # the model that built the index
        self.note = note  # set when the query model differs from it in an allowed way
        self.shards = shards  # kd_bits shards, as recorded in kd_meta
        self._sql: dict[tuple[bool, bool], str] = {}  # by (filtered by language, sharded)

    # ---- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, model: ModelStamp) -> VectorStore:
        """Open an index to add rows to, creating it for ``model`` if the file does not exist.

        Raises:
            ValueError: the file is not an index, or an index built by another model.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path}: is a directory; give a file name for --db")
        if model.dim < 1:
            raise ValueError(f"model dimension must be positive, got {model.dim}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"{path}: cannot create its directory ({err.strerror})") from None
        db = connect(path, create=True)
        try:
            with _db_errors_as_value_errors(path, "not an index kd can write to"):
                if not _has_table(db, "kd_meta"):
                    if _has_any_table(db):
                        raise ValueError(
                            f"{path}: an SQLite file of something else; choose a new --db"
                        )
                    _create_schema(db, model)
            built, shards = _read_model(path, db)
            if built.fingerprint != model.fingerprint or built.dim != model.dim:
                raise ValueError(
                    f"{path}: this index was built with '{built.model_id}' (fingerprint "
                    f"{built.fingerprint}); add to it with --model {built.model_id}, or choose "
                    "a new --db"
                )
        except BaseException:
            db.close()
            raise
        return cls(path, db, built, shards=shards)

    @classmethod
    def open(cls, path: str | Path, model: ModelStamp) -> VectorStore:
        """Open an index to search it with vectors of ``model``.

        Raises:
            ValueError: no such index, or ``model`` does not share the index's space (see
                :func:`check_query_model`).
        """
        path = Path(path)
        db = connect(path)
        try:
            built, shards = _read_model(path, db)
            try:
                note = check_query_model(built, model)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        except BaseException:
            db.close()
            raise
        return cls(path, db, built, note, shards)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writing -----------------------------------------------------------------------------
    def add(self, rows: Sequence[Row], vectors: np.ndarray) -> int:
        """Add rows and their vectors ``(n, dim)`` in one transaction; rows already there are
        skipped (the first one indexed wins). Returns how many rows were new.

        Raises:
            ValueError: a row is malformed, or the vectors do not match the rows or the model.
        """
        vectors = self._unit(vectors)
        if len(rows) != len(vectors):
            raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors; give one per row")
        for row in rows:
            if not row.text or not row.lang or not row.source:
                raise ValueError(f"a row needs text, lang and source, got {row!r:.120}")
        bits = np.packbits(vectors > 0, axis=1)  # (n, ceil(dim / 8))
        added = 0
        with _db_errors_as_value_errors(self.path, "cannot write to the index"):
            self.db.execute("BEGIN IMMEDIATE")
        try:
            for row, vec, bit in zip(rows, vectors, bits, strict=True):
                found = self.db.execute(
                    "INSERT INTO kd_rows(text, lang, source, ext_id) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(text, lang, source) DO NOTHING RETURNING id",
                    (row.text, row.lang, row.source, row.id),
                ).fetchall()
                if found:
                    self._insert_vectors(found[0][0], row.lang, vec, bit)
                    added += 1
            self.db.execute("COMMIT")
        except BaseException as err:
            self.db.execute("ROLLBACK")
            if isinstance(err, _db_errors()):
                raise ValueError(f"{self.path}: cannot write to the index ({err})") from None
            raise
        return added

    def _insert_vectors(self, rowid: int, lang: str, vec: np.ndarray, bit: np.ndarray) -> None:
        self.db.execute(
            "INSERT INTO kd_vectors(id, embedding) VALUES (?, ?)", (rowid, vec.tobytes())
        )
        self.db.execute(
            "INSERT INTO kd_bits(rowid, lang, shard, embedding) VALUES (?, ?, ?, vec_bit(?))",
            (rowid, lang, shard_of(rowid, self.shards), bit.tobytes()),
        )

    def missing(self, rows: Sequence[Row]) -> list[Row]:
        """The rows not in the index yet (duplicates within ``rows`` once), in input order."""
        seen: set[tuple[str, str, str]] = set()
        out = []
        for row in rows:
            key = (row.text, row.lang, row.source)
            if key in seen:
                continue
            seen.add(key)
            hit = self.db.execute(
                "SELECT 1 FROM kd_rows WHERE text = ? AND lang = ? AND source = ?", key
            ).fetchall()
            if not hit:
                out.append(row)
        return out

    # ---- reading -----------------------------------------------------------------------------
    def count(self, lang: str | None = None) -> int:
        """How many rows the index holds (in one language)."""
        if lang is None:
            return self.db.execute("SELECT count(*) FROM kd_rows").fetchall()[0][0]
        sql = "SELECT count(*) FROM kd_rows WHERE lang = ?"
        return self.db.execute(sql, (lang,)).fetchall()[0][0]

    def langs(self) -> dict[str, int]:
        """Rows per language, most first."""
        rows = self.db.execute(
            "SELECT lang, count(*) FROM kd_rows GROUP BY lang ORDER BY count(*) DESC, lang"
        ).fetchall()
        return dict(rows)

    def search(
        self,
        query_vectors: np.ndarray,
        k: int = 10,
        lang: str | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """The ``k`` rows nearest to each query vector, best first, scored by cosine.

        Args:
            query_vectors: ``(n, dim)`` vectors of the model the store was opened with.
            k: results per query, 1 to 4096.
            lang: only rows in this language.
            candidates: rows the sign-bit search hands to exact rescoring (at least ``k``;
                rounded up to a whole number per shard, so 200 asks 7 of each of 32 shards).
            exact: score every stored vector instead (a full scan).

        Raises:
            ValueError: ``k`` out of range, or vectors of the wrong width.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be a whole number >= 1, got {candidates!r}")
        queries = self._unit(query_vectors)
        pool = min(MAX_K, max(k, candidates))
        with _db_errors_as_value_errors(self.path, "cannot search the index"):
            return [self._search_one(q, k, lang, pool, exact) for q in queries]

    def _search_one(
        self, q: np.ndarray, k: int, lang: str | None, pool: int, exact: bool
    ) -> list[Hit]:
        if exact:
            return self._exact(q, k, lang)
        bits = np.packbits(q > 0).tobytes()
        per_shard = -(-pool // self.shards)
        by_lang = (lang,) if lang is not None else ()
        sql = self._knn_sql(by_lang=lang is not None, sharded=True)
        got = self.db.execute(sql, (bits, per_shard, *by_lang)).fetchall()
        if len(got) < pool:  # some shard ran short: ask the whole table instead
            sql = self._knn_sql(by_lang=lang is not None, sharded=False)
            got = self.db.execute(sql, (bits, pool, *by_lang)).fetchall()
        if not got:
            return []
        mat = np.frombuffer(b"".join(r[1] for r in got), dtype="<f4").reshape(len(got), -1)
        scores = mat @ q  # (n,): cosine, as both sides are unit length
        top = np.argsort(-scores, kind="stable")[:k]
        return self._hits([(got[i][0], float(scores[i])) for i in top])

    def _knn_sql(self, by_lang: bool, sharded: bool) -> str:
        """One statement: the sign-bit KNN (``?1`` query bits, ``?2`` rows asked for, of each
        shard when ``sharded``, ``?3`` language), joined to the rows' float vectors."""
        key = (by_lang, sharded)
        if key not in self._sql:
            where = "embedding MATCH vec_bit(?1) AND k = ?2" + (" AND lang = ?3" if by_lang else "")
            knn = f"SELECT rowid FROM kd_bits WHERE {where}"
            if sharded:
                knn = " UNION ALL ".join(
                    f"SELECT * FROM ({knn} AND shard = {s})" for s in range(self.shards)
                )
            self._sql[key] = (
                f"SELECT v.id, v.embedding FROM ({knn}) AS c JOIN kd_vectors AS v ON v.id = c.rowid"
            )
        return self._sql[key]

    def _exact(self, q: np.ndarray, k: int, lang: str | None) -> list[Hit]:
        """Score every stored vector with sqlite-vec's cosine distance: the reference answer."""
        sql = "SELECT v.id, 1.0 - vec_distance_cosine(v.embedding, ?) AS score FROM kd_vectors v"
        args: tuple = (q.tobytes(),)
        if lang is not None:
            sql += " JOIN kd_rows r ON r.id = v.id WHERE r.lang = ?"
            args = (*args, lang)
        scored = self.db.execute(sql + " ORDER BY score DESC, v.id LIMIT ?", (*args, k))
        return self._hits(scored.fetchall())

    def _hits(self, scored: list[tuple[int, float]]) -> list[Hit]:
        """Attach each row's text and metadata to (rowid, score) pairs, keeping their order."""
        if not scored:
            return []
        meta = {
            r[0]: r[1:]
            for r in self.db.execute(
                "SELECT id, text, lang, source, ext_id FROM kd_rows "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps([rowid for rowid, _ in scored]),),
            ).fetchall()
        }
        return [Hit(float(score), *meta[rowid], rowid=rowid) for rowid, score in scored]

    def _unit(self, vectors: np.ndarray) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.model.dim:
            raise ValueError(
                f"vectors of shape {arr.shape}, but this index holds {self.model.dim}-d vectors "
                f"of '{self.model.model_id}'; pass an (n, {self.model.dim}) array"
            )
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if not np.all(np.isfinite(arr)) or np.any(norms == 0):
            raise ValueError("a vector is zero or not finite, so it has no cosine similarity")
        return np.ascontiguousarray(arr / norms, dtype="<f4")


# ---- schema ------------------------------------------------------------------------------------
def index_info(path: str | Path) -> dict:
    """The model that built an index, and its rows per language, without loading any model.

    Example:
        >>> index_info("missing.db")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: missing.db: no such index; build one with: kd index --model M --db missing.db
    """
    db = connect(path)
    try:
        model, _ = _read_model(Path(path), db)
        langs = VectorStore(Path(path), db, model).langs()
    finally:
        db.close()
    return {"model": model, "langs": langs, "rows": sum(langs.values())}


def _has_table(db, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?"
    return bool(db.execute(sql, (name,)).fetchall())


def _has_any_table(db) -> bool:
    return bool(db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall())


def _create_schema(db, model: ModelStamp) -> None:
    bits = -(-model.dim // 8) * 8  # vec0 bit columns come in whole bytes
    meta = {
        "schema_version": SCHEMA_VERSION,
        "model_id": model.model_id,
        "fingerprint": model.fingerprint,
        "dim": str(model.dim),
        "normalisation": "l2: vectors stored at unit length; score = cosine similarity",
        "teacher_id": model.teacher_id or "",
        "teacher_fingerprint": model.teacher_fingerprint or "",
        "shards": str(SHARDS),
    }
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE kd_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE kd_rows(id INTEGER PRIMARY KEY, text TEXT NOT NULL, "
            "lang TEXT NOT NULL, source TEXT NOT NULL, ext_id TEXT, UNIQUE(text, lang, source))"
        )
        db.execute("CREATE INDEX kd_rows_lang ON kd_rows(lang)")
        db.execute(
            "CREATE TABLE kd_vectors(id INTEGER PRIMARY KEY REFERENCES kd_rows(id), "
            "embedding BLOB NOT NULL)"
        )
        db.execute(
            "CREATE VIRTUAL TABLE kd_bits USING vec0(lang TEXT PARTITION KEY, "
            f"shard INTEGER PARTITION KEY, embedding bit[{bits}], chunk_size={CHUNK_SIZE})"
        )
        db.executemany("INSERT INTO kd_meta(key, value) VALUES (?, ?)", list(meta.items()))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _read_model(path: Path, db) -> tuple[ModelStamp, int]:
    """The model that built the index, and its ``kd_bits`` shard count."""
    try:
        if not _has_table(db, "kd_meta"):
            raise ValueError(f"{path}: not a kd index (no kd_meta table); build one with kd index")
        meta = dict(db.execute("SELECT key, value FROM kd_meta").fetchall())
    except _db_errors() as err:
        raise ValueError(f"{path}: not a kd index ({err})") from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: index format {meta.get('schema_version')!r}, this kd reads "
            f"{SCHEMA_VERSION!r}; re-index into a new --db (kd index --db NEW.db ...)"
        )
    stamp = ModelStamp(
        model_id=meta["model_id"],
        fingerprint=meta["fingerprint"],
        dim=int(meta["dim"]),
        teacher_id=meta.get("teacher_id") or None,
        teacher_fingerprint=meta.get("teacher_fingerprint") or None,
    )
    return stamp, int(meta["shards"])
