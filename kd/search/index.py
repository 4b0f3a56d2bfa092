"""Build and query a :mod:`kd.search.store` index with a model: sentence files in, ranked sentences
out.

Files :func:`read_rows` understands (the suffix decides):

- ``.tsv``: ``english<TAB>translation`` pairs, the format ``kd distill --data`` reads (a header
  line ``en<TAB>de`` or ``lang`` names the translation's language). Both sides are indexed: the
  English one as ``en``, the translation under its language. A ``.tsv`` whose header is
  ``id<TAB>lang<TAB>text`` (or ``lang<TAB>text``) is a table of sentences instead, one per line
  in any language (the app's demo collection, ``assets/search_collection.tsv``, is one).
- ``.jsonl`` / ``.json``: one object per sentence, ``{"text": ..., "lang": ..., "id": ...}``;
  ``"lang"`` may be left to ``lang``, ``"id"`` (a string or a number) is optional.
- ``.txt``: one sentence per line, all in the language ``lang``.

Every sentence is cleaned as :func:`kd.data.pairs.clean_text` does; empty and over-long ones are
skipped and counted. A row's source is its file's name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from kd.data.pairs import MAX_CHARS, clean_text, jsonl_rows, read_text, read_tsv, text_lines
from kd.langs import normalize_lang
from kd.models.registry import resolve_model
from kd.search.store import ModelStamp, Row, VectorStore

log = logging.getLogger("kd")

SUFFIXES = (".tsv", ".jsonl", ".json", ".txt")


def model_stamp(encoder) -> ModelStamp:
    """The :class:`~kd.search.store.ModelStamp` of a loaded :class:`kd.models.encoder.Encoder`.

    A distilled student's folder holds ``kd_config.json``; its teacher (and, from runs that
    recorded it, the teacher's fingerprint) go into the stamp.
    """
    teacher_id = teacher_fp = None
    config = Path(resolve_model(encoder.name)) / "kd_config.json"
    if config.is_file():
        try:
            run = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            run = {}
        teacher_id = run.get("teacher") or None
        teacher_fp = run.get("teacher_fingerprint") or None
    return ModelStamp(encoder.name, encoder.fingerprint(), encoder.dim, teacher_id, teacher_fp)


def read_rows(path: str | Path, lang: str | None = None) -> list[Row]:
    """Read the sentences of one file (see the module docstring for the formats).

    Raises:
        ValueError: unknown suffix, missing or empty file, bad UTF-8 or JSON, unknown
            language, a ``.txt`` line holding a tab, or no sentence left to index.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = p.write_text("Guten Morgen.\\nDanke.\\n", encoding="utf-8")
        >>> [(r.text, r.lang) for r in read_rows(p, "de")]
        [('Guten Morgen.', 'de'), ('Danke.', 'de')]
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{path}: unknown file type {path.suffix!r}; use .tsv (english<TAB>translation), "
            ".jsonl (objects with 'text', 'lang', 'id') or .txt (one sentence per line, --lang)"
        )
    code = _lang(path, lang) if lang is not None else None
    if path.is_file() and not path.read_bytes().strip():
        raise ValueError(f"{path}: empty file, nothing to index")
    if suffix == ".tsv":
        text = read_text(path)
        header = text_lines(text)[0].split("\t")
        if header in (["id", "lang", "text"], ["lang", "text"]):
            return _keep(path, _sentence_table(path, text, with_id=header[0] == "id"))
        # --lang names the translation's language; "en" (meant for other files) cannot.
        pairs = read_tsv(path, None if code == "en" else code)
        rows = []
        for p in pairs:
            rows += [Row(p.en, "en", p.source), Row(p.other or "", p.lang, p.source)]
        return rows
    if suffix == ".txt":
        if code is None:
            raise ValueError(f"{path}: a .txt file needs --lang (the language of its lines)")
        texts = []
        for number, line in enumerate(text_lines(read_text(path)), start=1):
            if "\t" in line:
                raise ValueError(
                    f"{path}:{number}: a tab in a plain-text file; for english<TAB>translation "
                    "pairs name the file .tsv"
                )
            texts.append((line, code, None))
        return _keep(path, texts)
    texts = []
    for where, obj in jsonl_rows(path, read_text(path)):
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError(f"{path}{where}: expected a JSON object with a string 'text'")
        row_lang = obj.get("lang", code)
        if row_lang is None:
            raise ValueError(f'{path}{where}: no language; add "lang" to the row or pass --lang')
        ident = obj.get("id")
        if ident is not None and (isinstance(ident, bool) or not isinstance(ident, str | int)):
            raise ValueError(f"{path}{where}: 'id' must be a string or a whole number")
        texts.append(
            (obj["text"], _lang(path, row_lang, where), None if ident is None else str(ident))
        )
    return _keep(path, texts)


def _sentence_table(path: Path, text: str, with_id: bool) -> list[tuple[str, str, str | None]]:
    """(text, lang, id) of a ``[id<TAB>]lang<TAB>text`` table (after its header line)."""
    width = 3 if with_id else 2
    out = []
    for number, line in enumerate(text_lines(text)[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != width:
            columns = "id<TAB>lang<TAB>text" if with_id else "lang<TAB>text"
            raise ValueError(f"{path}:{number}: expected {columns}, found {len(cells)} column(s)")
        ident = cells[0].strip() or None if with_id else None
        out.append((cells[-1], _lang(path, cells[-2].strip(), f":{number}"), ident))
    return out


def _lang(path: Path, code: object, where: str = "") -> str:
    try:
        return normalize_lang(code)  # type: ignore[arg-type]
    except ValueError as err:
        raise ValueError(f"{path}{where}: {err}") from None


def _keep(path: Path, texts: list[tuple[str, str, str | None]]) -> list[Row]:
    rows, empty, long = [], 0, 0
    for text, lang, ident in texts:
        text = clean_text(text)
        if not text:
            empty += 1
        elif len(text) > MAX_CHARS:
            long += 1
        else:
            rows.append(Row(text, lang, path.name, ident))
    if empty or long:
        log.warning(
            "%s: skipped %d empty and %d longer than %d characters", path, empty, long, MAX_CHARS
        )
    if not rows:
        raise ValueError(f"{path}: no sentence to index")
    return rows


def index_rows(
    encoder,
    db: str | Path,
    rows: Sequence[Row],
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Embed the rows not yet in ``db`` and add them, one transaction per batch.

    An interrupted run keeps every finished batch; running it again embeds only the rest.

    Returns:
        ``{"new": rows added, "present": rows already there, "total": rows in the index}``.

    Raises:
        ValueError: ``db`` was built by another model, or ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    with VectorStore.create(db, model_stamp(encoder)) as store:
        todo = store.missing(rows)
        present = len({(r.text, r.lang, r.source) for r in rows}) - len(todo)
        added = 0
        if progress:
            progress(0, len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            vectors = encoder.encode([r.text for r in batch], batch_size=min(64, batch_size))
            added += store.add(batch, vectors)
            if progress:
                progress(start + len(batch), len(todo))
        return {"new": added, "present": present, "total": store.count()}
