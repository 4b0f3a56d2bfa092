"""The app's Search tab: the demo collection, its index per model, and the handler's answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gradio as gr
import pytest

from webapp.search import (
    ALL_LANGS,
    collection_langs,
    demo_index,
    example_queries,
    read_collection,
    search,
    search_tables,
)
from webapp.session import Visitor
from webapp.settings import SEARCH_COLLECTION, SEARCH_QUERIES

SCRIPTS = {
    "Latin": (0x41, 0x24F),
    "Cyrillic": (0x400, 0x4FF),
    "Arabic": (0x600, 0x6FF),
    "Devanagari": (0x900, 0x97F),
    "Han": (0x4E00, 0x9FFF),
}


def test_demo_collection_is_a_few_hundred_sentences_in_many_languages_and_scripts():
    rows = read_collection()
    assert 300 <= len(rows) <= 1000
    assert len(collection_langs()) >= 10 and collection_langs()[0] == "en"
    assert len({(r.id, r.lang) for r in rows}) == len(rows)
    scripts = {
        name
        for r in rows
        for ch in r.text
        for name, (low, high) in SCRIPTS.items()
        if low <= ord(ch) <= high
    }
    assert scripts == set(SCRIPTS)
    ids = {r.id for r in rows}
    queries = [line.split("\t") for line in SEARCH_QUERIES.read_text("utf-8").splitlines()[1:]]
    assert queries and all(expected in ids for _, _, expected in queries)
    assert len(set(example_queries())) >= 8


def test_a_malformed_collection_names_its_line(tmp_path):
    bad = tmp_path / "c.tsv"
    bad.write_text("id\tlang\ttext\nt1\ten\tHello there.\nt2\tde\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":3: expected id<TAB>lang<TAB>text"):
        read_collection(bad)


def test_kd_index_reads_sentence_tables_too(tmp_path):
    """The collection's format is one ``kd index`` reads: ``[id<TAB>]lang<TAB>text`` tables."""
    from kd.search.index import read_rows

    table = tmp_path / "notes.tsv"
    table.write_text("lang\ttext\nde\tGuten Morgen.\nfra\tBonjour.\n\n", encoding="utf-8")
    rows = read_rows(table)
    assert [(r.text, r.lang, r.id) for r in rows] == [
        ("Guten Morgen.", "de", None),
        ("Bonjour.", "fr", None),
    ]
    table.write_text("lang\ttext\nxx\tHallo.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":2: "):
        read_rows(table)


@pytest.fixture
def tiny_distilled(tmp_path, tiny_teacher, tiny_student):
    """A 'distilled student' of the tiny teacher: the tiny student's weights with the run
    record a distillation writes (kd_config.json naming the teacher and its fingerprint)."""
    from kd.models.encoder import Encoder

    out = tmp_path / "visitor" / "run-1" / "student"
    shutil.copytree(tiny_student, out)
    fingerprint = Encoder.load(tiny_teacher, "cpu").fingerprint()
    record = {"teacher": tiny_teacher, "teacher_fingerprint": fingerprint}
    (out / "kd_config.json").write_text(json.dumps(record), encoding="utf-8")
    return str(out)


def test_search_ranks_the_collection_under_each_model(
    tiny_teacher, tiny_student, tiny_distilled, isolated_cache, allow_tiny_models
):
    query = example_queries()[0]
    notes, teacher, untrained, prebuilt, distilled = search(
        query, 5, ALL_LANGS, tiny_teacher, tiny_student, None
    )
    # The pre-built student learnt from another teacher: its table stays empty with this one.
    assert len(teacher) == len(untrained) == 5 and prebuilt.empty and distilled.empty
    assert "No *student, distilled* yet" in notes
    assert list(teacher["rank"]) == [1, 2, 3, 4, 5]
    assert list(teacher["score"]) == sorted(teacher["score"], reverse=True)
    texts = {r.text for r in read_collection()}
    assert set(teacher["sentence"]) <= texts and set(untrained["sentence"]) <= texts

    # The visitor's student searches the teacher's index (same space), not one of its own.
    visitor = Visitor(student_dir=tiny_distilled, teacher=tiny_teacher)
    notes, _, _, _, distilled = search(query, 3, "de", tiny_teacher, tiny_student, visitor)
    assert len(distilled) == 3 and set(distilled["lang"]) == {"de"}
    assert "*student, distilled* searched the teacher's own index" in notes
    assert notes.count("searched") == 1  # one sentence for every student in the teacher's index
    dbs = sorted(p.name for p in (isolated_cache / "search").glob("*.db"))
    assert len(dbs) == 2, dbs  # one per model that built an index: teacher, untrained student

    # On the page, a table with no results is not drawn: before a run, the visitor's; with a
    # teacher that has no pre-built student, that one's.
    _, _, _, prebuilt_table, distilled_table = search_tables(
        query, 3, ALL_LANGS, tiny_teacher, tiny_student, None
    )
    assert not prebuilt_table.visible and not distilled_table.visible
    _, _, _, prebuilt_table, distilled_table = search_tables(
        query, 3, ALL_LANGS, tiny_teacher, tiny_student, visitor
    )
    assert not prebuilt_table.visible and distilled_table.visible


def test_the_index_is_built_once_and_reused(tiny_teacher, isolated_cache, allow_tiny_models):
    from kd.search.store import index_info

    db = demo_index(tiny_teacher)
    stamp = db.stat().st_mtime_ns
    assert demo_index(tiny_teacher) == db and db.stat().st_mtime_ns == stamp
    assert sum(index_info(db)["langs"].values()) == len(read_collection())


@pytest.mark.parametrize(
    ("query", "k", "lang", "message"),
    [
        ("", 5, ALL_LANGS, "query is empty"),
        ("   \u200b ", 5, ALL_LANGS, "query is empty"),
        ("x" * 5000, 5, ALL_LANGS, "limit"),
        ("hello", 0, ALL_LANGS, "results per model"),
        ("hello", 2.5, ALL_LANGS, "results per model"),
        ("hello", 5, "xx", "language"),
        ("hello", 5, "sv", "has no 'sv'"),
    ],
)
def test_bad_search_input_is_a_gr_error(
    query, k, lang, message, tiny_teacher, tiny_student, isolated_cache, allow_tiny_models
):
    with pytest.raises(gr.Error) as err:
        search(query, k, lang, tiny_teacher, tiny_student, None)
    assert message in str(err.value.message), err.value.message


def test_an_expired_student_is_a_gr_error(
    tmp_path, tiny_teacher, tiny_student, isolated_cache, allow_tiny_models
):
    visitor = Visitor(student_dir=str(tmp_path / "gone"), teacher=tiny_teacher)
    with pytest.raises(gr.Error, match="expired"):
        search("hello", 3, ALL_LANGS, tiny_teacher, tiny_student, visitor)


@pytest.mark.slow
def test_the_team_queries_find_their_sentences_with_the_real_student(isolated_cache):
    """With the real multilingual student, the team's paraphrased queries find the sentence
    they were written for: a check of the collection, the index and the handler together."""
    from webapp.settings import DEFAULT_STUDENT, DEFAULT_TEACHER

    queries = [line.split("\t") for line in SEARCH_QUERIES.read_text("utf-8").splitlines()[1:]]
    found = 0
    for _lang, query, expected in queries:
        _, _, untrained, _, _ = search(query, 10, ALL_LANGS, DEFAULT_TEACHER, DEFAULT_STUDENT, None)
        found += expected in set(untrained["id"])
    assert found / len(queries) >= 0.8, (found, len(queries))
    assert Path(SEARCH_COLLECTION).is_file()
