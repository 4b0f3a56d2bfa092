"""The run's data builder: held-out pairs by English sentence across languages, caps, sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from kd.config import TrainConfig
from kd.data.dataset import build_dataset, load_pairs, read_dataset
from kd.data.pairs import Pair, english_key
from kd.data.split import held_out_keys

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EVERYDAY = SHARED / "data" / "everyday-parallel"


def _multiway(n: int, langs=("de", "fr", "ja")) -> list[Pair]:
    """n English sentences, each translated into every language (as the everyday sets are)."""
    return [
        Pair(f"Sentence number {i}.", f"{lang} {i}", lang, "x") for i in range(n) for lang in langs
    ]


def _cfg(**kw) -> TrainConfig:
    base = dict(out="/tmp/unused", langs=["de", "fr", "ja"], max_pairs=0, english_rows=0)
    base.update(kw)
    return TrainConfig(**base)


def test_held_out_sentences_leave_training_in_every_language():
    pairs = _multiway(50)
    data = build_dataset(_cfg(eval_pairs=5, data=["x"]), pairs, ["An English row.", "Another row."])
    assert {lang: len(en) for lang, (en, _x) in data.eval_sets.items()} == {
        "de": 5,
        "fr": 5,
        "ja": 5,
    }
    held = {english_key(s) for en, _x in data.eval_sets.values() for s in en}
    assert len(held) == 5  # multi-way: the same 5 sentences serve every language
    assert not held & {english_key(s) for s in data.english}
    assert len(data.english) == 45 + 2 and len(data.texts) == 47 + 45 * 3
    # every translation's target is its own English sentence
    for text, target in zip(data.texts[47:], data.target[47:], strict=True):
        assert text.split()[1] == data.english[target].split()[-1].rstrip(".")
    assert data.sources == {"x": 135}


def test_held_out_keys_fill_languages_with_different_sentences():
    # de and fr share no English sentence: each needs its own held-out sentences
    pairs = [Pair(f"De sentence {i}.", f"d{i}", "de", "x") for i in range(20)]
    pairs += [Pair(f"Fr sentence {i}.", f"f{i}", "fr", "x") for i in range(20)]
    held = held_out_keys(pairs, ["de", "fr"], 4)
    assert len(held) == 8
    assert held_out_keys(pairs, ["de", "fr"], 0) == set()
    # a language with no more pairs than asked for is not evaluated: all of it trains
    assert held_out_keys(pairs[:3], ["de"], 4) == set()
    # fixed by the data, not by where a pair sits in the list
    assert held_out_keys(pairs[::-1], ["de", "fr"], 4) == held


def test_max_pairs_caps_each_language_after_the_hold_out():
    data = build_dataset(_cfg(eval_pairs=4, max_pairs=10), _multiway(40), [])
    counts = data.summary()
    assert counts["de"] == counts["fr"] == counts["ja"] == 10
    again = build_dataset(_cfg(eval_pairs=4, max_pairs=10), _multiway(40), [])
    assert again.texts == data.texts  # the draw is fixed by the seed
    other = build_dataset(_cfg(eval_pairs=4, max_pairs=10, seed=1), _multiway(40), [])
    assert other.texts != data.texts and other.eval_sets == data.eval_sets  # held out: by data
    # a random draw, not the first ten of each language
    first = [f"de {i}" for i in range(40)][:14]
    assert [t for t in data.texts if t.startswith("de ")] != first[:10]
    # items in source order: English sentences by first appearance, then the translations
    assert data.langs == ["en"] * len(data.english) + [
        p.lang for p in _multiway(40) if p.other in set(data.texts[len(data.english) :])
    ]


def test_load_pairs_default_spec_joins_the_other_sources(tmp_path, monkeypatch):
    own = tmp_path / "own.tsv"
    own.write_text("en\tde\nGood morning.\tGuten Morgen.\n", encoding="utf-8")
    other = tmp_path / "everyday"
    other.mkdir()
    (other / "de.tsv").write_text("en\tde\nThank you.\tDanke.\n", encoding="utf-8")
    monkeypatch.setenv("KD_DATA", str(other))
    pairs, note = load_pairs(_cfg(langs=["de"], data=["default", str(own)], max_pairs=5))
    assert {p.en for p in pairs} == {"Good morning.", "Thank you."} and note is None
    pairs, _ = load_pairs(_cfg(langs=["de"], data=[str(own)], max_pairs=5))
    assert [p.en for p in pairs] == ["Good morning."]  # --data replaces the default
    pairs, _ = load_pairs(_cfg(langs=["de"], max_pairs=5))
    assert [p.en for p in pairs] == ["Thank you."]  # no --data: KD_DATA
    assert load_pairs(_cfg(langs=["de"], max_pairs=0, english_rows=5)) == ([], None)


def test_software_catalogs_come_with_a_note(monkeypatch):
    import kd.data.gettext_source
    import kd.data.sources

    monkeypatch.delenv("KD_DATA", raising=False)
    monkeypatch.setattr(kd.data.sources, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(
        kd.data.gettext_source,
        "gettext_pairs",
        lambda langs: [Pair("Open file", "Datei öffnen", "de", "g")],
    )
    # a language kd's own everyday set lacks (it has all twelve dev languages)
    monkeypatch.setattr(
        kd.data.gettext_source,
        "gettext_pairs",
        lambda langs: [Pair("Open file", "फ़ाइल खोलें", "hi", "g")],
    )
    pairs, note = load_pairs(_cfg(langs=["hi"], max_pairs=5))
    assert [p.other for p in pairs] == ["फ़ाइल खोलें"]
    assert note and "KD_DATA" in note and "has no hi" in note and "\n" not in note
    # the dev languages: kd's own everyday set, named
    pairs, note = load_pairs(_cfg(langs=["de"], max_pairs=5))
    assert {p.source for p in pairs} == {"everyday/de.tsv"} and "everyday" in note


@pytest.mark.skipif(not EVERYDAY.is_dir(), reason=f"needs the everyday data at {EVERYDAY}")
def test_everyday_hold_out_is_by_english_sentence_across_all_languages(monkeypatch):
    monkeypatch.setenv("KD_DATA", str(EVERYDAY))
    cfg = TrainConfig(out="/tmp/unused", max_pairs=300, english_rows=0, eval_pairs=100)
    data = read_dataset(cfg)
    assert sorted(data.eval_sets) == sorted(cfg.langs)
    assert all(len(en) == 100 for en, _x in data.eval_sets.values())
    held = {english_key(s) for en, _x in data.eval_sets.values() for s in en}
    assert not held & {english_key(s) for s in data.english}
    assert len(held) < 400  # multi-way parallel: far fewer than 12 x 100 sentences
    assert all(n == 300 for lang, n in data.summary().items() if lang != "en")
    assert {s.split("/")[0] for s in data.sources} == {"flores", "ntrex", "pud", "xsid"}
