"""The kd command line: bad input ends in one clear line and exit status 2, never a traceback."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from kd.cli import main
from tests.conftest import TATOEBA_DEV


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("kd: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "de.tsv"
    path.write_text(
        "en\tde\nthe cat sits on the mat\tder katze sitzt auf matte\n"
        "hello world\thallo\nthe dog runs\tder hund\n",
        encoding="utf-8",
    )
    return path


def _distill(tmp_path, tiny_teacher, tiny_student, data, *extra):
    return (
        "distill",
        "--out",
        str(tmp_path / "out"),
        "--teacher",
        tiny_teacher,
        "--student",
        tiny_student,
        "--langs",
        "de",
        "--max-pairs",
        "0",
        "--english-rows",
        "0",
        "--eval-pairs",
        "0",
        "--freeze-layers",
        "1",
        "--data",
        str(data),
        *extra,
    )


def _tiny_tatoeba(tmp_path):
    """A four-pair German set in the LASER Tatoeba layout."""
    tatoeba = tmp_path / "tatoeba"
    tatoeba.mkdir()
    (tatoeba / "tatoeba.deu-eng.deu").write_text("der hund\nhallo\ndie katze\nrot blau\n")
    (tatoeba / "tatoeba.deu-eng.eng").write_text("the dog\nhello\nthe cat\nred blue\n")
    return tatoeba


def test_embed_writes_one_row_per_line(tmp_path, capsys, tiny_teacher):
    src = tmp_path / "in.txt"
    src.write_text(
        "the cat\nle chat 🐈 \u200bzero-width\n" + "x" * 100_000 + "\n", encoding="utf-8"
    )
    rc, out, _ = _run(
        capsys, "embed", "--model", tiny_teacher, "--in", str(src), "--out", str(tmp_path / "v.npy")
    )
    assert rc == 0
    assert np.load(tmp_path / "v.npy").shape == (3, 32)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ("empty file",)),
        (b"the cat\n\xff\xfe broken\n", ("in.txt:2", "UTF-8")),
        (b"the cat\n   \nthe dog\n", ("in.txt:2", "empty line")),
    ],
)
def test_embed_bad_files(tmp_path, capsys, tiny_teacher, content, fragments):
    src = tmp_path / "in.txt"
    src.write_bytes(content)
    rc, _, err = _run(
        capsys, "embed", "--model", tiny_teacher, "--in", str(src), "--out", str(tmp_path / "v.npy")
    )
    _assert_one_line_error(rc, err, *fragments)
    assert not (tmp_path / "v.npy").exists()


def test_embed_missing_file(tmp_path, capsys, tiny_teacher):
    rc, _, err = _run(
        capsys,
        "embed",
        "--model",
        tiny_teacher,
        "--in",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "v.npy"),
    )
    _assert_one_line_error(rc, err, "no such file")


def test_unknown_model(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    rc, _, err = _run(
        capsys,
        "embed",
        "--model",
        "definitely not a model",
        "--in",
        str(src),
        "--out",
        str(tmp_path / "v.npy"),
    )
    _assert_one_line_error(rc, err, "unknown model")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--langs", "de,xx"), "unknown language code 'xx'"),
        (("--lr", "-0.1"), "--lr"),
        (("--batch-size", "0"), "--batch-size"),
        (("--epochs", "0"), "--epochs"),
    ],
)
def test_distill_bad_options(tmp_path, capsys, argv, fragment):
    rc, _, err = _run(capsys, "distill", "--out", str(tmp_path / "o"), *argv)
    _assert_one_line_error(rc, err, fragment)


def test_distill_missing_column(tmp_path, capsys, tiny_teacher, tiny_student):
    bad = tmp_path / "bad.tsv"
    bad.write_text("the cat\tdie katze\nonly english here\n", encoding="utf-8")
    rc, _, err = _run(capsys, *_distill(tmp_path, tiny_teacher, tiny_student, bad))
    _assert_one_line_error(rc, err, "bad.tsv:2", "2 tab-separated columns")
    assert not (tmp_path / "out").exists()


def test_distill_wrong_encoding(tmp_path, capsys, tiny_teacher, tiny_student):
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("the café\tdas Café\n".encode("latin-1"))
    rc, _, err = _run(capsys, *_distill(tmp_path, tiny_teacher, tiny_student, bad))
    _assert_one_line_error(rc, err, "latin1.tsv:1", "UTF-8")


def test_distill_empty_file(tmp_path, capsys, tiny_teacher, tiny_student):
    bad = tmp_path / "empty.tsv"
    bad.write_text("")
    rc, _, err = _run(capsys, *_distill(tmp_path, tiny_teacher, tiny_student, bad))
    _assert_one_line_error(rc, err, "empty.tsv", "empty")


def test_distill_runs_and_eval_reports_baselines(
    tmp_path, capsys, tiny_teacher, tiny_student, pairs_file, isolated_cache
):
    rc, out, err = _run(
        capsys,
        *_distill(
            tmp_path,
            tiny_teacher,
            tiny_student,
            pairs_file,
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--eval-pairs",
            "1",  # of the 3 pairs: one held out, so there are scores around step 0
        ),
    )
    assert rc == 0, err
    assert "student saved to" in out
    # the scores around step 0: before training, and with the head's start before any step
    assert "before training: cross-model acc" in out and "step 0 (ridge head): cross" in out
    tatoeba = _tiny_tatoeba(tmp_path)
    rc, out, err = _run(
        capsys,
        "eval",
        "--model",
        str(tmp_path / "out"),
        "--tatoeba",
        str(tatoeba),
        "--langs",
        "de",
        "--json",
    )
    assert rc == 0, err
    report = json.loads(out)
    assert set(report["results"]) == {"teacher", "student_untrained", "student_distilled"}
    assert 0 <= report["results"]["student_distilled"]["de"]["cross_mean_accuracy"] <= 1


def test_distill_saves_a_delta_that_eval_takes_as_a_model(
    tmp_path, capsys, tiny_teacher, tiny_student, pairs_file, isolated_cache
):
    rc, out, err = _run(
        capsys,
        *_distill(tmp_path, tiny_teacher, tiny_student, pairs_file, "--epochs", "1"),
        "--save",
        "delta",
    )
    assert rc == 0, err
    assert "saved the student as a delta" in err + out and "as a delta (kd loads it" in out
    assert (tmp_path / "out" / "kd_delta.json").is_file()
    assert not (tmp_path / "out" / "modules.json").exists()
    tatoeba = _tiny_tatoeba(tmp_path)
    rc, out, err = _run(
        capsys, "eval", "--model", str(tmp_path / "out"), "--tatoeba", str(tatoeba),
        "--langs", "de", "--json",
    )  # fmt: skip
    assert rc == 0, err
    assert "student_distilled" in json.loads(out)["results"]


def test_eval_missing_language_file(tmp_path, capsys, tiny_teacher):
    rc, _, err = _run(
        capsys, "eval", "--model", tiny_teacher, "--tatoeba", str(tmp_path), "--langs", "de"
    )
    _assert_one_line_error(rc, err)


@pytest.mark.skipif(
    not TATOEBA_DEV.is_dir(), reason="../shared/data/tatoeba-dev is absent (CI has it)"
)
def test_eval_reads_the_dev_set(capsys, tiny_teacher):
    rc, out, err = _run(
        capsys,
        "eval",
        "--model",
        tiny_teacher,
        "--tatoeba",
        str(TATOEBA_DEV),
        "--langs",
        "de,ja",
        "--max-pairs",
        "20",
        "--json",
    )
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert set(results["model"]) == {"de", "ja", "mean"}


def test_models_lists_the_offline_defaults(capsys, monkeypatch, tmp_path):
    rc, out, _ = _run(capsys, "models")
    assert rc == 0
    assert "sentence-transformers/all-MiniLM-L6-v2" in out
    assert "intfloat/multilingual-e5-small" in out
    # ... and the pre-built student, wherever KD_PREBUILT puts it
    monkeypatch.setenv("KD_PREBUILT", str(tmp_path))
    (tmp_path / "kd_delta.json").write_text("{}")
    rc, out, _ = _run(capsys, "models")
    assert f"{tmp_path.resolve()}  [student, pre-built (distilled), available: yes]" in out
    monkeypatch.setenv("KD_PREBUILT", str(tmp_path / "none"))
    rc, out, _ = _run(capsys, "models")
    assert "[student, pre-built (distilled), available: no]" in out


def test_plot_writes_figures(
    tmp_path, capsys, tiny_teacher, tiny_student, pairs_file, isolated_cache
):
    rc, _, err = _run(
        capsys,
        *_distill(
            tmp_path, tiny_teacher, tiny_student, pairs_file, "--epochs", "1", "--batch-size", "2"
        ),
    )
    assert rc == 0, err
    tatoeba = _tiny_tatoeba(tmp_path)
    rc, out, err = _run(
        capsys,
        "plot",
        "--model",
        str(tmp_path / "out"),
        "--tatoeba",
        str(tatoeba),
        "--langs",
        "de",
        "--method",
        "pca",
        "--out",
        str(tmp_path / "figs"),
    )
    assert rc == 0, err
    written = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert written == ["accuracy.html", "aligned_space.html", "teacher_space.html", "training.html"]
    html = (tmp_path / "figs" / "aligned_space.html").read_text(encoding="utf-8")
    assert "the dog" in html and "der hund" in html  # hover text made it into the page
    # The teacher's space: line lengths untrained -> distilled, printed.
    assert "line length 1 - cos" in out and "mean line length falls from" in out
    html = (tmp_path / "figs" / "teacher_space.html").read_text(encoding="utf-8")
    assert "teacher(en)" in html and "distilled" in html
    # No watch set in this run (no held-out pairs): --animate says so in one line.
    rc, _, err = _run(
        capsys, "plot", "--model", str(tmp_path / "out"), "--tatoeba", str(tatoeba),
        "--langs", "de", "--method", "pca", "--out", str(tmp_path / "f2"), "--animate",
    )  # fmt: skip
    _assert_one_line_error(rc, err, "kept no watch set")


def test_plot_animate_replays_the_run(tmp_path, capsys, tiny_teacher, tiny_student, isolated_cache):
    words = ["the", "cat", "dog", "sits", "runs", "on", "mat", "big", "small", "house"]
    rng = random.Random(0)
    rows = {" ".join(rng.choice(words) for _ in range(5)): None for _ in range(80)}
    data = tmp_path / "de.tsv"
    data.write_text("en\tde\n" + "".join(f"{en}\t{en.upper()}\n" for en in rows), "utf-8")
    argv = list(_distill(tmp_path, tiny_teacher, tiny_student, data, "--epochs", "2"))
    argv[argv.index("--eval-pairs") + 1] = "10"
    rc, _, err = _run(capsys, *argv, "--evals", "2")
    assert rc == 0, err
    rc, out, err = _run(
        capsys, "plot", "--model", str(tmp_path / "out"), "--tatoeba", str(_tiny_tatoeba(tmp_path)),
        "--langs", "de", "--method", "pca", "--out", str(tmp_path / "figs"), "--animate",
    )  # fmt: skip
    assert rc == 0, err
    assert "journey: 5 frames (untrained, linear head (step 0), step" in out
    html = (tmp_path / "figs" / "journey.html").read_text(encoding="utf-8")
    assert "addFrames" in html and "linear head (step 0)" in html and "distilled" in html
