"""One reader for every kind of parallel-data source: files, folders, Hub datasets, gettext.

A *source spec* is one string, as ``--data`` takes it (the flag can be repeated):

- ``path/to/file.tsv`` (or ``.txt``, ``.jsonl``, ``.json``): read by
  :func:`kd.data.pairs.read_pairs`; a TSV file without a header line takes its language from its
  name (``de.tsv``, ``en-de.tsv``).
- ``path/to/folder``: a LASER Tatoeba folder (``tatoeba.XXX-eng.XXX`` files) goes to
  :func:`kd.data.pairs.read_tatoeba`; any other folder is walked recursively, in sorted order, and
  every ``.tsv``/``.jsonl``/``.json`` file below it is read (hidden files and folders are
  skipped). A file's language comes from its header line ``en<TAB>xx`` or, failing that, from
  its name. ``Pair.source`` is the path relative to the folder (``"flores/de.tsv"``).
- ``hf:OWNER/NAME[:CONFIG]``: a Hugging Face Hub dataset in the layout of sentence-transformers'
  ``parallel-sentences-*`` sets (columns ``english`` and ``non_english``, one config per
  language pair named ``en-xx``), streamed with ``datasets.load_dataset(..., streaming=True)``,
  so a large set is never loaded whole. Without ``CONFIG``, the config of each language asked
  for is used (``en-de`` for ``de``; a regional one such as ``en-pt-br`` when there is no
  ``en-pt``). Before any network call the Hub's reachability is checked (:func:`hub_reachable`),
  so that an offline machine fails in seconds with one line.
- ``hf:/path/to/folder[:CONFIG]``: the same layout on disk, read through the same streaming
  code path. An existing folder wins over a Hub id of the same spelling.
- ``gettext``: the software-message catalogs installed on this machine
  (:func:`kd.data.gettext_source.gettext_pairs`). Write ``./gettext`` for a folder of that name.
- ``everyday``: kd's own everyday set (``kd/data/everyday``: 400 sentences of everyday life in
  12 languages, written for this project, MIT), the default when nothing else is given.
  ``Pair.source`` is ``"everyday/de.tsv"``.

A local folder in the parallel-sentences layout: one sub-folder per config, named ``en-xx``,
holding the ``train`` split as ``.jsonl``, ``.parquet``, ``.csv`` or ``.tsv`` files whose
columns are ``english`` and ``non_english`` (a ``.tsv`` starts with the header line
``english<TAB>non_english``)::

    talks/
      en-de/train.jsonl     {"english": "Thank you.", "non_english": "Danke."}
      en-fr/train.parquet

then ``--data hf:talks``. A folder downloaded from the Hub (``hf download OWNER/NAME
--repo-type dataset --local-dir talks``) works as it is: when its ``README.md`` declares the
configs, those are used.

Every source follows the rules of :mod:`kd.data.pairs`: sentences cleaned by
:func:`kd.data.pairs.clean_text`, empty or over-long (:data:`kd.data.pairs.MAX_CHARS`) rows skipped,
and bad data (wrong columns, an unknown language code, an empty folder, invalid UTF-8) reported as
one ``ValueError`` line that names the file and line (or dataset, config and row). Only the
languages asked for are kept (English-only rows always); a source that yields no pair at all is an
error.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kd.data import gettext_source
from kd.data.pairs import (
    _TSV_HEADER_EN,
    _TSV_HEADER_OTHER,
    Pair,
    _lang_or_none,
    _Skips,
    clean_text,
    read_pairs,
    read_tatoeba,
    read_text,
)
from kd.langs import normalize_lang, parse_langs

logger = logging.getLogger("kd")

GETTEXT_SPEC = "gettext"
"""The spec of the offline software-message catalogs."""

EVERYDAY_SPEC = "everyday"
"""The spec of kd's own everyday set (:data:`EVERYDAY_DIR`)."""

EVERYDAY_DIR = Path(__file__).resolve().parent / "everyday"
"""kd's own everyday set: 400 sentences in 12 languages, one ``xx.tsv`` a language (its README
says how it was written)."""

DEFAULT_HUB_SPEC = "hf:sentence-transformers/parallel-sentences-talks"
"""The everyday set used when no data is given and the Hub is reachable (TED2020 talks)."""

KD_DATA_ENV = "KD_DATA"
"""The environment variable naming the default data folder."""

HUB_TIMEOUT_S = 3.0
"""How long the reachability check waits for the Hub, in seconds."""

SHUFFLE_BUFFER = 10_000
"""Rows in the streaming shuffle buffer used when ``per_lang`` caps a Hub config."""

FOLDER_SUFFIXES = (".tsv", ".jsonl", ".json")
"""File types read from a folder (``.txt`` only as a single file: folders hold READMEs)."""

_HF_COLUMNS = ("english", "non_english")
_HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_PAIR_NAME_RES = (re.compile(r"en[-_.](.+)", re.I), re.compile(r"(.+?)[-_.]en", re.I))
_TRUE = {"1", "on", "yes", "true"}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_probe_cache: dict[str, bool] = {}


# --- the Hub: reachable or not --------------------------------------------------------------


def _offline_var() -> str | None:
    for name in _OFFLINE_VARS:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def _probe(url: str, timeout: float) -> bool:
    """One HEAD request to ``url``, bounded by ``timeout`` (name lookup included)."""
    answer: list[bool] = []

    def attempt() -> None:
        request = urllib.request.Request(url, method="HEAD")
        try:
            urllib.request.urlopen(request, timeout=timeout).close()
            answer.append(True)
        except urllib.error.HTTPError:  # the server answered, if only with an error status
            answer.append(True)
        except Exception:  # no route, no name, refused, timed out, a proxy said no...
            answer.append(False)

    thread = threading.Thread(target=attempt, daemon=True)  # a hung DNS lookup must not block
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answer and answer[0])


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face Hub can be reached, decided within about ``timeout`` seconds.

    ``False`` at once when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set; otherwise one
    HEAD request to ``$HF_ENDPOINT`` (default ``https://huggingface.co``), whose answer is kept
    for the rest of the process.

    Example:
        >>> import os
        >>> os.environ["HF_HUB_OFFLINE"] = "1"
        >>> hub_reachable()
        False
        >>> del os.environ["HF_HUB_OFFLINE"]
    """
    if _offline_var():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"
    if endpoint not in _probe_cache:
        _probe_cache[endpoint] = _probe(endpoint, timeout)
    return _probe_cache[endpoint]


# --- files and folders ----------------------------------------------------------------------


def _pair_lang(name: str) -> str | None:
    """The translation language of a name ``en-xx``, ``en_xx``, ``xx-en``...; None otherwise."""
    for pattern in _PAIR_NAME_RES:
        match = pattern.fullmatch(name)
        if match:
            lang = _lang_or_none(match[1])
            if lang and lang != "en":
                return lang
    return None


def _lang_from_name(stem: str) -> str | None:
    """The translation language a file name gives: ``de``, ``deu``, ``en-de``, ``de_en``."""
    lang = _pair_lang(stem) or _lang_or_none(stem)
    return lang if lang != "en" else None


def _tsv_header_lang(path: Path) -> str | None:
    """The language a TSV file's header line names, ``None`` without one (or unreadable)."""
    try:
        with path.open("rb") as file:
            head = file.read(1 << 16)
    except OSError:
        return None  # read_pairs reports it
    for raw in head.removeprefix(b"\xef\xbb\xbf").split(b"\n"):
        try:
            line = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError:
            return None  # read_pairs names the line
        if not line.strip():
            continue
        cols = line.split("\t")
        named = cols[1].strip() if len(cols) == 2 else ""
        is_header = cols[0].strip().lower() in _TSV_HEADER_EN
        if not is_header or named.lower() in _TSV_HEADER_OTHER:
            return None
        try:
            return normalize_lang(named)
        except ValueError as err:
            raise ValueError(f"{path}:1: {err}") from None
    return None


def file_lang(path: Path, fallback: str | None = None) -> str | None:
    """The language of a file as far as it can be known before reading it.

    A TSV file's header, else its name, else ``fallback`` (the run's only language, for a file
    given by itself; an error when none gives one); a JSON file's name (``None`` when the name
    is no language code: the rows say it).
    """
    if path.suffix.lower() in (".jsonl", ".json"):
        return _lang_from_name(path.stem) or fallback
    lang = _tsv_header_lang(path) or _lang_from_name(path.stem) or fallback
    if lang is None:
        read_text(path)  # a missing, empty or non-UTF-8 file: the reader's own file:line error
        try:
            normalize_lang(path.stem)
            why = "it is English"
        except ValueError as err:
            why = str(err)
        raise ValueError(
            f"{path}:1: no language: the file has no header line 'en<TAB>xx' and its name "
            f"{path.stem!r} gives no translation language ({why}); add the header line or "
            "rename the file after its language (e.g. de.tsv)"
        )
    return lang


def _keep(pair: Pair, wanted: list[str] | None) -> bool:
    return wanted is None or pair.lang == "en" or pair.lang in wanted


def _read_file(
    path: Path, wanted: list[str] | None, source: str, fallback: str | None = None
) -> list[Pair]:
    """One file's pairs in the wanted languages, named ``source``; [] when its language is not
    wanted. ``fallback``: the language of a file that names none."""
    suffix = path.suffix.lower()
    lang = file_lang(path, fallback) if suffix in (*FOLDER_SUFFIXES, ".txt") else None
    is_json = suffix in (".jsonl", ".json")  # JSON rows may name other languages: read them
    if wanted is not None and lang is not None and lang not in wanted and not is_json:
        logger.debug("%s: language %s not asked for; skipped", path, lang)
        return []
    return [
        Pair(pair.en, pair.other, pair.lang, source)
        for pair in read_pairs(path, lang)
        if _keep(pair, wanted)
    ]


def tatoeba_langs(directory: Path) -> list[str]:
    found = []
    for eng in sorted(directory.glob("tatoeba.*-eng.eng")):
        lang = _lang_or_none(eng.name.split(".")[1].removesuffix("-eng"))
        if lang:
            found.append(lang)
    return found


def folder_files(directory: Path, suffixes: tuple[str, ...] = FOLDER_SUFFIXES) -> list[Path]:
    """The files below ``directory`` with one of ``suffixes`` (any case), hidden files and
    folders skipped, sorted by their path inside it."""
    files = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in suffixes and path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(directory).as_posix())


def _read_folder(directory: Path, wanted: list[str] | None) -> list[Pair]:
    present = tatoeba_langs(directory)
    if present:
        use = present if wanted is None else [lang for lang in wanted if lang in present]
        if not use:
            raise ValueError(
                f"{directory}: a Tatoeba folder without {', '.join(wanted or [])}; languages "
                f"present: {', '.join(present)}"
            )
        by_lang = read_tatoeba(directory, use)
        return [pair for lang in use for pair in by_lang[lang]]
    files = folder_files(directory)
    if not files:
        raise ValueError(
            f"{directory}: no .tsv/.jsonl/.json files in this folder or below it; put files "
            "such as de.tsv (a header line 'en<TAB>de', then english<TAB>translation lines) in it"
        )
    pairs: list[Pair] = []
    for path in files:
        pairs.extend(_read_file(path, wanted, path.relative_to(directory).as_posix()))
    return pairs


# --- Hub datasets and local folders in their layout -----------------------------------------


def load_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "hf: sources need the 'datasets' package; install it (pip install datasets) or use "
            "a local .tsv/.jsonl folder with --data"
        ) from None
    return datasets


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def parse_hf(spec: str) -> tuple[str, bool, str | None]:
    """(dataset path or Hub id, is a local folder, config) of an ``hf:`` spec."""
    rest = spec[3:].strip()
    if not rest:
        raise ValueError("hf:: name a dataset, as hf:OWNER/NAME[:CONFIG] or hf:/path/to/folder")
    if Path(rest).expanduser().is_dir():
        return str(Path(rest).expanduser()), True, None
    head, sep, tail = rest.rpartition(":")
    if sep and head and tail.strip():
        if Path(head).expanduser().is_dir():
            return str(Path(head).expanduser()), True, tail.strip()
        if _HUB_ID_RE.fullmatch(head):
            return head, False, tail.strip()
    if _HUB_ID_RE.fullmatch(rest):
        return rest, False, None
    if rest.startswith(("/", ".", "~")):
        raise ValueError(f"{spec}: no such folder; check the path (hf:/path/to/folder[:CONFIG])")
    raise ValueError(
        f"{spec}: neither a folder nor a Hub dataset id; use hf:OWNER/NAME[:CONFIG] "
        "(e.g. hf:sentence-transformers/parallel-sentences-talks:en-de) or hf:/path/to/folder"
    )


def offline_message(spec: str, name: str) -> str:
    why = f"{_offline_var()} is set" if _offline_var() else "offline?"
    return (
        f"{spec}: the Hugging Face Hub cannot be reached ({why}); download it where you have "
        f"internet (hf download {name} --repo-type dataset --local-dir DIR) and pass the folder "
        "as hf:DIR, or use a local .tsv/.jsonl folder with --data DIR"
    )


def _list_configs(datasets: Any, path: str, local: bool, label: str) -> tuple[list[str], str]:
    """The dataset's configs and how ``load_dataset`` selects one (``"name"``/``"data_dir"``)."""
    if local and not (Path(path) / "README.md").is_file():
        folders = sorted(
            d.name for d in Path(path).iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        return folders, "data_dir"
    try:
        return list(datasets.get_dataset_config_names(path)), "name"
    except Exception as err:
        raise ValueError(f"{label}: cannot list the dataset's configs ({one_line(err)})") from None


def _pick_configs(
    configs: list[str], config: str | None, wanted: list[str] | None, label: str
) -> list[tuple[str, str]]:
    """(config, language) pairs to read, in the order of ``wanted``."""
    listed = ", ".join(configs) or "none"
    if config is not None:
        if config not in configs:
            raise ValueError(f"{label}: no config {config!r}; configs found: {listed}")
        lang = _pair_lang(config)
        if lang is None:
            raise ValueError(
                f"{label}: config {config!r} names no language pair as en-xx (e.g. en-de), so "
                "the translation language is unknown; choose an en-xx config"
            )
        if wanted is not None and lang not in wanted:
            raise ValueError(
                f"{label}: config {config!r} is language {lang!r}, which is not among the "
                f"languages asked for ({', '.join(wanted)}); add {lang} or choose another config"
            )
        return [(config, lang)]
    by_lang: dict[str, str] = {}
    for name in configs:
        lang = _pair_lang(name)
        if lang and (lang not in by_lang or name.lower() == f"en-{lang}"):
            by_lang[lang] = name
    langs = list(by_lang) if wanted is None else [lang for lang in wanted if lang in by_lang]
    if not langs:
        asked = ", ".join(wanted) if wanted else "any language"
        raise ValueError(
            f"{label}: no en-xx config for {asked}; configs found: {listed}; choose one with "
            f"{label}:CONFIG or use a dataset in the parallel-sentences layout"
        )
    missing = [lang for lang in wanted or [] if lang not in by_lang]
    if missing:
        logger.warning("%s: no config for %s", label, ", ".join(missing))
    return [(by_lang[lang], lang) for lang in langs]


def hf_rows(dataset: Iterable[Any], label: str) -> Iterator[tuple[int, Any]]:
    """(row number, row), with any reading error turned into one ValueError line."""
    rows = iter(dataset)
    number = 0
    while True:
        number += 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as err:
            raise ValueError(f"{label}: cannot read row {number} ({one_line(err)})") from None
        yield number, row


def _check_columns(columns: Iterable[str] | None, label: str) -> None:
    if columns is None:
        return
    columns = list(columns)
    if not set(_HF_COLUMNS) <= set(columns):
        raise ValueError(
            f"{label}: expected the columns 'english' and 'non_english' (sentence-transformers' "
            f"parallel-sentences layout), found {', '.join(map(repr, columns)) or 'none'}"
        )


def _read_config(
    datasets: Any, path: str, how: str, config: str, lang: str, per_lang: int, seed: int, label: str
) -> list[Pair]:
    where = f"{label}:{config}"
    try:
        dataset = datasets.load_dataset(path, split="train", streaming=True, **{how: config})
    except Exception as err:
        raise ValueError(f"{where}: cannot open the dataset ({one_line(err)})") from None
    _check_columns(getattr(dataset, "column_names", None), where)
    if per_lang > 0:  # so that the cap does not just take the first talks
        dataset = dataset.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER)
    pairs: list[Pair] = []
    skips = _Skips()
    for number, row in hf_rows(dataset, where):
        if not isinstance(row, dict):
            raise ValueError(f"{where} row {number}: expected a row of columns, got {row!r:.40}")
        if number == 1:
            _check_columns(row, where)
        sides = []
        for column in _HF_COLUMNS:
            value = row[column]
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"{where} row {number}: {column!r} must be text, got {value!r:.40}"
                )
            sides.append(clean_text(value or ""))
        if skips.keep(*sides):
            pairs.append(Pair(sides[0], sides[1], lang, where))
            if 0 < per_lang <= len(pairs):
                break
    level = logging.WARNING if skips.empty or skips.too_long else logging.INFO
    logger.log(level, "%s: read %d pairs; %s", where, len(pairs), skips.describe())
    return pairs


def _read_hf(spec: str, wanted: list[str] | None, per_lang: int, seed: int) -> list[Pair]:
    path, local, config = parse_hf(spec)
    label = f"hf:{path}"
    if not local and not hub_reachable():
        raise ValueError(offline_message(spec, path))
    datasets = load_datasets()
    configs, how = _list_configs(datasets, path, local, label)
    pairs: list[Pair] = []
    for name, lang in _pick_configs(configs, config, wanted, label):
        pairs.extend(_read_config(datasets, path, how, name, lang, per_lang, seed, label))
    return pairs


# --- the public readers ---------------------------------------------------------------------


def read_source(
    spec: str, langs: list[str] | None = None, per_lang: int = 0, seed: int = 0
) -> list[Pair]:
    """Read the pairs of one source spec: a file, a folder, ``hf:...`` or ``gettext``.

    Args:
        spec: the source (see the module docstring for the forms it takes).
        langs: languages to keep (codes); ``None`` keeps all. English-only rows are always kept.
        per_lang: > 0 caps the pairs read per language from an ``hf:`` source (its rows are
            drawn through a seeded shuffle buffer and reading stops once enough are taken);
            files, folders and ``gettext`` are read whole (sample them afterwards).
        seed: the seed of that shuffle.

    Returns:
        The pairs in source order; ``Pair.source`` tells the sources apart (``"flores/de.tsv"``,
        ``"hf:OWNER/NAME:en-de"``, ``"gettext:glib20"``).

    Raises:
        ValueError: one line naming what is wrong and where: a missing path, an empty folder,
            wrong columns, an unknown language code, invalid UTF-8 (file and line), an
            unreachable Hub, or no pair at all in the languages asked for.

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "news").mkdir()
        >>> _ = (root / "news" / "de.tsv").write_text("Good morning.\\tGuten Morgen.\\n")
        >>> [(p.lang, p.source) for p in read_source(str(root), ["de", "fr"])]
        [('de', 'news/de.tsv')]
    """
    if isinstance(per_lang, bool) or not isinstance(per_lang, int) or per_lang < 0:
        raise ValueError(f"per_lang must be a whole number >= 0 (0: no cap), got {per_lang!r}")
    wanted = parse_langs(langs) if langs is not None else None
    spec = spec.strip()
    if not spec:
        raise ValueError("an empty data source; pass a file, a folder, hf:OWNER/NAME or gettext")
    if spec == GETTEXT_SPEC:
        pairs = gettext_source.gettext_pairs(wanted)
    elif spec == EVERYDAY_SPEC:
        pairs = [
            Pair(p.en, p.other, p.lang, f"{EVERYDAY_SPEC}/{p.source}")
            for p in _read_folder(EVERYDAY_DIR, wanted)
        ]
    elif spec.startswith("hf:"):
        pairs = _read_hf(spec, wanted, per_lang, seed)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            pairs = _read_folder(path, wanted)
        elif path.is_file():
            # A file given by itself in a one-language run is in that language unless it says.
            only = wanted[0] if wanted and len(wanted) == 1 else None
            pairs = _read_file(path, wanted, path.name, only)
        else:
            raise ValueError(
                f"{spec}: no such file or folder; pass a .tsv/.jsonl file, a folder of them, "
                "hf:OWNER/NAME[:CONFIG] or gettext"
            )
    if not pairs:
        asked = f" in {', '.join(wanted)}" if wanted else ""
        raise ValueError(f"{spec}: no pairs{asked}; give data in these languages or ask for others")
    return pairs


def read_sources(
    specs: list[str], langs: list[str] | None = None, per_lang: int = 0, seed: int = 0
) -> list[Pair]:
    """Read several source specs (see :func:`read_source`) and concatenate their pairs.

    Raises:
        ValueError: no spec given, or anything :func:`read_source` raises for one of them.

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "de.tsv").write_text("Thank you.\\tDanke.\\n")
        >>> _ = (root / "fr.tsv").write_text("Thank you.\\tMerci.\\n")
        >>> [p.other for p in read_sources([str(root / "de.tsv"), str(root / "fr.tsv")])]
        ['Danke.', 'Merci.']
    """
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise ValueError("no data sources given; pass --data PATH (a file or folder) or hf:NAME")
    pairs: list[Pair] = []
    for spec in specs:
        pairs.extend(read_source(spec, langs, per_lang, seed))
    return pairs


DEFAULT_SPEC = "default"
"""In ``--data``: the default source, as when no ``--data`` is given."""


def run_specs(data: list[str], langs: list[str], max_pairs: int) -> tuple[list[str], str | None]:
    """The source specs a run reads, and an optional note about them.

    ``--data`` sources, when given, replace the default source (name ``default`` among them to
    keep it); without them the default source is read when ``max_pairs`` asks for pairs at all.
    """
    specs = list(data) or ([DEFAULT_SPEC] if max_pairs else [])
    note = None
    if DEFAULT_SPEC in specs:  # "default" stands for the default source, beside the others
        default, note = default_sources(langs)
        specs = list(
            dict.fromkeys(x for s in specs for x in (default if s == DEFAULT_SPEC else [s]))
        )
    return specs, note


def everyday_langs() -> list[str]:
    """The languages of kd's own everyday set (beside English)."""
    return sorted(p.stem for p in EVERYDAY_DIR.glob("*.tsv"))


def default_sources(langs: list[str] | None) -> tuple[list[str], str | None]:
    """The specs to read when the user gave none, and a one-line note to show (or ``None``).

    In order: the folder in ``$KD_DATA`` (a value starting with ``hf:`` or equal to ``gettext``
    is taken as a spec); else kd's own everyday set (:data:`EVERYDAY_SPEC`) when it has every
    language asked for, with a note naming it; else TED2020 talks from the Hub
    (:data:`DEFAULT_HUB_SPEC`) when the Hub is reachable; else ``["gettext"]``, with a note that
    everyday data would do much better.

    Raises:
        ValueError: ``$KD_DATA`` names a path that does not exist.

    Example:
        >>> import os
        >>> os.environ["KD_DATA"] = "."
        >>> default_sources(["de"])
        (['.'], None)
        >>> del os.environ["KD_DATA"]
    """
    value = os.environ.get(KD_DATA_ENV, "").strip()
    if value:
        if value == GETTEXT_SPEC or value.startswith("hf:"):
            return [value], None
        if not Path(value).expanduser().exists():
            raise ValueError(
                f"{KD_DATA_ENV}={value}: no such folder; point {KD_DATA_ENV} at a folder of "
                f".tsv/.jsonl files, or unset it"
            )
        return [value], None
    missing = sorted(set(parse_langs(langs)) - set(everyday_langs())) if langs else []
    if EVERYDAY_DIR.is_dir() and not missing:
        return [EVERYDAY_SPEC], (
            f"training pairs: kd's own everyday set ({EVERYDAY_SPEC}: 400 sentences of everyday "
            "life in each of 12 languages, written for kd)"
        )
    if hub_reachable():
        return [DEFAULT_HUB_SPEC], None
    which = f" for {', '.join(parse_langs(langs))}" if langs else ""
    if EVERYDAY_DIR.is_dir():
        which += f" (kd's own everyday set has no {', '.join(missing)})"
    note = (
        f"no data given and the Hub is out of reach: training on software messages (gettext "
        f"catalogs){which}; everyday sentences would do much better: pass --data DIR (a folder "
        f"of .tsv/.jsonl files) or set {KD_DATA_ENV}=DIR"
    )
    return [GETTEXT_SPEC], note
