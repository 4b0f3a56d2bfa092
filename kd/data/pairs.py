"""Parallel data: (English, translation) pairs, read from files.

A :class:`Pair` holds an English sentence and its translation into one language. English-only
rows (``other=None``, ``lang="en"``) are pairs too: they pull student(en) towards teacher(en).

Readers (:func:`read_tsv`, :func:`read_jsonl`, :func:`read_tatoeba`, :func:`read_pairs`) share
one set of rules:

- a missing or empty file, invalid UTF-8, a malformed line: ``ValueError`` naming ``file:line``;
- every sentence is cleaned by :func:`clean_text` (Unicode NFC, control and zero-width
  characters removed, runs of whitespace collapsed to one space);
- a row whose sentence is empty after cleaning, or longer than :data:`MAX_CHARS` characters, is
  skipped; each reader logs one line per file on the ``"kd"`` logger saying how many it skipped.

:func:`english_key` groups pairs by their English sentence: the held-out split
(:mod:`kd.data.dataset`) keeps every English sentence (and so every teacher vector) on one side.
"""

from __future__ import annotations

import json
import logging
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kd.langs import DEV_LANGS, normalize_lang, parse_langs, tatoeba_code

logger = logging.getLogger("kd")

MAX_CHARS = 2000
"""Sentences longer than this (in characters, after cleaning) are skipped by every reader."""

# C0 and C1 control characters (tab, newline, form feed... included): replaced by a space.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
# Invisible format characters, removed: zero-width space, word joiner, byte-order mark, soft
# hyphen, Mongolian vowel separator, bidirectional marks and embeddings, lone surrogates,
# noncharacters. Zero-width (non-)joiners U+200C/U+200D are kept: they are part of the spelling
# in Persian and Indic scripts and of emoji sequences.
_INVISIBLE_RE = re.compile(
    "[\u200b\u2060\ufeff\u00ad\u180e\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufffe\uffff]"
)

_TSV_HEADER_EN = {"en", "eng", "english"}
_TSV_HEADER_OTHER = {"translation", "text", "other", "xx"}


@dataclass(frozen=True, slots=True)
class Pair:
    """One English sentence and its translation.

    Attributes:
        en: the English sentence.
        other: its translation, or ``None`` for an English-only row.
        lang: the translation's language code (``"en"`` exactly when ``other`` is ``None``).
        source: where the pair comes from (a file name, ``"tatoeba"``, ``"gettext:glib20"``...).

    Example:
        >>> Pair("Good morning.", "Guten Morgen.", "de", "demo.tsv").lang
        'de'
    """

    en: str
    other: str | None
    lang: str
    source: str

    def __post_init__(self) -> None:
        if (self.other is None) != (self.lang == "en"):
            raise ValueError(
                f"Pair({self.en!r}, {self.other!r}, lang={self.lang!r}): English-only rows have "
                "other=None and lang='en'; translations need a non-English lang"
            )


def clean_text(text: str) -> str:
    """Normalise a sentence: NFC, no control or zero-width characters, single spaces, stripped.

    Example:
        >>> clean_text("  Hello\\u200b  wor\\x00ld\\n")
        'Hello wor ld'
    """
    text = _INVISIBLE_RE.sub("", unicodedata.normalize("NFC", text))
    return " ".join(_CONTROL_RE.sub(" ", text).split())


class _Skips:
    """Counts rows a reader skipped, and describes them in one line."""

    def __init__(self) -> None:
        self.empty = 0
        self.too_long = 0

    def keep(self, *sentences: str) -> bool:
        if not all(sentences):
            self.empty += 1
            return False
        if any(len(s) > MAX_CHARS for s in sentences):
            self.too_long += 1
            return False
        return True

    def describe(self) -> str:
        parts = []
        if self.empty:
            parts.append(f"{self.empty} with an empty sentence")
        if self.too_long:
            parts.append(f"{self.too_long} longer than {MAX_CHARS} characters")
        return "skipped " + " and ".join(parts) if parts else "nothing skipped"

    def finish(self, path: Path, pairs: list[Pair]) -> list[Pair]:
        if not pairs:
            raise ValueError(f"{path}: no pairs found ({self.describe()})")
        level = logging.WARNING if self.empty or self.too_long else logging.INFO
        logger.log(level, "%s: read %d pairs; %s", path, len(pairs), self.describe())
        return pairs


def _lang_or_none(code: str) -> str | None:
    try:
        return normalize_lang(code)
    except ValueError:
        return None


def read_text(path: Path) -> str:
    """The whole file as text, or a ValueError saying which file and line is wrong."""
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror})") from None
    if not data.strip():
        raise ValueError(f"{path}: no pairs found (empty file)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (save the file as UTF-8)") from None
    return text.removeprefix("\ufeff")


def text_lines(text: str) -> list[str]:
    """Split on newlines only (not on the other characters ``str.splitlines`` knows)."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _translation_lang(path: Path, lang: str | None, where: str = "") -> str:
    try:
        code = normalize_lang(lang) if lang is not None else None
    except ValueError as err:
        raise ValueError(f"{path}{where}: {err}") from None
    if code is None:
        raise ValueError(
            f"{path}: no language given; pass lang (e.g. 'de') or start the file with a "
            "header line 'en<TAB>de'"
        )
    if code == "en":
        raise ValueError(f"{path}{where}: the translation language must not be English")
    return code


def read_tsv(path: str | Path, lang: str | None = None) -> list[Pair]:
    """Read ``english<TAB>translation`` lines.

    An optional first line ``en<TAB>de`` names the language; otherwise pass ``lang``. Blank
    lines are ignored.

    Raises:
        ValueError: the file is missing, empty or not UTF-8; a line does not have exactly two
            tab-separated columns; no language is given, or the header contradicts ``lang``.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "de.tsv"
        >>> _ = p.write_text("en\\tde\\nGood morning.\\tGuten Morgen.\\n", encoding="utf-8")
        >>> read_tsv(p)[0].other
        'Guten Morgen.'
    """
    path = Path(path)
    skips = _Skips()
    pairs = list(_tsv_pairs(path, _numbered_lines(path), lang, skips))
    return skips.finish(path, pairs)


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the whole file, read when the first line is asked for."""
    yield from enumerate(text_lines(read_text(path)), start=1)


def _tsv_pairs(
    path: Path,
    lines: Iterable[tuple[int, str]],
    lang: str | None,
    skips: _Skips,
    source: str | None = None,
) -> Iterator[Pair]:
    """The pairs of numbered ``english<TAB>translation`` lines: :func:`read_tsv`'s rules, for
    the whole-file and the streaming reader alike (``skips`` counts what is left out)."""
    given = _translation_lang(path, lang) if lang is not None else None
    source = source or path.name
    code: str | None = None
    for number, line in lines:
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise ValueError(
                f"{path}:{number}: expected 2 tab-separated columns (english, translation), "
                f"found {len(cols)}"
            )
        if code is None:  # the first line: a header?
            header = cols[0].strip().lower() in _TSV_HEADER_EN
            named = cols[1].strip()
            if header and named.lower() not in _TSV_HEADER_OTHER:
                code = _translation_lang(path, named, f":{number}")
                if given is not None and given != code:
                    raise ValueError(
                        f"{path}:{number}: the header says {code!r} but lang={lang!r} was "
                        "given; fix the header or the lang"
                    )
            else:
                code = _translation_lang(path, given)
            if header:
                continue
        en, other = clean_text(cols[0]), clean_text(cols[1])
        if skips.keep(en, other):
            yield Pair(en, other, code, source)


def jsonl_rows(path: Path, text: str) -> Iterable[tuple[str, object]]:
    """(location, decoded value) for each row of a JSON Lines file or of a JSON array."""
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON array of objects or JSON Lines")
        yield from ((f" item {i}", item) for i, item in enumerate(items, start=1))
        return
    for number, line in enumerate(text_lines(text), start=1):
        if line.strip():
            yield f":{number}", _json_line(path, number, line)


def _json_line(path: Path, number: int, line: str) -> object:
    """One JSON Lines row decoded, or the ValueError that names its file and line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise ValueError(f"{path}:{number}: not valid JSON (nested too deeply)") from None


def _jsonl_pair(
    path: Path, where: str, row: object, lang: str | None, skips: _Skips | None = None
) -> Pair | None:
    """One decoded JSON row as a pair (``None``: skipped as empty or over-long), or the
    ValueError that names its file and line."""
    skips = skips or _Skips()
    if not isinstance(row, dict) or "en" not in row:
        raise ValueError(f"{path}{where}: expected a JSON object with keys 'en' and 'text'")
    other = row.get("text", row.get("translation"))
    row_lang = row.get("lang", lang)
    for key, value in (("en", row["en"]), ("text", other), ("lang", row_lang)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{path}{where}: {key!r} must be a string, got {value!r:.40}")
    if row_lang is not None and _lang_or_none(row_lang) == "en":
        if other is not None:
            raise ValueError(f"{path}{where}: a row with lang 'en' holds English only; drop 'text'")
        en = clean_text(row["en"])
        return Pair(en, None, "en", path.name) if skips.keep(en) else None
    if row_lang is None:
        raise ValueError(
            f"{path}{where}: no language; add \"lang\" to the row or pass lang (e.g. 'de')"
        )
    code = _translation_lang(path, row_lang, where)
    if other is None:
        raise ValueError(f"{path}{where}: expected a JSON object with keys 'en' and 'text'")
    en, other = clean_text(row["en"]), clean_text(other)
    return Pair(en, other, code, path.name) if skips.keep(en, other) else None


def read_jsonl(path: str | Path, lang: str | None = None) -> list[Pair]:
    """Read JSON Lines (or a JSON array) of objects ``{"en": ..., "text": ..., "lang": ...}``.

    ``"translation"`` is accepted for ``"text"``. ``"lang"`` is optional when ``lang`` is given
    (a row's own ``"lang"`` wins). Rows with ``"lang": "en"`` and no text are English-only rows.

    Raises:
        ValueError: the file is missing, empty or not UTF-8; a line is not a JSON object with
            string values for ``"en"`` and ``"text"``; a row has no language.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl"
        >>> _ = p.write_text('{"en": "Thank you.", "text": "Merci.", "lang": "fr"}\\n')
        >>> read_jsonl(p)[0].lang
        'fr'
    """
    path = Path(path)
    text = read_text(path)
    pairs: list[Pair] = []
    skips = _Skips()
    for where, row in jsonl_rows(path, text):
        pair = _jsonl_pair(path, where, row, lang, skips)
        if pair is not None:
            pairs.append(pair)
    return skips.finish(path, pairs)


def _tatoeba_present(directory: Path) -> list[str]:
    """Languages with a ``tatoeba.XXX-eng.eng`` file (project codes where known)."""
    found = []
    for eng in sorted(directory.glob("tatoeba.*-eng.eng")):
        code3 = eng.name.split(".")[1].removesuffix("-eng")
        found.append(_lang_or_none(code3) or code3)
    order = {lang: i for i, lang in enumerate(DEV_LANGS)}
    return sorted(found, key=lambda lang: (order.get(lang, len(order)), lang))


def read_tatoeba(
    directory: str | Path, langs: str | Iterable[str] | None = None
) -> dict[str, list[Pair]]:
    """Read the LASER Tatoeba format: ``tatoeba.XXX-eng.XXX`` and ``tatoeba.XXX-eng.eng``.

    Line i of one file is the translation of line i of the other. ``langs=None`` reads every
    language present. A line pair with an empty or over-long sentence is skipped (counted).

    Raises:
        ValueError: the directory or a language's file is missing (the message lists the
            languages present), or the two files of a language differ in line count.

    Example:
        >>> from pathlib import Path
        >>> dev = Path("../shared/data/tatoeba-dev")
        >>> len(read_tatoeba(dev, ["de"])["de"]) if dev.is_dir() else 500
        500
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(
            f"{directory}: not a directory; pass the folder holding tatoeba.XXX-eng.XXX files"
        )
    present = _tatoeba_present(directory)
    if langs is None:
        if not present:
            raise ValueError(f"{directory}: no tatoeba.XXX-eng.eng files found")
        wanted = [lang for lang in present if _lang_or_none(lang)]
    else:
        wanted = parse_langs(langs)
    result: dict[str, list[Pair]] = {}
    for lang in wanted:
        code3 = tatoeba_code(lang)
        src = directory / f"tatoeba.{code3}-eng.{code3}"
        eng = directory / f"tatoeba.{code3}-eng.eng"
        for path in (src, eng):
            if not path.is_file():
                raise ValueError(
                    f"{path}: missing, so language {lang!r} cannot be read; languages present "
                    f"in {directory}: {', '.join(present) or 'none'}"
                )
        x_lines, en_lines = text_lines(read_text(src)), text_lines(read_text(eng))
        if len(x_lines) != len(en_lines):
            raise ValueError(
                f"{src}: has {len(x_lines)} lines but {eng.name} has {len(en_lines)}; line i of "
                "one must be the translation of line i of the other"
            )
        pairs: list[Pair] = []
        skips = _Skips()
        for en, other in zip(en_lines, x_lines, strict=True):
            en, other = clean_text(en), clean_text(other)
            if skips.keep(en, other):
                pairs.append(Pair(en, other, lang, "tatoeba"))
        result[lang] = skips.finish(src, pairs)
    return result


def read_pairs(path: str | Path, lang: str | None = None) -> list[Pair]:
    """Read pairs from a file, choosing the reader by suffix (or a Tatoeba directory).

    ``.tsv``/``.txt``: :func:`read_tsv`; ``.jsonl``/``.json``: :func:`read_jsonl`; a directory:
    :func:`read_tatoeba` (``lang`` selects one language, else all).

    Raises:
        ValueError: an unknown suffix, or anything the chosen reader raises.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "fr.txt"
        >>> _ = p.write_text("Thank you.\\tMerci.\\n", encoding="utf-8")
        >>> [pair.other for pair in read_pairs(p, "fr")]
        ['Merci.']
    """
    path = Path(path)
    if path.is_dir():
        by_lang = read_tatoeba(path, [lang] if lang else None)
        return [pair for pairs in by_lang.values() for pair in pairs]
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        return read_tsv(path, lang)
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path, lang)
    raise ValueError(
        f"{path}: unknown file type {path.suffix!r}; use .tsv or .txt (english<TAB>translation "
        "per line) or .jsonl/.json (objects with 'en', 'text' and 'lang')"
    )


def stream_lines(
    path: Path, line_limit: int | None = None, expected: str = "text"
) -> Iterable[tuple[int, str | None]]:
    """(line number, text) of a UTF-8 file read one line at a time: the streaming readers' input.

    The same errors as :func:`read_text`, found as the reading reaches them, and a NUL byte
    (binary data, described against ``expected``). With ``line_limit`` (bytes), a longer line is
    read past in bounded pieces and given as ``None``, so one huge line never sits in memory.
    """
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    limit = line_limit or -1
    try:
        with path.open("rb") as fh:
            if b"\x00" in fh.read(8192):  # an image, an archive, a model: say so, not "UTF-8"
                raise ValueError(f"{path}: binary data (a NUL byte), not text; give {expected}")
            fh.seek(0)
            number = 0
            while raw := fh.readline(limit):
                number += 1
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")
                if line_limit and len(raw) >= line_limit and not raw.endswith(b"\n"):
                    while raw and not raw.endswith(b"\n"):  # the rest of the overlong line
                        raw = fh.readline(line_limit)
                    yield number, None
                    continue
                if b"\x00" in raw:
                    raise ValueError(
                        f"{path}:{number}: binary data (a NUL byte), not text; give {expected}"
                    )
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(
                        f"{path}:{number}: not valid UTF-8 (save the file as UTF-8)"
                    ) from None
                yield number, line.removesuffix("\n").removesuffix("\r")
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror})") from None


def iter_tsv(path: str | Path, lang: str | None = None, source: str | None = None):
    """:func:`read_tsv`'s pairs one at a time, reading one line at a time (a file larger than
    memory streams through). Same rules and messages; ``source`` names the pairs' source
    (default: the file name).

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "de.tsv"
        >>> _ = p.write_text("en\\tde\\nGood morning.\\tGuten Morgen.\\n", encoding="utf-8")
        >>> [pair.other for pair in iter_tsv(p)]
        ['Guten Morgen.']
    """
    path = Path(path)
    skips = _Skips()
    kept = 0
    for pair in _tsv_pairs(path, stream_lines(path), lang, skips, source):
        kept += 1
        yield pair
    if not kept:
        raise ValueError(f"{path}: no pairs found ({skips.describe()})")


def iter_jsonl(path: str | Path, lang: str | None = None, source: str | None = None):
    """:func:`read_jsonl`'s pairs one at a time from a JSON Lines file, one line at a time (a
    JSON array, which cannot stream, is read whole by :func:`read_jsonl`)."""
    path = Path(path)
    with path.open("rb") as fh:
        is_array = fh.read(4096).lstrip().removeprefix(b"\xef\xbb\xbf").startswith(b"[")
    if is_array:
        for pair in read_jsonl(path, lang):
            yield Pair(pair.en, pair.other, pair.lang, source or pair.source)
        return
    source = source or path.name
    kept = 0
    for number, line in stream_lines(path):
        if not line.strip():
            continue
        # One line through read_jsonl's own rules: the same checks and the same messages.
        pair = _jsonl_pair(path, f":{number}", _json_line(path, number, line), lang)
        if pair is not None:
            kept += 1
            yield Pair(pair.en, pair.other, pair.lang, source)
    if not kept:
        raise ValueError(f"{path}: no pairs found")


def iter_pairs(path: str | Path, lang: str | None = None, source: str | None = None):
    """:func:`read_pairs` one pair at a time: ``.tsv``/``.txt`` and JSON Lines stream line by
    line; a Tatoeba directory is read whole."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_dir() and suffix in (".tsv", ".txt"):
        yield from iter_tsv(path, lang, source)
    elif not path.is_dir() and suffix in (".jsonl", ".json") and path.is_file():
        yield from iter_jsonl(path, lang, source)
    else:
        for pair in read_pairs(path, lang):
            yield Pair(pair.en, pair.other, pair.lang, source or pair.source)


def english_key(text: str) -> str:
    """The key that groups pairs by English sentence: case-folded, single-spaced, no final
    punctuation.

    Example:
        >>> english_key("  Open the  FILE. ") == english_key("open the file")
        True
    """
    return " ".join(text.casefold().split()).rstrip(".!?\u2026 ")


def sample_per_lang(pairs: Sequence[Pair], max_per_lang: int, seed: int = 0) -> list[Pair]:
    """Keep at most ``max_per_lang`` pairs of each language, drawn at random (fixed by ``seed``).

    The draw for one language does not depend on which other languages are present. The input
    order is kept.

    Raises:
        ValueError: ``max_per_lang`` is below 1.

    Example:
        >>> pairs = [Pair(f"S {i}", f"T {i}", "de", "demo") for i in range(5)]
        >>> len(sample_per_lang(pairs, 3, seed=0))
        3
    """
    if isinstance(max_per_lang, bool) or not isinstance(max_per_lang, int) or max_per_lang < 1:
        raise ValueError(f"max_per_lang must be a whole number >= 1, got {max_per_lang!r}")
    by_lang: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_lang.setdefault(pair.lang, []).append(i)
    keep: set[int] = set()
    for lang, idx in by_lang.items():
        if len(idx) > max_per_lang:
            idx = random.Random(f"{seed}:{lang}").sample(idx, max_per_lang)
        keep.update(idx)
    return [pair for i, pair in enumerate(pairs) if i in keep]


def pairs_summary(pairs: Iterable[Pair]) -> dict[str, int]:
    """Pairs per language, most frequent first.

    Example:
        >>> pairs_summary([Pair("a b", "c d", "de", "x"), Pair("e f", None, "en", "y")])
        {'de': 1, 'en': 1}
    """
    counts = Counter(pair.lang for pair in pairs)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
