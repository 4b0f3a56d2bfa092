"""The SQLite search index: round trips, model checks, idempotent and crash-safe indexing, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kd.cli import main
from kd.search.store import (
    STUDENT_NOTE,
    TEACHER_NOTE,
    ModelStamp,
    Row,
    VectorStore,
    check_query_model,
    connect,
    index_info,
    pick_backend,
    shard_of,
)

ROOT = Path(__file__).resolve().parents[1]
EN = [
    "the cat sits on the mat",
    "a dog runs",
    "the big red house",
    "good morning friend",
    "thank you",
    "the small blue dog",
    "hello world",
    "good night",
    "water is blue",
    "the cat and the dog",
]
DE = [
    "die katze sitzt auf der matte",
    "der hund",
    "das haus ist rot",
    "der kleine blaue hund",
    "die katze und der hund",
]


def unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(n: int, lang: str = "en", source: str = "demo") -> list[Row]:
    return [Row(f"sentence {i}", lang, source, str(i)) for i in range(n)]


STAMP = ModelStamp("demo-model", "f00d", 16)


def integrity(path: Path) -> str:
    db = connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchall()[0][0]
    finally:
        db.close()


# ---- the store alone (no model) ------------------------------------------------------------------
def test_pick_backend_prefers_stdlib_when_it_loads_extensions(monkeypatch):
    class Loads:
        class Connection:
            def enable_load_extension(self, on):  # pragma: no cover - never called
                pass

    class Cannot:
        class Connection:
            pass

    assert pick_backend(Loads) == "sqlite3"
    pytest.importorskip("apsw")
    assert pick_backend(Cannot) == "apsw"
    monkeypatch.setitem(sys.modules, "apsw", None)  # as if apsw were not installed
    with pytest.raises(ValueError, match="pip install apsw"):
        pick_backend(Cannot)


def test_the_backend_that_runs_here_loads_sqlite_vec(tmp_path):
    backend = pick_backend()
    assert backend == (
        "sqlite3" if hasattr(sqlite3.Connection, "enable_load_extension") else "apsw"
    )
    db = connect(tmp_path / "x.db", create=True, backend=backend)
    assert db.execute("SELECT vec_version()").fetchall()[0][0].startswith("v")
    db.close()


def test_round_trip_scores_and_language_filter(tmp_path):
    vecs = unit(300, 16)
    data = rows(200, "en") + rows(100, "de")
    with VectorStore.create(tmp_path / "i.db", STAMP) as store:
        assert store.add(data, vecs * 3.0) == 300  # stored at unit length whatever the scale
        assert store.count() == 300 and store.langs() == {"en": 200, "de": 100}
    with VectorStore.open(tmp_path / "i.db", STAMP) as store:
        assert store.note is None
        hits = store.search(vecs[[5, 250]], k=4)
        assert [h[0].rowid for h in hits] == [6, 251]
        assert hits[0][0].score == pytest.approx(1.0, abs=1e-5)
        assert (hits[1][0].text, hits[1][0].lang, hits[1][0].id) == ("sentence 50", "de", "50")
        assert all(a.score >= b.score for a, b in zip(hits[0], hits[0][1:], strict=False))
        brute = vecs[:200] @ vecs[5]
        assert [h.rowid - 1 for h in store.search(vecs[5], k=4, exact=True)[0]] == list(
            np.argsort(-brute)[:4]
        )
        assert {h.lang for h in store.search(vecs[5], k=20, lang="de")[0]} == {"de"}
        approx = store.search(vecs[:20], k=5, candidates=300)  # every row a candidate: exact
        exact = store.search(vecs[:20], k=5, exact=True)
        for a, e in zip(approx, exact, strict=True):
            assert [h.rowid for h in a] == [h.rowid for h in e]
            assert [h.score for h in a] == pytest.approx([h.score for h in e], abs=1e-5)
    assert index_info(tmp_path / "i.db")["rows"] == 300


def test_sharded_knn_and_its_fallback_for_a_small_language(tmp_path):
    # en and de alternate row by row, as a .tsv indexes them: both still fill every shard
    vecs = unit(4000, 16, seed=1)
    data = [Row(f"s{i}", "en" if i % 2 == 0 else "de", "demo") for i in range(4000)]
    fr = [i for i in range(4000) if shard_of(i + 1, 32) in (0, 1)][:40]  # in 2 shards only
    for i in fr:
        data[i] = Row(f"s{i}", "fr", "demo")
    with VectorStore.create(tmp_path / "i.db", STAMP) as store:
        store.add(data, vecs)
        per_lang_shard = store.db.execute(
            "SELECT lang, count(DISTINCT shard), min(n) FROM (SELECT lang, shard, count(*) AS n "
            "FROM kd_bits GROUP BY lang, shard) GROUP BY lang"
        ).fetchall()
    assert store.shards == 32
    spread = {lang: (shards, least) for lang, shards, least in per_lang_shard}
    assert spread["en"][0] == spread["de"][0] == 32 and min(spread["en"][1], spread["de"][1]) > 30
    with VectorStore.open(tmp_path / "i.db", STAMP) as store:
        for i in (0, 1, 999):  # a stored vector finds its own row first (Hamming distance 0)
            hits = store.search(vecs[i], k=10, candidates=64)[0]
            assert hits[0].rowid == i + 1 and len(hits) == 10
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
        # fr's 40 rows lie in 2 shards: asking each shard for 2 finds 4 rows, short of 40, so
        # the whole language is asked for 40 instead, and that is every fr row: exact
        fast = store.search(vecs[fr[3]], k=10, lang="fr", candidates=40)[0]
        exact = store.search(vecs[fr[3]], k=10, lang="fr", exact=True)[0]
        assert [h.rowid for h in fast] == [h.rowid for h in exact] and len(fast) == 10


def test_an_index_of_the_old_format_asks_to_re_index(tmp_path):
    with VectorStore.create(tmp_path / "i.db", STAMP) as store:
        store.add(rows(3), unit(3, 16))
        store.db.execute("UPDATE kd_meta SET value = '1' WHERE key = 'schema_version'")
    for opening in (VectorStore.open, VectorStore.create):
        with pytest.raises(ValueError, match="index format '1', this kd reads '2'; re-index"):
            opening(tmp_path / "i.db", STAMP)


def test_bad_vectors_and_k_are_refused(tmp_path):
    with VectorStore.create(tmp_path / "i.db", STAMP) as store:
        with pytest.raises(ValueError, match="16-d vectors of 'demo-model'"):
            store.add(rows(2), unit(2, 8))
        with pytest.raises(ValueError, match="2 rows but 3 vectors"):
            store.add(rows(2), unit(3, 16))
        with pytest.raises(ValueError, match="zero"):
            store.add(rows(1), np.zeros((1, 16), np.float32))
        for k in (0, -1, 5000, 2.5, True):
            with pytest.raises(ValueError, match="k must be"):
                store.search(unit(1, 16), k=k)
        with pytest.raises(ValueError, match="candidates must be"):
            store.search(unit(1, 16), candidates=0)
        assert store.count() == 0


def test_not_an_index_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no such index"):
        VectorStore.open(tmp_path / "missing.db", STAMP)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ValueError, match="junk.db"):
        VectorStore.open(junk, STAMP)
    other = tmp_path / "other.db"
    db = connect(other, create=True)
    db.execute("CREATE TABLE t(x)")
    db.close()
    with pytest.raises(ValueError, match="something else"):
        VectorStore.create(other, STAMP)
    with pytest.raises(ValueError, match="not a kd index"):
        index_info(other)


def test_idempotent_adds_keep_the_first_row(tmp_path):
    vecs = unit(10, 16)
    with VectorStore.create(tmp_path / "i.db", STAMP) as store:
        assert store.add(rows(6), vecs[:6]) == 6
        assert store.add(rows(10), vecs) == 4  # 6 already there
        assert store.add(rows(10), vecs) == 0
        assert store.add([Row("sentence 1", "de", "demo")], vecs[:1]) == 1  # another language
        assert store.count() == 11
        assert len(store.missing(rows(12) + rows(12))) == 2
    with VectorStore.open(tmp_path / "i.db", STAMP) as store:
        assert store.search(vecs[3], k=1, lang="en")[0][0].rowid == 4


def test_model_checks():
    teacher = ModelStamp("teacher", "t1", 16)
    student = ModelStamp("student", "s1", 16, teacher_id="teacher", teacher_fingerprint="t1")
    legacy = ModelStamp("student", "s1", 16, teacher_id="teacher")  # no teacher fingerprint
    assert check_query_model(teacher, teacher) is None
    assert check_query_model(teacher, student) == STUDENT_NOTE
    assert check_query_model(teacher, legacy) == STUDENT_NOTE
    assert check_query_model(student, teacher) == TEACHER_NOTE
    with pytest.raises(ValueError, match="another copy of 'teacher'"):
        check_query_model(ModelStamp("teacher", "t2", 16), student)
    with pytest.raises(ValueError, match="built with 'teacher'.*--model teacher"):
        check_query_model(teacher, ModelStamp("other", "o1", 16))
    with pytest.raises(ValueError, match="the model changed"):
        check_query_model(teacher, ModelStamp("teacher", "t9", 16))
    with pytest.raises(ValueError, match="built with 'teacher'"):  # same lineage, other width
        check_query_model(teacher, ModelStamp("student", "s1", 8, teacher_id="teacher"))


def test_writing_with_another_model_is_refused(tmp_path):
    VectorStore.create(tmp_path / "i.db", STAMP).close()
    with pytest.raises(ValueError, match="built with 'demo-model'"):
        VectorStore.create(tmp_path / "i.db", ModelStamp("other", "beef", 16))


# ---- with the tiny models ------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    txt = tmp_path / "en.txt"
    txt.write_text("\n".join(EN) + "\n", encoding="utf-8")
    jsonl = tmp_path / "de.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"text": t, "lang": "de", "id": i}) + "\n" for i, t in enumerate(DE)),
        encoding="utf-8",
    )
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("en\tfr\nthe cat\tle chat\nthe dog\tle chien\n", encoding="utf-8")
    return {"txt": txt, "jsonl": jsonl, "tsv": tsv}


def test_read_rows_formats(files):
    from kd.search.index import read_rows

    en = read_rows(files["txt"], "en")
    assert [r.text for r in en] == EN and {r.lang for r in en} == {"en"}
    de = read_rows(files["jsonl"])
    assert (de[1].text, de[1].lang, de[1].id, de[1].source) == (DE[1], "de", "1", "de.jsonl")
    pairs = read_rows(files["tsv"])
    assert [(r.text, r.lang) for r in pairs][:2] == [("the cat", "en"), ("le chat", "fr")]


@pytest.mark.parametrize(
    ("name", "content", "lang", "message"),
    [
        ("a.txt", "hello\n", None, "needs --lang"),
        ("a.txt", "hello\tbonjour\n", "en", "name the file .tsv"),
        ("a.txt", "hello\n", "xx", "unknown language code 'xx'"),
        ("a.jsonl", '{"text": "hi"}\n', None, "no language"),
        ("a.jsonl", '{"text": "hi", "lang": "en"}\n{oops\n', None, r"a.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"txt": "hi"}\n', "en", "string 'text'"),
        ("a.jsonl", '{"text": "hi", "lang": "en", "id": [1]}\n', None, "'id' must be"),
        ("a.tsv", "a\tb\tc\n", "de", "expected 2 tab-separated columns"),
        ("a.csv", "x\n", "en", "unknown file type"),
        ("a.txt", "  \n", "en", "empty file"),
    ],
)
def test_read_rows_refuses_bad_files(tmp_path, name, content, lang, message):
    from kd.search.index import read_rows

    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_rows(path, lang)


def test_index_then_search_with_the_model(tmp_path, files, tiny_teacher):
    from kd.models.encoder import Encoder
    from kd.search.index import index_rows, model_stamp, read_rows

    model = Encoder.load(tiny_teacher)
    data = read_rows(files["txt"], "en") + read_rows(files["jsonl"])
    db = tmp_path / "i.db"
    first = index_rows(model, db, data, batch_size=4)
    assert first == {"new": 15, "present": 0, "total": 15}
    assert index_rows(model, db, data, batch_size=4) == {"new": 0, "present": 15, "total": 15}
    with VectorStore.open(db, model_stamp(model)) as store:
        hits = store.search(model.encode(["the big red house"]), k=3)[0]
        assert hits[0].text == "the big red house" and hits[0].score == pytest.approx(1, abs=1e-5)
        assert store.model.model_id == tiny_teacher


def test_wrong_model_is_refused_naming_the_index_model(tmp_path, files, tiny_teacher, tiny_student):
    from kd.models.encoder import Encoder
    from kd.search.index import index_rows, model_stamp, read_rows

    db = tmp_path / "i.db"
    index_rows(Encoder.load(tiny_teacher), db, read_rows(files["txt"], "en"))
    other = model_stamp(Encoder.load(tiny_student))
    with pytest.raises(ValueError, match=f"built with '{tiny_teacher}'"):
        VectorStore.open(db, other)
    with pytest.raises(ValueError, match=f"built with '{tiny_teacher}'"):
        index_rows(Encoder.load(tiny_student), db, read_rows(files["jsonl"]))


def test_fingerprint_ignores_the_unused_pooler(tiny_teacher):
    """The converted e5 has no pooler weights, so each load draws a random one; mean pooling
    never uses it, and an index built by that model must still accept it after a reload."""
    import torch

    from kd.models.encoder import Encoder

    model = Encoder.load(tiny_teacher)
    before = model.fingerprint()
    pooler = [p for name, p in model.named_parameters() if ".pooler." in name]
    assert pooler, "the tiny BERT should have a pooler, as BertModel does by default"
    with torch.no_grad():
        for p in pooler:
            p.add_(1.0)
        assert model.fingerprint() == before
        model.transformer.embeddings.word_embeddings.weight.add_(1.0)
    assert model.fingerprint() != before


def distilled_copy(tmp_path: Path, student: str, teacher: str, teacher_fp: str | None) -> str:
    """The tiny student's folder with a kd_config.json saying it learnt from ``teacher``."""
    out = tmp_path / "distilled"
    shutil.copytree(student, out)
    config = {"teacher": teacher, "student": student}
    if teacher_fp is not None:
        config["teacher_fingerprint"] = teacher_fp
    (out / "kd_config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(out)


def test_distilled_student_may_query_its_teachers_index(
    tmp_path, files, tiny_teacher, tiny_student
):
    from kd.models.encoder import Encoder
    from kd.search.index import index_rows, model_stamp, read_rows

    teacher = Encoder.load(tiny_teacher)
    db = tmp_path / "i.db"
    index_rows(teacher, db, read_rows(files["txt"], "en"))
    good = distilled_copy(tmp_path / "a", tiny_student, tiny_teacher, teacher.fingerprint())
    with VectorStore.open(db, model_stamp(Encoder.load(good))) as store:
        assert store.note == STUDENT_NOTE
        assert len(store.search(Encoder.load(good).encode(["hello"]), k=3)[0]) == 3
    forged = distilled_copy(tmp_path / "b", tiny_student, tiny_teacher, "0000000000000000")
    with pytest.raises(ValueError, match="another copy"):
        VectorStore.open(db, model_stamp(Encoder.load(forged)))


# ---- a crash in the middle of indexing ---------------------------------------------------------
STALL = textwrap.dedent(
    """
    import sys, time
    import kd.search.store as store
    batch, after = int(sys.argv[1]), int(sys.argv[2])
    original = store.VectorStore._insert_vectors
    calls = [0]

    def stalling(self, *args):
        original(self, *args)
        calls[0] += 1
        if calls[0] == after * batch + batch // 2:  # half-way through batch after + 1
            print("STALLED", flush=True)
            time.sleep(120)

    store.VectorStore._insert_vectors = stalling
    from kd.cli import main
    sys.exit(main(sys.argv[3:]))
    """
)


def test_kill_9_mid_batch_leaves_whole_batches_and_resume_finishes(tmp_path, tiny_teacher):
    lines = [f"{a} {b} {c}" for a in ("the", "a") for b in EN[:6] for c in ("one", "two")]
    lines = [line.replace("one", "red").replace("two", "blue") for line in lines]
    assert len(set(lines)) == 24
    txt = tmp_path / "many.txt"
    txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "crash.db"
    argv = ["index", "--model", tiny_teacher, "--db", str(db), "--lang", "en", str(txt)]
    batch, after = 4, 3
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", STALL, str(batch), str(after), *argv, "--batch-size", str(batch)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "STALLED"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert integrity(db) == "ok"
    info = index_info(db)
    assert info["rows"] == after * batch  # the open batch vanished whole
    assert main([*argv, "--batch-size", str(batch)]) == 0  # resume
    assert index_info(db)["rows"] == 24
    assert integrity(db) == "ok"
    assert main([*argv, "--batch-size", "7"]) == 0
    assert index_info(db)["rows"] == 24


# ---- the command line ------------------------------------------------------------------------
def test_cli_index_and_search(tmp_path, files, tiny_teacher, tiny_student, capsys):
    db = tmp_path / "cli.db"
    rc = main(
        ["index", "--model", tiny_teacher, "--db", str(db), "--lang", "en", str(files["txt"])]
        + [str(files["jsonl"]), str(files["tsv"])]
    )
    assert rc == 0
    assert "indexed 19 new sentences" in capsys.readouterr().out
    assert main(["search", "--db", str(db), "good night", "-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[0].split()[:3] == ["1", "1.000", "en"]
    assert main(["search", "--db", str(db), "the dog", "--lang", "deu", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {h["lang"] for h in got} == {"de"} and len(got) == 5
    student = distilled_copy(tmp_path, tiny_student, tiny_teacher, None)
    assert main(["search", "--db", str(db), "--model", student, "hello world", "-k", "2"]) == 0
    captured = capsys.readouterr()
    assert STUDENT_NOTE in captured.err and len(captured.out.splitlines()) == 2
    # Several queries, one model load: each block under its query, the same hits as alone.
    queries = tmp_path / "queries.txt"
    queries.write_text("the dog\n\n", encoding="utf-8")
    assert (
        main(["search", "--db", str(db), "good night", "--queries", str(queries), "-k", "3"]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "query: good night" and out[1].split()[:3] == ["1", "1.000", "en"]
    assert out[5] == "query: the dog" and len(out) == 9
    assert main(["search", "--db", str(db), "good night", "the dog", "--json", "-k", "2"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [b["query"] for b in both] == ["good night", "the dog"]
    assert both[0]["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--db", "{missing}", "hello"], "no such index"),
        (["search", "--db", "{db}", "   "], "empty query"),
        (["search", "--db", "{db}"], "no query"),
        (["search", "--db", "{db}", "--queries", "{missing}"], "cannot read it"),
        (["search", "--db", "{db}", "hello", "-k", "0"], "-k must be from 1"),
        (["search", "--db", "{db}", "hello", "--candidates", "0"], "--candidates must be"),
        (["search", "--db", "{db}", "hello", "--lang", "xx"], "unknown language code 'xx'"),
        (["search", "--db", "{db}", "hello", "--lang", "fr"], "no sentences in 'fr'"),
        (["search", "--db", "{db}", "hello", "--model", "{student}"], "built with '"),
        (["index", "--model", "{teacher}", "--db", "{db}", "{bad}"], "bad.jsonl:1: not valid"),
        (["index", "--model", "{teacher}", "--db", "{db}", "{txt}"], "needs --lang"),
        (["index", "--model", "{student}", "--db", "{db}", "--lang", "en", "{txt}"], "built with"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path, files, tiny_teacher, tiny_student, capsys, argv, message
):
    db = tmp_path / "cli.db"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{nope\n", encoding="utf-8")
    main(["index", "--model", tiny_teacher, "--db", str(db), "--lang", "en", str(files["txt"])])
    capsys.readouterr()
    names = {
        "missing": tmp_path / "nope.db",
        "db": db,
        "student": tiny_student,
        "teacher": tiny_teacher,
        "bad": bad,
        "txt": files["txt"],
    }
    assert main([a.format(**{k: str(v) for k, v in names.items()}) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kd: error: ") and message in err[0], err
