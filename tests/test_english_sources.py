"""English-only text as a source (``--english``): files, folders, hf: datasets, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kd.config import TrainConfig
from kd.data.english_sources import english_rows, read_english, read_english_file
from kd.data.pairs import MAX_CHARS
from tests.conftest import SHARED

NEWS_ENGLISH = SHARED / "data" / "news-english" / "en.txt"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_is_cleaned_and_blank_lines_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path / "sentences", "\ufeffThe cat sleeps.\r\n\n  It\u200b   rains. \n")
    assert read_english_file(path) == ["The cat sleeps.", "It rains."]


def test_overlong_lines_are_skipped_and_named(tmp_path: Path, caplog) -> None:
    long = "word " * (MAX_CHARS // 2)
    path = _write(tmp_path / "en.txt", f"Short one.\n{long}\nAnother one.\n{long * 40}\n")
    with caplog.at_level("WARNING", logger="kd"):
        assert read_english_file(path) == ["Short one.", "Another one."]
    assert "line 2 and 1 more" in caplog.text


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ["empty file"]),
        (b"\n\n  \n", ["only blank lines"]),
        (b"Fine.\nnot \xe9 utf8\n", ["en.txt:2", "UTF-8"]),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", ["en.txt:", "binary data"]),
        (b"Fine.\n" * 5000 + b"\x00\x01", ["en.txt:5001", "binary data"]),
        (("x" * (MAX_CHARS + 1) + "\n").encode(), ["en.txt:1", "no sentence found"]),
    ],
)
def test_bad_files_fail_in_one_line_naming_the_file(tmp_path: Path, content, fragments) -> None:
    path = tmp_path / "en.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_english(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_and_empty_specs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file or folder"):
        read_english(str(tmp_path / "nope.txt"))
    with pytest.raises(ValueError, match="an empty English source"):
        read_english("  ")
    with pytest.raises(ValueError, match="no .txt files"):
        read_english(str(tmp_path))


def test_a_folder_reads_every_txt_below_in_sorted_order(tmp_path: Path) -> None:
    _write(tmp_path / "b" / "two.txt", "From b.\n")
    _write(tmp_path / "a.txt", "From a.\n")
    _write(tmp_path / "notes.md", "Not read.\n")
    _write(tmp_path / ".hidden" / "x.txt", "Not read either.\n")
    assert read_english(str(tmp_path)) == ["From a.", "From b."]


def test_earlier_sources_fill_the_rows_first(tmp_path: Path) -> None:
    first = _write(tmp_path / "first.txt", "".join(f"First source {i}.\n" for i in range(10)))
    second = _write(tmp_path / "second.txt", "".join(f"Second source {i}.\n" for i in range(10)))
    rows = english_rows([str(first), str(second)], 14, seed=0)
    assert len(rows) == 14 and sum(r.startswith("First") for r in rows) == 10
    rows = english_rows([str(second), str(first)], 6, seed=0)
    assert all(r.startswith("Second") for r in rows)
    (tmp_path / "bad.txt").write_bytes(b"\xff\n")
    with pytest.raises(ValueError, match="bad.txt:1"):  # read even when the cap is already met
        english_rows([str(first), str(tmp_path / "bad.txt")], 5)


def test_english_rows_mixes_dedupes_shuffles_and_caps(tmp_path: Path) -> None:
    one = _write(tmp_path / "one.txt", "".join(f"Sentence number {i}.\n" for i in range(30)))
    two = _write(tmp_path / "two.txt", "sentence number 3\nA new one.\n")
    rows = english_rows([str(one), str(two), str(one)], 100, seed=1)
    assert len(rows) == 31 and "A new one." in rows
    assert "sentence number 3" not in rows  # the same sentence as "Sentence number 3."
    assert rows == english_rows([str(one), str(two)], 100, seed=1)
    assert rows != english_rows([str(one), str(two)], 100, seed=2)
    assert english_rows([str(one)], 5, seed=1) == english_rows([str(one)], 100, seed=1)[:5]
    assert english_rows([str(one)], 0) == []


def test_default_spec_is_the_debian_sentences() -> None:
    from kd.data.english_text import english_sentences

    expected = english_sentences(50, seed=3)
    if not expected:
        pytest.skip("neither wordnet-base nor fortunes is installed")
    assert english_rows([], 50, seed=3) == expected
    assert english_rows(["default"], 50, seed=3) == expected
    both = set(read_english("wordnet")) | set(read_english("fortunes"))
    assert both == set(read_english("default"))


def test_hf_local_text_dataset_by_column(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    rows = [{"id": i, "text": f"Line {i} of the corpus."} for i in range(20)]
    path = tmp_path / "corpus" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got = read_english(f"hf:{tmp_path / 'corpus'}")
    assert got == [r["text"] for r in rows]
    capped = read_english(f"hf:{tmp_path / 'corpus'}", max_n=5, seed=0)
    assert len(capped) == 5 and set(capped) <= set(got)


def test_hf_local_dataset_without_a_text_column(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    path = tmp_path / "corpus" / "train.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"a": "x", "b": "y"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no text column.*found 'a', 'b'"):
        read_english(f"hf:{tmp_path / 'corpus'}")


def test_the_config_and_command_line_take_several(tmp_path: Path) -> None:
    from kd.cli import build_parser

    cfg = TrainConfig(english=[tmp_path / "a.txt", "default"])
    assert cfg.english == [str(tmp_path / "a.txt"), "default"]
    args = build_parser().parse_args(
        ["distill", "--out", "o", "--english", "a.txt", "--english", "fortunes"]
    )
    assert args.english == ["a.txt", "fortunes"]


@pytest.mark.skipif(not NEWS_ENGLISH.exists(), reason=f"{NEWS_ENGLISH} is absent (no ../shared)")
def test_real_news_english_file_reads_whole() -> None:
    sentences = read_english_file(NEWS_ENGLISH)
    assert len(sentences) > 120_000
    assert all(0 < len(s) <= MAX_CHARS for s in sentences)


def test_distill_with_a_bad_english_file_fails_in_one_line(
    tmp_path: Path, capsys, tiny_teacher, tiny_student
) -> None:
    from kd.cli import main

    bad = tmp_path / "en.txt"
    bad.write_bytes(b"Fine.\nnot \xe9 utf8\n")
    argv = ["distill", "--out", str(tmp_path / "out"), "--teacher", tiny_teacher]
    argv += ["--student", tiny_student, "--langs", "de", "--freeze-layers", "1"]
    argv += ["--english", str(bad), "--english-rows", "10", "--max-pairs", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kd: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "en.txt:2" in errors[0] and "UTF-8" in errors[0]
    assert not (tmp_path / "out").exists()
