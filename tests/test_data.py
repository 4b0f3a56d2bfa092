"""Parallel data: languages, readers, splits, and the offline sources (gettext, English text)."""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

import polib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kd.data import gettext_source
from kd.data.english_text import english_counts, english_pairs, english_sentences
from kd.data.gettext_source import clean_pair, gettext_counts, gettext_pairs
from kd.data.pairs import (
    MAX_CHARS,
    Pair,
    clean_text,
    english_key,
    pairs_summary,
    read_jsonl,
    read_pairs,
    read_tatoeba,
    read_tsv,
    sample_per_lang,
)
from kd.langs import (
    DEV_LANGS,
    KNOWN_LANGS,
    lang_from_locale,
    lang_name,
    normalize_lang,
    parse_langs,
    tatoeba_code,
)

TATOEBA_DEV = Path(__file__).parents[1].parent / "shared" / "data" / "tatoeba-dev"
LOCALE_DIR = Path("/usr/share/locale")
WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")


@pytest.fixture
def machine_cache() -> None:
    """Marks a test that reads this machine's files through the user's cache (slow to rebuild)."""


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch, request) -> None:
    """Every other test writes its caches under a fresh temporary directory."""
    if "machine_cache" not in request.fixturenames:
        monkeypatch.setenv("KD_CACHE", str(tmp_path_factory.mktemp("cache")))


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def one_line_error(excinfo: pytest.ExceptionInfo[ValueError], *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


# --- languages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_code", "expected"),
    [
        ("de", "de"),
        ("DE", "de"),
        (" deu ", "de"),
        ("ger", "de"),
        ("de_DE", "de"),
        ("de-AT", "de"),
        ("de_DE.UTF-8@euro", "de"),
        ("cmn", "zh"),
        ("zh_CN", "zh"),
        ("zh-Hans", "zh"),
        ("pt_BR", "pt"),
        ("por", "pt"),
        ("jpn", "ja"),
        ("ara", "ar"),
        ("fil", "tl"),
    ],
)
def test_normalize_lang(given_code: str, expected: str) -> None:
    assert normalize_lang(given_code) == expected


def test_unknown_and_unmapped_language_codes() -> None:
    with pytest.raises(ValueError) as excinfo:
        normalize_lang("xx")
    one_line_error(excinfo, "unknown language code 'xx'", "known codes: de, fr, es")
    for variant in ("zh_TW", "zh_HK", "sr@latin"):
        assert lang_from_locale(variant) is None
        with pytest.raises(ValueError, match="not mapped"):
            normalize_lang(variant)
    assert lang_from_locale("en_GB") == "en"
    assert lang_from_locale("ca@valencia") is None
    assert lang_from_locale("nonsense!") is None


def test_language_table() -> None:
    assert set(DEV_LANGS) <= set(KNOWN_LANGS) and "en" in KNOWN_LANGS
    assert len(KNOWN_LANGS) >= 70
    assert [tatoeba_code(lang) for lang in DEV_LANGS] == (
        ["deu", "fra", "spa", "ita", "rus", "jpn", "cmn", "ara", "nld", "por", "pol", "tur"]
    )
    assert all(normalize_lang(tatoeba_code(lang)) == lang for lang in KNOWN_LANGS)
    assert lang_name("zh") == "Chinese (Simplified)" and lang_name("deu") == "German"


def test_parse_langs() -> None:
    assert parse_langs("de,fr, es") == ["de", "fr", "es"]
    assert parse_langs("de, DEU,de_DE,fr,") == ["de", "fr"]
    assert parse_langs(["ja", "jpn"]) == ["ja"]
    for empty in ("", " , ", []):
        with pytest.raises(ValueError, match="no languages given"):
            parse_langs(empty)
    with pytest.raises(ValueError, match="unknown language code 'qq'"):
        parse_langs("de,qq")


# --- cleaning and Pair ---------------------------------------------------------------------


def test_clean_text_strips_invisible_and_control_characters() -> None:
    assert clean_text("\ufeffHello\u200b wor\u2060ld\x00!\x07") == "Hello world !"
    assert clean_text("a\tb\r\nc\x0cd  \u00a0 e\u202e") == "a b c d e"
    assert clean_text("soft\u00adhyphen") == "softhyphen"
    assert clean_text("Cafe\u0301") == "Caf\u00e9"  # NFC
    assert clean_text("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645") == (
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # Persian keeps its ZWNJ
    )
    assert clean_text(" \u200b\t ") == ""


def test_pair_invariant() -> None:
    assert Pair("Hello there.", None, "en", "x").other is None
    with pytest.raises(ValueError, match="English-only"):
        Pair("Hello there.", None, "de", "x")
    with pytest.raises(ValueError, match="English-only"):
        Pair("Hello there.", "Hallo.", "en", "x")


# --- TSV -----------------------------------------------------------------------------------


def test_read_tsv_good(tmp_path: Path) -> None:
    path = write(tmp_path / "de.tsv", "en\tde\nGood morning.\tGuten Morgen.\n\nThanks.\tDanke.\r\n")
    pairs = read_tsv(path)
    assert pairs == [
        Pair("Good morning.", "Guten Morgen.", "de", "de.tsv"),
        Pair("Thanks.", "Danke.", "de", "de.tsv"),
    ]
    plain = write(tmp_path / "plain.tsv", "Good morning.\tBonjour.\n")
    assert read_tsv(plain, "fra") == [Pair("Good morning.", "Bonjour.", "fr", "plain.tsv")]
    assert read_tsv(path, "de") == pairs  # the header agrees


def test_read_tsv_language_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "x.tsv", "Good morning.\tGuten Morgen.\n")
    with pytest.raises(ValueError) as excinfo:
        read_tsv(path)
    one_line_error(excinfo, str(path), "no language given")
    with pytest.raises(ValueError) as excinfo:
        read_tsv(path, "xx")
    one_line_error(excinfo, str(path), "unknown language code 'xx'")
    with pytest.raises(ValueError, match="must not be English"):
        read_tsv(path, "en")
    header = write(tmp_path / "h.tsv", "en\tfr\nGood morning.\tBonjour.\n")
    with pytest.raises(ValueError) as excinfo:
        read_tsv(header, "de")
    one_line_error(excinfo, f"{header}:1:", "header says 'fr'")
    bad_header = write(tmp_path / "b.tsv", "en\tklingon\nGood morning.\tBonjour.\n")
    with pytest.raises(ValueError) as excinfo:
        read_tsv(bad_header)
    one_line_error(excinfo, f"{bad_header}:1:", "unknown language code 'klingon'")


@pytest.mark.parametrize(
    ("content", "line", "found"),
    [
        ("Good morning.\tGuten Morgen.\nno tab here\n", 2, 1),
        ("Good morning.\tGuten Morgen.\tExtra\n", 1, 3),
        ("a b\tc d\n\n\na\tb\tc\td\n", 4, 4),
    ],
)
def test_read_tsv_wrong_columns(tmp_path: Path, content: str, line: int, found: int) -> None:
    path = write(tmp_path / "bad.tsv", content)
    with pytest.raises(ValueError) as excinfo:
        read_tsv(path, "de")
    one_line_error(
        excinfo,
        f"{path}:{line}: expected 2 tab-separated columns (english, translation), found {found}",
    )


def test_read_tsv_empty_missing_and_not_utf8(tmp_path: Path) -> None:
    for content in (b"", b"\n \n"):
        path = write(tmp_path / "empty.tsv", content)
        with pytest.raises(ValueError) as excinfo:
            read_tsv(path, "de")
        one_line_error(excinfo, f"{path}: no pairs found (empty file)")
    with pytest.raises(ValueError) as excinfo:
        read_tsv(tmp_path / "nope.tsv", "de")
    one_line_error(excinfo, "nope.tsv: file not found")
    path = write(tmp_path / "latin1.tsv", b"Good morning.\tGuten Morgen.\n\xff\xfe bad\tx\n")
    with pytest.raises(ValueError) as excinfo:
        read_tsv(path, "de")
    one_line_error(excinfo, f"{path}:2: not valid UTF-8 (save the file as UTF-8)")
    with pytest.raises(ValueError, match="not a file"):
        read_tsv(tmp_path, "de")


def test_read_tsv_skips_empty_and_overlong_sentences(tmp_path: Path, caplog) -> None:
    long = "x" * 100_000
    content = f"Good morning.\tGuten Morgen.\n  \tleer\nHello.\t \u200b\n{long}\tlang\nA.\tB.\n"
    path = write(tmp_path / "skips.tsv", content)
    with caplog.at_level(logging.INFO, logger="kd"):
        pairs = read_tsv(path, "de")
    assert [pair.en for pair in pairs] == ["Good morning.", "A."]
    summary = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(summary) == 1
    assert "2 with an empty sentence" in summary[0]
    assert f"1 longer than {MAX_CHARS} characters" in summary[0]
    only_bad = write(tmp_path / "bad.tsv", f"\tleer\n{long}\tlang\n")
    with pytest.raises(ValueError) as excinfo:
        read_tsv(only_bad, "de")
    one_line_error(excinfo, f"{only_bad}: no pairs found", "1 with an empty sentence")


def test_read_tsv_cleans_sentences(tmp_path: Path) -> None:
    path = write(tmp_path / "z.tsv", "\ufeffGood\u200b  morning.\x07\tGuten\u00a0Morgen.\u200e\n")
    assert read_tsv(path, "de")[0] == Pair("Good morning.", "Guten Morgen.", "de", "z.tsv")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(alphabet=st.sampled_from("ab \t\n\r\x00\u200b\ufeffé中%"), max_size=200).map(
            lambda text: text.encode("utf-8")
        ),
        st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
    ),
    st.sampled_from([None, "de", "zh_CN"]),
)
def test_read_tsv_fuzz(content: bytes, lang: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.tsv"
        path.write_bytes(content)
        try:
            pairs = read_tsv(path, lang)
        except ValueError as err:
            assert "\n" not in str(err)
            return
    assert pairs and all(isinstance(pair, Pair) for pair in pairs)
    for pair in pairs:
        assert pair.en and pair.other and pair.lang != "en"
        assert clean_text(pair.en) == pair.en and clean_text(pair.other) == pair.other
        assert len(pair.en) <= MAX_CHARS and len(pair.other) <= MAX_CHARS


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_read_jsonl_fuzz(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(content)
        try:
            pairs = read_jsonl(path, "de")
        except ValueError as err:
            assert "\n" not in str(err)
            return
    assert pairs and all(isinstance(pair, Pair) for pair in pairs)


# --- JSONL -----------------------------------------------------------------------------------


def test_read_jsonl_good(tmp_path: Path) -> None:
    rows = [
        {"en": "Thank you.", "text": "Merci.", "lang": "fr"},
        {"en": "Good night.", "translation": "Gute Nacht.", "lang": "deu"},
        {"en": "See you.", "text": "Hasta luego."},
        {"en": "A plain English sentence.", "lang": "en"},
    ]
    path = write(tmp_path / "p.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n\n")
    assert read_jsonl(path, "es") == [
        Pair("Thank you.", "Merci.", "fr", "p.jsonl"),
        Pair("Good night.", "Gute Nacht.", "de", "p.jsonl"),
        Pair("See you.", "Hasta luego.", "es", "p.jsonl"),
        Pair("A plain English sentence.", None, "en", "p.jsonl"),
    ]
    array = write(tmp_path / "p.json", json.dumps(rows[:2]))
    assert len(read_jsonl(array)) == 2


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('["en", "text"]', "expected a JSON object with keys 'en' and 'text'"),
        ('{"en": "Hi there.", "lang": "de"}', "expected a JSON object"),
        ('{"en": 3, "text": "drei", "lang": "de"}', "'en' must be a string"),
        ('{"en": "Hi there.", "text": "Hallo."}', "no language"),
        ('{"en": "Hi there.", "text": "Hallo.", "lang": "xx"}', "unknown language code 'xx'"),
        ('{"en": "Hi there.", "text": "Hallo.", "lang": "en"}', "holds English only"),
    ],
)
def test_read_jsonl_errors(tmp_path: Path, line: str, expected: str) -> None:
    good = json.dumps({"en": "Thank you.", "text": "Danke.", "lang": "de"})
    path = write(tmp_path / "bad.jsonl", f"{good}\n{line}\n")
    with pytest.raises(ValueError) as excinfo:
        read_jsonl(path)
    one_line_error(excinfo, f"{path}:2:", expected)


def test_read_jsonl_empty_and_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.jsonl", "")
    with pytest.raises(ValueError, match="no pairs found \\(empty file\\)"):
        read_jsonl(path, "de")
    path = write(tmp_path / "bad.jsonl", b'{"en": "a b", "text": "\xe9"}\n')
    with pytest.raises(ValueError) as excinfo:
        read_jsonl(path, "de")
    one_line_error(excinfo, f"{path}:1: not valid UTF-8")


def test_read_pairs_dispatch(tmp_path: Path) -> None:
    tsv = write(tmp_path / "a.txt", "Hello there.\tHallo.\n")
    jsonl = write(tmp_path / "a.jsonl", '{"en": "Hello there.", "text": "Hallo."}\n')
    assert read_pairs(tsv, "de") == read_tsv(tsv, "de")
    assert [p.other for p in read_pairs(jsonl, "de")] == ["Hallo."]
    with pytest.raises(ValueError) as excinfo:
        read_pairs(write(tmp_path / "a.csv", "x"), "de")
    one_line_error(excinfo, "a.csv: unknown file type '.csv'", ".tsv")


# --- Tatoeba ---------------------------------------------------------------------------------


def make_tatoeba(directory: Path, code: str, en: list[str], other: list[str]) -> None:
    directory.mkdir(exist_ok=True)
    write(directory / f"tatoeba.{code}-eng.eng", "".join(f"{line}\n" for line in en))
    write(directory / f"tatoeba.{code}-eng.{code}", "".join(f"{line}\n" for line in other))


def test_read_tatoeba_good(tmp_path: Path) -> None:
    make_tatoeba(tmp_path, "deu", ["I am here.", "", "Go."], ["Ich bin hier.", "Leer.", "Geh."])
    make_tatoeba(tmp_path, "cmn", ["Thank you."], ["谢谢。"])
    result = read_tatoeba(tmp_path, ["de", "zh"])
    assert result["de"] == [
        Pair("I am here.", "Ich bin hier.", "de", "tatoeba"),
        Pair("Go.", "Geh.", "de", "tatoeba"),
    ]
    assert result["zh"] == [Pair("Thank you.", "谢谢。", "zh", "tatoeba")]
    assert list(read_tatoeba(tmp_path)) == ["de", "zh"]
    assert len(read_pairs(tmp_path, "de")) == 2


def test_read_tatoeba_errors(tmp_path: Path) -> None:
    make_tatoeba(tmp_path, "deu", ["One.", "Two."], ["Eins."])
    make_tatoeba(tmp_path, "fra", ["One."], ["Un."])
    with pytest.raises(ValueError) as excinfo:
        read_tatoeba(tmp_path, ["de"])
    one_line_error(excinfo, "tatoeba.deu-eng.deu: has 1 lines but tatoeba.deu-eng.eng has 2")
    with pytest.raises(ValueError) as excinfo:
        read_tatoeba(tmp_path, ["fr", "ja"])
    one_line_error(excinfo, "tatoeba.jpn-eng.jpn: missing", "languages present", "de, fr")
    with pytest.raises(ValueError, match="not a directory"):
        read_tatoeba(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown language code"):
        read_tatoeba(tmp_path, ["xx"])


def test_read_tatoeba_dev_set() -> None:
    if not TATOEBA_DEV.is_dir():
        pytest.skip(f"the Tatoeba dev set is not at {TATOEBA_DEV}")
    result = read_tatoeba(TATOEBA_DEV)
    assert list(result) == list(DEV_LANGS)
    for lang, pairs in result.items():
        assert 490 <= len(pairs) <= 500, lang
        assert all(pair.lang == lang and pair.en and pair.other for pair in pairs)


# --- splits and sampling ---------------------------------------------------------------------


def many_pairs() -> list[Pair]:
    pairs = []
    for i in range(60):
        for lang in ("de", "fr", "ja")[: 1 + i % 3]:
            pairs.append(Pair(f"Sentence number {i}.", f"{lang} {i}", lang, "t"))
        if i % 5 == 0:
            pairs.append(Pair(f"SENTENCE  number {i}", f"de bis {i}", "de", "t"))
            pairs.append(Pair(f"sentence number {i}!", None, "en", "t"))
    return pairs


def test_sample_per_lang_and_summary() -> None:
    pairs = many_pairs()
    counts = pairs_summary(pairs)
    assert sum(counts.values()) == len(pairs) and list(counts)[0] == "de"
    sampled = sample_per_lang(pairs, 10, seed=1)
    assert all(n == min(10, counts[lang]) for lang, n in pairs_summary(sampled).items())
    assert sampled == [p for p in pairs if p in sampled]
    assert sample_per_lang(pairs, 10, seed=1) == sampled
    only_de = [p for p in pairs if p.lang == "de"]
    assert sample_per_lang(only_de, 10, seed=1) == [p for p in sampled if p.lang == "de"]
    with pytest.raises(ValueError, match="max_per_lang"):
        sample_per_lang(pairs, 0, seed=1)


# --- gettext -----------------------------------------------------------------------------------

PLACEHOLDER_RE = re.compile(r"%\S|[{}]|\$\{?\w|@\w+@")
MARKUP_RE = re.compile(r"<[A-Za-z/!?][^<>]*>|&(?:#\d+|[A-Za-z]+);")
PATH_URL_RE = re.compile(r"\w://|www\.\w|(?:^|\s)[~.]{0,2}/\w|\\|[\w.+-]+@[\w-]+\.\w")


def assert_gettext_rules(pair: Pair) -> None:
    assert pair.other is not None and pair.lang not in ("en", None)
    for text in (pair.en, pair.other):
        assert text == clean_text(text) and text
        assert not PLACEHOLDER_RE.search(text), text
        assert not MARKUP_RE.search(text), text
        assert not PATH_URL_RE.search(text), text
        assert "_" not in text, text
    assert 4 <= len(pair.en.split()) <= 30, pair.en
    assert 0.3 <= len(pair.other) / len(pair.en) <= 3.5, pair
    assert pair.other.casefold() != pair.en.casefold()
    assert clean_pair(pair.en, pair.other) == (pair.en, pair.other)


@pytest.mark.parametrize(
    ("en", "other", "expected"),
    [
        ("Open the selected file", "Öffnet die gewählte Datei", "same"),
        (
            "_Open the selected file",
            "Die gewählte Datei ö_ffnen",
            ("Open the selected file", "Die gewählte Datei öffnen"),
        ),
        (
            "&Save all open documents",
            "Alle offenen Dokumente &speichern",
            ("Save all open documents", "Alle offenen Dokumente speichern"),
        ),
        (
            "Save all open documents",
            "すべての開いている文書を保存(_S)",
            ("Save all open documents", "すべての開いている文書を保存"),
        ),
        ("Cannot open %s for reading", "Kann %s nicht lesen", None),
        ("Cannot open %(name)s for reading", "Kann %(name)s nicht lesen", None),
        ("Could not find the file {0} here", "Datei {0} nicht gefunden", None),
        ("Could not find the file {name} here", "Datei {name} nicht gefunden", None),
        ("Replace the group $1 with text", "Gruppe $1 ersetzen durch Text", None),
        ("Press <b>Enter</b> to continue now", "<b>Enter</b> drücken, um fortzufahren", None),
        ("Tom &amp; Jerry are on television", "Tom &amp; Jerry sind im Fernsehen", None),
        ("See /etc/passwd for the user list", "Siehe /etc/passwd für die Benutzerliste", None),
        ("See https://example.org for more details", "Siehe https://example.org für mehr", None),
        ("use --all to list every entry", "mit --all alle Einträge zeigen", None),
        ("the file_name value is not valid", "der Wert file_name ist ungültig", None),
        ("Open file", "Datei öffnen", None),
        ("Open the selected file now", "Öffnen", None),
        ("Open the selected file now", "Open the selected file now", None),
        ("Open the selected file now", "", None),
    ],
)
def test_clean_pair_rules(en: str, other: str, expected: object) -> None:
    assert clean_pair(en, other) == ((en, other) if expected == "same" else expected)


def write_mo(path: Path, entries: list[polib.POEntry]) -> None:
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    po.extend(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    po.save_as_mofile(str(path))


def test_gettext_pairs_reads_mo_files(tmp_path: Path) -> None:
    entry = polib.POEntry
    good = [
        entry(msgid="Open the selected file now", msgstr="Die gewählte Datei jetzt öffnen"),
        entry(msgctxt="menu", msgid="Close every open window", msgstr="Alle offenen Fenster zu"),
        entry(
            msgid="One file could not be read",
            msgid_plural="Some files could not be read",
            msgstr_plural={0: "Eine Datei war nicht lesbar", 1: "Dateien waren nicht lesbar"},
        ),
        entry(msgid="Cannot open %s for reading", msgstr="Kann %s nicht lesen"),
        entry(msgid="Not translated yet at all", msgstr=""),
    ]
    write_mo(tmp_path / "de" / "LC_MESSAGES" / "demo.mo", good)
    write_mo(tmp_path / "de_CH" / "LC_MESSAGES" / "demo.mo", good[:1])
    write_mo(
        tmp_path / "de" / "LC_MESSAGES" / "iso_639.mo",
        [entry(msgid="Some long language name here", msgstr="Ein langer Sprachname hier")],
    )
    write_mo(
        tmp_path / "zh_TW" / "LC_MESSAGES" / "demo.mo",
        [entry(msgid="Open the selected file now", msgstr="現在開啟所選檔案吧")],
    )
    write_mo(
        tmp_path / "en_GB" / "LC_MESSAGES" / "demo.mo",
        [entry(msgid="Choose a color for the text", msgstr="Choose a colour for the text")],
    )
    (tmp_path / "fr" / "LC_MESSAGES").mkdir(parents=True)
    broken = b"\xde\x12\x04\x95" + b"\x00" * 4 + b"\xff\xff\x00\x00" + b"\x10\x00\x00\x00" * 2
    write(tmp_path / "fr" / "LC_MESSAGES" / "broken.mo", broken)
    pairs = [p for p in gettext_pairs(locale_dir=tmp_path, cache=False) if p.source != "django"]
    assert sorted(pairs, key=lambda pair: pair.en) == [
        Pair("Close every open window", "Alle offenen Fenster zu", "de", "gettext:demo"),
        Pair("One file could not be read", "Eine Datei war nicht lesbar", "de", "gettext:demo"),
        Pair("Open the selected file now", "Die gewählte Datei jetzt öffnen", "de", "gettext:demo"),
    ]
    write_mo(
        tmp_path / "fr" / "LC_MESSAGES" / "demo.mo",
        [entry(msgid="Open the selected file now", msgstr="Ouvrir le fichier choisi maintenant")],
    )
    fresh = gettext_pairs("fr,de", locale_dir=tmp_path)  # extracts and writes the cache
    assert gettext_pairs(["de", "fr"], locale_dir=tmp_path) == fresh  # from the cache
    assert [p.lang for p in fresh if p.source != "django"] == ["de", "de", "de", "fr"]
    assert gettext_counts(locale_dir=tmp_path) == pairs_summary(gettext_pairs(locale_dir=tmp_path))


def has_mo_files() -> bool:
    return LOCALE_DIR.is_dir() and next(LOCALE_DIR.glob("*/LC_MESSAGES/*.mo"), None) is not None


def test_gettext_pairs_on_this_machine(machine_cache: None, monkeypatch) -> None:
    if not has_mo_files():
        pytest.skip(f"no gettext catalogs in {LOCALE_DIR} (a minimal image without locales)")
    gettext_pairs(["de"])  # builds the cache if needed (~10-20 s once)

    def extract_again(_catalogs):
        raise AssertionError("the catalogs were read again instead of the cache")

    # From here on every call is served by the cache (bench/gettext_speed.py times how fast).
    monkeypatch.setattr(gettext_source, "_extract", extract_again)
    pairs = gettext_pairs(list(DEV_LANGS))
    counts = pairs_summary(pairs)
    assert counts["de"] >= 1000 and counts["fr"] >= 1000
    assert set(counts) <= set(DEV_LANGS) and len(counts) >= 10
    assert {lang: gettext_counts()[lang] for lang in counts} == counts
    assert len({(p.en, p.lang) for p in pairs}) == len(pairs)
    assert {p.source for p in pairs} >= {"django"}
    for pair in pairs:
        assert_gettext_rules(pair)


# --- English sentences -------------------------------------------------------------------------


def fake_english_sources(tmp_path: Path) -> tuple[Path, Path]:
    wordnet, fortunes = tmp_path / "wordnet", tmp_path / "fortunes"
    wordnet.mkdir()
    fortunes.mkdir()
    write(
        wordnet / "data.verb",
        '  1 This software "AS IS" header line\n'
        '00001 29 v 01 sleep 0 | be asleep; "he went to sleep"; "too short"\n'
        '00002 29 v 01 run 0 | move fast; "she ran all the way home"; "he went to sleep"\n',
    )
    write(
        fortunes / "people",
        "A bore is a man who talks so much about himself\nthat you can't talk about yourself.\n"
        "\t\t-- Mark Twain\n%\nToo short.\n%\n"
        "   /\\_/\\   ( o.o )  > ^ <   ||| |||  ___ ___ ___\n%\n"
        "_\bI_\bm_\bp_\bo_\br_\bt_\ba_\bn_\bt: always read the label twice.\n%\n",
    )
    write(fortunes / "people.dat", b"\x00\x00binary")
    write(fortunes / "computers", "Computers are useless; they can only give you answers.\n%\n")
    return wordnet, fortunes


def test_english_sentences_from_fake_sources(tmp_path: Path) -> None:
    wordnet, fortunes = fake_english_sources(tmp_path)
    dirs = {"wordnet_dir": wordnet, "fortunes_dir": fortunes}
    sentences = english_sentences(seed=0, **dirs)
    assert sorted(sentences) == [
        "A bore is a man who talks so much about himself that you can't talk about yourself.",
        "He went to sleep",
        "Important: always read the label twice.",
        "She ran all the way home",
    ]
    assert english_counts(**dirs) == {"wordnet": 2, "fortunes": 2}
    assert english_sentences(seed=0, **dirs) == sentences  # now from the cache
    assert english_sentences(2, seed=0, **dirs) == sentences[:2]
    assert {p.source for p in english_pairs(**dirs)} == {"wordnet", "fortunes"}
    assert all(p.other is None and p.lang == "en" for p in english_pairs(**dirs))
    with pytest.raises(ValueError, match="max_n"):
        english_sentences(-1, **dirs)


def test_english_sentences_without_packages(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="kd"):
        sentences = english_sentences(wordnet_dir=tmp_path / "a", fortunes_dir=tmp_path / "b")
    assert sentences == []
    assert "apt-get install wordnet-base fortunes-min fortunes" in caplog.text


def test_english_sentences_on_this_machine(machine_cache: None) -> None:
    if not (WORDNET_DIR / "data.noun").is_file() or not FORTUNES_DIR.is_dir():
        pytest.skip("wordnet-base and fortunes are not installed (apt-get install ...)")
    counts = english_counts()
    assert counts["wordnet"] >= 10_000 and counts["fortunes"] >= 1_000
    rows = english_pairs(seed=1)
    assert len(rows) == sum(counts.values())
    assert len({english_key(row.en) for row in rows}) == len(rows)
    for row in rows:
        assert row.en == clean_text(row.en)
        if row.source == "wordnet":
            assert len(row.en.split()) >= 4 and row.en[0] == row.en[0].upper()
        else:
            assert 20 <= len(row.en) <= 200
    assert english_sentences(100, seed=1) == [row.en for row in rows[:100]]
    assert english_sentences(100, seed=2) != english_sentences(100, seed=1)
