"""Everyday English sentences, for English-only training rows (student(en) -> teacher(en)).

The teacher is an English model; how well the student matches it on *everyday* English decides
most of how well other languages land in the teacher's space (docs: offline-assets.md). The
parallel data available offline is software messages, so this module adds everyday English from
two Debian packages, read at run time:

- ``wordnet-base``: the example phrases in ``/usr/share/wordnet/data.{noun,verb,adj,adv}`` (the
  quoted strings after a gloss's ``|``), kept from 4 words up, first letter capitalised
  ("He went to sleep"). WordNet license (permissive).
- ``fortunes`` and ``fortunes-min``: ``/usr/share/games/fortunes/*``, entries split on lines
  holding only ``%``, lines joined, a trailing attribution (``-- Mark Twain``) dropped, kept at
  20-200 characters. The computer-themed files (``computers``, ``linux``, ``linuxcookie``,
  ``perl``, ``debian``), the ``art``/``ascii-art`` files and ``translate-me`` (Latin) are
  skipped, and so is any entry that looks like code or ASCII art.

Sentences are cleaned (:func:`kd.data.pairs.clean_text`), deduplicated
(:func:`kd.data.pairs.english_key`) across both sources, shuffled with a seed and capped. The
per-source lists are cached in ``kd.io.cache_dir("data")`` under a fingerprint of the source files.

Measured on the development machine: 34,756 WordNet sentences and 10,005 fortunes after
cleaning and deduplication (44,761 in all); building them takes ~0.7 s, a cached call ~0.1 s.
Without the packages, the functions return what is there and log how to install them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path

from kd.data.pairs import MAX_CHARS, Pair, clean_text, english_key
from kd.io import atomic_write_text, cache_dir

logger = logging.getLogger("kd")

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
EXTRACTION_VERSION = 1
"""Bump when the extraction rules change: it invalidates the cache."""

SOURCES = ("wordnet", "fortunes")
_INSTALL_HINT = "apt-get install wordnet-base fortunes-min fortunes"
_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_SKIP_FORTUNES = frozenset(
    {"art", "ascii-art", "debian", "linux", "linuxcookie", "computers", "perl", "translate-me"}
)
_MIN_WORDS = 4
_FORTUNE_CHARS = (20, 200)

_QUOTED_RE = re.compile(r'"([^"]+)"')
_OVERSTRIKE_RE = re.compile(r".\x08")  # "_\bw": underlined letters in old fortune files
_ENTRY_SPLIT_RE = re.compile(r"^%[ \t]*$", re.MULTILINE)
_ATTRIBUTION_RE = re.compile(r"^(?:\s*(?:--|\u2014|\u2015)|\s+-\s)")
_ART_RE = re.compile(r"([^\w\s.!?])\1\1|[{}<>|\\^~#=_*@]")


def _plain_quotes(text: str) -> str:
    """Old typewriter quotes (```like this''``, ```this'``) as ordinary ones."""
    return text.replace("``", '"').replace("''", '"').replace("`", "'")


def _wordnet_sentences(directory: Path) -> list[str]:
    sentences = []
    for name in _WORDNET_FILES:
        path = directory / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:  # the license header
                continue
            for example in _QUOTED_RE.findall(line.split("|", 1)[1]):
                text = clean_text(_plain_quotes(example))
                if len(text.split()) >= _MIN_WORDS and len(text) <= MAX_CHARS:
                    sentences.append(text[0].upper() + text[1:])
    return sentences


def _looks_like_code_or_art(text: str) -> bool:
    letters = sum(c.isalpha() for c in text)
    visible = sum(not c.isspace() for c in text)
    return letters < 0.7 * visible or _ART_RE.search(text) is not None


def _fortune_entry(entry: str) -> str | None:
    """One fortune as a single line, its attribution dropped; ``None`` if it is not kept."""
    lines = entry.strip("\n").split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if _ATTRIBUTION_RE.match(line):
            lines = lines[:i]
            break
    text = clean_text(_plain_quotes(" ".join(lines)))
    if not _FORTUNE_CHARS[0] <= len(text) <= _FORTUNE_CHARS[1]:
        return None
    return None if _looks_like_code_or_art(text) else text


def _fortune_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and path.suffix not in (".dat", ".u8") and path.name not in _SKIP_FORTUNES
    )


def _fortunes(directory: Path) -> list[str]:
    sentences = []
    for path in _fortune_files(directory):
        text = _OVERSTRIKE_RE.sub("", path.read_text(encoding="utf-8", errors="replace"))
        for entry in _ENTRY_SPLIT_RE.split(text):
            sentence = _fortune_entry(entry)
            if sentence is not None:
                sentences.append(sentence)
    return sentences


def _source_files(wordnet_dir: Path, fortunes_dir: Path) -> list[Path]:
    wordnet = [wordnet_dir / name for name in _WORDNET_FILES if (wordnet_dir / name).is_file()]
    return wordnet + _fortune_files(fortunes_dir)


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256(f"v{EXTRACTION_VERSION}\n".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _by_source(wordnet_dir: Path, fortunes_dir: Path, cache: bool) -> dict[str, list[str]]:
    """Deduplicated sentences of each source, in file order (cached)."""
    files = _source_files(wordnet_dir, fortunes_dir)
    missing = [str(d) for d in (wordnet_dir, fortunes_dir) if not any(f.parent == d for f in files)]
    if missing:
        logger.warning(
            "English sentences: nothing found in %s; `%s` improves results",
            " or ".join(missing),
            _INSTALL_HINT,
        )
    try:
        path = cache_dir("data") / f"english-{_fingerprint(files)}.json"
    except OSError as err:
        logger.warning("English sentences: no cache (%s)", err)
        cache = False
    if cache:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if all(isinstance(stored.get(source), list) for source in SOURCES):
                return {source: stored[source] for source in SOURCES}
        except (OSError, ValueError, AttributeError):
            pass
    raw = {"wordnet": _wordnet_sentences(wordnet_dir), "fortunes": _fortunes(fortunes_dir)}
    seen: set[str] = set()
    result: dict[str, list[str]] = {}
    for source in SOURCES:
        result[source] = []
        for sentence in raw[source]:
            key = english_key(sentence)
            if key not in seen:
                seen.add(key)
                result[source].append(sentence)
    if cache:
        try:
            for old in path.parent.glob("english-*.json"):
                if old != path:
                    old.unlink(missing_ok=True)
            atomic_write_text(path, json.dumps(result, ensure_ascii=False) + "\n")
        except (OSError, ValueError) as err:  # read-only directory, disk full
            logger.warning("English sentences: cache not written: %s", err)
    return result


def english_by_source(*, cache: bool = True) -> dict[str, list[str]]:
    """Each Debian source's sentences (``"wordnet"``, ``"fortunes"``), deduplicated across both,
    in file order: what ``--english wordnet`` / ``fortunes`` / ``default`` read."""
    return _by_source(WORDNET_DIR, FORTUNES_DIR, cache)


def english_pairs(
    max_n: int | None = None,
    seed: int = 0,
    *,
    cache: bool = True,
    wordnet_dir: str | Path = WORDNET_DIR,
    fortunes_dir: str | Path = FORTUNES_DIR,
) -> list[Pair]:
    """Everyday English sentences as English-only rows (``other=None``, ``lang="en"``).

    Like :func:`english_sentences`, with ``source`` set to ``"wordnet"`` or ``"fortunes"``.

    Example:
        >>> rows = english_pairs(2, seed=0)  # doctest: +SKIP
        >>> rows[0].lang, rows[0].other  # doctest: +SKIP
        ('en', None)
    """
    if max_n is not None and (isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 0):
        raise ValueError(f"max_n must be None or a whole number >= 0, got {max_n!r}")
    by_source = _by_source(Path(wordnet_dir), Path(fortunes_dir), cache)
    rows = [Pair(text, None, "en", source) for source in SOURCES for text in by_source[source]]
    random.Random(seed).shuffle(rows)
    return rows if max_n is None else rows[:max_n]


def english_sentences(
    max_n: int | None = None,
    seed: int = 0,
    *,
    cache: bool = True,
    wordnet_dir: str | Path = WORDNET_DIR,
    fortunes_dir: str | Path = FORTUNES_DIR,
) -> list[str]:
    """Everyday English sentences from WordNet examples and fortunes, shuffled by ``seed``.

    Args:
        max_n: return at most this many (``None``: all).
        seed: fixes the order, and so which ``max_n`` are returned.
        cache: read and write the cache in ``kd.io.cache_dir("data")``.
        wordnet_dir: where WordNet's ``data.*`` files are.
        fortunes_dir: where the fortune files are.

    Returns:
        Deduplicated sentences; an empty list when neither Debian package is installed (a
        warning on the ``"kd"`` logger says what to install).

    Raises:
        ValueError: ``max_n`` is negative or not a whole number.

    Example:
        >>> sentences = english_sentences(3, seed=0)  # doctest: +SKIP
        >>> len(sentences)  # doctest: +SKIP
        3
    """
    rows = english_pairs(
        max_n, seed, cache=cache, wordnet_dir=wordnet_dir, fortunes_dir=fortunes_dir
    )
    return [row.en for row in rows]


def english_counts(
    *,
    cache: bool = True,
    wordnet_dir: str | Path = WORDNET_DIR,
    fortunes_dir: str | Path = FORTUNES_DIR,
) -> dict[str, int]:
    """Sentences each source gives on this machine (after deduplication across sources).

    Example:
        >>> english_counts()  # doctest: +SKIP
        {'wordnet': 34756, 'fortunes': 10005}
    """
    by_source = _by_source(Path(wordnet_dir), Path(fortunes_dir), cache)
    return {source: len(by_source[source]) for source in SOURCES}
