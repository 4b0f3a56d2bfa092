"""The reader layer for data sources: files, folders, hf: datasets (local), gettext, defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kd.data import sources
from kd.data.pairs import Pair, pairs_summary
from kd.data.sources import (
    DEFAULT_HUB_SPEC,
    default_sources,
    hub_reachable,
    read_source,
    read_sources,
)
from kd.langs import DEV_LANGS

EVERYDAY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "everyday-parallel"
SHARED = EVERYDAY.parent


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nested folders: a language from a file name, one from a header, JSON rows, noise."""
    root = tmp_path / "data"
    _write(root / "news" / "de.tsv", "Good morning.\tGuten Morgen.\nThank you.\tDanke.\n")
    _write(root / "web" / "deep" / "pairs.tsv", "en\tfr\nGood morning.\tBonjour.\n")
    _write(root / "web" / "en-es.tsv", "Thank you.\tGracias.\n")
    _jsonl(
        root / "mixed.jsonl",
        [
            {"en": "Open the door.", "text": "Öffne die Tür.", "lang": "de"},
            {"en": "Close the door.", "text": "Ferme la porte.", "lang": "fr"},
            {"en": "An English-only sentence.", "lang": "en"},
        ],
    )
    _write(root / "README.md", "not data\n")
    _write(root / "notes.txt", "not data either\n")
    _write(root / ".cache" / "de.tsv", "hidden\tversteckt\n")
    return root


# --- folders and files ----------------------------------------------------------------------


def test_folder_walk_reads_every_file_below_with_relative_sources(folder: Path) -> None:
    pairs = read_source(str(folder))
    assert [(p.source, p.lang) for p in pairs] == [
        ("mixed.jsonl", "de"),
        ("mixed.jsonl", "fr"),
        ("mixed.jsonl", "en"),
        ("news/de.tsv", "de"),  # language from the file name (no header)
        ("news/de.tsv", "de"),
        ("web/deep/pairs.tsv", "fr"),  # language from the header
        ("web/en-es.tsv", "es"),  # from a pair name en-xx
    ]
    assert pairs[3] == Pair("Good morning.", "Guten Morgen.", "de", "news/de.tsv")


def test_folder_walk_keeps_only_the_languages_asked_for_and_english_rows(folder: Path) -> None:
    pairs = read_source(str(folder), ["DE"])
    assert pairs_summary(pairs) == {"de": 3, "en": 1}
    assert {p.source for p in pairs} == {"mixed.jsonl", "news/de.tsv"}


def test_header_wins_over_the_file_name(tmp_path: Path) -> None:
    _write(tmp_path / "de.tsv", "en\tfr\nThank you.\tMerci.\n")
    assert [p.lang for p in read_source(str(tmp_path))] == ["fr"]


def test_no_pair_in_the_languages_asked_for_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "news" / "de.tsv", "Thank you.\tDanke.\n")
    with pytest.raises(ValueError, match=r"no pairs in ja, fr"):
        read_source(str(tmp_path), ["ja", "fr"])


@pytest.mark.parametrize("content", [None, "README.md"])
def test_empty_folder_or_one_without_data_files(tmp_path: Path, content: str | None) -> None:
    if content:
        _write(tmp_path / "sub" / content, "# nothing to read\n")
    with pytest.raises(ValueError, match=r"no \.tsv/\.jsonl/\.json files") as err:
        read_source(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_non_utf8_file_in_a_folder_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path / "ok" / "fr.tsv", "Thank you.\tMerci.\n")
    bad = b"en\tde\nThank you.\tDanke.\nGood night.\tGute Nacht \xff.\n"
    _write(tmp_path / "sub" / "de.tsv", bad)
    with pytest.raises(ValueError) as err:
        read_source(str(tmp_path))
    message = str(err.value)
    assert f"{tmp_path / 'sub' / 'de.tsv'}:3: not valid UTF-8" in message
    assert "\n" not in message


def test_non_utf8_first_line_without_header_still_names_the_line(tmp_path: Path) -> None:
    _write(tmp_path / "notes.tsv", b"caf\xe9\tcaf\xe9\n")
    with pytest.raises(ValueError, match=r"notes\.tsv:1: not valid UTF-8"):
        read_source(str(tmp_path))


def test_unknown_language_in_file_name_without_header(tmp_path: Path) -> None:
    _write(tmp_path / "qq.tsv", "Thank you.\tThanks in qq.\n")
    with pytest.raises(ValueError) as err:
        read_source(str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'qq.tsv'}:1: no language")
    assert "unknown language code 'qq'" in message and "en<TAB>xx" in message
    assert "\n" not in message


def test_unknown_language_in_a_header_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path / "sub" / "pairs.tsv", "en\tklingon\nThank you.\tQapla'.\n")
    with pytest.raises(ValueError, match=r"pairs\.tsv:1: unknown language code 'klingon'"):
        read_source(str(tmp_path))


def test_a_malformed_line_keeps_the_readers_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "de.tsv", "One.\tEins.\nTwo.\tZwei.\textra\n")
    with pytest.raises(ValueError, match=r"de\.tsv:2: expected 2 tab-separated columns"):
        read_source(str(tmp_path))


def test_single_file_takes_its_language_from_its_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "de.tsv", "Thank you.\tDanke.\n")
    assert read_source(str(path)) == [Pair("Thank you.", "Danke.", "de", "de.tsv")]


def test_a_tatoeba_folder_goes_to_read_tatoeba(tmp_path: Path) -> None:
    _write(tmp_path / "tatoeba.deu-eng.deu", "Danke.\nHallo.\n")
    _write(tmp_path / "tatoeba.deu-eng.eng", "Thank you.\nHello.\n")
    pairs = read_source(str(tmp_path), ["de", "fr"])
    assert [(p.other, p.lang, p.source) for p in pairs] == [
        ("Danke.", "de", "tatoeba"),
        ("Hallo.", "de", "tatoeba"),
    ]


def test_missing_path_and_empty_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file or folder"):
        read_source(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="empty data source"):
        read_source("  ")
    with pytest.raises(ValueError, match="no data sources given"):
        read_sources([])
    with pytest.raises(ValueError, match="per_lang"):
        read_source(str(tmp_path), per_lang=-1)


def test_gettext_spec_mixes_with_a_folder(monkeypatch, folder: Path) -> None:
    import kd.data.gettext_source

    asked = []

    def fake_gettext_pairs(langs):
        asked.append(langs)
        return [Pair("Open the file.", "Datei öffnen.", "de", "gettext:demo")]

    monkeypatch.setattr(kd.data.gettext_source, "gettext_pairs", fake_gettext_pairs)
    pairs = read_sources(["gettext", str(folder)], ["de"])
    assert asked == [["de"]]
    assert pairs[0].source == "gettext:demo"
    assert {p.source for p in pairs[1:]} == {"mixed.jsonl", "news/de.tsv"}


# --- hf: a local folder in the parallel-sentences layout ------------------------------------


@pytest.fixture
def talks(tmp_path: Path) -> Path:
    """DIR/en-xx/train.* with columns english, non_english, as the docstring describes."""
    root = tmp_path / "talks"
    _jsonl(
        root / "en-de" / "train.jsonl",
        [
            {"english": "Thank you.", "non_english": "Danke."},
            {"english": "  Good\u200b morning. ", "non_english": "Guten Morgen."},
            {"english": "", "non_english": "Leer."},  # skipped: an empty side
            {"english": "Good night.", "non_english": "Gute Nacht."},
            {"english": "See you.", "non_english": "Bis bald."},
        ],
    )
    _jsonl(
        root / "en-fr" / "train.jsonl",
        [
            {"english": "Thank you.", "non_english": "Merci."},
            {"english": "Good night.", "non_english": "Bonne nuit."},
        ],
    )
    # A regional config, as .tsv: used for pt because there is no en-pt.
    _write(root / "en-pt-br" / "train.tsv", "english\tnon_english\nThank you.\tObrigado.\n")
    _jsonl(root / "en-es" / "train.jsonl", [{"en": "Thank you.", "es": "Gracias."}])
    return root


def test_hf_local_folder_picks_configs_by_language(talks: Path) -> None:
    pytest.importorskip("datasets")
    pairs = read_source(f"hf:{talks}", ["fr", "de", "pt"])
    assert pairs_summary(pairs) == {"de": 4, "fr": 2, "pt": 1}
    assert [p.lang for p in pairs][:3] == ["fr", "fr", "de"]  # in the order asked for
    assert Pair("Good morning.", "Guten Morgen.", "de", f"hf:{talks}:en-de") in pairs
    assert {p.source for p in pairs if p.lang == "pt"} == {f"hf:{talks}:en-pt-br"}


def test_hf_local_folder_per_lang_cap_and_explicit_config(talks: Path) -> None:
    pytest.importorskip("datasets")
    pairs = read_source(f"hf:{talks}:en-de", ["de"], per_lang=2, seed=1)
    assert len(pairs) == 2 and {p.lang for p in pairs} == {"de"}
    allowed = {"Danke.", "Guten Morgen.", "Gute Nacht.", "Bis bald."}
    assert {p.other for p in pairs} <= allowed
    assert pairs == read_source(f"hf:{talks}:en-de", ["de"], per_lang=2, seed=1)


def test_hf_local_folder_wrong_columns(talks: Path) -> None:
    pytest.importorskip("datasets")
    with pytest.raises(ValueError) as err:
        read_source(f"hf:{talks}", ["es"])
    message = str(err.value)
    assert f"hf:{talks}:en-es: expected the columns 'english' and 'non_english'" in message
    assert "found 'en', 'es'" in message and "\n" not in message


def test_hf_local_folder_config_errors(talks: Path) -> None:
    pytest.importorskip("datasets")
    with pytest.raises(ValueError, match=r"no en-xx config for ja; configs found: en-de, en-es"):
        read_source(f"hf:{talks}", ["ja"])
    with pytest.raises(ValueError, match=r"no config 'en-ja'"):
        read_source(f"hf:{talks}:en-ja")
    with pytest.raises(ValueError, match=r"config 'en-de' is language 'de'.*not among"):
        read_source(f"hf:{talks}:en-de", ["fr"])
    with pytest.raises(ValueError, match="neither a folder nor a Hub dataset id"):
        read_source("hf:not a dataset")
    with pytest.raises(ValueError, match="no such folder"):
        read_source(f"hf:{talks}/missing")


# --- hf: Hub ids offline ---------------------------------------------------------------------


def test_hub_id_offline_fails_in_one_line(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        read_source("hf:sentence-transformers/parallel-sentences-talks:en-de", ["de"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("hf:sentence-transformers/parallel-sentences-talks:en-de: ")
    assert "cannot be reached (HF_HUB_OFFLINE is set)" in message
    assert "hf:DIR" in message and "--data" in message


def test_hub_id_without_offline_variables_fails_fast(monkeypatch) -> None:
    # No internet here: the probe fails. With internet, the id does not exist on the Hub.
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sources, "_probe_cache", {})
    with pytest.raises(ValueError):
        read_source("hf:kd-tests/no-such-dataset-7f3a", ["de"])


def test_a_hung_hub_connection_is_given_up(monkeypatch) -> None:
    """A connection that never answers counts as 'unreachable' once the timeout passes: the
    probe runs in a thread that is abandoned, so the caller never waits on the network."""
    import threading
    import urllib.request

    release = threading.Event()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: release.wait())
    try:
        assert sources._probe("https://hub.example", timeout=0.05) is False
    finally:
        release.set()
    assert sources.HUB_TIMEOUT_S <= 5


def test_hub_reachable_respects_variables_and_probes_once(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(sources, "_probe", lambda url, timeout: calls.append(url) or True)
    monkeypatch.setattr(sources, "_probe_cache", {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub_reachable() is False and calls == []
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    assert hub_reachable() is True and hub_reachable() is True
    assert calls == ["https://hub.example"]


# --- defaults --------------------------------------------------------------------------------


def test_default_sources_uses_kd_data(monkeypatch, folder: Path) -> None:
    monkeypatch.setattr(sources, "hub_reachable", lambda: pytest.fail("no Hub check expected"))
    monkeypatch.setenv("KD_DATA", str(folder))
    assert default_sources(["de"]) == ([str(folder)], None)
    monkeypatch.setenv("KD_DATA", str(folder / "missing"))
    with pytest.raises(ValueError, match=r"^KD_DATA=.*missing: no such folder"):
        default_sources(["de"])


def test_default_sources_without_kd_data(monkeypatch) -> None:
    monkeypatch.delenv("KD_DATA", raising=False)
    # kd's own everyday set first, online or not, wherever it has every language asked for
    for reachable in (True, False):
        monkeypatch.setattr(sources, "hub_reachable", lambda r=reachable: r)
        specs, note = default_sources(["de", "ja", "ar"])
        assert specs == ["everyday"] and "kd's own everyday set" in note and "\n" not in note
    # a language it lacks: the Hub's everyday set, else software messages, saying which
    monkeypatch.setattr(sources, "hub_reachable", lambda: True)
    assert default_sources(["de", "hi"]) == ([DEFAULT_HUB_SPEC], None)
    monkeypatch.setattr(sources, "hub_reachable", lambda: False)
    specs, note = default_sources(["de", "hi"])
    assert specs == ["gettext"]
    assert note is not None and "\n" not in note and "has no hi" in note
    assert "everyday" in note and "--data DIR" in note and "KD_DATA=DIR" in note


def test_kds_own_everyday_set_is_whole_and_read_by_both_readers(tmp_path) -> None:
    from kd.data.corpus import iter_source_pairs
    from kd.data.sources import EVERYDAY_DIR, everyday_langs

    assert everyday_langs() == sorted(DEV_LANGS)
    english = None
    for lang in DEV_LANGS:
        lines = (EVERYDAY_DIR / f"{lang}.tsv").read_text(encoding="utf-8").splitlines()
        assert lines[0] == f"en\t{lang}" and len(lines) == 401
        rows = [line.split("\t") for line in lines[1:]]
        assert all(len(r) == 2 and r[0].strip() and r[1].strip() and r[0] != r[1] for r in rows)
        english = english or [r[0] for r in rows]
        assert [r[0] for r in rows] == english  # multi-way: the same 400 English sentences
    assert len(set(english)) == 400
    pairs = read_source("everyday", ["de", "ja"])
    assert len(pairs) == 800 and pairs[0].source == "everyday/de.tsv"
    streamed = list(iter_source_pairs(["everyday"], ["de", "ja"]))
    assert [(p.en, p.other, p.lang, p.source) for p in streamed] == [
        (p.en, p.other, p.lang, p.source) for p in pairs
    ]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"needs the shared evaluation data at {SHARED}")
def test_kds_own_everyday_set_shares_no_sentence_with_the_benchmarks() -> None:
    """Scores on the Tatoeba dev set and the STS benchmark stay honest after training on it."""
    import re

    from kd.data.sources import EVERYDAY_DIR

    def key(s: str) -> str:
        return re.sub(r"[^\w ]", "", s.lower()).strip()

    ours = set()
    for f in EVERYDAY_DIR.glob("*.tsv"):
        for line in f.read_text(encoding="utf-8").splitlines()[1:]:
            ours |= {key(s) for s in line.split("\t")}
    theirs = set()
    for folder in ("tatoeba-dev", "stsb-multi-dev"):
        for f in (SHARED / folder).rglob("*"):
            if f.is_file() and f.suffix != ".md":
                for line in f.read_text(encoding="utf-8", errors="ignore").splitlines():
                    theirs |= {key(s) for s in line.split("\t")}
    assert theirs, "no benchmark sentences read"
    assert not ours & theirs


# --- the real everyday data -------------------------------------------------------------------


@pytest.mark.skipif(not EVERYDAY.is_dir(), reason=f"{EVERYDAY} not present (shared data)")
def test_real_everyday_parallel_folder() -> None:
    pairs = read_source(str(EVERYDAY), list(DEV_LANGS))
    counts = pairs_summary(pairs)
    assert set(counts) == set(DEV_LANGS)
    # The README's table: NTREX 1,997 x 12 + FLORES 1,012 x 12 + PUD 1,000 x 9
    # + xSID (800 x 5 + ja 400 + ar 798) = 50,306 rows. (Its "in total 49,626" does not add up.)
    assert len(pairs) == 50_306
    assert counts["de"] == 1997 + 1012 + 1000 + 800
    assert {p.source for p in pairs} >= {"flores/de.tsv", "ntrex/zh.tsv", "xsid/ja.tsv"}
