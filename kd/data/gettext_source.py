"""Parallel pairs from the translation catalogs installed on this machine (gettext, Django).

Software translations are real human translations (OPUS built its GNOME/KDE/Ubuntu corpora the
same way). Two sources are read at run time, never shipped with the project (each catalog
carries its own software's license, often GPL):

- every ``/usr/share/locale/*/LC_MESSAGES/*.mo`` (compiled gettext catalogs from Debian
  packages), except the ISO code catalogs (``iso_3166*``, ``iso_639*``, ``iso_15924*``,
  ``iso_4217*``: names, not sentences); ``source="gettext:<domain>"``;
- the installed ``django`` wheel's ``django/conf/locale/*/LC_MESSAGES/django.po`` (BSD), read
  with ``polib``, fuzzy and obsolete entries skipped; ``source="django"``.

Cleaning rules (:func:`clean_pair`, version :data:`CLEANING_VERSION`): contexts are dropped,
plural entries use the singular msgid and the first msgstr form; keyboard accelerators are
removed (``_File``, ``&File``, ``ファイル(_F)``); a pair is kept only if the English has 4-30
words, neither side holds a printf/format placeholder (``%s``, ``%(x)s``, ``{0}``, ``{name}``,
``$1``, ``@VAR@``), markup (``<b>``, ``&amp;``), a path, URL or e-mail address, a command-line
option (``--all``) or a leftover ``_``; the translation/English length ratio in characters is in
0.3-3.5; the translation differs from the English; both sides are non-empty. Pairs are deduped
on (English, language): the first catalog wins, base locales (``de``) before regional ones
(``de_CH``). Locale directories map to project codes with :func:`kd.langs.lang_from_locale`
(``zh_CN`` -> ``zh``, ``pt_BR`` -> ``pt``; ``zh_TW``, ``sr@latin`` and English are skipped).

The result is cached in ``kd.io.cache_dir("data")`` as JSON Lines, keyed by a fingerprint of the
catalog files (paths, sizes, modification times) and of the cleaning rules, so only the first
call pays for the extraction.

Measured on the development machine (2 busy CPU cores; 2,827 catalogs: 2,744 ``.mo`` files
after the ISO catalogs and skipped locales are left out, plus 83 Django catalogs): the first
extraction takes ~8.5 s (~12 s with writing the cache) and yields ~360k pairs (19.7k distinct
English sentences) in 88 languages, 66 of them with >= 1,000 pairs; a cached call takes ~1.4 s
for all languages, ~0.6 s for the 12 dev languages, ~0.1 s for :func:`gettext_counts`. Pairs
per dev language: de 14,087, fr 15,979, es 15,551, it 12,427, ru 14,475, ja 9,917, zh 8,360,
ar 2,120, nl 6,308, pt 9,978, pl 9,861, tr 10,457 (Django adds ~50 per language that the
gettext catalogs lack). These numbers follow the Debian packages installed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
import struct
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import polib

from kd.data.pairs import Pair, clean_text
from kd.io import atomic_write_text, cache_dir
from kd.langs import KNOWN_LANGS, lang_from_locale, parse_langs

logger = logging.getLogger("kd")

LOCALE_DIR = Path("/usr/share/locale")
CLEANING_VERSION = 1
"""Bump when :func:`clean_pair` or the reading rules change: it invalidates the cache."""

MIN_WORDS, MAX_WORDS = 4, 30
MIN_RATIO, MAX_RATIO = 0.3, 3.5
_SKIP_DOMAINS = ("iso_3166", "iso_639", "iso_15924", "iso_4217")

# "ファイル(_F)", "(&O)": accelerators that CJK translations append in parentheses.
_CJK_ACCEL_RE = re.compile(r"\s*[(（][_&][A-Za-z0-9][)）]")
_ACCEL_RE = re.compile(r"[_&](?=\w)")
_IDENTIFIER_RE = re.compile(r"\w+_\w+")
_MARKUP_RE = re.compile(r"<[A-Za-z/!?][^<>]*>|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]+);")
_SUSPECT_RE = re.compile(r"[%{}$@<>/\\_-]|www\.")  # a fast pre-check: _REJECT_RE is slow
_REJECT_RE = re.compile(
    r"%\S"  # printf and Python %-formats, Qt's %1 (a lone "100 %" is fine)
    r"|[{}]"  # str.format, ICU and brace placeholders
    r"|\$\{?\w"  # shell and Perl variables, $1
    r"|@\w+@"  # autoconf substitutions
    r"|<[A-Za-z/!?][^<>]*>"  # markup, <placeholder>
    r"|\w[\w+.-]*://|www\.\w"  # URLs
    r"|[\w.+-]+@[\w-]+\.\w"  # e-mail addresses
    r"|(?:^|[\s\"'(=])[~.]{0,2}/\w"  # Unix paths: /etc, ~/x, ./x
    r"|\w/[\w.-]+/|\\"  # a/b/c paths, Windows paths and escapes
    r"|(?:^|\s)--?[A-Za-z]"  # command-line options
    r"|_"  # identifiers, or accelerators left over
)


def _clean_side(text: str) -> str | None:
    """One side of an entry cleaned, accelerators removed; ``None`` if it breaks a rule."""
    text = clean_text(text)
    if ("<" in text or "&" in text) and _MARKUP_RE.search(text):  # before "&" accelerators go
        return None
    if "_" in text or "&" in text:
        text = _ACCEL_RE.sub("", _CJK_ACCEL_RE.sub("", text), count=1).strip()
    if not text or (_SUSPECT_RE.search(text) and _REJECT_RE.search(text)):
        return None
    return text


def _clean_english(text: str) -> str | None:
    en = _clean_side(text)
    return en if en is not None and MIN_WORDS <= len(en.split()) <= MAX_WORDS else None


def _clean_translation(en: str, en_raw: str, other_raw: str) -> str | None:
    """The cleaned translation of an entry whose English side is already cleaned, or ``None``."""
    # The same snake_case word on both sides is code, not an accelerator: "the file_name value".
    if "_" in other_raw:
        en_words, other_words = _IDENTIFIER_RE.findall(en_raw), _IDENTIFIER_RE.findall(other_raw)
        if set(en_words) & set(other_words):
            return None
    other = _clean_side(other_raw)
    if other is None or not MIN_RATIO <= len(other) / len(en) <= MAX_RATIO:
        return None
    return None if other.casefold() == en.casefold() else other


def clean_pair(en: str, other: str) -> tuple[str, str] | None:
    """Clean one catalog entry; ``None`` when it breaks a rule (see the module docstring).

    Example:
        >>> clean_pair("_Open the selected file", "Die ausgewählte Datei ö_ffnen")
        ('Open the selected file', 'Die ausgewählte Datei öffnen')
        >>> clean_pair("Cannot open %s: permission denied", "Kann %s nicht öffnen") is None
        True
    """
    en_clean = _clean_english(en)
    other_clean = _clean_translation(en_clean, en, other) if en_clean is not None else None
    return None if en_clean is None or other_clean is None else (en_clean, other_clean)


def _mo_entries(path: Path) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of a compiled catalog: contexts dropped, plurals' first forms.

    The format (a header, two tables of (length, offset), then the strings) is the one GNU
    gettext documents; the stdlib ``gettext`` module reads the same, but stops at the first
    string that does not decode, where this skips only that entry.
    """
    data = path.read_bytes()
    if len(data) < 20:
        return
    for order in ("<", ">"):
        magic, _rev, count, ids_at, strs_at = struct.unpack(order + "5I", data[:20])
        if magic == 0x950412DE:
            break
    else:
        return
    table = struct.Struct(order + "2I")

    def string(table_at: int, i: int) -> bytes:
        length, offset = table.unpack_from(data, table_at + 8 * i)
        return data[offset : offset + length]

    charset = "utf-8"
    try:
        for i in range(count):
            msgid, msgstr = string(ids_at, i), string(strs_at, i)
            if not msgid:  # the header
                found = re.search(rb"charset=([\w-]+)", msgstr)
                charset = found.group(1).decode() if found else charset
                continue
            msgid = msgid.split(b"\x04", 1)[-1].split(b"\x00", 1)[0]
            msgstr = msgstr.split(b"\x00", 1)[0]
            if not msgstr:
                continue
            try:
                yield msgid.decode(charset), msgstr.decode(charset)
            except (UnicodeDecodeError, LookupError):
                continue
    except struct.error:  # a truncated file: keep what was read
        logger.debug("%s: truncated catalog", path)


def _po_entries(path: Path) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of a ``.po`` file, fuzzy and obsolete entries skipped."""
    for entry in polib.pofile(str(path)):
        if entry.obsolete or "fuzzy" in entry.flags:
            continue
        msgstr = entry.msgstr_plural.get(0, "") if entry.msgid_plural else entry.msgstr
        if msgstr:
            yield entry.msgid, msgstr


def _django_dir() -> Path | None:
    try:
        import django
    except ImportError:
        return None
    return Path(django.__file__).parent / "conf" / "locale"


def _catalogs(locale_dir: Path) -> list[tuple[str, str, Path]]:
    """(lang, source, path) of every catalog to read, in the order that decides dedup."""
    found: list[tuple[str, int, str, str, Path]] = []
    for path in locale_dir.glob("*/LC_MESSAGES/*.mo"):
        locale, domain = path.parts[-3], path.stem
        lang = lang_from_locale(locale)
        if lang is None or lang == "en" or domain.startswith(_SKIP_DOMAINS):
            continue
        found.append((lang, 0 if locale == lang else 1, locale, f"gettext:{domain}", path))
    django_dir = _django_dir()
    if django_dir is not None:
        for path in django_dir.glob("*/LC_MESSAGES/django.po"):
            locale = path.parts[-3]
            lang = lang_from_locale(locale)
            if lang is not None and lang != "en":
                found.append((lang, 2 if locale == lang else 3, locale, "django", path))
    found.sort(key=lambda item: (item[0], item[1], item[2], item[3]))
    return [(lang, source, path) for lang, _, _, source, path in found]


def _fingerprint(catalogs: list[tuple[str, str, Path]]) -> str:
    digest = hashlib.sha256(f"v{CLEANING_VERSION} {','.join(KNOWN_LANGS)}\n".encode())
    for _, _, path in catalogs:
        try:
            stat = path.stat()
        except OSError:  # removed since the listing (a package being upgraded)
            continue
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _extract(catalogs: list[tuple[str, str, Path]]) -> list[Pair]:
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    english: dict[str, str | None] = {}  # the same msgid recurs in every language's catalog
    for lang, source, path in catalogs:
        try:
            entries = _po_entries(path) if path.suffix == ".po" else _mo_entries(path)
            for en_raw, other_raw in entries:
                if en_raw not in english:
                    english[en_raw] = _clean_english(en_raw)
                en = english[en_raw]
                if en is None or (en, lang) in seen:
                    continue
                other = _clean_translation(en, en_raw, other_raw)
                if other is not None:
                    seen.add((en, lang))
                    pairs.append(Pair(en, other, lang, source))
        except (OSError, ValueError) as err:  # an unreadable catalog is skipped, not fatal
            logger.warning("%s: skipped (%s)", path, err)
    return pairs


def _write_cache(stem: Path, pairs: list[Pair], seconds: float, n_files: int) -> dict:
    lines: list[str] = []
    offsets: dict[str, list[int]] = {}
    position = 0
    for pair in pairs:  # already grouped by language (catalogs are sorted by language)
        line = json.dumps([pair.lang, pair.source, pair.en, pair.other], ensure_ascii=False)
        size = len(line.encode("utf-8")) + 1
        span = offsets.setdefault(pair.lang, [position, position])
        span[1] = position + size
        position += size
        lines.append(line)
    counts = Counter(pair.lang for pair in pairs)
    meta = {
        "cleaning_version": CLEANING_VERSION,
        "files": n_files,
        "seconds": round(seconds, 1),
        "counts": dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
        "offsets": offsets,
    }
    for old in stem.parent.glob("gettext-*.json*"):  # earlier fingerprints
        if not old.name.startswith(stem.name):
            old.unlink(missing_ok=True)
    atomic_write_text(stem.with_suffix(".jsonl"), "\n".join(lines) + "\n" if lines else "")
    atomic_write_text(stem.with_suffix(".json"), json.dumps(meta, ensure_ascii=False) + "\n")
    return meta


def _read_cache(stem: Path, meta: dict, langs: Iterable[str] | None) -> list[Pair] | None:
    gc_was_enabled = gc.isenabled()
    gc.disable()  # ~0.5 s less for 300k objects: nothing here makes reference cycles
    try:
        with open(stem.with_suffix(".jsonl"), "rb") as fh:
            if langs is None:
                chunks = [fh.read()]
            else:
                chunks = []
                spans = sorted(tuple(meta["offsets"].get(lang, (0, 0))) for lang in set(langs))
                for start, end in spans:  # file order: the same order as an extraction gives
                    fh.seek(start)
                    chunks.append(fh.read(end - start))
        text = b",".join(chunk.rstrip(b"\n").replace(b"\n", b",") for chunk in chunks if chunk)
        rows = json.loads(b"[" + text + b"]")
        return [Pair(en, other, lang, source) for lang, source, en, other in rows]
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("%s: unreadable cache, extracting again", stem.with_suffix(".jsonl"))
        return None
    finally:
        if gc_was_enabled:
            gc.enable()


def _read_meta(stem: Path) -> dict | None:
    try:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if meta.get("cleaning_version") == CLEANING_VERSION else None


def _load(langs: list[str] | None, cache: bool, locale_dir: Path) -> tuple[list[Pair], dict]:
    catalogs = _catalogs(locale_dir)
    if not catalogs:
        logger.warning(
            "no translation catalogs found in %s nor in the django package; "
            "no gettext pairs (pip install django adds ~800 pairs per language)",
            locale_dir,
        )
    try:
        stem = cache_dir("data") / f"gettext-{_fingerprint(catalogs)}"
    except OSError as err:
        logger.warning("gettext: no cache (%s); extracting every time", err)
        cache = False
    if cache:
        meta = _read_meta(stem)
        pairs = _read_cache(stem, meta, langs) if meta is not None else None
        if meta is not None and pairs is not None:
            return pairs, meta
    started = time.perf_counter()
    pairs = _extract(catalogs)
    seconds = time.perf_counter() - started
    logger.info("gettext: %d pairs from %d catalogs in %.1f s", len(pairs), len(catalogs), seconds)
    try:
        meta = _write_cache(stem, pairs, seconds, len(catalogs)) if cache else {}
    except ValueError as err:  # kd.io's message: read-only directory, disk full
        logger.warning("gettext: cache not written: %s", err)
        meta = {}
    if not meta:
        counts = Counter(pair.lang for pair in pairs)
        meta = {"counts": dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))}
    if langs is not None:
        wanted = set(langs)
        pairs = [pair for pair in pairs if pair.lang in wanted]
    return pairs, meta


def gettext_pairs(
    langs: Iterable[str] | str | None = None,
    *,
    cache: bool = True,
    locale_dir: str | Path = LOCALE_DIR,
) -> list[Pair]:
    """Cleaned (English, translation) pairs from the catalogs installed on this machine.

    Args:
        langs: languages to return (codes, or a comma-separated string); ``None`` for all.
        cache: read and write the extraction cache in ``kd.io.cache_dir("data")``.
        locale_dir: where the ``*/LC_MESSAGES/*.mo`` catalogs are (Django's come along).

    Returns:
        Pairs grouped by language, in catalog order.

    Raises:
        ValueError: an unknown language code.

    Example:
        >>> pairs = gettext_pairs(["de"])  # doctest: +SKIP
        >>> pairs[0].lang, pairs[0].source  # doctest: +SKIP
        ('de', 'gettext:Linux-PAM')
    """
    wanted = parse_langs(langs) if langs is not None else None
    pairs, meta = _load(wanted, cache, Path(locale_dir))
    if wanted is not None:
        missing = [lang for lang in wanted if not meta["counts"].get(lang)]
        if missing:
            logger.warning("gettext: no pairs for %s on this machine", ", ".join(missing))
    return pairs


def gettext_counts(*, cache: bool = True, locale_dir: str | Path = LOCALE_DIR) -> dict[str, int]:
    """Pairs per language that :func:`gettext_pairs` gives on this machine, most first.

    Example:
        >>> counts = gettext_counts()  # doctest: +SKIP
        >>> counts["de"] > 1000  # doctest: +SKIP
        True
    """
    meta = None
    if cache:
        try:
            meta = _read_meta(
                cache_dir("data") / f"gettext-{_fingerprint(_catalogs(Path(locale_dir)))}"
            )
        except OSError:
            meta = None
    if meta is None:
        meta = _load([], cache, Path(locale_dir))[1]
    return dict(meta["counts"])
