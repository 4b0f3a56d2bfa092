"""The Search tab: a query in any language against a collection in many, under each model.

The demo collection (``assets/search_collection.tsv``) is indexed with :mod:`kd.search.store` once
per model, on first use, into kd's cache folder. The teacher and the untrained student each search
their own index. A visitor's distilled student searches the index of the teacher it was distilled
from: it lives in that teacher's space, which is the point of distilling (an English model's index,
searched in any language).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

import gradio as gr

from webapp import settings
from webapp.guards import shown_model
from webapp.model_cache import checked_model, encode, get_encoder
from webapp.prebuilt import prebuilt_for
from webapp.session import Visitor, markdown_literal, user_error
from webapp.settings import MAX_LINE_CHARS, MODEL_LABELS, SEARCH_COLLECTION, SEARCH_QUERIES

MAX_K = 20
ALL_LANGS = "all languages"
RESULT_COLUMNS = ["rank", "score", "lang", "sentence", "id"]

_build_locks: dict[str, threading.Lock] = {}
_build_guard = threading.Lock()


def read_collection(path: Path = SEARCH_COLLECTION):
    """The rows of the demo collection (an ``id<TAB>lang<TAB>text`` table, as ``kd index``
    reads it).

    Raises:
        ValueError: a malformed line (the message gives its number).
    """
    from kd.search.index import read_rows

    return read_rows(path)


def collection_langs(path: Path = SEARCH_COLLECTION) -> list[str]:
    """The collection's languages, English first, then by code."""
    langs = {row.lang for row in read_collection(path)}
    return sorted(langs, key=lambda lang: (lang != "en", lang))


def example_queries(path: Path = SEARCH_QUERIES, n: int = 8) -> list[str]:
    """A few of the team's test queries (``lang<TAB>query<TAB>expected_id``), one per language."""
    seen, out = set(), []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] not in seen:
            seen.add(parts[0])
            out.append(parts[1])
    return out[:n]


def demo_index(model: str, path: Path = SEARCH_COLLECTION, visitor: Visitor | None = None) -> Path:
    """The demo collection's index for ``model``, built on first use (a few seconds).

    The file name carries the collection's hash and the model's weight fingerprint (of its
    canonical name: one folder typed three ways is one index), so an edited collection or
    another model gets its own index. Indexing is one transaction per batch and idempotent, so
    a build cut short is completed by the next call. The indexes together stay under
    ``settings.SEARCH_CACHE_BYTES``: the least recently used go first.
    """
    from kd.io import cache_dir
    from kd.search.index import index_rows
    from webapp.budget import prune_cache

    encoder = get_encoder(model, visitor=visitor)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    db = cache_dir("search") / f"demo-{digest}-{encoder.fingerprint()}.db"
    with _build_guard:
        lock = _build_locks.setdefault(str(db), threading.Lock())
    with lock:  # two visitors asking at once: one builds, the other then finds it complete
        index_rows(encoder, db, read_collection(path), batch_size=128)
        with contextlib.suppress(OSError):  # used now (its access time; the pruning below
            os.utime(db, ns=(time.time_ns(), db.stat().st_mtime_ns))  # goes by last use)
        prune_cache(db.parent, settings.SEARCH_CACHE_BYTES, "demo-*", keep=(db,))
    return db


def _query_text(query: str | None) -> str:
    from kd.data.pairs import clean_text

    text = clean_text(query or "")
    if not text:
        raise ValueError("the query is empty; type a sentence or a question in any language")
    if len(text) > MAX_LINE_CHARS:
        raise ValueError(f"the query has {len(text):,} characters; the limit is {MAX_LINE_CHARS:,}")
    return text


def _lang_filter(lang: str | None) -> str | None:
    from kd.langs import normalize_lang

    if not lang or lang == ALL_LANGS:
        return None
    code = normalize_lang(lang)
    have = collection_langs()
    if code not in have:
        raise ValueError(f"the collection has no '{code}' sentences; it has {', '.join(have)}")
    return code


def _hits_frame(hits):
    import pandas as pd

    rows = [
        {"rank": i, "score": round(h.score, 2), "lang": h.lang, "sentence": h.text, "id": h.id}
        for i, h in enumerate(hits, start=1)
    ]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _search(
    index_model: str, query_model: str, text: str, k: int, lang: str | None, public, visitor=None
):
    """(hits, note) for one model: ``query_model``'s vector against ``index_model``'s index."""
    from kd.search.index import model_stamp
    from kd.search.store import VectorStore

    db = demo_index(index_model, visitor=visitor)
    stamp = model_stamp(
        get_encoder(query_model, public=public, visitor=visitor if public else None)
    )
    vector = encode(query_model, [text], public=public)
    with VectorStore.open(db, stamp) as store:
        return store.search(vector, k=k, lang=lang)[0], store.note


def search_tables(query: str, k, lang, teacher: str, student: str, visitor: Visitor | None):
    """:func:`search` for the page: the pre-built student's and the visitor's tables shown only
    when they hold results (no pre-built student for this teacher, no run yet: no empty table;
    the note says why)."""
    notes, teacher_hits, untrained_hits, *others = search(query, k, lang, teacher, student, visitor)
    shown = [gr.Dataframe(frame, visible=not frame.empty) for frame in others]
    return notes, teacher_hits, untrained_hits, *shown


def search(query: str, k, lang: str | None, teacher: str, student: str, visitor: Visitor | None):
    """Rank the demo collection's sentences for one query under each model.

    Returns:
        (Markdown summary, DataFrame for the teacher, for the untrained student, for the
        pre-built student (empty with another teacher than its own), for the visitor's
        distilled student: columns rank, score, lang, sentence, id; the last is empty until
        the visitor has distilled a student).

    Raises:
        gr.Error: an empty or oversized query, a bad ``k`` or language, a model that fails.
    """
    try:
        text = _query_text(query)
        if k is None or float(k) != int(float(k)) or not 1 <= int(float(k)) <= MAX_K:
            raise ValueError(f"'results per model' must be a whole number from 1 to {MAX_K}")
        k, code = int(float(k)), _lang_filter(lang)
        # The page's one check, as in every tab: allowed, and no other visitor's folder.
        teacher, student = checked_model(teacher, visitor), checked_model(student, visitor)
        notes = []
        in_teachers_index = []  # the students that searched the teacher's own index
        hits_t, _ = _search(teacher, teacher, text, k, code, True, visitor)
        hits_u, _ = _search(student, student, text, k, code, True, visitor)
        frames = [_hits_frame(hits_t), _hits_frame(hits_u)]
        prebuilt = prebuilt_for(teacher)
        if prebuilt:  # shipped with the app: it searches the teacher's index, as yours does
            hits_p, _ = _search(teacher, prebuilt, text, k, code, False, visitor)
            frames.append(_hits_frame(hits_p))
            in_teachers_index.append(f"*{MODEL_LABELS['prebuilt']}*")
        else:
            frames.append(_hits_frame([]))
        if visitor is not None and visitor.student_dir:
            if not Path(visitor.student_dir).is_dir():
                raise ValueError("your distilled student has expired; run the Distill tab again")
            own_teacher = visitor.teacher or teacher
            hits_d, note = _search(own_teacher, visitor.student_dir, text, k, code, False, visitor)
            frames.append(_hits_frame(hits_d))
            if own_teacher == teacher:
                in_teachers_index.append(f"*{MODEL_LABELS['distilled']}*")
            else:
                notes.append(
                    f"*{MODEL_LABELS['distilled']}* searched the index of its own teacher "
                    f"(`{shown_model(own_teacher)}`): {note or 'same model'}."
                )
        else:
            frames.append(_hits_frame([]))
            notes.append(
                f"No *{MODEL_LABELS['distilled']}* yet: distil one in the Distill tab, and it "
                "will search the teacher's own index in any language."
            )
        if in_teachers_index:
            who = " and ".join(in_teachers_index)
            notes.insert(
                0, f"{who} searched the teacher's own index: distilling put them in its space."
            )
        scope = f"{code} sentences" if code else "all languages"
        shown = markdown_literal(text)  # the query as typed: no image, link or tag renders
        lines = [f"Top {k} of the demo collection ({scope}) for **{shown}**.", "", *notes]
        return "\n".join(lines), *frames
    except ValueError as err:
        raise user_error(str(err)) from None
