"""English-only text as a data source: the sentences that pull student(en) onto teacher(en).

A run's English-only rows (``TrainConfig.english``, ``--english``, repeatable) come from specs
read through the same layer as ``--data`` (:mod:`kd.data.sources`):

- ``default``: the everyday sentences of the Debian packages ``wordnet-base`` and ``fortunes``
  (:mod:`kd.data.english_text`); ``wordnet`` or ``fortunes`` for one of them. No spec at all means
  ``default``.
- ``path/to/file``: one sentence a line, UTF-8 (any name: ``en.txt``, ``sentences``).
- ``path/to/folder``: every ``.txt`` file in it or below it, in sorted order (hidden files and
  folders skipped).
- ``hf:OWNER/NAME[:CONFIG]`` or ``hf:/path/to/folder[:CONFIG]``: a text dataset (a column
  ``text``, ``sentence``, ``english`` or ``en``, or its only column), streamed, so a large
  corpus is never loaded whole.

Sentences are cleaned (:func:`kd.data.pairs.clean_text`); a line longer than
:data:`kd.data.pairs.MAX_CHARS` is skipped and counted. Bad input ends in one ``ValueError`` line
that names the file and line: a missing or empty file, binary data, invalid UTF-8, a file whose only
lines are too long. :func:`english_rows` deduplicates across specs and takes them in order, each
shuffled with the run's seed, until ``max_n``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from pathlib import Path

from kd.data import sources
from kd.data.english_text import english_by_source
from kd.data.pairs import MAX_CHARS, clean_text, english_key, stream_lines

logger = logging.getLogger("kd")

DEFAULT_SPEC = "default"
DEBIAN_SPECS = ("wordnet", "fortunes")
"""The Debian packages' sources, by name (``default`` is both)."""

TEXT_COLUMNS = ("text", "sentence", "english", "en")
"""Columns of an ``hf:`` text dataset taken as the sentence, in this order of preference."""

_READ_LIMIT = MAX_CHARS * 8 + 8
"""Bytes of one line read at a time: a longer line is skipped without holding it in memory."""


def _lines(path: Path) -> Iterable[tuple[int, str | None]]:
    """(line number, text) of a UTF-8 file, one line at a time; text ``None`` for a line too long
    to be a sentence (read past in bounded pieces)."""
    return stream_lines(path, _READ_LIMIT, "a UTF-8 file of one English sentence a line")


def read_english_file(path: str | Path) -> list[str]:
    """The sentences of a file of one English sentence a line (blank lines ignored).

    Raises:
        ValueError: one line naming the file (and line): missing, not a file, empty, binary,
            not UTF-8, or no line short enough to be a sentence.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "en.txt"
        >>> _ = p.write_text("The cat sleeps.\\n\\n  It   rains. \\n", encoding="utf-8")
        >>> read_english_file(p)
        ['The cat sleeps.', 'It rains.']
    """
    path = Path(path)
    sentences: list[str] = []
    too_long: list[int] = []
    lines = 0
    for number, line in _lines(path):
        lines = number
        if line is None:
            too_long.append(number)
            continue
        text = clean_text(line)
        if len(text) > MAX_CHARS:
            too_long.append(number)
        elif text:
            sentences.append(text)
    if too_long:
        first = f"line {too_long[0]}" + (f" and {len(too_long) - 1} more" if too_long[1:] else "")
        if not sentences:
            raise ValueError(
                f"{path}:{too_long[0]}: no sentence found: {first} longer than {MAX_CHARS:,} "
                "characters (one English sentence a line)"
            )
        logger.warning("%s: skipped %s longer than %s characters", path, first, f"{MAX_CHARS:,}")
    if not sentences:
        why = "empty file" if lines == 0 else "only blank lines"
        raise ValueError(f"{path}: no sentences found ({why}); give one English sentence a line")
    logger.info("%s: read %d English sentences", path, len(sentences))
    return sentences


def _text_column(columns: list[str], label: str) -> str:
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    if len(columns) == 1:
        return columns[0]
    raise ValueError(
        f"{label}: no text column: expected one of {', '.join(map(repr, TEXT_COLUMNS))} (or a "
        f"single column), found {', '.join(map(repr, columns)) or 'none'}"
    )


def _read_hf(spec: str, max_n: int, seed: int) -> list[str]:
    """A text dataset's sentences, streamed; at most ``max_n`` (> 0) drawn through a seeded
    shuffle buffer."""
    path, local, config = sources.parse_hf(spec)
    label = f"hf:{path}" + (f":{config}" if config else "")
    if not local and not sources.hub_reachable():
        raise ValueError(sources.offline_message(spec, path))
    datasets = sources.load_datasets()
    how = {} if config is None else ({"data_dir": config} if local else {"name": config})
    try:
        dataset = datasets.load_dataset(path, split="train", streaming=True, **how)
    except Exception as err:
        raise ValueError(f"{label}: cannot open the dataset ({sources.one_line(err)})") from None
    if max_n > 0:
        dataset = dataset.shuffle(seed=seed, buffer_size=sources.SHUFFLE_BUFFER)
    sentences: list[str] = []
    column = None
    for number, row in sources.hf_rows(dataset, label):
        if not isinstance(row, dict):
            raise ValueError(f"{label} row {number}: expected a row of columns, got {row!r:.40}")
        column = column or _text_column(list(row), label)
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{label} row {number}: {column!r} must be text, got {value!r:.40}")
        text = clean_text(value or "")
        if text and len(text) <= MAX_CHARS:
            sentences.append(text)
            if 0 < max_n <= len(sentences):
                break
    if not sentences:
        raise ValueError(f"{label}: no sentences found")
    logger.info("%s: read %d English sentences", label, len(sentences))
    return sentences


def read_english(spec: str, max_n: int = 0, seed: int = 0) -> list[str]:
    """The English sentences of one spec (see the module docstring), in source order.

    ``max_n`` > 0 caps what an ``hf:`` source streams; files and folders are read whole.

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "a.txt").write_text("One sentence here.\\n", encoding="utf-8")
        >>> read_english(str(root))
        ['One sentence here.']
    """
    spec = spec.strip()
    if not spec:
        raise ValueError(
            "an empty English source; pass a text file, a folder of .txt files, hf:OWNER/NAME, "
            f"or {', '.join((DEFAULT_SPEC, *DEBIAN_SPECS))}"
        )
    if spec == DEFAULT_SPEC or spec in DEBIAN_SPECS:
        by_source = english_by_source()
        return [s for name in DEBIAN_SPECS if spec in (DEFAULT_SPEC, name) for s in by_source[name]]
    if spec.startswith("hf:"):
        return _read_hf(spec, max_n, seed)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sources.folder_files(path, (".txt",))
        if not files:
            raise ValueError(
                f"{path}: no .txt files in this folder or below it; put files of one English "
                "sentence a line (such as en.txt) in it"
            )
        return [s for file in files for s in read_english_file(file)]
    if path.is_file():
        return read_english_file(path)
    raise ValueError(
        f"{spec}: no such file or folder; pass a text file (one English sentence a line), a "
        f"folder of .txt files, hf:OWNER/NAME, or {', '.join((DEFAULT_SPEC, *DEBIAN_SPECS))}"
    )


def english_rows(specs: list[str], max_n: int, seed: int = 0) -> list[str]:
    """A run's English-only rows: at most ``max_n`` sentences of ``specs`` (none: ``default``),
    deduplicated across them (0: none).

    Sources are taken in the order given, each shuffled by ``seed``: the first fills the rows
    before the second adds any, so ``--english default --english news.txt --english-rows
    100000`` keeps every everyday sentence and tops them up with news. With the default spec
    alone this is exactly :func:`kd.data.english_text.english_sentences`.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "en.txt"
        >>> _ = p.write_text("A first one.\\nA second one.\\na first one\\n", encoding="utf-8")
        >>> sorted(english_rows([str(p)], 10))
        ['A first one.', 'A second one.']
    """
    if not max_n:
        return []
    specs = list(specs) or [DEFAULT_SPEC]
    seen: set[str] = set()
    rows: list[str] = []
    for spec in dict.fromkeys(specs):
        new: list[str] = []
        for sentence in read_english(spec, max_n, seed):
            key = english_key(sentence)
            if key not in seen:
                seen.add(key)
                new.append(sentence)
        random.Random(seed).shuffle(new)
        rows += new[: max_n - len(rows)]  # every source is still read: its errors still show
    return rows
