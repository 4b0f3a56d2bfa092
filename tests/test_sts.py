"""STS evaluation: Spearman against scipy, hand-made orderings, reader errors, kd eval --sts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kd.cli import main
from kd.evaluate.sts import (
    StsSet,
    cached_encode,
    embed_sts,
    format_sts_table,
    read_sts,
    read_sts_file,
    spearman,
    sts_report,
    sts_scores,
    sts_spearman_x100,
)

STS_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stsb-multi-dev"
HEADER = "sentence1\tsentence2\tscore\n"

# Tiny pairs in the tiny models' vocabulary (tests/conftest.py), row-aligned across languages.
TINY = {
    "en": [
        ("the cat sits on the mat", "the cat sits on the mat", "5.0"),
        ("the dog runs", "the big dog runs", "4.0"),
        ("the red house", "the small house", "2.5"),
        ("hello world", "good night", "1.0"),
        ("thank you friend", "the blue water", "0.0"),
    ],
    "fr": [
        ("le chat est sur le tapis", "le chat est sur le tapis", "5.0"),
        ("le chien", "le grand chien", "4.0"),
        ("la maison rouge", "la petit maison", "2.5"),
        ("hello world", "good night", "1.0"),
        ("thank you friend", "la maison bleu", "0.0"),
    ],
    "de": [
        ("die katze sitzt auf der matte", "die katze sitzt auf der matte", "5.0"),
        ("der hund", "der gross hund", "4.0"),
        ("das rot haus", "das klein haus", "2.5"),
        ("hello world", "good night", "1.0"),
        ("thank you friend", "das blau haus", "0.0"),
    ],
}


def write_sts(directory: Path, rows: dict[str, list[tuple[str, str, str]]] = TINY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for lang, pairs in rows.items():
        body = "".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs)
        (directory / f"{lang}.dev.tsv").write_text(HEADER + body, encoding="utf-8")
    return directory


def one_line(err: ValueError) -> str:
    message = str(err)
    assert "\n" not in message, message
    return message


# ---- Spearman --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]),
        ([0.5, 0.5, 2.0, 3.0, 3.0, 3.0], [1.0, 2.0, 2.0, 4.0, 0.0, 4.0]),  # ties on both sides
        ([3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]),
        ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]),
        ([0.9, 0.1], [5.0, 0.0]),
    ],
)
def test_spearman_matches_scipy(a, b):
    stats = pytest.importorskip("scipy.stats")
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_matches_scipy_on_many_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        gold = rng.integers(0, 6, size=40).astype(float)  # scores 0..5: many ties
        pred = np.round(gold + rng.normal(0, 1.5, size=40), 1)
        assert spearman(pred, gold) == pytest.approx(stats.spearmanr(pred, gold).statistic)


def test_spearman_edge_cases():
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0  # a constant carries no order
    for a, b in (([1], [1]), ([1, 2], [1, 2, 3])):
        with pytest.raises(ValueError, match="one length, at least 2"):
            spearman(a, b)
    with pytest.raises(ValueError, match="nan"):
        spearman([1.0, float("nan")], [1.0, 2.0])


def test_hand_made_vectors_give_the_expected_ordering():
    e1 = np.tile([1.0, 0.0], (4, 1))
    angles = np.array([1.4, 1.0, 0.5, 0.0])  # cosines rise from pair 0 to pair 3
    e2 = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert sts_spearman_x100(e1, e2, [0.0, 1.5, 3.0, 5.0]) == 100.0
    assert sts_spearman_x100(e1, e2, [5.0, 3.0, 1.5, 0.0]) == -100.0
    assert sts_spearman_x100(e1, e1, [0.0, 1.5, 3.0, 5.0]) == 0.0  # identical: all cos 1


def _sets(rows=TINY) -> dict[str, StsSet]:
    return {
        lang: StsSet(
            lang,
            tuple(a for a, _, _ in r),
            tuple(b for _, b, _ in r),
            tuple(float(s) for *_, s in r),
            "",
        )
        for lang, r in rows.items()
    }


def _bag_of_words(texts: list[str]) -> np.ndarray:
    vocab = sorted({w for rows in TINY.values() for r in rows for t in r[:2] for w in t.split()})
    out = np.zeros((len(texts), len(vocab)))
    for i, text in enumerate(texts):
        for word in text.split():
            out[i, vocab.index(word)] += 1
    return out


def test_identical_encoders_give_the_teachers_numbers():
    sets = _sets()
    report = sts_report(sets, _bag_of_words, {"model": _bag_of_words})
    assert report["pairs"] == 5 and report["langs"] == ["en", "fr", "de"]
    assert report["model"] == report["teacher"]
    # Identical sentences are the top pair (cos 1), so every mono score is positive.
    assert all(report["model"][lang]["mono"] > 0 for lang in ("en", "fr", "de"))
    assert report["model"]["en"]["cross"] == report["model"]["en"]["mono"]
    assert report["model"]["mean"]["mono"] == pytest.approx(
        (report["model"]["fr"]["mono"] + report["model"]["de"]["mono"]) / 2, abs=0.01
    )
    json.dumps(report)  # JSON-ready


def test_cross_uses_the_teachers_english_side():
    # English-identical text in every language: cross (teacher en vs model x) equals mono en.
    rows = {lang: TINY["en"] for lang in ("en", "fr")}
    sets = _sets(rows)
    scores = sts_scores(sets, embed_sts(sets, _bag_of_words), embed_sts(sets, _bag_of_words))
    assert (
        scores["fr"]
        == scores["en"]
        == {"mono": scores["en"]["mono"], "cross": scores["en"]["mono"]}
    )
    # A model of another dimension has no cross score (the cosine is undefined).
    wide = embed_sts(sets, lambda t: np.hstack([_bag_of_words(t), np.ones((len(t), 1))]))
    other = sts_scores(sets, wide, embed_sts(sets, _bag_of_words))
    assert set(other["fr"]) == {"mono"} and set(other["mean"]) == {"mono"}


def test_each_distinct_sentence_is_embedded_once():
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return _bag_of_words(texts)

    sets = _sets()
    embed_sts(sets, encode)
    distinct = {t for s in sets.values() for t in (*s.sentence1, *s.sentence2)}
    assert len(calls) == 1 and sorted(calls[0]) == sorted(distinct)
    calls.clear()
    teacher = cached_encode(encode)
    sts_report(sets, teacher, {"a": _bag_of_words})
    sts_report(sets, teacher, {"b": _bag_of_words})
    assert len(calls) == 1  # the second report reuses the teacher's vectors


def test_format_sts_table_rows_and_columns():
    report = sts_report(_sets(), _bag_of_words, {"student_untrained": _bag_of_words})
    lines = format_sts_table(report).splitlines()
    assert lines[0].split() == ["Spearman", "x", "100", "en", "fr", "de", "mean"]
    assert lines[2].startswith("teacher (English reference) mono")
    assert lines[3].startswith("teacher on x") and lines[4].split()[0] == "cross"
    assert lines[5].startswith("untrained student")
    assert len(lines) == 7


# ---- reading -----------------------------------------------------------------------------------
def test_read_sts_reads_every_language_present(tmp_path):
    sets = read_sts(write_sts(tmp_path / "sts"))
    assert list(sets) == ["en", "de", "fr"]  # English first, then the project's order
    assert len(sets["fr"]) == 5 and sets["fr"].scores[1] == 4.0
    assert list(read_sts(tmp_path / "sts", "fr")) == ["en", "fr"]
    assert len(read_sts(tmp_path / "sts", ["de"], max_rows=3)["de"]) == 3


def test_read_sts_header_is_optional_and_text_is_cleaned(tmp_path):
    path = tmp_path / "en.dev.tsv"
    path.write_text("A  dog\u200b runs.\tA cat.\t1.5\r\n\nTwo.\tThree.\t0\n", encoding="utf-8")
    s = read_sts_file(path, "en")
    assert s.sentence1 == ("A dog runs.", "Two.") and s.scores == (1.5, 0.0)


@pytest.mark.parametrize("score", ["5.5", "-0.5", "nan", "high"])
def test_score_outside_0_5_is_one_line(tmp_path, score):
    rows = {**TINY, "de": [*TINY["de"][:2], ("der hund", "die katze", score), *TINY["de"][3:]]}
    with pytest.raises(ValueError) as info:
        read_sts(write_sts(tmp_path / "sts", rows))
    message = one_line(info.value)
    assert "de.dev.tsv:4:" in message and score in message


def test_two_columns_is_one_line(tmp_path):
    directory = write_sts(tmp_path / "sts")
    with open(directory / "fr.dev.tsv", "a", encoding="utf-8") as fh:
        fh.write("le chat\tle chien\n")
    with pytest.raises(ValueError) as info:
        read_sts(directory)
    message = one_line(info.value)
    assert "fr.dev.tsv:7:" in message and "expected 3 tab-separated columns" in message
    assert "found 2" in message


def test_mismatched_row_counts_is_one_line(tmp_path):
    rows = {**TINY, "fr": TINY["fr"][:4]}
    with pytest.raises(ValueError) as info:
        read_sts(write_sts(tmp_path / "sts", rows))
    message = one_line(info.value)
    assert "fr.dev.tsv" in message and "4 scored pairs" in message and "en.dev.tsv has 5" in message


def test_misaligned_rows_are_one_line(tmp_path):
    rows = {**TINY, "de": [TINY["de"][1], TINY["de"][0], *TINY["de"][2:]]}  # two rows swapped
    with pytest.raises(ValueError) as info:
        read_sts(write_sts(tmp_path / "sts", rows))
    message = one_line(info.value)
    assert "de.dev.tsv: pair 1 has score 4" in message and "same pair in every language" in message


def test_missing_english_is_one_line(tmp_path):
    rows = {k: v for k, v in TINY.items() if k != "en"}
    with pytest.raises(ValueError) as info:
        read_sts(write_sts(tmp_path / "sts", rows))
    message = one_line(info.value)
    assert "en.dev.tsv" in message and "English is required" in message and "de, fr" in message


def test_non_utf8_is_one_line(tmp_path):
    directory = write_sts(tmp_path / "sts")
    (directory / "de.dev.tsv").write_bytes(
        HEADER.encode() + "gro\u00df\thund\t1.0\n".encode("latin-1")
    )
    with pytest.raises(ValueError) as info:
        read_sts(directory)
    message = one_line(info.value)
    assert "de.dev.tsv:2:" in message and "UTF-8" in message


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: None, "not a directory"),
        (lambda d: d.mkdir(), "no <lang>.dev.tsv files found"),
        (lambda d: write_sts(d, {"en": TINY["en"]}), "no language besides English"),
        (
            lambda d: write_sts(d, {"en": TINY["en"], "de": [("a b", "", "1.0")] * 5}),
            "sentence2 is empty",
        ),
        (lambda d: write_sts(d, {"en": TINY["en"][:1], "de": TINY["de"][:1]}), "two different"),
        (lambda d: (write_sts(d), (d / "en.dev.tsv").write_text(HEADER)), "no scored pairs"),
    ],
)
def test_other_bad_input_is_one_line(tmp_path, setup, fragment):
    directory = tmp_path / "sts"
    setup(directory)
    with pytest.raises(ValueError) as info:
        read_sts(directory)
    assert fragment in one_line(info.value)


def test_unknown_language_asked_for(tmp_path):
    with pytest.raises(ValueError) as info:
        read_sts(write_sts(tmp_path / "sts"), "ja")
    message = one_line(info.value)
    assert "ja.dev.tsv: missing" in message and "en, de, fr" in message


@pytest.mark.skipif(not STS_DEV.is_dir(), reason=f"{STS_DEV} is absent (CI has it)")
def test_reads_the_shared_dev_set():
    sets = read_sts(STS_DEV)
    assert sorted(sets) == sorted(
        ["en", "de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh"]
    )
    assert {len(s) for s in sets.values()} == {1500}
    assert len({s.scores for s in sets.values()}) == 1  # row-aligned: one gold score per row


# ---- kd eval --sts -------------------------------------------------------------------------------
def _eval(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["eval", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_eval_sts_prints_the_table_and_json(tmp_path, capsys, tiny_teacher, tiny_student):
    directory = write_sts(tmp_path / "sts")
    models = ["--model", tiny_student, "--teacher", tiny_teacher, "--baseline", tiny_student]
    rc, out, err = _eval(capsys, *models, "--sts", str(directory), "--device", "cpu")
    assert rc == 0, err
    assert "STS: 5 scored pairs per language" in out
    for label in ("teacher (English reference)", "teacher on x", "untrained student"):
        assert label in out
    assert "distilled student" in out
    header = next(line for line in out.splitlines() if line.startswith("Spearman x 100 "))
    assert header.split()[3:] == ["en", "de", "fr", "mean"]

    rc, out, err = _eval(
        capsys, *models, "--sts", str(directory), "--json", "--max-pairs", "4", "--langs", "de"
    )
    assert rc == 0, err
    report = json.loads(out)
    assert "results" not in report
    sts = report["sts"]
    assert sts["pairs"] == 4 and sts["langs"] == ["en", "de"]
    assert set(sts) == {"pairs", "langs", "teacher", "student_untrained", "student_distilled"}
    # The untrained and the distilled student are one model here: one set of numbers.
    assert sts["student_untrained"] == sts["student_distilled"]
    assert set(sts["student_distilled"]["de"]) == {"mono", "cross"}
    assert -100 <= sts["student_distilled"]["mean"]["cross"] <= 100


def test_eval_sts_with_tatoeba(tmp_path, capsys, tiny_teacher):
    tatoeba = tmp_path / "tatoeba"
    tatoeba.mkdir()
    (tatoeba / "tatoeba.deu-eng.deu").write_text("der hund\ndie katze\n", encoding="utf-8")
    (tatoeba / "tatoeba.deu-eng.eng").write_text("the dog\nthe cat\n", encoding="utf-8")
    rc, out, err = _eval(
        capsys,
        *("--model", tiny_teacher, "--teacher", tiny_teacher, "--langs", "de", "--json"),
        *("--tatoeba", str(tatoeba), "--sts", str(write_sts(tmp_path / "sts"))),
    )
    assert rc == 0, err
    report = json.loads(out)
    assert set(report["results"]) == {"teacher", "model"}
    assert report["sts"]["model"] == report["sts"]["teacher"]


def test_eval_needs_tatoeba_or_sts(capsys, tiny_teacher):
    rc, _, err = _eval(capsys, "--model", tiny_teacher)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--tatoeba DIR, --sts DIR or both" in lines[0]


def test_eval_bad_sts_file_is_one_line(tmp_path, capsys, tiny_teacher):
    rows = {**TINY, "fr": [*TINY["fr"][:4], ("le chat", "le chien", "7")]}
    rc, _, err = _eval(
        capsys, "--model", tiny_teacher, "--sts", str(write_sts(tmp_path / "sts", rows))
    )
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "fr.dev.tsv:6:" in lines[0] and "outside 0-5" in lines[0]
    assert "Traceback" not in err


# ---- the Distill tab's before/after table -------------------------------------------------------
def test_results_table_gains_sts_columns_only_with_sts():
    pytest.importorskip("gradio")
    from webapp.run_results import RESULT_COLUMNS, STS_COLUMNS, results_table

    metrics = {
        stage: {"de": {"cross_mean_accuracy": 0.5}, "mean": {"cross_mean_accuracy": 0.5}}
        for stage in ("teacher", "student_untrained", "student_distilled")
    }
    plain = results_table(metrics)
    assert list(plain.columns) == ["language", "model", *RESULT_COLUMNS.values()]
    report = sts_report(
        _sets(),
        _bag_of_words,
        {s: _bag_of_words for s in ("student_untrained", "student_distilled")},
    )
    table = results_table({**metrics, "sts": report})
    assert list(table.columns) == [
        "language",
        "model",
        *RESULT_COLUMNS.values(),
        *STS_COLUMNS.values(),
    ]
    assert list(table["language"]) == ["mean"] * 3 + ["en"] * 3 + ["de"] * 3
    mono = STS_COLUMNS["mono"]
    assert table[mono].iloc[3] == report["teacher"]["en"]["mono"]  # the English reference
    assert table[mono].iloc[2] == report["student_distilled"]["mean"]["mono"]
    assert "mono" not in metrics["teacher"]["de"]  # the run's metrics are left as they were


@pytest.mark.slow
@pytest.mark.skipif(not STS_DEV.is_dir(), reason=f"{STS_DEV} is absent (CI has it)")
def test_eval_sts_on_the_default_student(capsys):
    """The real teacher and the untrained default student on a slice of the shared set."""
    rc, out, err = _eval(
        capsys,
        *("--model", "intfloat/multilingual-e5-small", "--sts", str(STS_DEV), "--json"),
        *("--langs", "de,zh", "--max-pairs", "300", "--device", "cpu"),
    )
    assert rc == 0, err
    sts = json.loads(out)["sts"]
    assert sts["langs"] == ["en", "de", "zh"] and sts["pairs"] == 300
    assert sts["teacher"]["en"]["mono"] > 70  # MiniLM on English STS-B dev: in the 80s
    # The multilingual student beats the English-only teacher within other languages.
    assert sts["model"]["mean"]["mono"] > sts["teacher"]["mean"]["mono"]
    assert set(sts["model"]["zh"]) == {"mono", "cross"}
    assert "teacher (English reference)" in format_sts_table(sts)
